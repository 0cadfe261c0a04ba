#include "test/stream/ws_tunnel_bridge.h"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/codec/websocket/ws_codec.h"
#include "source/common/buffer.h"
#include "source/common/time.h"

namespace crisp::stream::testing {
namespace {

// Bytes one side may have waiting before the other side is no longer read.
constexpr size_t kMaxPending = 4 * 1024 * 1024;
constexpr int kReadChunk = 64 * 1024;

void setNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// The client side of the WebSocket: binary payloads out to the plain side,
// everything else counted.
class Receiver : public websocket::CodecCallbacks {
 public:
  Receiver(Buffer& to_plain, std::atomic<uint64_t>& binary, std::atomic<uint64_t>& text,
           std::atomic<uint64_t>& bytes, std::atomic<uint16_t>& close_code)
      : to_plain_(to_plain), binary_(binary), text_(text), bytes_(bytes), close_code_(close_code) {}

  void onMessage(websocket::MessageType type, Buffer& payload) override {
    if (type == websocket::MessageType::kBinary) {
      ++binary_;
      bytes_ += payload.length();
      to_plain_.move(payload);
    } else {
      ++text_;
      payload.drain(payload.length());
    }
  }
  void onClose(uint16_t code, std::string_view /*reason*/) override { close_code_ = code; }

 private:
  Buffer& to_plain_;
  std::atomic<uint64_t>& binary_;
  std::atomic<uint64_t>& text_;
  std::atomic<uint64_t>& bytes_;
  std::atomic<uint16_t>& close_code_;
};

}  // namespace

WsTunnelBridge::WsTunnelBridge(int websocket_fd, int* plain_fd) : ws_fd_(websocket_fd) {
  signal(SIGPIPE, SIG_IGN);
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0 || pipe(wake_) != 0) {
    std::fprintf(stderr, "WsTunnelBridge: cannot make sockets\n");
    std::abort();
  }
  *plain_fd = pair[0];
  plain_fd_ = pair[1];
  setNonBlocking(ws_fd_);
  setNonBlocking(plain_fd_);
  setNonBlocking(wake_[0]);
  thread_ = std::thread([this] { run(); });
}

WsTunnelBridge::~WsTunnelBridge() {
  stop_ = true;
  const char c = 's';
  (void)!::write(wake_[1], &c, 1);
  thread_.join();
  for (int fd : {ws_fd_, plain_fd_, wake_[0], wake_[1]}) {
    if (fd >= 0) {
      ::close(fd);
    }
  }
}

void WsTunnelBridge::sendText(const std::string& text) {
  post(Command{Command::Kind::kText, text, 0});
}

void WsTunnelBridge::sendClose(uint16_t code) { post(Command{Command::Kind::kClose, "", code}); }

void WsTunnelBridge::dropConnection() { post(Command{Command::Kind::kDrop, "", 0}); }

std::string WsTunnelBridge::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}

void WsTunnelBridge::post(Command command) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    commands_.push_back(std::move(command));
  }
  const char c = 'c';
  (void)!::write(wake_[1], &c, 1);
}

void WsTunnelBridge::run() {
  SystemRandomSource random;
  Buffer to_ws;
  Buffer to_plain;
  Buffer from_ws;
  Receiver receiver(to_plain, binary_messages_, text_messages_, bytes_from_server_, close_code_);
  websocket::CodecOptions options;
  options.role = websocket::Role::kClient;
  options.random = &random;
  options.max_message_bytes = uint64_t{1} << 32;
  auto created = websocket::Codec::create(options, receiver);
  if (!created.ok()) {
    std::fprintf(stderr, "WsTunnelBridge: %s\n", created.status().ToString().c_str());
    std::abort();
  }
  std::unique_ptr<websocket::Codec> codec = std::move(created).value();
  bool plain_eof = false;
  bool ws_eof = false;
  bool plain_shut = false;
  auto fail = [this](const std::string& why) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (error_.empty()) {
      error_ = why;
    }
  };
  auto dropWs = [&] {
    if (ws_fd_ >= 0) {
      ::close(ws_fd_);
      ws_fd_ = -1;
    }
    ws_eof = true;
    to_ws.drain(to_ws.length());
    server_eof_ = true;
  };

  while (!stop_) {
    std::vector<Command> commands;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      commands.swap(commands_);
    }
    for (Command& command : commands) {
      switch (command.kind) {
        case Command::Kind::kText:
          if (codec->sendMessage(websocket::MessageType::kText, command.text).ok()) {
            to_ws.move(codec->output());
          }
          break;
        case Command::Kind::kClose:
          if (codec->sendClose(command.code).ok()) {
            to_ws.move(codec->output());
          }
          break;
        case Command::Kind::kDrop:
          dropWs();
          break;
      }
    }
    if (ws_eof && to_plain.empty() && !plain_shut && plain_fd_ >= 0) {
      ::shutdown(plain_fd_, SHUT_WR);
      plain_shut = true;
    }

    pollfd fds[3] = {{wake_[0], POLLIN, 0}, {plain_fd_, 0, 0}, {ws_fd_, 0, 0}};
    if (!plain_eof && to_ws.length() < kMaxPending && !ws_eof) {
      fds[1].events |= POLLIN;
    }
    if (!to_plain.empty()) {
      fds[1].events |= POLLOUT;
    }
    if (!ws_eof && to_plain.length() < kMaxPending) {
      fds[2].events |= POLLIN;
    }
    if (!ws_eof && !to_ws.empty()) {
      fds[2].events |= POLLOUT;
    }
    if (ws_fd_ < 0) {
      fds[2].fd = -1;
    }
    if (::poll(fds, 3, 100) < 0 && errno != EINTR) {
      fail("poll failed");
      return;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      char drain[64];
      while (::read(wake_[0], drain, sizeof(drain)) > 0) {
      }
    }
    // Plain side in: each read becomes one binary message.
    if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && (fds[1].events & POLLIN) != 0) {
      Buffer chunk;
      const int n = chunk.readFrom(plain_fd_, kReadChunk);
      if (n > 0) {
        if (codec->sendMessage(websocket::MessageType::kBinary, chunk).ok()) {
          to_ws.move(codec->output());
        }
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        plain_eof = true;
        // The SPDY client is gone: end the tunnel as a client does.
        if (codec->sendClose(websocket::kCloseNormal).ok()) {
          to_ws.move(codec->output());
        }
      }
    }
    // WebSocket in.
    if ((fds[2].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && (fds[2].events & POLLIN) != 0) {
      const int n = from_ws.readFrom(ws_fd_, kReadChunk);
      if (n > 0) {
        const absl::Status status = codec->dispatch(from_ws);
        to_ws.move(codec->output());
        if (!status.ok()) {
          fail(std::string(status.message()));
        }
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        ws_eof = true;
        server_eof_ = true;
      }
    }
    // Out, both ways.
    if (!to_plain.empty() && plain_fd_ >= 0) {
      const int n = to_plain.writeTo(plain_fd_);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        to_plain.drain(to_plain.length());
      }
    }
    if (!to_ws.empty() && ws_fd_ >= 0 && !ws_eof) {
      const int n = to_ws.writeTo(ws_fd_);
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        to_ws.drain(to_ws.length());
      }
    }
  }
}

}  // namespace crisp::stream::testing
