#include "source/common/dispatcher.h"

#include <event2/thread.h>

#include <cstdlib>

namespace crisp::event {
namespace {

// libevent needs its locking callbacks before the first event_base exists so
// that event_active() may be called from other threads (post()).
void initLibeventThreadsOnce() {
  static const bool done = [] {
    if (evthread_use_pthreads() != 0) {
      std::abort();
    }
    return true;
  }();
  (void)done;
}

}  // namespace

Timer::Timer(Dispatcher& dispatcher, std::function<void()> cb)
    : ev_(evtimer_new(dispatcher.base(), &Timer::onFire, this)), cb_(std::move(cb)) {
  if (ev_ == nullptr) {
    std::abort();
  }
}

Timer::~Timer() { event_free(ev_); }

void Timer::enable(std::chrono::milliseconds after) {
  const auto ms = after.count() < 0 ? 0 : after.count();
  timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  evtimer_add(ev_, &tv);
}

void Timer::disable() { evtimer_del(ev_); }

bool Timer::enabled() const { return evtimer_pending(ev_, nullptr) != 0; }

void Timer::onFire(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Timer*>(arg);
  self->cb_();
}

FdWatcher::FdWatcher(Dispatcher& dispatcher, int fd, std::function<void(short)> cb)
    : dispatcher_(dispatcher), fd_(fd), cb_(std::move(cb)) {}

FdWatcher::~FdWatcher() {
  if (ev_ != nullptr) {
    event_free(ev_);
  }
}

void FdWatcher::setEnabled(short events) {
  events &= (EV_READ | EV_WRITE);
  if (events == enabled_ && (ev_ != nullptr || events == 0)) {
    return;
  }
  if (ev_ != nullptr) {
    event_free(ev_);
    ev_ = nullptr;
  }
  enabled_ = events;
  if (events != 0) {
    ev_ = event_new(dispatcher_.base(), fd_, events | EV_PERSIST, &FdWatcher::onReady, this);
    if (ev_ == nullptr) {
      std::abort();
    }
    event_add(ev_, nullptr);
  }
}

void FdWatcher::onReady(evutil_socket_t, short what, void* arg) {
  auto* self = static_cast<FdWatcher*>(arg);
  self->cb_(what & (EV_READ | EV_WRITE));
}

Dispatcher::Dispatcher() {
  initLibeventThreadsOnce();
  base_ = event_base_new();
  if (base_ == nullptr) {
    std::abort();
  }
  post_event_ = event_new(base_, -1, 0, &Dispatcher::onPosted, this);
  if (post_event_ == nullptr) {
    std::abort();
  }
}

Dispatcher::~Dispatcher() {
  adopted_.clear();
  to_delete_.clear();
  event_free(post_event_);
  event_base_free(base_);
}

void Dispatcher::run() {
  thread_id_ = std::this_thread::get_id();
  // Keep the loop alive when nothing else is registered, until exit().
  ::event* keepalive = event_new(base_, -1, EV_PERSIST, [](evutil_socket_t, short, void*) {}, nullptr);
  timeval day{86400, 0};
  event_add(keepalive, &day);
  event_base_loop(base_, 0);
  event_free(keepalive);
  runPosted();
  to_delete_.clear();
}

void Dispatcher::exit() { event_base_loopexit(base_, nullptr); }

void Dispatcher::post(std::function<void()> fn) {
  bool first;
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    first = posted_.empty();
    posted_.push_back(std::move(fn));
  }
  if (first) {
    event_active(post_event_, EV_TIMEOUT, 0);
  }
}

bool Dispatcher::isThreadSafe() const {
  return thread_id_ == std::thread::id() || thread_id_ == std::this_thread::get_id();
}

void Dispatcher::deferredDeleteImpl(std::shared_ptr<void> obj) {
  const bool first = to_delete_.empty();
  to_delete_.push_back(std::move(obj));
  if (first) {
    event_active(post_event_, EV_TIMEOUT, 0);
  }
}

void Dispatcher::onPosted(evutil_socket_t, short, void* arg) {
  static_cast<Dispatcher*>(arg)->runPosted();
}

void Dispatcher::runPosted() {
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) {
    fn();
  }
  // Objects deleted here may post or defer more work; loop until quiet.
  while (!to_delete_.empty()) {
    std::vector<std::shared_ptr<void>> doomed;
    doomed.swap(to_delete_);
    doomed.clear();
  }
}

}  // namespace crisp::event
