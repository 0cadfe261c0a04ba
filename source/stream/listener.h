#pragma once

// TCP listening for the stream server and the admin endpoint.
//
// A ListenSocket is bound once, at start-up, on "ip:port" (IPv4, or IPv6 in
// brackets: "[::1]:0"); port 0 picks a free port, and address() tells which.
// A Listener accepts from that socket on one event::Dispatcher and hands every
// new connection to its callback. Several workers share one ListenSocket, each
// with its own Listener on its own dispatcher; the kernel wakes them all and
// the ones that lose the race see EAGAIN.
//
// Accepted sockets are non-blocking, close-on-exec and have TCP_NODELAY set.
// When accept() fails for lack of descriptors or memory (EMFILE, ENFILE,
// ENOBUFS, ENOMEM) the Listener stops watching the socket for
// ListenerOptions::accept_pause and then tries again, instead of waking up in
// a loop on a socket it cannot drain; each pause is counted in
// crisp_listener_accept_pauses_total{listener}.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include <sys/socket.h>

#include "source/common/dispatcher.h"

namespace crisp::stats {
class Counter;
class Registry;
}  // namespace crisp::stats

namespace crisp::stream {

// A parsed "ip:port": numeric IPv4 ("127.0.0.1:10010") or bracketed numeric
// IPv6 ("[::1]:0"). INVALID_ARGUMENT names what is wrong otherwise.
absl::StatusOr<sockaddr_storage> parseListenAddress(std::string_view address);

// "127.0.0.1:80" or "[::1]:80"; "unknown" for families other than IPv4/IPv6.
std::string formatSocketAddress(const sockaddr* address);

struct ListenSocketOptions {
  int backlog = 1024;
};

// A bound and listening socket; closes it when destroyed. Immutable after
// bind(), so any thread may read it.
class ListenSocket {
 public:
  // Binds and listens. INVALID_ARGUMENT for a bad address, UNAVAILABLE (with
  // the errno text) when socket(), bind() or listen() fail.
  static absl::StatusOr<std::unique_ptr<ListenSocket>> bind(
      std::string_view address, const ListenSocketOptions& options = {});

  ~ListenSocket();
  ListenSocket(const ListenSocket&) = delete;
  ListenSocket& operator=(const ListenSocket&) = delete;

  int fd() const { return fd_; }
  // The bound address with the real port, e.g. "127.0.0.1:43127".
  const std::string& address() const { return address_; }
  uint16_t port() const { return port_; }

 private:
  ListenSocket(int fd, std::string address, uint16_t port)
      : fd_(fd), address_(std::move(address)), port_(port) {}

  const int fd_;
  const std::string address_;
  const uint16_t port_;
};

struct ListenerOptions {
  // Name used in log lines and as the metric label ("stream", "admin").
  std::string name = "stream";
  // How long to stop accepting after running out of descriptors or memory.
  std::chrono::milliseconds accept_pause{100};
  // Connections accepted per wake-up before the loop serves other events.
  int max_accepts_per_wakeup = 64;
  // Where the metrics go; null = stats::registry(). Must outlive the listener.
  stats::Registry* registry = nullptr;
};

// Accepts connections from a ListenSocket on one dispatcher. Create, use and
// destroy it on the dispatcher's thread; destroying it stops accepting.
class Listener {
 public:
  // Receives an accepted socket (ownership passes to the callee) and the
  // peer's "ip:port".
  using AcceptCallback = std::function<void(int fd, std::string peer)>;

  // `socket` must outlive the listener. Starts accepting at once.
  Listener(event::Dispatcher& dispatcher, const ListenSocket& socket, AcceptCallback on_accept,
           ListenerOptions options = {});
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // True while accepting is paused after EMFILE and the like.
  bool paused() const { return paused_; }

 private:
  void onReadable();
  void pause();
  void resume();

  const ListenSocket& socket_;
  AcceptCallback on_accept_;
  const ListenerOptions options_;
  stats::Counter& pauses_;
  event::FdWatcher watcher_;
  event::Timer resume_timer_;
  bool paused_ = false;
};

}  // namespace crisp::stream
