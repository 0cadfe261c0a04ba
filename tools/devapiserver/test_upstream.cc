#include "tools/devapiserver/test_upstream.h"

#include "absl/strings/str_cat.h"
#include <sys/socket.h>

namespace crisp::devapi::testing {
namespace {

constexpr std::chrono::milliseconds kWait{5000};

}  // namespace

TestUpstream::TestUpstream(std::function<void(int fd)> script) {
  std::string bound;
  absl::StatusOr<UniqueFd> fd = listenLoopback("127.0.0.1:0", &bound);
  if (fd.ok()) {
    listener_ = *std::move(fd);
    port_ = std::stoi(bound.substr(bound.rfind(':') + 1));
  }
  const int listen_fd = listener_.get();
  thread_ = std::thread([listen_fd, script = std::move(script)] {
    UniqueFd conn(::accept(listen_fd, nullptr, nullptr));
    if (conn.get() >= 0) {
      script(conn.get());
    }
  });
}

TestUpstream::~TestUpstream() {
  // Wakes a thread still blocked in accept() when the test never connected.
  ::shutdown(listener_.get(), SHUT_RDWR);
  thread_.join();
}

std::string TestUpstream::url(const std::string& path) const {
  return absl::StrCat("http://127.0.0.1:", port_, path);
}

std::string readHead(int fd, std::string* rest) {
  std::string data;
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (data.find("\r\n\r\n") == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return "";
    }
    absl::StatusOr<std::string> chunk = recvSome(fd, 4096, left);
    if (!chunk.ok() || chunk->empty()) {
      return "";
    }
    data += *chunk;
  }
  const size_t end = data.find("\r\n\r\n") + 4;
  if (rest != nullptr) {
    *rest = data.substr(end);
  }
  return data.substr(0, end);
}

std::string readToEof(int fd) {
  std::string data;
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return data;
    }
    absl::StatusOr<std::string> chunk = recvSome(fd, 256 * 1024, left);
    if (!chunk.ok() || chunk->empty()) {
      return data;
    }
    data += *chunk;
  }
}

std::string readExactly(int fd, size_t n) {
  std::string data;
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (data.size() < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return data;
    }
    absl::StatusOr<std::string> chunk = recvSome(fd, n - data.size(), left);
    if (!chunk.ok() || chunk->empty()) {
      return data;
    }
    data += *chunk;
  }
  return data;
}

}  // namespace crisp::devapi::testing
