// Fuzz target for the WebSocket side of the stream server: the RFC 6455
// message codec (websocket::Codec::dispatch()) and the Kubernetes channel
// demultiplexing of every message it delivers (decodeInbound(), which covers
// the base64 channel protocols and the v5 CLOSE signal).
//
// Input layout (test/fuzz/fuzz_input.h): byte 0 options, byte 1 and the chunk
// sizes, then the bytes a peer sent. Options:
//   bit 0       role (0 server: frames must be masked; 1 client)
//   bits 1-3    channel protocol: "", channel.k8s.io, base64.channel.k8s.io,
//               v4.channel.k8s.io, v4.base64.channel.k8s.io, v5.channel.k8s.io
//               (6 and 7 wrap around)
//   bit 4       message type policy: kAcceptAny or kRequireProtocolType
//   bits 5-6    message size limit: 16 MiB, 1, 40 or 1024 bytes
//   bit 7       channel count: 5 (remotecommand) or 2 (one forwarded port)
//
// Properties checked on every input:
//   - no crash, leak or sanitizer report, whatever the bytes;
//   - feeding in chunks gives the same messages, pings, pongs and close, the
//     same status, the same bytes written back (pongs and close) and the same
//     bytes left over (but after ws.invalid_utf8) as feeding the whole input
//     at once;
//   - an error is INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for
//     ws.message_too_big) naming one of the documented reasons, it comes
//     again on the next call, and the codec counts as closed;
//   - no message above the limit is delivered, no text message that is not
//     UTF-8, and nothing after the peer's close;
//   - every message, sent again by a codec of the other role and read by a
//     fresh codec of this role, comes back equal;
//   - decodeInbound: data only for a channel below the channel count; a
//     CLOSE signal only under v5; a base64 payload that decodes, encoded again
//     with encodeChannelMessage and decoded, gives the same channel and bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "source/codec/websocket/channel.h"
#include "source/codec/websocket/ws_codec.h"
#include "source/common/buffer.h"
#include "source/common/time.h"

#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_input.h"

namespace crisp::websocket::fuzz {
namespace {

using crisp::fuzz::SteeredInput;

constexpr std::string_view kProtocols[] = {"",         kChannelV1, kChannelV1Base64,
                                           kChannelV4, kChannelV4Base64, kChannelV5};
constexpr uint64_t kLimits[] = {kDefaultMaxMessageBytes, 1, 40, 1024};

constexpr std::string_view kReasons[] = {
    "ws.unmasked_client_frame", "ws.masked_server_frame",   "ws.reserved_bits",
    "ws.unknown_opcode",        "ws.fragmented_control_frame", "ws.control_frame_too_long",
    "ws.non_minimal_length",    "ws.bad_frame_length",      "ws.unexpected_continuation",
    "ws.expected_continuation", "ws.bad_close_payload",     "ws.bad_close_code",
    "ws.message_too_big",       "ws.invalid_utf8"};

// Masking keys for the client role: a counter, so that two runs write the
// same bytes.
class CountingRandom : public RandomSource {
 public:
  bool fill(void* out, size_t len) override {
    auto* bytes = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < len; ++i) {
      bytes[i] = static_cast<uint8_t>(next_++ * 37 + 11);
    }
    return true;
  }

 private:
  uint32_t next_ = 0;
};

struct Event {
  enum Kind { kMessage, kPing, kPong, kClose } kind = kMessage;
  MessageType type = MessageType::kBinary;
  uint16_t code = 0;
  std::string payload;
  bool operator==(const Event& o) const {
    return kind == o.kind && type == o.type && code == o.code && payload == o.payload;
  }
};

std::string describe(const std::vector<Event>& events) {
  std::string out;
  for (const Event& e : events) {
    absl::StrAppend(&out, "\n    kind=", static_cast<int>(e.kind),
                    " type=", static_cast<int>(e.type), " code=", e.code, " \"",
                    crisp::fuzz::hexEscaped(e.payload.substr(0, 64)), "\" (", e.payload.size(), " bytes)");
  }
  return out;
}

class Recorder : public CodecCallbacks {
 public:
  std::vector<Event> events;
  bool closed = false;

  void onMessage(MessageType type, Buffer& payload) override {
    FUZZ_CHECK(!closed, "a message after the peer's close");
    events.push_back({Event::kMessage, type, 0, payload.toString()});
  }
  void onPing(std::string_view payload) override {
    FUZZ_CHECK(payload.size() <= kMaxControlPayload, "ping payload above 125 bytes");
    events.push_back({Event::kPing, MessageType::kBinary, 0, std::string(payload)});
  }
  void onPong(std::string_view payload) override {
    FUZZ_CHECK(payload.size() <= kMaxControlPayload, "pong payload above 125 bytes");
    events.push_back({Event::kPong, MessageType::kBinary, 0, std::string(payload)});
  }
  void onClose(uint16_t code, std::string_view reason) override {
    FUZZ_CHECK(!closed, "a second close");
    FUZZ_CHECK(code == kCloseNoStatus || isSendableCloseCode(code),
               absl::StrCat("close code ", code, " delivered"));
    FUZZ_CHECK(reason.size() <= kMaxCloseReason, "close reason above 123 bytes");
    closed = true;
    events.push_back({Event::kClose, MessageType::kBinary, code, std::string(reason)});
  }
};

struct Outcome {
  std::vector<Event> events;
  absl::Status status;
  std::string output;
  size_t left = 0;  // bytes fed but not consumed, plus bytes never fed
};

Outcome run(const SteeredInput& in, const std::vector<size_t>& chunks, Role role,
            uint64_t limit) {
  CountingRandom random;
  Recorder recorder;
  CodecOptions options;
  options.role = role;
  options.max_message_bytes = limit;
  options.random = &random;
  absl::StatusOr<std::unique_ptr<Codec>> codec = Codec::create(options, recorder);
  FUZZ_CHECK(codec.ok(), codec.status().ToString());
  Buffer input;
  Outcome out;
  const size_t fed = crisp::fuzz::feedInChunks(in.wire, chunks, [&](std::string_view piece) {
    input.add(piece);
    out.status = (*codec)->dispatch(input);
    return out.status.ok();
  });
  if (!out.status.ok()) {
    const absl::Status again = (*codec)->dispatch(input);
    FUZZ_CHECK(again == out.status, "a second dispatch after " + out.status.ToString() +
                                        " returned " + again.ToString());
    FUZZ_CHECK((*codec)->closed(), "not closed after " + out.status.ToString());
  }
  out.events = std::move(recorder.events);
  out.output = (*codec)->output().toString();
  out.left = input.length() + (in.wire.size() - fed);
  return out;
}

void checkError(const absl::Status& status) {
  if (status.ok()) {
    return;
  }
  if (status.code() == absl::StatusCode::kResourceExhausted) {
    FUZZ_CHECK(absl::StartsWith(status.message(), "ws.message_too_big"), status.ToString());
    return;
  }
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, status.ToString());
  bool known = false;
  for (std::string_view reason : kReasons) {
    known |= absl::StartsWith(status.message(), absl::string_view(reason.data(), reason.size()));
  }
  FUZZ_CHECK(known, "undocumented reason: " + status.ToString());
}

bool isUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) {
        return false;
      }
      cp = (cp << 6) | (cc & 0x3F);
    }
    const uint32_t min = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// Sends every message through a codec of the other role into a fresh one of
// this role, which must deliver them unchanged.
void checkRoundTrip(const std::vector<Event>& events, Role role, uint64_t limit) {
  CountingRandom random;
  Recorder sink;
  CodecOptions sender_options;
  sender_options.role = role == Role::kServer ? Role::kClient : Role::kServer;
  sender_options.random = &random;
  absl::StatusOr<std::unique_ptr<Codec>> sender = Codec::create(sender_options, sink);
  Recorder recorder;
  CodecOptions receiver_options;
  receiver_options.role = role;
  receiver_options.max_message_bytes = limit;
  receiver_options.random = &random;
  absl::StatusOr<std::unique_ptr<Codec>> receiver = Codec::create(receiver_options, recorder);
  FUZZ_CHECK(sender.ok() && receiver.ok(), "codec creation failed");
  std::vector<Event> sent;
  for (const Event& e : events) {
    if (e.kind == Event::kMessage) {
      FUZZ_CHECK((*sender)->sendMessage(e.type, e.payload).ok(), "sendMessage failed");
      sent.push_back(e);
    }
  }
  const absl::Status status = (*receiver)->dispatch((*sender)->output());
  FUZZ_CHECK(status.ok(), "round trip: " + status.ToString());
  FUZZ_CHECK(recorder.events == sent,
             "round trip sent" + describe(sent) + "\n  and got" + describe(recorder.events));
}

void checkChannels(const std::vector<Event>& events, const ChannelProtocol& protocol,
                   MessageTypePolicy policy, size_t channel_count) {
  for (const Event& e : events) {
    if (e.kind != Event::kMessage) {
      continue;
    }
    Buffer message;
    message.add(e.payload);
    absl::StatusOr<InboundMessage> in =
        decodeInbound(protocol, e.type, message, channel_count, policy);
    FUZZ_CHECK(message.empty(), "decodeInbound left bytes in the message");
    if (!in.ok()) {
      FUZZ_CHECK(in.status().code() == absl::StatusCode::kInvalidArgument &&
                     (absl::StartsWith(in.status().message(), "ws.channel.bad_close_signal") ||
                      absl::StartsWith(in.status().message(), "ws.channel.unexpected_")),
                 in.status().ToString());
      FUZZ_CHECK(!absl::StartsWith(in.status().message(), "ws.channel.bad_close_signal") ||
                     protocol.stream_close,
                 "a close signal error outside v5");
      continue;
    }
    switch (in->kind) {
      case InboundMessage::Kind::kEmpty:
        FUZZ_CHECK(e.payload.empty(), "a non-empty message skipped");
        break;
      case InboundMessage::Kind::kStreamClose:
        FUZZ_CHECK(protocol.stream_close, "a close signal outside v5");
        FUZZ_CHECK(in->channel < channel_count && e.payload.size() == 2, "bad close signal");
        break;
      case InboundMessage::Kind::kUnknownChannel:
        FUZZ_CHECK(in->channel >= channel_count, "a known channel reported unknown");
        break;
      case InboundMessage::Kind::kMalformed:
        FUZZ_CHECK(protocol.framing == ChannelFraming::kBase64 && in->payload.empty(),
                   "malformed outside base64, or with a payload");
        break;
      case InboundMessage::Kind::kData: {
        FUZZ_CHECK(in->channel < channel_count, "data for an unknown channel");
        const std::string payload = in->payload.toString();
        Buffer again;
        const MessageType type = encodeChannelMessage(protocol.framing, in->channel, payload, again);
        absl::StatusOr<InboundMessage> back =
            decodeInbound(protocol, type, again, channel_count, policy);
        FUZZ_CHECK(back.ok() && back->kind == InboundMessage::Kind::kData &&
                       back->channel == in->channel && back->payload.toString() == payload,
                   "channel message did not survive encode and decode");
        if (protocol.framing == ChannelFraming::kBinary) {
          FUZZ_CHECK(payload == e.payload.substr(1), "binary payload changed");
        }
        break;
      }
    }
  }
}

}  // namespace
}  // namespace crisp::websocket::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace crisp::websocket;        // NOLINT(google-build-using-namespace)
  using namespace crisp::websocket::fuzz;  // NOLINT(google-build-using-namespace)
  std::optional<crisp::fuzz::SteeredInput> in = crisp::fuzz::splitInput(data, size);
  if (!in) {
    return 0;
  }
  const Role role = (in->options & 1) != 0 ? Role::kClient : Role::kServer;
  const std::optional<ChannelProtocol> protocol =
      channelProtocol(kProtocols[((in->options >> 1) & 7) % 6]);
  FUZZ_CHECK(protocol.has_value(), "a subprotocol without a channel protocol");
  const MessageTypePolicy policy = (in->options & 0x10) != 0
                                       ? MessageTypePolicy::kRequireProtocolType
                                       : MessageTypePolicy::kAcceptAny;
  const uint64_t limit = kLimits[(in->options >> 5) & 3];
  const size_t channel_count = (in->options & 0x80) != 0 ? 2 : kRemoteCommandChannels;

  const Outcome chunked = run(*in, in->chunks, role, limit);
  const Outcome whole = run(*in, {}, role, limit);
  FUZZ_CHECK(chunked.events == whole.events, "chunked feed gave" + describe(chunked.events) +
                                                 "\n  whole feed gave" + describe(whole.events));
  FUZZ_CHECK(chunked.status == whole.status, "chunked feed ended with " +
                                                 chunked.status.ToString() + ", whole feed with " +
                                                 whole.status.ToString());
  FUZZ_CHECK(chunked.output == whole.output,
             absl::StrCat("chunked feed wrote ", chunked.output.size(), " bytes, whole feed ",
                          whole.output.size()));
  // Bytes left say where the bad frame starts, except for ws.invalid_utf8:
  // wslay finds it in bytes it already read ahead, as much as each feed gave.
  FUZZ_CHECK(chunked.left == whole.left ||
                 absl::StartsWith(whole.status.message(), "ws.invalid_utf8"),
             absl::StrCat("chunked feed left ", chunked.left, " bytes, whole feed ", whole.left));
  checkError(whole.status);
  for (const Event& e : whole.events) {
    if (e.kind == Event::kMessage) {
      FUZZ_CHECK(e.payload.size() <= limit, "a message above the limit");
      FUZZ_CHECK(e.type != MessageType::kText || isUtf8(e.payload), "text that is not UTF-8");
    }
  }
  checkRoundTrip(whole.events, role, limit);
  checkChannels(whole.events, *protocol, policy, channel_count);
  return 0;
}
