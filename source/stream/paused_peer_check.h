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
#include <string>
#include <utility>

#include "source/common/dispatcher.h"

namespace crisp::stream {

class PausedPeerCheck {
 public:
  // How often an active check looks.
  static constexpr std::chrono::milliseconds kInterval{500};

  // `gone(detail)` runs once the peer of socket `fd` is found gone; `fd`
  // must stay open while the check is active.
  PausedPeerCheck(event::Dispatcher& dispatcher, int fd,
                  std::function<void(const std::string& detail)> gone)
      : fd_(fd),
        gone_(std::move(gone)),
        timer_(std::make_unique<event::Timer>(dispatcher, [this] { check(); })) {}

  // Starts or stops looking.
  void setActive(bool active) {
    if (!active) {
      timer_->disable();
    } else if (!timer_->enabled()) {
      timer_->enable(kInterval);
    }
  }

 private:
  void check() {
    pollfd p{fd_, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
      // May destroy or close the transport: nothing of `this` after.
      gone_("the peer closed the connection while its input was held back");
      return;
    }
    timer_->enable(kInterval);
  }

  const int fd_;
  std::function<void(const std::string&)> gone_;
  event::TimerPtr timer_;
};

}  // namespace crisp::stream
