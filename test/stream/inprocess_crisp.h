#pragma once

// InProcessCrisp: crisp assembled as in production (exe::Server: embedded
// runtime, CRI front, stream server) and run on a thread of the calling
// process, with one container "box" (main process `cat`, stdin open) and its
// CRI socket in a fresh directory under /tmp. The CRI calls hand out stream
// URLs exactly as kubelet receives them.
//
//   InProcessCrisp crisp({.listen = "[::1]:0", .tls = true});
//   if (!crisp.status().ok()) { ... }
//   StreamUrl url = parseStreamUrl(crisp.exec({"echo", "hi"}).value());

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/exe/server.h"

#include "test/stream/tls_test_util.h"

namespace crisp::stream::testing {

struct InProcessCrispOptions {
  std::string listen = "127.0.0.1:0";
  bool tls = false;  // a certificate for 127.0.0.1 and ::1 from a test CA
  uint32_t max_concurrent_streams = 250;
  uint32_t max_header_bytes = 4096;
  std::chrono::milliseconds header_timeout{10000};
};

// A stream URL split for a client.
struct StreamUrl {
  std::string scheme;  // "http" or "https"
  std::string host;    // without brackets
  uint16_t port = 0;
  std::string path;
};

StreamUrl parseStreamUrl(const std::string& url);

class InProcessCrisp {
 public:
  explicit InProcessCrisp(const InProcessCrispOptions& options);
  ~InProcessCrisp();
  InProcessCrisp(const InProcessCrisp&) = delete;
  InProcessCrisp& operator=(const InProcessCrisp&) = delete;

  // Whether the server started, and why not.
  const absl::Status& status() const { return status_; }
  const std::string& baseUrl() const { return server_->streamBaseUrl(); }

  // Stream URLs from the CRI calls, for "box".
  absl::StatusOr<std::string> exec(const std::vector<std::string>& cmd, bool stdin = false,
                                   bool stderr = true);
  absl::StatusOr<std::string> attach();
  absl::StatusOr<std::string> portForward(uint16_t port);

 private:
  TempDir dir_;
  TestCa ca_;
  std::string socket_;
  absl::Status status_;
  std::unique_ptr<exe::Server> server_;
  std::thread thread_;
};

}  // namespace crisp::stream::testing
