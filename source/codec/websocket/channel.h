#pragma once

// Kubernetes channel framing on top of WebSocket messages: the remotecommand
// (exec/attach) and legacy port-forward WebSocket protocols.
//
// One WebSocket message carries one channel's bytes:
// - binary protocols ("", channel.k8s.io, v4.channel.k8s.io,
//   v5.channel.k8s.io): a binary message, 1 channel byte, then the payload;
// - base64 protocols (base64.channel.k8s.io, v4.base64.channel.k8s.io): a
//   text message, the ASCII digit '0'+channel, then the payload in standard
//   padded base64 (decoding rules in base64.h). Channel arithmetic is modulo
//   256 both ways, as Go's byte arithmetic is.
// Remotecommand channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize.
// Port-forward: port i has channel 2i (data) and 2i+1 (error).
// v5 only: a binary message of exactly [0xFF, channel] half-closes that
// channel (client to server).
//
// Decoding follows the kubelet's server loop (apimachinery wsstream.Conn):
// an empty message is skipped; under v5 a message starting with 0xFF is a
// CLOSE signal, and a wrong length or an out-of-range channel there ends the
// connection; a data message for a channel the session does not have is
// ignored (not decoded); a base64 payload that does not decode is dropped
// and the connection goes on. The server reads text and binary messages alike
// under every protocol (the kubelet's x/net receive does not look at the
// frame type), which is MessageTypePolicy::kAcceptAny; client-go as a client
// aborts on a text message, which is kRequireProtocolType.
//
// Pure functions, thread-safe.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/codec/websocket/ws_codec.h"
#include "source/common/buffer.h"

namespace crisp::websocket {

enum class ChannelFraming { kBinary, kBase64 };

// Subprotocol names (apimachinery remotecommand and wsstream constants).
inline constexpr std::string_view kChannelV1 = "channel.k8s.io";
inline constexpr std::string_view kChannelV1Base64 = "base64.channel.k8s.io";
inline constexpr std::string_view kChannelV4 = "v4.channel.k8s.io";
inline constexpr std::string_view kChannelV4Base64 = "v4.base64.channel.k8s.io";
inline constexpr std::string_view kChannelV5 = "v5.channel.k8s.io";

inline constexpr uint8_t kChannelStdin = 0;
inline constexpr uint8_t kChannelStdout = 1;
inline constexpr uint8_t kChannelStderr = 2;
inline constexpr uint8_t kChannelError = 3;
inline constexpr uint8_t kChannelResize = 4;
inline constexpr size_t kRemoteCommandChannels = 5;
// First byte of a v5 CLOSE signal.
inline constexpr uint8_t kStreamCloseSignal = 0xFF;
// Port-forward uses two channels per port; channel numbers are one byte.
inline constexpr size_t kMaxPortForwardPorts = 128;

struct ChannelProtocol {
  // The subprotocol as negotiated ("" when the client offered none).
  std::string_view name;
  ChannelFraming framing = ChannelFraming::kBinary;
  // 1 for "", channel.k8s.io and base64.channel.k8s.io; 4; or 5. v4 and v5
  // carry a JSON Status on the error channel.
  int version = 1;
  // v5: [0xFF, channel] is a CLOSE signal.
  bool stream_close = false;
};

// The channel protocol of a negotiated subprotocol, nullopt for a name that
// is not one (e.g. "SPDY/3.1+portforward.k8s.io").
std::optional<ChannelProtocol> channelProtocol(std::string_view subprotocol);

// The WebSocket message type a framing sends: binary, or text for base64.
MessageType channelMessageType(ChannelFraming framing);

// Appends to `out` the body of one message carrying `payload` on `channel`;
// send it as channelMessageType(framing), which is also returned.
MessageType encodeChannelMessage(ChannelFraming framing, uint8_t channel, std::string_view payload,
                                 Buffer& out);
// Same for a Buffer payload, which is drained (moved without copying in
// binary framing).
MessageType encodeChannelMessage(ChannelFraming framing, uint8_t channel, Buffer& payload,
                                 Buffer& out);

// The bodies of the messages a port-forward server sends first, in the
// kubelet's order: for each port i, channel 2i then 2i+1, each carrying the
// port as 2 bytes little-endian (binary [ch, lo, hi]; base64 '0'+ch then the
// base64 of the 2 bytes). InvalidArgument for more than kMaxPortForwardPorts.
absl::StatusOr<std::vector<std::string>> portForwardPrefixMessages(
    ChannelFraming framing, const std::vector<uint16_t>& ports);

enum class MessageTypePolicy {
  // Read both message types under every protocol (the kubelet's server).
  kAcceptAny,
  // Text only under base64 framing, binary only under binary framing (client-go).
  kRequireProtocolType,
};

struct InboundMessage {
  enum class Kind {
    kEmpty,           // nothing to do (skipped, as Kubernetes does)
    kData,            // `payload` for `channel`
    kUnknownChannel,  // `channel` is out of range: ignore (payload not decoded)
    kStreamClose,     // v5 CLOSE signal: end `channel`'s input (repeats are no-ops)
    kMalformed,       // payload did not decode (`error`): drop it and go on
  };
  Kind kind = Kind::kEmpty;
  uint8_t channel = 0;
  Buffer payload;
  std::string error;
};

// Decodes one received message of a session with `channel_count` channels.
// `message` is drained. A non-OK status ends the connection (close 1002 is a
// fitting answer): ws.channel.bad_close_signal (v5: 0xFF message not exactly
// 2 bytes, or a channel >= channel_count), ws.channel.unexpected_text /
// ws.channel.unexpected_binary (kRequireProtocolType only). kMalformed
// carries ws.channel.bad_base64.
absl::StatusOr<InboundMessage> decodeInbound(
    const ChannelProtocol& protocol, MessageType type, Buffer& message, size_t channel_count,
    MessageTypePolicy policy = MessageTypePolicy::kAcceptAny);

// The v5 CLOSE check alone, on a message not yet drained: the channel to
// half-close when `message` is a CLOSE signal under a protocol with
// stream_close; nullopt when it is not one (other protocols never have one:
// there 0xFF is just channel 255); an error as in decodeInbound.
absl::StatusOr<std::optional<uint8_t>> parseStreamClose(const ChannelProtocol& protocol,
                                                        const Buffer& message,
                                                        size_t channel_count);

}  // namespace crisp::websocket
