#include "source/stream/close_linger.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <utility>

namespace crisp::stream {
namespace {

// How often the queued and unacknowledged byte counts are looked at.
constexpr std::chrono::milliseconds kPollInterval{50};

std::atomic<int64_t> last_close_progress{0};

}  // namespace

std::chrono::steady_clock::time_point lastCloseProgress() {
  return std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(last_close_progress.load(std::memory_order_relaxed)));
}

void noteCloseProgress() {
  last_close_progress.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                            std::memory_order_relaxed);
}

CloseLinger::CloseLinger(event::Dispatcher& dispatcher, std::chrono::milliseconds linger_timeout,
                         std::chrono::milliseconds stall_timeout, std::chrono::milliseconds limit,
                         std::function<void(size_t)> done)
    : linger_timeout_(linger_timeout),
      stall_timeout_(stall_timeout),
      limit_(limit),
      done_(std::move(done)),
      timer_(std::make_unique<event::Timer>(dispatcher, [this] { check(); })) {}

size_t CloseLinger::pending() const {
  return transport_->queuedBytes() + transport_->unacknowledgedBytes();
}

void CloseLinger::start(const Transport& transport) {
  transport_ = &transport;
  last_pending_ = pending();
  started_ = std::chrono::steady_clock::now();
  last_taken_ = started_;
  last_progress_ = started_;
  check();
}

void CloseLinger::noteProgress() {
  if (active()) {
    last_progress_ = std::chrono::steady_clock::now();
    noteCloseProgress();
  }
}

void CloseLinger::cancel() { timer_->disable(); }

void CloseLinger::check() {
  const auto now = std::chrono::steady_clock::now();
  const size_t left = pending();
  if (left < last_pending_) {
    last_taken_ = now;
    last_progress_ = now;
    noteCloseProgress();
  }
  last_pending_ = left;
  // Bytes on their way: the reader must keep taking them. All taken: the
  // peer has until linger_timeout after its last sign of life to close.
  const auto deadline = std::min(
      left > 0 ? last_taken_ + stall_timeout_ : last_progress_ + linger_timeout_,
      started_ + limit_);
  if (now >= deadline) {
    timer_->disable();
    done_(left);
    return;
  }
  timer_->enable(std::min<std::chrono::milliseconds>(
      kPollInterval, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
                         std::chrono::milliseconds(1)));
}

}  // namespace crisp::stream
