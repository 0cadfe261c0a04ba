#pragma once

// Test helpers for the HTTP/1.1 front and the admin endpoint: an event loop on
// its own thread, and a blocking loopback client whose every wait is bounded.

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "source/common/dispatcher.h"

namespace crisp::test {

// A Dispatcher running on a background thread. Objects bound to the loop are
// created and destroyed through runSync() so that they live on its thread.
class LoopThread {
 public:
  LoopThread();
  ~LoopThread();

  // Runs `fn` on the loop thread and waits until it has run.
  void runSync(const std::function<void()>& fn);
  event::Dispatcher& dispatcher() { return dispatcher_; }

 private:
  event::Dispatcher dispatcher_;
  std::thread thread_;
};

// The bound timeout of every client wait.
inline constexpr std::chrono::milliseconds kClientTimeout{5000};

// A blocking TCP connection to "ip:port" / "[ip]:port"; -1 on failure.
int connectTo(const std::string& address);

// Writes all of `data`; false on error.
bool sendAll(int fd, std::string_view data);

// Reads until the peer closes. nullopt if `timeout` passes first or the read
// fails (a reset included).
std::optional<std::string> readUntilClose(int fd,
                                          std::chrono::milliseconds timeout = kClientTimeout);

// Reads exactly `n` bytes; nullopt on close, error or timeout.
std::optional<std::string> readExactly(int fd, size_t n);

// Sends `request` on a new connection to `address` and returns everything the
// server wrote before closing; nullopt on a connection error or timeout.
std::optional<std::string> roundTrip(const std::string& address, std::string_view request);

}  // namespace crisp::test
