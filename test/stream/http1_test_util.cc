#include "test/stream/http1_test_util.h"

#include <cerrno>
#include <condition_variable>
#include <mutex>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/stream/listener.h"

namespace crisp::test {
namespace {

using Clock = std::chrono::steady_clock;

// Waits until `fd` is readable or `deadline` passes.
bool waitReadable(int fd, Clock::time_point deadline) {
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return false;
    }
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r > 0) {
      return true;
    }
    if (r < 0 && errno != EINTR) {
      return false;
    }
  }
}

}  // namespace

LoopThread::LoopThread() {
  std::mutex mutex;
  std::condition_variable started;
  bool running = false;
  dispatcher_.post([&] {
    std::lock_guard<std::mutex> lock(mutex);
    running = true;
    started.notify_one();
  });
  thread_ = std::thread([this] { dispatcher_.run(); });
  std::unique_lock<std::mutex> lock(mutex);
  started.wait(lock, [&] { return running; });
}

LoopThread::~LoopThread() {
  dispatcher_.exit();
  thread_.join();
}

void LoopThread::runSync(const std::function<void()>& fn) {
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  dispatcher_.post([&] {
    fn();
    std::lock_guard<std::mutex> lock(mutex);
    done = true;
    done_cv.notify_one();
  });
  std::unique_lock<std::mutex> lock(mutex);
  done_cv.wait(lock, [&] { return done; });
}

int connectTo(const std::string& address) {
  auto parsed = stream::parseListenAddress(address);
  if (!parsed.ok()) {
    return -1;
  }
  const int fd = ::socket(parsed->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  const socklen_t len = parsed->ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  timeval tv{kClientTimeout.count() / 1000, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&*parsed), len) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool sendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

std::optional<std::string> readUntilClose(int fd, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string out;
  char buf[16384];
  while (true) {
    if (!waitReadable(fd, deadline)) {
      return std::nullopt;
    }
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) {
      return out;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return std::nullopt;
    }
    out.append(buf, static_cast<size_t>(n));
  }
}

std::optional<std::string> readExactly(int fd, size_t n) {
  const auto deadline = Clock::now() + kClientTimeout;
  std::string out;
  char buf[16384];
  while (out.size() < n) {
    if (!waitReadable(fd, deadline)) {
      return std::nullopt;
    }
    const ssize_t r = ::read(fd, buf, std::min(sizeof(buf), n - out.size()));
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      return std::nullopt;
    }
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

std::optional<std::string> roundTrip(const std::string& address, std::string_view request) {
  const int fd = connectTo(address);
  if (fd < 0) {
    return std::nullopt;
  }
  std::optional<std::string> out;
  if (sendAll(fd, request)) {
    out = readUntilClose(fd);
  }
  ::close(fd);
  return out;
}

}  // namespace crisp::test
