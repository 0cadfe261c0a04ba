#pragma once

// WsTunnelBridge: the client half of the SPDY-over-WebSocket tunnel for tests.
// It joins a plain byte socket (where a SpdyTestClient sits) to a WebSocket
// client connection (the server's socket at the other end): bytes read from
// the plain side go out as masked binary messages, and the payload of every
// binary message from the server comes out on the plain side, so a test's
// SPDY client speaks through the tunnel exactly as kubectl 1.31+ does.
//
//   int spdy_end = -1;
//   WsTunnelBridge bridge(server_side_fd_of_client, &spdy_end);
//   SpdyTestClient client(spdy_end);
//
// The relay runs on its own thread with poll(2) and never blocks on one side
// while the other has work. When the plain side ends (the SPDY client closed
// its socket) the bridge sends a close frame (1000) and, once the server
// closed, ends; when the server's side ends, the plain side is shut down
// too. The codec answers the server's pings and close frame. Counters and the
// close code may be read from any thread.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace crisp::stream::testing {

class WsTunnelBridge {
 public:
  // Takes ownership of `websocket_fd` (a connected stream socket to the
  // server) and creates the plain socket pair; `*plain_fd` receives the end
  // the caller owns (for a SpdyTestClient, which takes it over).
  WsTunnelBridge(int websocket_fd, int* plain_fd);
  // Stops the relay thread and closes the bridge's sockets.
  ~WsTunnelBridge();
  WsTunnelBridge(const WsTunnelBridge&) = delete;
  WsTunnelBridge& operator=(const WsTunnelBridge&) = delete;

  // Sends a text message to the server (something a tunnel client never does).
  void sendText(const std::string& text);
  // Sends a close frame with `code` now, as a client that ends the tunnel.
  void sendClose(uint16_t code);
  // Drops the WebSocket connection without a close frame.
  void dropConnection();

  // Binary and text messages received from the server so far.
  uint64_t binaryMessages() const { return binary_messages_.load(); }
  uint64_t textMessages() const { return text_messages_.load(); }
  // Payload bytes received in binary messages.
  uint64_t bytesFromServer() const { return bytes_from_server_.load(); }
  // The server's close code; 0 before one arrived.
  uint16_t closeCode() const { return close_code_.load(); }
  // The server closed the WebSocket's socket.
  bool serverEof() const { return server_eof_.load(); }
  // Set when the server's framing was bad.
  std::string error() const;

 private:
  struct Command {
    enum class Kind { kText, kClose, kDrop } kind = Kind::kText;
    std::string text;
    uint16_t code = 0;
  };

  void run();
  void post(Command command);

  int ws_fd_ = -1;
  int plain_fd_ = -1;  // the bridge's end of the plain pair
  int wake_[2] = {-1, -1};
  std::thread thread_;

  mutable std::mutex mutex_;
  std::vector<Command> commands_;
  std::string error_;

  std::atomic<uint64_t> binary_messages_{0};
  std::atomic<uint64_t> text_messages_{0};
  std::atomic<uint64_t> bytes_from_server_{0};
  std::atomic<uint16_t> close_code_{0};
  std::atomic<bool> server_eof_{false};
  std::atomic<bool> stop_{false};
};

}  // namespace crisp::stream::testing
