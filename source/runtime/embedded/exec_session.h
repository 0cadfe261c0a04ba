#pragma once

// ExecSession: the embedded runtime's ExecProcess for kExec, a command run as a
// local process. It maps the session model onto a ChildProcess: the spec's
// stream flags pick what is delivered, the stdin queue keeps the watermarks of
// session::ExecProcess, and the end becomes one ExitStatus (code, 128+signal,
// or an error naming the executable when it could not be run).
//
// Threading: lives on the session's dispatcher (the one passed to startExec);
// callbacks run there. Destroying it before onExit() kills the command's
// process group.

#include <memory>

#include "source/common/dispatcher.h"
#include "source/runtime/embedded/child_process.h"
#include "source/runtime/embedded/spawn.h"
#include "source/session/request.h"
#include "source/session/runtime.h"

namespace crisp::runtime {

class ExecSession : public session::ExecProcess, public ChildProcess::Callbacks {
 public:
  // `process` was spawned for `spec` (pipes for the requested streams, or a pty
  // when spec.tty). `callbacks` must outlive this object.
  ExecSession(event::Dispatcher& dispatcher, SpawnedProcess process, const session::ExecSpec& spec,
              session::ExecCallbacks& callbacks);
  ~ExecSession() override;

  // session::ExecProcess
  void writeStdin(Buffer& data) override;
  size_t stdinQueuedBytes() const override { return child_.stdinQueuedBytes(); }
  void closeStdin() override { child_.closeStdin(); }
  int stdinPipe() override { return spec_.stdin ? child_.stdinPipe() : -1; }
  void resize(session::TerminalSize size) override { child_.resize(size); }
  void pauseOutput(bool paused) override { child_.pauseOutput(paused); }

  // ChildProcess::Callbacks
  void onChildOutput(bool is_stderr, Buffer& data) override;
  size_t onChildOutputPipe(bool is_stderr, int pipe_fd, size_t limit) override;
  void onChildStdinConsumed(size_t bytes) override;
  void onChildFinished(int exit_code, const std::optional<std::string>& exec_failure) override;

  pid_t pid() const { return child_.pid(); }

 private:
  const session::ExecSpec spec_;
  session::ExecCallbacks& callbacks_;
  const uint64_t id_;
  bool above_high_watermark_ = false;
  ChildProcess child_;
};

}  // namespace crisp::runtime
