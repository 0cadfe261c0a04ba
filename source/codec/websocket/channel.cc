#include "source/codec/websocket/channel.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

#include "source/codec/websocket/base64.h"

namespace crisp::websocket {
namespace {

constexpr uint8_t kBase64ChannelOffset = '0';

uint8_t channelByte(ChannelFraming framing, uint8_t channel) {
  return framing == ChannelFraming::kBase64 ? static_cast<uint8_t>(channel + kBase64ChannelOffset)
                                            : channel;
}

}  // namespace

std::optional<ChannelProtocol> channelProtocol(std::string_view subprotocol) {
  if (subprotocol.empty() || subprotocol == kChannelV1) {
    return ChannelProtocol{subprotocol, ChannelFraming::kBinary, 1, false};
  }
  if (subprotocol == kChannelV1Base64) {
    return ChannelProtocol{subprotocol, ChannelFraming::kBase64, 1, false};
  }
  if (subprotocol == kChannelV4) {
    return ChannelProtocol{subprotocol, ChannelFraming::kBinary, 4, false};
  }
  if (subprotocol == kChannelV4Base64) {
    return ChannelProtocol{subprotocol, ChannelFraming::kBase64, 4, false};
  }
  if (subprotocol == kChannelV5) {
    return ChannelProtocol{subprotocol, ChannelFraming::kBinary, 5, true};
  }
  return std::nullopt;
}

MessageType channelMessageType(ChannelFraming framing) {
  return framing == ChannelFraming::kBase64 ? MessageType::kText : MessageType::kBinary;
}

MessageType encodeChannelMessage(ChannelFraming framing, uint8_t channel, std::string_view payload,
                                 Buffer& out) {
  out.addUint8(channelByte(framing, channel));
  if (framing == ChannelFraming::kBase64) {
    base64EncodeTo(payload, out);
  } else {
    out.add(payload);
  }
  return channelMessageType(framing);
}

MessageType encodeChannelMessage(ChannelFraming framing, uint8_t channel, Buffer& payload,
                                 Buffer& out) {
  if (framing == ChannelFraming::kBinary) {
    out.addUint8(channel);
    out.move(payload);
    return MessageType::kBinary;
  }
  const size_t len = payload.length();
  const uint8_t* data = len == 0 ? nullptr : payload.linearize(len);
  encodeChannelMessage(
      framing, channel,
      len == 0 ? std::string_view() : std::string_view(reinterpret_cast<const char*>(data), len),
      out);
  payload.drain(len);
  return MessageType::kText;
}

absl::StatusOr<std::vector<std::string>> portForwardPrefixMessages(
    ChannelFraming framing, const std::vector<uint16_t>& ports) {
  if (ports.size() > kMaxPortForwardPorts) {
    return absl::InvalidArgumentError(absl::StrCat("ws.channel.too_many_ports: ", ports.size(),
                                                   " ports, at most ", kMaxPortForwardPorts));
  }
  std::vector<std::string> out;
  out.reserve(ports.size() * 2);
  for (size_t i = 0; i < ports.size(); ++i) {
    const char port_le[2] = {static_cast<char>(ports[i] & 0xFF), static_cast<char>(ports[i] >> 8)};
    for (size_t which = 0; which < 2; ++which) {
      Buffer body;
      encodeChannelMessage(framing, static_cast<uint8_t>(2 * i + which),
                           std::string_view(port_le, sizeof(port_le)), body);
      out.push_back(body.toString());
    }
  }
  return out;
}

absl::StatusOr<std::optional<uint8_t>> parseStreamClose(const ChannelProtocol& protocol,
                                                        const Buffer& message,
                                                        size_t channel_count) {
  uint8_t bytes[3];
  const size_t n = message.copyOut(bytes, sizeof(bytes));
  if (!protocol.stream_close || n == 0 || bytes[0] != kStreamCloseSignal) {
    return std::nullopt;
  }
  if (message.length() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("ws.channel.bad_close_signal: ", message.length() - 1,
                     " bytes after the close signal, expected 1"));
  }
  if (bytes[1] >= channel_count) {
    return absl::InvalidArgumentError(absl::StrCat("ws.channel.bad_close_signal: close of channel ",
                                                   bytes[1], ", the session has ", channel_count));
  }
  return std::optional<uint8_t>(bytes[1]);
}

absl::StatusOr<InboundMessage> decodeInbound(const ChannelProtocol& protocol, MessageType type,
                                             Buffer& message, size_t channel_count,
                                             MessageTypePolicy policy) {
  InboundMessage out;
  if (message.empty()) {
    return out;
  }
  absl::StatusOr<std::optional<uint8_t>> close = parseStreamClose(protocol, message, channel_count);
  if (!close.ok()) {
    message.drain(message.length());
    return close.status();
  }
  if (close->has_value()) {
    message.drain(message.length());
    out.kind = InboundMessage::Kind::kStreamClose;
    out.channel = **close;
    return out;
  }
  if (policy == MessageTypePolicy::kRequireProtocolType &&
      type != channelMessageType(protocol.framing)) {
    message.drain(message.length());
    return absl::InvalidArgumentError(type == MessageType::kText
                                          ? "ws.channel.unexpected_text: text message under a "
                                            "binary protocol"
                                          : "ws.channel.unexpected_binary: binary message under "
                                            "a base64 protocol");
  }
  uint8_t first = 0;
  message.copyOut(&first, 1);
  message.drain(1);
  out.channel = protocol.framing == ChannelFraming::kBase64
                    ? static_cast<uint8_t>(first - kBase64ChannelOffset)
                    : first;
  if (out.channel >= channel_count) {
    out.kind = InboundMessage::Kind::kUnknownChannel;
    out.payload.move(message);
    return out;
  }
  if (protocol.framing == ChannelFraming::kBinary) {
    out.kind = InboundMessage::Kind::kData;
    out.payload.move(message);
    return out;
  }
  const size_t len = message.length();
  const std::string_view text =
      len == 0 ? std::string_view()
               : std::string_view(reinterpret_cast<const char*>(message.linearize(len)), len);
  absl::Status decoded = base64DecodeTo(text, out.payload);
  message.drain(len);
  if (!decoded.ok()) {
    out.kind = InboundMessage::Kind::kMalformed;
    out.error = absl::StrCat("ws.channel.bad_base64: ",
                             absl::StripPrefix(decoded.message(), "ws.bad_base64: "));
    return out;
  }
  out.kind = InboundMessage::Kind::kData;
  return out;
}

}  // namespace crisp::websocket
