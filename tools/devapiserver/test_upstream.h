#pragma once

// Test helpers: a one-connection TCP server on 127.0.0.1 port 0 that runs a
// script on the accepted socket in its own thread, and blocking read helpers
// with a deadline so that no test can hang.

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "tools/devapiserver/socket_util.h"

namespace crisp::devapi::testing {

class TestUpstream {
 public:
  // Listens at once; `script` runs on the first accepted connection (the fd is
  // closed after it returns).
  explicit TestUpstream(std::function<void(int fd)> script);
  ~TestUpstream();

  int port() const { return port_; }
  std::string url(const std::string& path) const;

 private:
  UniqueFd listener_;
  int port_ = 0;
  std::thread thread_;
};

// Reads until "\r\n\r\n" and returns the head with it (and any bytes after it
// in `rest`). Empty on EOF or after 5 s.
std::string readHead(int fd, std::string* rest = nullptr);

// Reads until EOF (or 5 s pass) and returns everything.
std::string readToEof(int fd);

// Reads exactly `n` bytes (fewer on EOF or after 5 s).
std::string readExactly(int fd, size_t n);

}  // namespace crisp::devapi::testing
