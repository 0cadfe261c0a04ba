#pragma once

// A container's main process and the sessions attached to it.
//
// MainProcess lives on the runtime's own dispatcher (the host loop). It reads
// the process's output all the time, so the process never blocks on a full
// pipe, and fans each chunk out to the attached sessions; with none attached
// the output is discarded. It writes stdin coming from attached sessions and
// applies their resizes to the pty.
//
// AttachSession is the ExecProcess for kAttach. It lives on the session's
// dispatcher, a different thread, so the two sides talk only by posting to
// each other's loop:
//   session -> host: MainHandle::post() (attach, stdin, resize, detach)
//   host -> session: AttachLink::post() (output, stdin acknowledgements, end)
// Either side may go away while posts are in flight: AttachLink::post() is a
// no-op once the session was destroyed, and MainHandle::post() once the
// runtime stopped; a task that arrives late finds `session` or `main` null.
//
// Attach semantics: output follows the container's tty setting (one stream with
// a tty); stdin reaches the process only when the container has stdin and the
// spec asks for it. closeStdin() only stops this session's input: the
// container's stdin stays open for later attaches. Destroying the session
// detaches; the container keeps running. When the main process ends, attached
// sessions get their remaining output, then onExit(success).
//
// pauseOutput(true) cannot slow the main process down (other sessions share its
// output, and it must not block), so a paused session keeps output in memory up
// to kPausedOutputLimit and drops what arrives beyond that (logged).

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/runtime/embedded/child_process.h"
#include "source/runtime/embedded/spawn.h"
#include "source/session/request.h"
#include "source/session/runtime.h"

namespace crisp::runtime {

class AttachSession;
class MainProcess;

// One attach session as seen from the host loop.
class AttachLink {
 public:
  AttachLink(event::Dispatcher& session_dispatcher, bool want_stdout, bool want_stderr)
      : want_stdout(want_stdout), want_stderr(want_stderr), dispatcher_(&session_dispatcher) {}

  // Thread-safe. Runs `fn` on the session's loop; dropped once disconnected.
  void post(std::function<void()> fn);
  // Session loop only: stops all further posts.
  void disconnect();

  const bool want_stdout;
  const bool want_stderr;
  // Session loop only: the live session, null once it was destroyed.
  AttachSession* session = nullptr;

 private:
  std::mutex mutex_;
  event::Dispatcher* dispatcher_;
};

// How attach sessions reach one container's main process. Owned jointly by the
// runtime and its attach sessions.
class MainHandle : public std::enable_shared_from_this<MainHandle> {
 public:
  // Thread-safe. Runs `fn` on the host loop with the main process, or with
  // nullptr when it is gone. Returns false (and drops `fn`) once the runtime
  // stopped its loop.
  bool post(std::function<void(MainProcess*)> fn);

  // Runtime only.
  void setHost(event::Dispatcher* host);
  // Host loop only.
  MainProcess* main = nullptr;

 private:
  std::mutex mutex_;
  event::Dispatcher* host_ = nullptr;
};

class MainProcess : public ChildProcess::Callbacks {
 public:
  // Host loop only. `on_finished` runs on the host loop once the process was
  // reaped and its output delivered, with its exit code (see ChildProcess).
  MainProcess(event::Dispatcher& host, std::string container_id, SpawnedProcess process,
              bool stdin_open, std::function<void(int exit_code)> on_finished);
  // Ends attached sessions with an error when the process had not finished.
  ~MainProcess() override;

  void attach(std::shared_ptr<AttachLink> link, std::optional<session::TerminalSize> initial);
  void detach(const std::shared_ptr<AttachLink>& link);
  void writeStdin(const std::shared_ptr<AttachLink>& link,
                  std::shared_ptr<const std::string> bytes);
  void resize(session::TerminalSize size) { child_.resize(size); }
  void signalGroup(int sig) { child_.signalGroup(sig); }
  bool finished() const { return child_.finished(); }
  pid_t pid() const { return child_.pid(); }

  // ChildProcess::Callbacks
  void onChildOutput(bool is_stderr, Buffer& data) override;
  void onChildStdinConsumed(size_t bytes) override;
  void onChildFinished(int exit_code, const std::optional<std::string>& exec_failure) override;

 private:
  void ack(const std::shared_ptr<AttachLink>& link, size_t bytes);

  const std::string container_id_;
  std::function<void(int)> on_finished_;
  std::vector<std::shared_ptr<AttachLink>> sinks_;
  // Which session each queued stdin byte came from, in queue order, so that
  // each session learns when its own bytes were taken.
  std::deque<std::pair<std::weak_ptr<AttachLink>, size_t>> stdin_owners_;
  ChildProcess child_;
};

class AttachSession : public session::ExecProcess {
 public:
  static constexpr size_t kPausedOutputLimit = 4 * 1024 * 1024;

  // Session loop. Registers with the main process through `main`.
  AttachSession(event::Dispatcher& dispatcher, std::shared_ptr<MainHandle> main,
                const session::ExecSpec& spec, bool container_tty, bool container_stdin,
                std::optional<session::TerminalSize> initial, session::ExecCallbacks& callbacks);
  ~AttachSession() override;

  // session::ExecProcess
  void writeStdin(Buffer& data) override;
  size_t stdinQueuedBytes() const override { return stdin_in_flight_; }
  void closeStdin() override { stdin_closed_ = true; }
  void resize(session::TerminalSize size) override;
  void pauseOutput(bool paused) override;

  // From the host, on this session's loop.
  void deliverOutput(bool is_stderr, const std::string& bytes);
  void deliverExit(const session::ExitStatus& status);
  void ackStdin(size_t bytes);

 private:
  void scheduleFlush();
  void flushPending();

  session::ExecCallbacks& callbacks_;
  std::shared_ptr<MainHandle> main_;
  std::shared_ptr<AttachLink> link_;
  const bool tty_;
  const bool stdin_enabled_;
  const uint64_t id_;
  bool stdin_closed_ = false;
  size_t stdin_in_flight_ = 0;
  bool above_high_watermark_ = false;
  bool paused_ = false;
  bool flush_scheduled_ = false;
  bool done_ = false;
  bool drop_logged_ = false;
  std::deque<std::pair<bool, std::string>> pending_;  // (is_stderr, bytes) while paused
  size_t pending_bytes_ = 0;
  std::optional<session::ExitStatus> pending_exit_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace crisp::runtime
