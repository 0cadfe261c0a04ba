#pragma once

// Small blocking-socket helpers shared by the server and the stream proxy.
// All of them retry on EINTR and never raise SIGPIPE.

#include <chrono>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace crisp::devapi {

// Owns a file descriptor and closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  int release();
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Writes all of `data`. Fails with the errno text (peer gone, reset, ...).
absl::Status sendAll(int fd, absl::string_view data);

// Reads what is there, waiting at most `timeout` (negative: forever) for the
// first byte. Returns the bytes read, an empty string at end of stream, or
// DeadlineExceeded / Unavailable.
absl::StatusOr<std::string> recvSome(int fd, size_t max, std::chrono::milliseconds timeout);

// Resolves `host`:`port` and connects a blocking TCP socket with TCP_NODELAY,
// trying each address in turn, each for at most `timeout`.
absl::StatusOr<UniqueFd> connectTcp(const std::string& host, const std::string& port,
                                    std::chrono::milliseconds timeout);

// Binds and listens on a numeric loopback "host:port" ("127.0.0.1:0",
// "[::1]:8080"); fails for any address that is not loopback. On success
// `bound` holds the real address, port included, in the same notation.
absl::StatusOr<UniqueFd> listenLoopback(absl::string_view address, std::string* bound);

}  // namespace crisp::devapi
