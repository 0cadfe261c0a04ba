#pragma once

// Dispatcher: one libevent loop, owned by one thread. Every connection, session
// and process watcher lives on exactly one dispatcher from creation to close.
// The only thread-safe entry points are post() and exit(); everything else must
// be called on the loop's own thread.

#include <event2/event.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace crisp::event {

class Dispatcher;

// A one-shot, re-armable timer bound to a dispatcher. Destroying it cancels it.
class Timer {
 public:
  Timer(Dispatcher& dispatcher, std::function<void()> cb);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void enable(std::chrono::milliseconds after);
  void disable();
  bool enabled() const;

 private:
  static void onFire(evutil_socket_t, short, void* arg);

  ::event* ev_;
  std::function<void()> cb_;
};
using TimerPtr = std::unique_ptr<Timer>;

// Watches a file descriptor for readability and/or writability. Level-triggered
// and persistent until disabled or destroyed. It never closes the descriptor.
class FdWatcher {
 public:
  enum Events : short { kRead = EV_READ, kWrite = EV_WRITE };

  // `cb` receives the ready events (a mask of kRead and kWrite).
  FdWatcher(Dispatcher& dispatcher, int fd, std::function<void(short)> cb);
  ~FdWatcher();
  FdWatcher(const FdWatcher&) = delete;
  FdWatcher& operator=(const FdWatcher&) = delete;

  // Sets the events of interest; 0 stops watching.
  void setEnabled(short events);
  short enabledEvents() const { return enabled_; }
  int fd() const { return fd_; }

 private:
  static void onReady(evutil_socket_t, short what, void* arg);

  Dispatcher& dispatcher_;
  int fd_;
  std::function<void(short)> cb_;
  ::event* ev_ = nullptr;
  short enabled_ = 0;
};
using FdWatcherPtr = std::unique_ptr<FdWatcher>;

class Dispatcher {
 public:
  Dispatcher();
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Runs the loop on the calling thread until exit() is called.
  void run();
  // Thread-safe. Makes run() return after the current iteration.
  void exit();
  // Thread-safe. Runs `fn` on the loop's thread, in posting order.
  void post(std::function<void()> fn);
  // Destroys `obj` on a later iteration of the loop, so that an object may
  // close itself from inside one of its own callbacks.
  template <class T>
  void deferredDelete(std::unique_ptr<T> obj) {
    deferredDeleteImpl(std::shared_ptr<void>(std::move(obj)));
  }

  // Keeps `obj` until disown() hands it back or the dispatcher is destroyed
  // (before its loop is), for objects that wait for an event that may never
  // come once the loop stops. Loop thread only.
  template <class T>
  T* adopt(std::unique_ptr<T> obj) {
    T* raw = obj.get();
    adopted_.emplace(raw, std::shared_ptr<void>(std::move(obj)));
    return raw;
  }
  // Gives up an adopted object: it is destroyed on a later iteration.
  void disownAndDelete(const void* obj) {
    auto it = adopted_.find(obj);
    if (it != adopted_.end()) {
      deferredDeleteImpl(std::move(it->second));
      adopted_.erase(it);
    }
  }

  // True when the caller runs on the loop's thread (or the loop has not started).
  bool isThreadSafe() const;

  event_base* base() { return base_; }

 private:
  static void onPosted(evutil_socket_t, short, void* arg);
  void deferredDeleteImpl(std::shared_ptr<void> obj);
  void runPosted();

  event_base* base_;
  ::event* post_event_;
  std::mutex post_mutex_;
  std::deque<std::function<void()>> posted_;
  std::vector<std::shared_ptr<void>> to_delete_;
  std::unordered_map<const void*, std::shared_ptr<void>> adopted_;
  std::thread::id thread_id_;
};

}  // namespace crisp::event
