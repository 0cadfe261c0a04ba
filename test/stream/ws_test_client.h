#pragma once

// WsTestClient: a blocking WebSocket client for tests, built on
// websocket::Codec in client role (every frame masked). It plays a
// Kubernetes WebSocket client against a server on the other end of a socket:
// sends channel messages in the binary or base64 framing, v5 CLOSE signals,
// pings, close frames, or raw bytes (unmasked or malformed frames built with
// rawFrame()), and records everything the server sends, in wire order.
//
// The codec answers the server's pings and close frame by itself; the
// replies are written as they arise (setAutoReply(false) holds them back, to
// play a client that never answers a close).
//
// All waits are bounded: waitFor() reads until a condition holds, EOF, or the
// timeout. While a send blocks on a full socket, the client also reads (unless
// setReadWhileWriting(false)), so a server that writes while it reads cannot
// deadlock a test.
//
// Not thread-safe; use from the test's thread only.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "source/codec/websocket/channel.h"
#include "source/codec/websocket/ws_codec.h"
#include "source/common/buffer.h"
#include "test/stream/socket_test_client.h"
#include "source/common/time.h"

namespace crisp::stream::testing {

// The bytes of one frame: `masked` with a fixed key as a client must, or not
// as a client must not. `length_override` is written as the 64-bit length
// instead of the payload's (for frames that announce more than they carry).
std::string rawFrame(uint8_t opcode, std::string_view payload, bool masked = true, bool fin = true,
                     std::optional<uint64_t> length_override = std::nullopt);

class WsTestClient : public SocketTestClient, private websocket::CodecCallbacks {
 public:
  // What the server sent, in order.
  struct Event {
    enum class Kind { kMessage, kPing, kPong, kClose };
    Kind kind = Kind::kMessage;
    websocket::MessageType type = websocket::MessageType::kBinary;
    // kMessage: the channel (-1 for an empty message or one that did not
    // decode) and the decoded payload. kPing/kPong: the payload.
    int channel = -1;
    std::string data;
    // kClose: the code (kCloseNoStatus when none) and reason.
    uint16_t code = 0;
  };

  // Takes ownership of `fd` (made non-blocking). `framing` decides how
  // sendChannel() encodes and how received messages are decoded.
  explicit WsTestClient(int fd,
                        websocket::ChannelFraming framing = websocket::ChannelFraming::kBinary);
  WsTestClient(const WsTestClient&) = delete;
  WsTestClient& operator=(const WsTestClient&) = delete;

  // Sending. Each call writes at once (blocking up to the send timeout) unless
  // cork() is active; uncork() then writes everything in one go. A false
  // return means the bytes could not be written (error() says why).
  bool send(websocket::MessageType type, std::string_view payload);
  // One message on `channel` in the client's framing.
  bool sendChannel(uint8_t channel, std::string_view payload);
  // The v5 CLOSE signal [0xFF, channel] (binary).
  bool sendStreamClose(uint8_t channel);
  bool ping(std::string_view payload);
  bool close(uint16_t code = websocket::kCloseNormal, std::string_view reason = {});

  void setAutoReply(bool on) { auto_reply_ = on; }



  const std::vector<Event>& events() const { return events_; }
  // Every decoded payload byte received on `channel`, in order.
  std::string channelData(int channel) const;
  // Messages received on `channel` (empty ones included).
  size_t channelMessages(int channel) const;
  // Index in events() of the first / last event matching `pred`.
  std::optional<size_t> find(const std::function<bool(const Event&)>& pred) const;
  std::optional<size_t> findLast(const std::function<bool(const Event&)>& pred) const;
  size_t count(Event::Kind kind) const;

  bool closeReceived() const { return close_.has_value(); }
  // The server's close frame: code (kCloseNoStatus when none) and reason.
  std::optional<uint16_t> closeCode() const;
  std::string closeReason() const;

 private:
  void decode() override;
  // websocket::CodecCallbacks
  void onMessage(websocket::MessageType type, Buffer& payload) override;
  void onPing(std::string_view payload) override;
  void onPong(std::string_view payload) override;
  void onClose(uint16_t code, std::string_view reason) override;

  // Queues the codec's own frames (pongs, close replies) and tries to write
  // them without blocking.
  void takeReplies();

  const websocket::ChannelFraming framing_;
  SystemRandomSource random_;
  std::unique_ptr<websocket::Codec> codec_;
  bool auto_reply_ = true;
  std::vector<Event> events_;
  std::map<int, std::string> channel_data_;
  std::map<int, size_t> channel_messages_;
  std::optional<std::pair<uint16_t, std::string>> close_;
};

}  // namespace crisp::stream::testing
