#include "test/stream/socket_test_client.h"

#include <cerrno>
#include <csignal>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crisp::stream::testing {
namespace {

using Clock = std::chrono::steady_clock;

int remainingMs(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

SocketTestClient::SocketTestClient(int fd) : fd_(fd) {
  // Writing to a socket the server closed must fail with EPIPE, not kill the test.
  signal(SIGPIPE, SIG_IGN);
  const int flags = fcntl(fd_, F_GETFL, 0);
  fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
}

SocketTestClient::~SocketTestClient() { closeSocket(); }

bool SocketTestClient::raw(std::string_view bytes) {
  out_.add(bytes);
  return queued();
}

bool SocketTestClient::uncork() {
  corked_ = false;
  return flush();
}

std::string SocketTestClient::takeCorked() { return out_.toString(); }

bool SocketTestClient::flush() {
  const auto deadline = Clock::now() + send_timeout_;
  while (!out_.empty()) {
    if (fd_ < 0) {
      error_ = "send on a closed socket";
      return false;
    }
    const int n = out_.writeTo(fd_);
    if (n > 0) {
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      error_ = std::string("send: ") + strerror(errno);
      return false;
    }
    pollfd p{fd_, static_cast<short>(POLLOUT | (read_while_writing_ && !eof_ ? POLLIN : 0)), 0};
    const int left = remainingMs(deadline);
    if (left == 0) {
      error_ = "send timed out";
      return false;
    }
    if (poll(&p, 1, left) < 0 && errno != EINTR) {
      error_ = std::string("poll: ") + strerror(errno);
      return false;
    }
    if ((p.revents & POLLIN) != 0 && read_while_writing_) {
      readAvailable();
    }
    if ((p.revents & (POLLERR | POLLNVAL)) != 0) {
      error_ = "socket error while sending";
      return false;
    }
  }
  return true;
}

bool SocketTestClient::readAvailable() {
  while (fd_ >= 0 && !eof_) {
    const int n = in_.readFrom(fd_, 256 * 1024);
    if (n > 0) {
      decode();
      continue;
    }
    if (n == 0) {
      eof_ = true;
      decode();
      return false;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return true;
    }
    error_ = std::string("read: ") + strerror(errno);
    eof_ = true;
    return false;
  }
  return !eof_;
}

bool SocketTestClient::waitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (fd_ < 0 || eof_) {
      return done();
    }
    pollfd p{fd_, POLLIN, 0};
    const int left = remainingMs(deadline);
    if (left == 0) {
      return done();
    }
    const int r = poll(&p, 1, left);
    if (r < 0 && errno != EINTR) {
      error_ = std::string("poll: ") + strerror(errno);
      return false;
    }
    if (r > 0) {
      readAvailable();
    }
  }
  return true;
}

bool SocketTestClient::waitForEof(std::chrono::milliseconds timeout) {
  return waitFor([this] { return eof_; }, timeout);
}

std::optional<std::string> SocketTestClient::readRawUntil(std::string_view delimiter,
                                                          std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string got;
  while (got.find(delimiter) == std::string::npos) {
    char c;
    const ssize_t n = ::read(fd_, &c, 1);  // one byte at a time: never read past the delimiter
    if (n == 1) {
      got.push_back(c);
      continue;
    }
    if (n == 0) {
      eof_ = true;
      return std::nullopt;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return std::nullopt;
    }
    pollfd p{fd_, POLLIN, 0};
    const int left = remainingMs(deadline);
    if (left == 0 || poll(&p, 1, left) <= 0) {
      return std::nullopt;
    }
  }
  return got;
}

void SocketTestClient::closeSocket() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void SocketTestClient::shutdownWrite() {
  if (fd_ >= 0) {
    ::shutdown(fd_, SHUT_WR);
  }
}

}  // namespace crisp::stream::testing
