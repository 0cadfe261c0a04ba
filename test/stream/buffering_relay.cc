#include "test/stream/buffering_relay.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace crisp::stream::testing {
namespace {

using Clock = std::chrono::steady_clock;

void pair(int* ours, int* theirs) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    std::abort();
  }
  *ours = fds[0];
  *theirs = fds[1];
}

}  // namespace

BufferingRelay::BufferingRelay(size_t bytes_per_second) : bytes_per_second_(bytes_per_second) {
  pair(&up_, &server_fd_);
  pair(&down_, &client_fd_);
}

BufferingRelay::~BufferingRelay() {
  stop_ = true;
  if (thread_.joinable()) {
    thread_.join();
  }
  ::close(up_);
  ::close(down_);
  for (int fd : {server_fd_, client_fd_}) {
    if (fd >= 0) {
      ::close(fd);
    }
  }
}

int BufferingRelay::takeServerFd() {
  const int fd = server_fd_;
  server_fd_ = -1;
  return fd;
}

int BufferingRelay::takeClientFd() {
  const int fd = client_fd_;
  client_fd_ = -1;
  return fd;
}

void BufferingRelay::start() { thread_ = std::thread([this] { run(); }); }

void BufferingRelay::run() {
  std::string held;  // from the server, not yet given to the client
  bool server_eof = false;
  bool client_eof = false;
  bool client_shut = false;
  const auto began = Clock::now();
  uint64_t given = 0;
  char chunk[64 * 1024];
  while (!stop_) {
    // What the pace allows to hand over now.
    const double elapsed = std::chrono::duration<double>(Clock::now() - began).count();
    const auto allowed = static_cast<uint64_t>(elapsed * static_cast<double>(bytes_per_second_));
    const size_t budget = allowed > given ? static_cast<size_t>(allowed - given) : 0;
    pollfd fds[2] = {{up_, static_cast<short>(server_eof ? 0 : POLLIN), 0},
                     {down_,
                      static_cast<short>((client_eof ? 0 : POLLIN) |
                                         (!held.empty() && budget > 0 ? POLLOUT : 0)),
                      0}};
    if (::poll(fds, 2, 5) < 0 && errno != EINTR) {
      return;
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      const ssize_t n = ::recv(up_, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n > 0) {
        held.append(chunk, static_cast<size_t>(n));
        from_server_ += static_cast<uint64_t>(n);
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        server_eof = true;
      }
    }
    if ((fds[1].revents & POLLOUT) != 0 && !held.empty()) {
      const size_t len = std::min(held.size(), budget);
      const ssize_t n = ::send(down_, held.data(), len, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        held.erase(0, static_cast<size_t>(n));
        given += static_cast<uint64_t>(n);
        to_client_ += static_cast<uint64_t>(n);
      }
    }
    if (server_eof && held.empty() && !client_shut) {
      ::shutdown(down_, SHUT_WR);
      client_shut = true;
    }
    if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && !client_eof) {
      const ssize_t n = ::recv(down_, chunk, sizeof(chunk), MSG_DONTWAIT);
      if (n > 0) {
        // Small control traffic: written whole, or the server is gone.
        size_t sent = 0;
        while (sent < static_cast<size_t>(n)) {
          const ssize_t w = ::send(up_, chunk + sent, static_cast<size_t>(n) - sent, MSG_NOSIGNAL);
          if (w < 0 && errno == EINTR) {
            continue;
          }
          if (w <= 0) {
            torn_down_ = true;
            ::shutdown(down_, SHUT_RDWR);
            ::shutdown(up_, SHUT_RDWR);
            return;
          }
          sent += static_cast<size_t>(w);
        }
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        client_eof = true;
        ::shutdown(up_, SHUT_WR);
      }
    }
    if (server_eof && client_eof && held.empty()) {
      return;
    }
  }
}

}  // namespace crisp::stream::testing
