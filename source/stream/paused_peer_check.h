#pragma once

// PausedPeerCheck: while a socket transport does not read (its owner paused
// it), notices that the peer closed its side or reset the connection, which
// the unread input ahead of it would otherwise hide until reading resumes.
//
// A timer rather than an event: epoll cannot watch for the close alone
// (libevent reports a reset as readable and writable, never as a close, so a
// watcher for the close would spin while input waits), and poll() with
// POLLRDHUP tells without reading. Once the peer is gone, `gone` runs; the
// check is then inactive until setActive(true) again.
//
// Threading: the dispatcher's thread only.

#include <poll.h>

#include <chrono>
#include <functional>
#include <memory>
#include <utility>

#include "source/common/dispatcher.h"

namespace crisp::stream {

class PausedPeerCheck {
 public:
  // How often an active check looks.
  static constexpr std::chrono::milliseconds kInterval{500};

  PausedPeerCheck(event::Dispatcher& dispatcher, std::function<void()> gone)
      : gone_(std::move(gone)),
        timer_(std::make_unique<event::Timer>(dispatcher, [this] { check(); })) {}

  // Starts (with the socket to look at) or stops looking.
  void setActive(bool active, int fd) {
    fd_ = fd;
    if (!active) {
      timer_->disable();
    } else if (!timer_->enabled()) {
      timer_->enable(kInterval);
    }
  }

  // Whether the peer of socket `fd` closed its side or reset the connection.
  static bool peerClosed(int fd) {
    pollfd p{fd, POLLRDHUP, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }

 private:
  void check() {
    if (fd_ < 0) {
      return;
    }
    if (peerClosed(fd_)) {
      gone_();  // may destroy or close the transport: nothing of `this` after
      return;
    }
    timer_->enable(kInterval);
  }

  std::function<void()> gone_;
  event::TimerPtr timer_;
  int fd_ = -1;
};

}  // namespace crisp::stream
