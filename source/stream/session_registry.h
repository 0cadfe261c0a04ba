#pragma once

// SessionRegistry<Session>: owns the live sessions of an upgrade handler, one
// set per dispatcher, so that a handler shared by every worker loop keeps each
// loop's sessions apart. A Session needs a close() method that starts its end;
// when it is done it calls the callback from makeDoneCallback(), which frees it
// on a later loop iteration (never inside its own callback).
//
// Only the per-dispatcher lookup takes a lock; everything else runs on the
// dispatcher's own thread. Destroy the registry after its loops stopped.

#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "source/common/dispatcher.h"

namespace crisp::stream {

template <class Session>
class SessionRegistry {
 public:
  using DoneCallback = std::function<void(Session&)>;

  // The callback a session calls once it has ended. Call on `dispatcher`'s thread.
  DoneCallback makeDoneCallback(event::Dispatcher& dispatcher) {
    SessionMap& sessions = sessionsOf(dispatcher);
    return [&dispatcher, &sessions](Session& done) {
      auto it = sessions.find(&done);
      if (it != sessions.end()) {
        dispatcher.deferredDelete(std::move(it->second));
        sessions.erase(it);
      }
    };
  }

  // Takes ownership of a session of `dispatcher` and returns it.
  Session& add(event::Dispatcher& dispatcher, std::unique_ptr<Session> session) {
    Session* raw = session.get();
    sessionsOf(dispatcher).emplace(raw, std::move(session));
    return *raw;
  }

  // Sessions alive on `dispatcher`. Call on that dispatcher's thread.
  size_t count(event::Dispatcher& dispatcher) { return sessionsOf(dispatcher).size(); }

  // Starts the end of every session of `dispatcher`. Call on its thread.
  void closeAll(event::Dispatcher& dispatcher) {
    forEach(dispatcher, [](Session& s) { s.close(); });
  }

  // Calls `fn` on every session of `dispatcher` that is still there when its
  // turn comes (`fn` may end a session, or another, at once). Call on its thread.
  void forEach(event::Dispatcher& dispatcher, const std::function<void(Session&)>& fn) {
    SessionMap& sessions = sessionsOf(dispatcher);
    std::vector<Session*> all;
    all.reserve(sessions.size());
    for (auto& entry : sessions) {
      all.push_back(entry.first);
    }
    for (Session* s : all) {
      if (sessions.count(s) != 0) {
        fn(*s);
      }
    }
  }

 private:
  using SessionMap = std::unordered_map<Session*, std::unique_ptr<Session>>;

  SessionMap& sessionsOf(event::Dispatcher& dispatcher) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = loops_[&dispatcher];
    if (slot == nullptr) {
      slot = std::make_unique<SessionMap>();
    }
    return *slot;
  }

  std::mutex mutex_;
  std::unordered_map<event::Dispatcher*, std::unique_ptr<SessionMap>> loops_;
};

}  // namespace crisp::stream
