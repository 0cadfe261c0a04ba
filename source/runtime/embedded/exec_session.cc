#include "source/runtime/embedded/exec_session.h"

#include "source/common/logger.h"

namespace crisp::runtime {

ExecSession::ExecSession(event::Dispatcher& dispatcher, SpawnedProcess process,
                         const session::ExecSpec& spec, session::ExecCallbacks& callbacks)
    : spec_(spec),
      callbacks_(callbacks),
      id_(log::nextId()),
      child_(dispatcher, std::move(process), *this, spec.stdin) {
  CRISP_LOG(kRuntime, debug, "[X{}] exec in {}: pid {} ({})", id_, spec_.container_id, child_.pid(),
            spec_.tty ? "tty" : "pipes");
}

ExecSession::~ExecSession() {
  if (!child_.finished()) {
    CRISP_LOG(kRuntime, debug, "[X{}] exec closed before it ended; killing pid {}", id_,
              child_.pid());
  }
}

void ExecSession::writeStdin(Buffer& data) {
  child_.writeStdin(data);
  if (child_.stdinQueuedBytes() > kStdinHighWatermark) {
    above_high_watermark_ = true;
  }
}

void ExecSession::onChildOutput(bool is_stderr, Buffer& data) {
  // With a tty, stderr is the pty too and arrives here as stdout.
  const bool wanted = is_stderr ? spec_.stderr : (spec_.stdout || (spec_.tty && spec_.stderr));
  if (!wanted) {
    data.drain(data.length());
    return;
  }
  if (is_stderr) {
    callbacks_.onStderr(data);
  } else {
    callbacks_.onStdout(data);
  }
}

size_t ExecSession::onChildOutputPipe(bool is_stderr, int pipe_fd, size_t limit) {
  // Unwanted output is read and dropped by onChildOutput(). Without a pty
  // (the only case offered) each stream has its own pipe.
  if (is_stderr) {
    return spec_.stderr ? callbacks_.onStderrPipe(pipe_fd, limit) : 0;
  }
  return spec_.stdout ? callbacks_.onStdoutPipe(pipe_fd, limit) : 0;
}

void ExecSession::onChildStdinConsumed(size_t) {
  if (above_high_watermark_ && child_.stdinQueuedBytes() < kStdinHighWatermark / 2) {
    above_high_watermark_ = false;
    callbacks_.onStdinDrained();
  }
}

void ExecSession::onChildFinished(int exit_code, const std::optional<std::string>& exec_failure) {
  session::ExitStatus status;
  if (exec_failure.has_value()) {
    status = session::ExitStatus::error(*exec_failure);
  } else if (exit_code < 0) {
    status = session::ExitStatus::error("exit status of the command is unknown");
  } else {
    status = session::ExitStatus::exited(exit_code);
  }
  CRISP_LOG(kRuntime, debug, "[X{}] exec pid {} ended: code {}{}", id_, child_.pid(), exit_code,
            exec_failure.has_value() ? " (" + *exec_failure + ")" : "");
  callbacks_.onExit(status);
}

}  // namespace crisp::runtime
