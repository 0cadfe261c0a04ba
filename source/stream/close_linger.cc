#include "source/stream/close_linger.h"

#include <algorithm>
#include <utility>

namespace crisp::stream {
namespace {

// How often the unacknowledged byte count is looked at.
constexpr std::chrono::milliseconds kPollInterval{50};

}  // namespace

CloseLinger::CloseLinger(event::Dispatcher& dispatcher, std::chrono::milliseconds linger_timeout,
                         std::chrono::milliseconds stall_timeout,
                         std::function<void(size_t)> done)
    : linger_timeout_(linger_timeout),
      stall_timeout_(stall_timeout),
      done_(std::move(done)),
      timer_(std::make_unique<event::Timer>(dispatcher, [this] { check(); })) {}

void CloseLinger::start(const Transport& transport) {
  transport_ = &transport;
  last_unacknowledged_ = transport.unacknowledgedBytes();
  last_progress_ = std::chrono::steady_clock::now();
  all_acknowledged_ = false;
  check();
}

void CloseLinger::cancel() { timer_->disable(); }

void CloseLinger::check() {
  const auto now = std::chrono::steady_clock::now();
  const size_t unacknowledged = transport_->unacknowledgedBytes();
  if (unacknowledged > 0) {
    if (unacknowledged < last_unacknowledged_) {
      last_progress_ = now;
    }
    last_unacknowledged_ = unacknowledged;
    if (now - last_progress_ >= stall_timeout_) {
      done_(unacknowledged);
      return;
    }
    timer_->enable(kPollInterval);
    return;
  }
  if (!all_acknowledged_) {
    all_acknowledged_ = true;
    linger_deadline_ = now + linger_timeout_;
  }
  if (now >= linger_deadline_) {
    done_(0);
    return;
  }
  timer_->enable(std::min<std::chrono::milliseconds>(
      kPollInterval,
      std::chrono::duration_cast<std::chrono::milliseconds>(linger_deadline_ - now) +
          std::chrono::milliseconds(1)));
}

}  // namespace crisp::stream
