#include "test/stream/ws_test_client.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/codec/websocket/base64.h"

namespace crisp::stream::testing {
namespace {

using websocket::MessageType;

constexpr uint8_t kMask[4] = {0x5a, 0x13, 0xc7, 0x2e};

}  // namespace

std::string rawFrame(uint8_t opcode, std::string_view payload, bool masked, bool fin,
                     std::optional<uint64_t> length_override) {
  std::string out;
  out.push_back(static_cast<char>((fin ? 0x80 : 0x00) | (opcode & 0x0F)));
  const uint8_t mask_bit = masked ? 0x80 : 0x00;
  const uint64_t len = length_override.value_or(payload.size());
  if (length_override.has_value() || len > 0xFFFF) {
    out.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>((len >> shift) & 0xFF));
    }
  } else if (len >= 126) {
    out.push_back(static_cast<char>(mask_bit | 126));
    out.push_back(static_cast<char>((len >> 8) & 0xFF));
    out.push_back(static_cast<char>(len & 0xFF));
  } else {
    out.push_back(static_cast<char>(mask_bit | len));
  }
  if (masked) {
    out.append(reinterpret_cast<const char*>(kMask), 4);
  }
  for (size_t i = 0; i < payload.size(); ++i) {
    const uint8_t b = static_cast<uint8_t>(payload[i]);
    out.push_back(static_cast<char>(masked ? (b ^ kMask[i % 4]) : b));
  }
  return out;
}

WsTestClient::WsTestClient(int fd, websocket::ChannelFraming framing)
    : SocketTestClient(fd), framing_(framing) {
  websocket::CodecOptions options;
  options.role = websocket::Role::kClient;
  options.random = &random_;
  // The server may send large messages; the client's limit is not under test.
  options.max_message_bytes = uint64_t{1} << 32;
  auto codec = websocket::Codec::create(options, *this);
  if (!codec.ok()) {
    std::fprintf(stderr, "WsTestClient: %s\n", codec.status().ToString().c_str());
    std::abort();
  }
  codec_ = std::move(codec).value();
}

bool WsTestClient::send(MessageType type, std::string_view payload) {
  const absl::Status status = codec_->sendMessage(type, payload);
  if (!status.ok()) {
    error_ = "codec refused the message: " + std::string(status.message());
    return false;
  }
  out_.move(codec_->output());
  return queued();
}

bool WsTestClient::sendChannel(uint8_t channel, std::string_view payload) {
  Buffer body;
  const MessageType type = websocket::encodeChannelMessage(framing_, channel, payload, body);
  return send(type, body.toString());
}

bool WsTestClient::sendStreamClose(uint8_t channel) {
  const char signal_bytes[2] = {static_cast<char>(websocket::kStreamCloseSignal),
                                static_cast<char>(channel)};
  return send(MessageType::kBinary, std::string_view(signal_bytes, 2));
}

bool WsTestClient::ping(std::string_view payload) {
  const absl::Status status = codec_->sendPing(payload);
  if (!status.ok()) {
    error_ = "codec refused the ping: " + std::string(status.message());
    return false;
  }
  out_.move(codec_->output());
  return queued();
}

bool WsTestClient::close(uint16_t code, std::string_view reason) {
  const absl::Status status = codec_->sendClose(code, reason);
  if (!status.ok()) {
    error_ = "codec refused the close: " + std::string(status.message());
    return false;
  }
  out_.move(codec_->output());
  return queued();
}






void WsTestClient::decode() {
  if (decode_failed_) {
    in_.drain(in_.length());
    return;
  }
  const absl::Status status = codec_->dispatch(in_);
  if (!status.ok()) {
    decode_failed_ = true;
    error_ = "server sent bad WebSocket framing: " + std::string(status.message());
    in_.drain(in_.length());
  }
  takeReplies();
}

void WsTestClient::takeReplies() {
  if (codec_->output().empty()) {
    return;
  }
  if (!auto_reply_) {
    codec_->output().drain(codec_->output().length());
    return;
  }
  out_.move(codec_->output());
  if (corked_ || fd_ < 0) {
    return;
  }
  // Without blocking: the rest goes with the next send.
  while (!out_.empty()) {
    const int n = out_.writeTo(fd_);
    if (n <= 0) {
      break;
    }
  }
}






std::string WsTestClient::channelData(int channel) const {
  auto it = channel_data_.find(channel);
  return it == channel_data_.end() ? std::string() : it->second;
}

size_t WsTestClient::channelMessages(int channel) const {
  auto it = channel_messages_.find(channel);
  return it == channel_messages_.end() ? 0 : it->second;
}

std::optional<size_t> WsTestClient::find(const std::function<bool(const Event&)>& pred) const {
  for (size_t i = 0; i < events_.size(); ++i) {
    if (pred(events_[i])) {
      return i;
    }
  }
  return std::nullopt;
}

std::optional<size_t> WsTestClient::findLast(const std::function<bool(const Event&)>& pred) const {
  for (size_t i = events_.size(); i > 0; --i) {
    if (pred(events_[i - 1])) {
      return i - 1;
    }
  }
  return std::nullopt;
}

size_t WsTestClient::count(Event::Kind kind) const {
  size_t n = 0;
  for (const auto& e : events_) {
    if (e.kind == kind) {
      ++n;
    }
  }
  return n;
}

std::optional<uint16_t> WsTestClient::closeCode() const {
  if (!close_.has_value()) {
    return std::nullopt;
  }
  return close_->first;
}

std::string WsTestClient::closeReason() const { return close_ ? close_->second : std::string(); }

void WsTestClient::onMessage(MessageType type, Buffer& payload) {
  Event e;
  e.kind = Event::Kind::kMessage;
  e.type = type;
  std::string body = payload.toString();
  if (!body.empty()) {
    const uint8_t first = static_cast<uint8_t>(body[0]);
    if (framing_ == websocket::ChannelFraming::kBase64) {
      auto decoded = websocket::base64Decode(std::string_view(body).substr(1));
      if (decoded.ok()) {
        e.channel = static_cast<uint8_t>(first - '0');
        e.data = std::move(decoded).value();
      }
    } else {
      e.channel = first;
      e.data = body.substr(1);
    }
  }
  if (e.channel >= 0) {
    channel_data_[e.channel] += e.data;
    ++channel_messages_[e.channel];
  }
  events_.push_back(std::move(e));
}

void WsTestClient::onPing(std::string_view payload) {
  Event e;
  e.kind = Event::Kind::kPing;
  e.data = std::string(payload);
  events_.push_back(std::move(e));
}

void WsTestClient::onPong(std::string_view payload) {
  Event e;
  e.kind = Event::Kind::kPong;
  e.data = std::string(payload);
  events_.push_back(std::move(e));
}

void WsTestClient::onClose(uint16_t code, std::string_view reason) {
  Event e;
  e.kind = Event::Kind::kClose;
  e.code = code;
  e.data = std::string(reason);
  events_.push_back(std::move(e));
  close_ = std::make_pair(code, std::string(reason));
}

}  // namespace crisp::stream::testing
