#pragma once

// Servers that stand in for applications in a pod, for port-forward tests,
// each on its own thread and event loop, listening on loopback port 0:
//
//   kEcho    sends back every byte; after the client's EOF (and the echo of
//            everything before it) shuts its write side and closes.
//   kReset   accepts and closes at once with SO_LINGER 0: the client gets a
//            TCP RST (an application that resets a connection).
//   kHttp    reads a request head, answers "HTTP/1.0 200 OK" with a short
//            body naming the server, and closes.
//   kSource  sends `source_bytes` bytes of a fixed pattern (patternByte()),
//            then closes; reads and discards what the client sends.
//   kHold    accepts and never reads nor writes until released (release());
//            then behaves like kEcho.
//
// NamespaceThread keeps a fresh network namespace (loopback up) alive on a
// thread of its own, for tests that need a "pod" network; its path is
// /proc/<pid>/task/<tid>/ns/net.
//
// Thread-safe where stated; counters may be read from any thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "source/common/dispatcher.h"

namespace crisp::runtime::testing {

// The byte at offset `k` of a kSource stream.
inline char patternByte(uint64_t k) { return static_cast<char>((k * 131 + 7) % 251); }

class TestPortServer {
 public:
  enum class Mode { kEcho, kReset, kHttp, kSource, kHold };
  enum class Family { kIpv4, kIpv6 };

  // Listens on 127.0.0.1 (or [::1]) port 0, in crisp's network, or inside the
  // namespace of `netns_path` when given. Aborts the test binary when the
  // socket cannot be set up.
  explicit TestPortServer(Mode mode, Family family = Family::kIpv4,
                          const std::string& netns_path = "", uint64_t source_bytes = 0);
  // Stops the loop and closes every socket.
  ~TestPortServer();
  TestPortServer(const TestPortServer&) = delete;
  TestPortServer& operator=(const TestPortServer&) = delete;

  uint16_t port() const { return port_; }

  // Connections accepted so far, and those still open. Thread-safe.
  uint64_t accepted() const { return accepted_.load(); }
  uint64_t open() const { return open_.load(); }
  // Bytes read from clients so far. Thread-safe.
  uint64_t bytesRead() const { return bytes_read_.load(); }
  // kHold: start reading (and echoing) now. Thread-safe.
  void release();

  // Waits (bounded) until `pred` holds, checking every millisecond. Returns
  // pred().
  bool waitUntil(const std::function<bool()>& pred,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  class Conn;

  void onAccept();
  void closeConn(Conn* conn);

  const Mode mode_;
  const uint64_t source_bytes_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  event::Dispatcher dispatcher_;
  std::unique_ptr<event::FdWatcher> accept_watcher_;
  std::thread thread_;
  // Loop thread only.
  std::unordered_map<Conn*, std::unique_ptr<Conn>> conns_;
  bool released_ = false;

  std::atomic<uint64_t> accepted_{0};
  std::atomic<uint64_t> open_{0};
  std::atomic<uint64_t> bytes_read_{0};
};

class NamespaceThread {
 public:
  // Creates the namespace. Check ok() (false when not permitted: not root).
  NamespaceThread();
  // Lets the thread end; the namespace goes away with its last user.
  ~NamespaceThread();
  NamespaceThread(const NamespaceThread&) = delete;
  NamespaceThread& operator=(const NamespaceThread&) = delete;

  bool ok() const { return ok_; }
  // Why the namespace could not be made (when !ok()).
  const std::string& error() const { return error_; }
  // A path that names the namespace while this object lives.
  const std::string& path() const { return path_; }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool ready_ = false;
  bool done_ = false;
  bool ok_ = false;
  std::string error_;
  std::string path_;
  std::thread thread_;
};

}  // namespace crisp::runtime::testing
