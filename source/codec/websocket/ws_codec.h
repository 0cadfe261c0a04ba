#pragma once

// A WebSocket (RFC 6455) message codec for either end of a connection, built
// on wslay's event API. Pure: bytes go in through dispatch(), complete
// messages and control events come out through CodecCallbacks, and every
// frame the codec writes (data, pong, close) is appended to output(), which
// the owner drains to its transport. No sockets, timers or logging in here.
//
// Usage (server):
//   CodecOptions options;  // role kServer, default limits
//   absl::StatusOr<std::unique_ptr<Codec>> codec = Codec::create(options, callbacks);
//   on bytes from the socket:  status = (*codec)->dispatch(in);
//   to send:                   (*codec)->sendMessage(MessageType::kBinary, bytes);
//   after either:              write (*codec)->output() to the socket;
//   status not OK or closed(): write output(), then close the socket.
// output() grows with every reply (a peer that pings without reading makes it
// grow): the owner stops dispatching while too much of it is unwritten.
//
// What the codec does by itself:
// - reassembles fragmented messages (control frames may come in between);
// - answers each ping with a pong carrying the same payload, written to
//   output() before anything that follows the ping in the input;
// - answers the peer's close with a close echoing its code and reason, then
//   reads nothing more (later input is discarded);
// - fails the connection on any protocol violation with a close frame and a
//   non-OK status naming a stable reason (the same text is the close
//   frame's reason): 1002 for framing errors (unmasked frame from a client,
//   masked frame from a server, reserved bits, unknown opcode, fragmented or
//   over-long control frame, non-minimal length, continuation out of place,
//   a one-byte or invalid close code), 1009 when a message would exceed
//   CodecOptions::max_message_bytes (checked from the frame headers, before
//   anything is buffered), 1007 for text or close-reason payloads that are
//   not valid UTF-8. UTF-8 is checked because RFC 6455 8.1 requires it and
//   wslay always does it; the Kubernetes base64 protocols only send ASCII,
//   so a conforming peer never trips it. Outgoing text is not checked.
//
// Reasons: ws.unmasked_client_frame, ws.masked_server_frame,
// ws.reserved_bits, ws.unknown_opcode, ws.fragmented_control_frame,
// ws.control_frame_too_long, ws.non_minimal_length, ws.bad_frame_length,
// ws.unexpected_continuation, ws.expected_continuation,
// ws.bad_close_payload, ws.bad_close_code (all 1002), ws.message_too_big
// (1009), ws.invalid_utf8 (1007). Status codes: InvalidArgument for protocol
// errors, ResourceExhausted for ws.message_too_big, Internal for a failure
// of wslay itself (out of memory) or of the random source (ws.mask_failed).
//
// A Codec belongs to one thread (the connection's event loop). Callbacks run
// inside dispatch(); they may call the send methods (frames go to output() in
// order) but must not destroy the codec or call dispatch().

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/common/buffer.h"
#include "source/common/time.h"

namespace crisp::websocket {

enum class Role { kServer, kClient };

// Data message opcodes (RFC 6455 5.6).
enum class MessageType : uint8_t { kText = 0x1, kBinary = 0x2 };

// Close status codes (RFC 6455 7.4.1).
inline constexpr uint16_t kCloseNormal = 1000;
inline constexpr uint16_t kCloseGoingAway = 1001;
inline constexpr uint16_t kCloseProtocolError = 1002;
inline constexpr uint16_t kCloseUnsupportedData = 1003;
// Reported when the peer's close frame had no code; never sent.
inline constexpr uint16_t kCloseNoStatus = 1005;
// Reported by closeCodeSent()/closeCodeReceived() before any close; never sent.
inline constexpr uint16_t kCloseAbnormal = 1006;
inline constexpr uint16_t kCloseInvalidPayload = 1007;
inline constexpr uint16_t kClosePolicyViolation = 1008;
inline constexpr uint16_t kCloseMessageTooBig = 1009;
inline constexpr uint16_t kCloseInternalError = 1011;

// Control frame payloads are at most 125 bytes; a close reason at most 123.
inline constexpr size_t kMaxControlPayload = 125;
inline constexpr size_t kMaxCloseReason = 123;

// Largest incoming message accepted by default. Kubernetes clients write
// stdin and port-forward data as they read it, typically in pieces of tens
// of KiB; the limit bounds what one peer can make the codec buffer.
inline constexpr uint64_t kDefaultMaxMessageBytes = 16 * 1024 * 1024;

struct CodecOptions {
  Role role = Role::kServer;
  // Incoming data messages (all fragments together) larger than this fail
  // the connection with 1009. Must be at least 1.
  uint64_t max_message_bytes = kDefaultMaxMessageBytes;
  // Client role only (required there): the source of the 4-byte masking key
  // of every frame sent (RFC 6455 5.3). Borrowed; must outlive the codec.
  RandomSource* random = nullptr;
};

class CodecCallbacks {
 public:
  virtual ~CodecCallbacks() = default;

  // One complete data message, fragments joined. `payload` holds exactly the
  // message; the callee may drain or move from it (what is left is dropped).
  virtual void onMessage(MessageType type, Buffer& payload) = 0;
  // A ping arrived; its pong is already queued.
  virtual void onPing(std::string_view payload) { (void)payload; }
  virtual void onPong(std::string_view payload) { (void)payload; }
  // The peer's close frame: `code` is kCloseNoStatus when it carried none.
  // The reply close is already queued unless a close was sent before. No
  // message follows.
  virtual void onClose(uint16_t code, std::string_view reason) = 0;
};

class Codec {
 public:
  // Fails with InvalidArgument for a client without a random source or a
  // zero message limit, Internal when wslay cannot allocate its context.
  // `callbacks` is borrowed and must outlive the codec.
  static absl::StatusOr<std::unique_ptr<Codec>> create(const CodecOptions& options,
                                                       CodecCallbacks& callbacks);
  ~Codec();
  Codec(const Codec&) = delete;
  Codec& operator=(const Codec&) = delete;

  // Consumes `input` (draining what it used; an incomplete frame header, or
  // an incomplete close frame, stays in `input` for the next call) and runs
  // the callbacks for everything complete. Replies (pongs, close) are in
  // output() afterwards. Returns OK, also when the peer closed (see
  // closeReceived()); after the peer's close, input is discarded. On a
  // protocol violation the close frame is in output(), the status names the
  // reason (see above), `input` keeps the bytes from the bad frame on (for
  // ws.invalid_utf8, found by wslay inside a frame it already took, only what
  // wslay had not read yet), and every later call returns the same status.
  absl::Status dispatch(Buffer& input);

  // Appends one unfragmented data message to output(). The Buffer overload
  // drains `payload`. FailedPrecondition ("ws.closed") once a close was sent
  // or received; the connection's error after a failure.
  absl::Status sendMessage(MessageType type, std::string_view payload);
  absl::Status sendMessage(MessageType type, Buffer& payload);
  // Server role: appends only the header of one unfragmented data message of
  // `length` payload bytes, which the caller sends right behind it by other
  // means (splice(2) from a pipe) before anything else is sent. Same results
  // as sendMessage; FailedPrecondition for a client, whose frames are masked.
  absl::Status sendMessageHeader(MessageType type, uint64_t length);
  // Appends a ping (payload at most kMaxControlPayload bytes, else
  // InvalidArgument). Same closed/failed results as sendMessage.
  absl::Status sendPing(std::string_view payload);
  // Appends a close frame and stops sending. `code` must be one an endpoint
  // may send (1000-1003, 1007-1011, 3000-4999) and `reason` at most
  // kMaxCloseReason bytes of UTF-8, else InvalidArgument. Incoming messages
  // are still delivered until the peer's close arrives.
  absl::Status sendClose(uint16_t code, std::string_view reason = {});

  // Bytes to write to the transport, in order. The owner drains it.
  Buffer& output();

  bool closeSent() const;
  bool closeReceived() const;
  // The WebSocket is over: a close was sent and nothing more will be read
  // (the peer's close arrived, or the connection failed), or the codec
  // failed. The owner writes output() and closes the transport (a client
  // waits for the server to close it first, RFC 6455 7.1.1).
  bool closed() const;
  // Code of the close frame sent / received: kCloseAbnormal before one,
  // kCloseNoStatus for a close frame without a code.
  uint16_t closeCodeSent() const;
  uint16_t closeCodeReceived() const;

 private:
  class Impl;
  explicit Codec(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True for a close code an endpoint may put on the wire, as RFC 6455 7.4 and
// wslay agree: 1000-1003, 1007-1011 and 3000-4999. The same set is accepted
// from the peer; 1012-1014, registered after RFC 6455, are refused both ways
// because wslay 1.1.1 fails a connection that receives them.
bool isSendableCloseCode(uint16_t code);

}  // namespace crisp::websocket
