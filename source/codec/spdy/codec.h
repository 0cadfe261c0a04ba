#pragma once

// SPDY/3.1 framing as Kubernetes peers (moby/spdystream) speak it: a pure codec.
// Bytes go in through dispatch() and come out as callbacks; frames are encoded
// by appending to a caller's Buffer. No sockets, timers or logging in here, so
// the codec can be tested and fuzzed alone. One Codec per connection: the zlib
// header-block contexts (one per direction) live for the whole connection.
//
// Flow control: Kubernetes peers never send WINDOW_UPDATE and never honour
// windows, so the codec accepts DATA frames of any size up to the 24-bit limit
// and never withholds output; backpressure is the caller's, through its socket.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

#include "source/common/buffer.h"

namespace crisp::spdy {

constexpr uint16_t kVersion = 3;

enum class FrameType : uint16_t {
  kSynStream = 1,
  kSynReply = 2,
  kRstStream = 3,
  kSettings = 4,
  kPing = 6,
  kGoAway = 7,
  kHeaders = 8,
  kWindowUpdate = 9,
};

constexpr uint8_t kFlagFin = 0x01;
constexpr uint8_t kFlagUnidirectional = 0x02;

enum class RstStatus : uint32_t {
  kProtocolError = 1,
  kInvalidStream = 2,
  kRefusedStream = 3,
  kUnsupportedVersion = 4,
  kCancel = 5,
  kInternalError = 6,
  kFlowControlError = 7,
  kStreamInUse = 8,
  kStreamAlreadyClosed = 9,
  kInvalidCredentials = 10,
  kFrameTooLarge = 11,
};

enum class GoAwayStatus : uint32_t { kOk = 0, kProtocolError = 1, kInternalError = 2 };

// Header names are lowercase on the wire. A name may repeat; multiple values of
// one name travel NUL-separated in one pair and are split into separate entries
// here, in order.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

// Returns the first value of `name` (compared case-insensitively), or nullptr.
const std::string* findHeader(const HeaderList& headers, std::string_view name);

struct SettingsEntry {
  uint8_t flags = 0;
  uint32_t id = 0;
  uint32_t value = 0;
};

struct Limits {
  // Largest control frame payload accepted (SYN_STREAM, HEADERS, ...).
  uint32_t max_control_frame_bytes = 64 * 1024;
  // Largest header block after decompression.
  uint32_t max_header_block_bytes = 64 * 1024;
  // Largest DATA frame payload accepted. The wire allows 0xFFFFFF.
  uint32_t max_data_frame_bytes = 0xFFFFFF;
  // Most entries one header block may yield, counting each NUL-separated value.
  uint32_t max_header_entries = 1024;
};

// Callbacks receive frames in wire order. Stream-level problems the codec can
// see alone (bad flags on a known frame type) are still reported per frame;
// only malformed framing ends the session (dispatch() returns an error).
class CodecCallbacks {
 public:
  virtual ~CodecCallbacks() = default;

  virtual void onSynStream(uint32_t stream_id, uint32_t associated_id, uint8_t priority,
                           uint8_t flags, HeaderList&& headers) = 0;
  virtual void onSynReply(uint32_t stream_id, uint8_t flags, HeaderList&& headers) = 0;
  virtual void onHeaders(uint32_t stream_id, uint8_t flags, HeaderList&& headers) = 0;
  // `data` holds the payload; the callee drains what it keeps. `fin` is set on
  // the last frame of the stream (possibly with an empty payload).
  virtual void onData(uint32_t stream_id, Buffer& data, bool fin) = 0;
  // Asked when a DATA frame's header has arrived and its `length` payload
  // bytes have not all: true has this payload delivered in pieces as it
  // arrives (onData() per piece, `fin` only with the last, possibly empty
  // one), and lets the caller move the rest of it past the codec itself
  // (Codec::skipDataPayload()). false (the default) waits for the frame whole.
  virtual bool onDataStreamed(uint32_t stream_id, uint32_t length) {
    (void)stream_id;
    (void)length;
    return false;
  }
  virtual void onRstStream(uint32_t stream_id, RstStatus status) = 0;
  virtual void onSettings(uint8_t flags, const std::vector<SettingsEntry>& entries) = 0;
  virtual void onPing(uint32_t id) = 0;
  virtual void onGoAway(uint32_t last_good_stream_id, GoAwayStatus status) = 0;
  virtual void onWindowUpdate(uint32_t stream_id, uint32_t delta) = 0;
};

class Codec {
 public:
  // Which side of the connection this codec is: only used for validating ids.
  enum class Role { kServer, kClient };

  Codec(Role role, CodecCallbacks& callbacks, Limits limits = {});
  ~Codec();
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  // Consumes every complete frame in `input` (draining it), keeping a partial
  // frame for the next call. Returns a non-OK status when the byte stream is
  // not valid SPDY/3.1 framing (bad version, oversized frame, undecodable
  // header block, ...); the connection must then end (GOAWAY PROTOCOL_ERROR
  // and close). The message names what was wrong, e.g.
  // "spdy.unsupported_version: control frame version 2". After an error the
  // codec must not be fed again.
  absl::Status dispatch(Buffer& input);
  // A DATA payload delivered in pieces (CodecCallbacks::onDataStreamed()):
  // its stream and the bytes of it not yet delivered or skipped; 0 between
  // frames.
  uint32_t streamedDataStream() const;
  size_t streamedDataRemaining() const;
  // The caller took `bytes` of the streamed payload off the wire itself (at
  // most streamedDataRemaining()); they are not delivered. When that ends
  // the payload, its FIN, if set, arrives as an empty onData(), inside this
  // call; the next bytes given to dispatch() start a new frame.
  void skipDataPayload(size_t bytes);
  //
  // Details of the contract above:
  // - DATA frames are delivered whole (the codec waits for the full payload)
  //   unless the callbacks ask for it in pieces (onDataStreamed()); their
  //   payload is moved, not copied, into the Buffer given to onData.
  // - Control frames of unknown type (e.g. SPDY/3 CREDENTIAL) are dropped
  //   without buffering them.
  // - Error reasons: spdy.unsupported_version, spdy.frame_too_large (beyond a
  //   Limits field), spdy.bad_frame_length (wrong size for the frame type),
  //   spdy.invalid_stream_id (0 in SYN_STREAM, SYN_REPLY, HEADERS, RST_STREAM,
  //   DATA), spdy.bad_header_block, spdy.header_block_too_large. The status
  //   code is always kInvalidArgument; dispatch() keeps returning the first
  //   error, and `input` keeps the bytes from the bad frame on.
  // - Callbacks run inside dispatch() and must not destroy the codec or feed
  //   it; a connection closing from a callback defers its deletion.

  // Encoders append one complete frame to `out`. Stream ids are sent as their
  // low 31 bits. Header frames run the headers through this direction's zlib
  // stream, so they must go on the wire in the order they were encoded; names
  // go out lowercase, and entries sharing a name are joined NUL-separated into
  // one pair. Names must be non-empty without NUL, values without NUL.
  void encodeSynStream(Buffer& out, uint32_t stream_id, uint32_t associated_id, uint8_t priority,
                       uint8_t flags, const HeaderList& headers);
  void encodeSynReply(Buffer& out, uint32_t stream_id, uint8_t flags, const HeaderList& headers);
  void encodeHeaders(Buffer& out, uint32_t stream_id, uint8_t flags, const HeaderList& headers);
  // Moves all of `data` into one DATA frame (callers split large payloads;
  // data beyond the 16 MiB - 1 wire limit goes out in several frames, `fin` on
  // the last). The payload is moved, not copied.
  static void encodeData(Buffer& out, uint32_t stream_id, Buffer& data, bool fin);
  // Only the 8-byte header of a DATA frame whose `length` payload bytes the
  // caller sends right behind it by other means (splice(2) from a pipe).
  // `length` must be at most 16 MiB - 1.
  static void encodeDataHeader(Buffer& out, uint32_t stream_id, uint32_t length, bool fin);
  static void encodeRstStream(Buffer& out, uint32_t stream_id, RstStatus status);
  static void encodeSettings(Buffer& out, uint8_t flags, const std::vector<SettingsEntry>& entries);
  static void encodePing(Buffer& out, uint32_t id);
  static void encodeGoAway(Buffer& out, uint32_t last_good_stream_id, GoAwayStatus status);
  static void encodeWindowUpdate(Buffer& out, uint32_t stream_id, uint32_t delta);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// True when `stream_id` has the parity of the streams the peer opens, as seen
// from `role`: clients (the side that sent the upgrade) use odd ids, servers
// even ones. Checking parity and ordering is the connection's job; the codec
// itself only rejects id 0.
bool isPeerInitiated(Codec::Role role, uint32_t stream_id);

}  // namespace crisp::spdy
