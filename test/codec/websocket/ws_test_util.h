#pragma once

// Test helpers for the WebSocket codec: a frame builder that can also write
// malformed frames, a parser for what a codec wrote, a recording fake of
// CodecCallbacks, a deterministic random source, and a feeder that hands
// bytes to a codec whole, byte by byte or in seeded random chunks.

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

#include "source/codec/websocket/ws_codec.h"
#include "source/common/time.h"

namespace crisp::websocket::testing {

inline constexpr uint8_t kOpContinuation = 0x0;
inline constexpr uint8_t kOpText = 0x1;
inline constexpr uint8_t kOpBinary = 0x2;
inline constexpr uint8_t kOpClose = 0x8;
inline constexpr uint8_t kOpPing = 0x9;
inline constexpr uint8_t kOpPong = 0xA;

// The masking key of the RFC 6455 5.7 examples.
inline constexpr std::array<uint8_t, 4> kTestMask = {0x37, 0xfa, 0x21, 0x3d};

struct FrameSpec {
  uint8_t opcode = kOpBinary;
  std::string payload;
  bool fin = true;
  uint8_t rsv = 0;
  bool masked = true;
  std::array<uint8_t, 4> mask = kTestMask;
  // 0: the minimal length form; 7, 16 or 64 force that form (16 and 64 may
  // then be non-minimal).
  int length_bits = 0;
  // Written instead of payload.size() when set (64-bit form only).
  std::optional<uint64_t> length_override;
};

// The wire bytes of one frame as described.
std::string buildFrame(const FrameSpec& spec);

// A masked frame as a client sends it, and an unmasked one as a server does.
std::string clientFrame(uint8_t opcode, std::string_view payload, bool fin = true);
std::string serverFrame(uint8_t opcode, std::string_view payload, bool fin = true);

// A close frame payload: 2-byte code and reason.
std::string closePayload(uint16_t code, std::string_view reason = {});

struct ParsedFrame {
  bool fin = false;
  uint8_t rsv = 0;
  uint8_t opcode = 0;
  bool masked = false;
  std::array<uint8_t, 4> mask = {0, 0, 0, 0};
  std::string payload;  // unmasked

  // Close frames: code (0 when none) and reason.
  uint16_t closeCode() const;
  std::string closeReason() const;
};

// Parses every frame in `bytes`. Returns nullopt when bytes are left over
// that do not form a complete frame.
std::optional<std::vector<ParsedFrame>> parseFrames(std::string_view bytes);

struct Event {
  enum class Kind { kMessage, kPing, kPong, kClose };
  Kind kind = Kind::kMessage;
  MessageType type = MessageType::kBinary;
  std::string data;
  uint16_t code = 0;

  bool operator==(const Event& other) const {
    return kind == other.kind && type == other.type && data == other.data && code == other.code;
  }
};
std::ostream& operator<<(std::ostream& os, const Event& e);

Event message(MessageType type, std::string data);
Event ping(std::string data);
Event pong(std::string data);
Event closeEvent(uint16_t code, std::string reason);

class RecordingCallbacks : public CodecCallbacks {
 public:
  void onMessage(MessageType type, Buffer& payload) override;
  void onPing(std::string_view payload) override;
  void onPong(std::string_view payload) override;
  void onClose(uint16_t code, std::string_view reason) override;

  std::vector<Event> events;
  // Runs after each message is recorded (e.g. to send a reply).
  std::function<void(MessageType, const std::string&)> on_message;
};

// mt19937-driven bytes; fill() fails while `fail` is set.
class FakeRandom : public RandomSource {
 public:
  explicit FakeRandom(uint32_t seed = 1) : engine_(seed) {}
  bool fill(void* out, size_t len) override;
  bool fail = false;
  // Every byte handed out, in order.
  std::string produced;

 private:
  std::mt19937 engine_;
};

struct FeedMode {
  enum class Kind { kWhole, kByteByByte, kRandomChunks };
  Kind kind = Kind::kWhole;
  uint32_t seed = 0;
};
std::ostream& operator<<(std::ostream& os, const FeedMode& mode);
std::string feedModeName(const FeedMode& mode);

// The modes every decode test runs under.
std::vector<FeedMode> allFeedModes();

// Appends `bytes` to `input` piece by piece per `mode`, calling
// codec.dispatch(input) after each piece; stops at the first error and
// returns it. `input` keeps what the codec left in it.
absl::Status feed(Codec& codec, Buffer& input, std::string_view bytes, const FeedMode& mode);

// Moves everything in `from.output()` into `to` per `mode` (chunked the same
// way) and dispatches it.
absl::Status pump(Codec& from, Codec& to, Buffer& to_input, const FeedMode& mode);

}  // namespace crisp::websocket::testing
