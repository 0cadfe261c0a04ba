#pragma once

// A scripted session::Runtime for the remotecommand adapter tests: its
// processes echo stdin, produce a known byte pattern, sort their input, read
// stdin slowly or exit on cue (Script), and record what the adapter did to
// them (Record) for the test's thread to read.
//
// startExec() and the processes run on the session's loop; snapshot() and
// waitUntil() are for the test's thread.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/request.h"
#include "source/session/runtime.h"

namespace crisp::stream::testing {

using session::ExecSpec;
using session::ExitStatus;
using session::TerminalSize;
using std::chrono::milliseconds;

constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

inline uint64_t fnv(uint64_t h, const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h = (h ^ static_cast<uint8_t>(p[i])) * kFnvPrime;
  }
  return h;
}

// The byte the fake process writes at stdout offset `k`.
inline char outputByte(uint64_t k) { return static_cast<char>((k * 131 + 7) % 251); }

// What the fake process does.
struct Script {
  bool echo_stdin = false;  // stdout gets what stdin gets
  // `sort; echo end >&2`: on stdin EOF, the sorted lines on stdout, then
  // "end\n" on stderr, then exit 0.
  bool sort = false;
  std::optional<ExitStatus> exit_on_stdin_eof;  // exit once stdin is closed and consumed
  size_t output_bytes = 0;                      // stdout produced from the start
  size_t output_chunk = 16 * 1024;              // bytes per onStdout() call
  std::optional<ExitStatus> exit_after_output;  // exit once output_bytes are out
  absl::Status start_error;                     // startExec() fails with this
  bool slow_stdin = false;                      // stdin consumed slow_stdin_bytes per millisecond
  size_t slow_stdin_bytes = 64 * 1024;
  // The slow reader takes nothing until this many bytes wait (or stdin is
  // closed): a command busy before it reads, so that the queue reaches the
  // high watermark however slowly the client sends.
  size_t slow_stdin_start_at = 0;
};

// What the fake runtime saw. Guarded by FakeRuntime's mutex.
struct Record {
  int starts = 0;
  ExecSpec spec;
  std::optional<TerminalSize> initial;
  uint64_t stdin_bytes = 0;
  uint64_t stdin_hash = kFnvOffset;
  std::string stdin_head;  // the first MiB
  bool stdin_closed = false;
  std::vector<TerminalSize> resizes;
  std::vector<bool> pauses;
  size_t max_stdin_queue = 0;
  int live = 0;
  int destroyed = 0;
  uint64_t stdout_produced = 0;
};

class FakeProcess;

// A scripted session::Runtime. startExec() and the processes run on the
// loop; the test reads the Record from its own thread.
class FakeRuntime : public session::Runtime {
 public:
  Script script;

  Record snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    return rec_;
  }

  bool waitUntil(const std::function<bool(const Record&)>& pred,
                 milliseconds timeout = std::chrono::seconds(5)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(rec_); });
  }

  // On the loop: every live process exits with `status`.
  void exitAll(const ExitStatus& status);

  std::vector<session::ContainerInfo> listContainers() const override { return {}; }
  absl::StatusOr<session::ContainerInfo> container(const std::string&) const override {
    return absl::NotFoundError("no containers here");
  }

  absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
      event::Dispatcher& dispatcher, const ExecSpec& spec, std::optional<TerminalSize> initial,
      session::ExecCallbacks& callbacks) override;

  template <class F>
  void update(F f) {
    std::lock_guard<std::mutex> lock(mu_);
    f(rec_);
    cv_.notify_all();
  }

  std::set<FakeProcess*> live_;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  Record rec_;
};

class FakeProcess : public session::ExecProcess {
 public:
  FakeProcess(FakeRuntime& runtime, event::Dispatcher& dispatcher,
              session::ExecCallbacks& callbacks)
      : runtime_(runtime),
        script_(runtime.script),
        callbacks_(callbacks),
        timer_(dispatcher, [this] { tick(); }) {
    runtime_.live_.insert(this);
    runtime_.update([](Record& r) { ++r.live; });
    timer_.enable(milliseconds(0));
  }

  ~FakeProcess() override {
    runtime_.live_.erase(this);
    runtime_.update([](Record& r) {
      --r.live;
      ++r.destroyed;
    });
  }

  void writeStdin(Buffer& data) override {
    if (exited_) {
      data.drain(data.length());
      return;
    }
    if (script_.slow_stdin) {
      queue_.move(data);
      if (queue_.length() > kStdinHighWatermark) {
        was_high_ = true;
      }
      const size_t queued = queue_.length();
      runtime_.update([&](Record& r) { r.max_stdin_queue = std::max(r.max_stdin_queue, queued); });
      if (!timer_.enabled()) {
        timer_.enable(milliseconds(1));
      }
      return;
    }
    consume(data, data.length());
    timer_.enable(milliseconds(0));
  }
  size_t stdinQueuedBytes() const override { return queue_.length(); }
  void closeStdin() override {
    stdin_closed_ = true;
    runtime_.update([](Record& r) { r.stdin_closed = true; });
    timer_.enable(milliseconds(0));
  }
  void resize(TerminalSize size) override {
    runtime_.update([&](Record& r) { r.resizes.push_back(size); });
  }
  void pauseOutput(bool paused) override {
    paused_ = paused;
    runtime_.update([&](Record& r) { r.pauses.push_back(paused); });
    if (!paused) {
      timer_.enable(milliseconds(0));
    }
  }

  void exit(const ExitStatus& status) {
    if (exited_) {
      return;
    }
    exited_ = true;
    timer_.disable();
    callbacks_.onExit(status);
  }

 private:
  void consume(Buffer& data, size_t n) {
    const auto* p = reinterpret_cast<const char*>(data.linearize(n));
    runtime_.update([&](Record& r) {
      r.stdin_bytes += n;
      r.stdin_hash = fnv(r.stdin_hash, p, n);
      if (r.stdin_head.size() < (1u << 20)) {
        r.stdin_head.append(p, std::min(n, (1u << 20) - r.stdin_head.size()));
      }
    });
    if (script_.sort) {
      sort_input_.append(p, n);
    }
    if (script_.echo_stdin) {
      echo_.move(data, n);
    } else {
      data.drain(n);
    }
  }

  void tick() {
    if (exited_) {
      return;
    }
    if (queue_.length() >= script_.slow_stdin_start_at || stdin_closed_) {
      reading_ = true;
    }
    if (!queue_.empty() && reading_) {
      consume(queue_, std::min<size_t>(queue_.length(), script_.slow_stdin_bytes));
      if (was_high_ && queue_.length() < 256 * 1024) {
        was_high_ = false;
        callbacks_.onStdinDrained();
        if (exited_) {
          return;
        }
      }
    }
    if (!echo_.empty()) {
      callbacks_.onStdout(echo_);
      if (exited_) {
        return;
      }
    }
    for (int chunks = 0; chunks < 4 && !paused_ && produced_ < script_.output_bytes; ++chunks) {
      const size_t n = std::min<size_t>(script_.output_chunk, script_.output_bytes - produced_);
      std::string bytes(n, '\0');
      for (size_t i = 0; i < n; ++i) {
        bytes[i] = outputByte(produced_ + i);
      }
      produced_ += n;
      runtime_.update([&](Record& r) { r.stdout_produced = produced_; });
      Buffer chunk;
      chunk.add(bytes);
      callbacks_.onStdout(chunk);
      if (exited_) {
        return;
      }
    }
    if (stdin_closed_ && queue_.empty() && script_.sort) {
      std::vector<std::string> lines;
      std::istringstream in(sort_input_);
      for (std::string line; std::getline(in, line);) {
        lines.push_back(line + "\n");
      }
      std::sort(lines.begin(), lines.end());
      Buffer out;
      for (const auto& line : lines) {
        out.add(line);
      }
      callbacks_.onStdout(out);
      Buffer err;
      err.add("end\n");
      callbacks_.onStderr(err);
      exit(ExitStatus::success());
      return;
    }
    if (stdin_closed_ && queue_.empty() && echo_.empty() && script_.exit_on_stdin_eof) {
      exit(*script_.exit_on_stdin_eof);
      return;
    }
    if (script_.output_bytes > 0 && produced_ == script_.output_bytes &&
        script_.exit_after_output) {
      exit(*script_.exit_after_output);
      return;
    }
    if (!echo_.empty() || (!paused_ && produced_ < script_.output_bytes)) {
      timer_.enable(milliseconds(0));
    } else if (!queue_.empty()) {
      // A slow reader of stdin, slower than the socket.
      timer_.enable(milliseconds(1));
    }
  }

  FakeRuntime& runtime_;
  const Script script_;
  session::ExecCallbacks& callbacks_;
  event::Timer timer_;
  Buffer queue_;
  Buffer echo_;
  std::string sort_input_;
  bool was_high_ = false;
  bool reading_ = false;  // the slow reader has started
  bool stdin_closed_ = false;
  bool paused_ = false;
  bool exited_ = false;
  uint64_t produced_ = 0;
};

inline void FakeRuntime::exitAll(const ExitStatus& status) {
  const std::vector<FakeProcess*> all(live_.begin(), live_.end());
  for (FakeProcess* p : all) {
    p->exit(status);
  }
}

inline absl::StatusOr<std::unique_ptr<session::ExecProcess>> FakeRuntime::startExec(
    event::Dispatcher& dispatcher, const ExecSpec& spec, std::optional<TerminalSize> initial,
    session::ExecCallbacks& callbacks) {
  update([&](Record& r) {
    ++r.starts;
    r.spec = spec;
    r.initial = initial;
  });
  if (!script.start_error.ok()) {
    return script.start_error;
  }
  return std::unique_ptr<session::ExecProcess>(
      std::make_unique<FakeProcess>(*this, dispatcher, callbacks));
}

inline ExecSpec execSpec(std::vector<std::string> command, bool tty, bool in, bool out, bool err) {
  ExecSpec spec;
  spec.operation = session::Operation::kExec;
  spec.container_id = "ctr";
  spec.command = std::move(command);
  spec.tty = tty;
  spec.stdin = in;
  spec.stdout = out;
  spec.stderr = err;
  return spec;
}

}  // namespace crisp::stream::testing
