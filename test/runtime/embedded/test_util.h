#pragma once

// Helpers for the embedded runtime tests: a recording ExecCallbacks and a
// bounded "run the loop until" that never sleeps.

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/runtime.h"

namespace crisp::runtime::testing {

class RecordingCallbacks : public session::ExecCallbacks {
 public:
  void onStdout(Buffer& data) override {
    output_after_exit = output_after_exit || exit.has_value();
    ++stdout_chunks;
    out += data.toString();
    if (on_stdout) {
      on_stdout();
    }
  }
  void onStderr(Buffer& data) override {
    output_after_exit = output_after_exit || exit.has_value();
    err += data.toString();
  }
  void onExit(const session::ExitStatus& status) override {
    ++exit_calls;
    exit = status;
    if (on_exit) {
      on_exit();
    }
  }
  void onStdinDrained() override {
    ++drained;
    if (on_drained) {
      on_drained();
    }
  }

  std::string out;
  std::string err;
  std::optional<session::ExitStatus> exit;
  int exit_calls = 0;
  int drained = 0;
  int stdout_chunks = 0;
  bool output_after_exit = false;
  std::function<void()> on_stdout;
  std::function<void()> on_exit;
  std::function<void()> on_drained;
};

// Runs `dispatcher` on the calling thread until `done()` holds (checked every
// 2 ms of loop time) or `timeout` passes. Returns done().
inline bool runUntil(event::Dispatcher& dispatcher, const std::function<bool()>& done,
                     std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  if (done()) {
    return true;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  event::Timer* self = nullptr;
  event::Timer poll(dispatcher, [&] {
    if (done() || std::chrono::steady_clock::now() >= deadline) {
      dispatcher.exit();
      return;
    }
    self->enable(std::chrono::milliseconds(2));
  });
  self = &poll;
  poll.enable(std::chrono::milliseconds(2));
  dispatcher.run();
  return done();
}

// Number of open descriptors of this process.
int openFdCount();
// True when /proc/<pid> no longer exists (the process is gone and reaped).
bool processGone(int pid);
// True when the process is gone or a zombie (dead, waiting for its parent).
bool processDead(int pid);
// Lines of `text`, without the newlines.
std::vector<std::string> lines(const std::string& text);

}  // namespace crisp::runtime::testing
