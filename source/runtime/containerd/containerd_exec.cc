#include "source/runtime/containerd/containerd_exec.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

#include "source/common/buffer.h"
#include "source/common/logger.h"
#include "source/common/pipe_write.h"
#include "source/runtime/embedded/unique_fd.h"

namespace crisp::containerd {
namespace {

constexpr int kReadChunk = 64 * 1024;
// Bytes read from one FIFO per readiness event, to keep the loop fair.
constexpr size_t kMaxReadPerEvent = 256 * 1024;
// The last read after the drain timed out takes at most this much.
constexpr size_t kFinalDrainLimit = 1024 * 1024;
// A FIFO found full once is enlarged to this, so that the shim and crisp wake
// each other once per megabyte rather than once per page.
constexpr int kBulkPipeBytes = 1024 * 1024;
// Longest wait between two looks for the shim's reader of the stdin FIFO.
constexpr std::chrono::milliseconds kReaderBackoffMax{100};
// What a terminal's line discipline turns into end-of-file (VEOF's default).
// The pty is the shim's, so its actual setting cannot be read from here.
constexpr uint8_t kTerminalEof = 0x04;

absl::Status errnoStatus(const std::string& what, int error) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(error)));
}

// The session's state, shared by the ExecProcess handed to the adapter and the
// containerd calls in flight (each holds a reference), so that the cleanup
// after an early destruction can finish without the handle.
class ExecCore : public std::enable_shared_from_this<ExecCore> {
 public:
  enum class State {
    kStarting,  // Containers/Get, Tasks/Exec, Tasks/Start in flight
    kRunning,   // Tasks/Wait in flight
    kExited,    // exit known; output draining
    kDeleting,  // Tasks/DeleteProcess in flight
    kDone,      // cleaned up (and onExit() delivered, when attached)
  };

  ExecCore(event::Dispatcher& dispatcher, ContainerdClient& client, const session::ExecSpec& spec,
           session::ExecCallbacks& callbacks)
      : dispatcher_(dispatcher),
        client_(client),
        spec_(spec),
        callbacks_(&callbacks),
        id_(log::nextId()),
        exec_id_(ContainerdClient::newExecId()),
        idle_timer_(dispatcher, [this] { onDrainTimer(); }),
        reader_timer_(dispatcher, [this] { awaitStdinReader(); }),
        max_timer_(dispatcher, [this] {
          drain_expired_ = true;
          if (!paused_ || callbacks_ == nullptr) {
            onDrainTimer();
          }
        }) {
    stdout_.name = "stdout";
    stderr_.name = "stderr";
    stderr_.is_stderr = true;
  }

  ~ExecCore() { releaseFiles(); }

  const std::string& execId() const { return exec_id_; }

  // Makes the directory and the FIFOs and opens crisp's ends.
  absl::Status prepare(const std::string& fifo_dir, std::optional<session::TerminalSize> initial) {
    if (spec_.tty && initial.has_value() && initial->width > 0 && initial->height > 0) {
      pending_size_ = *initial;
    }
    const bool any_stdio = spec_.stdin || spec_.stdout || spec_.stderr;
    if (!any_stdio) {
      return absl::OkStatus();  // the shim gives the process /dev/null
    }
    if (fifo_dir.empty()) {
      return absl::FailedPreconditionError("containerd exec: no FIFO directory configured");
    }
    dir_ = absl::StrCat(fifo_dir, "/", exec_id_);
    if (::mkdir(dir_.c_str(), 0700) != 0) {
      const int error = errno;
      dir_.clear();
      return errnoStatus(absl::StrCat("containerd exec: mkdir ", fifo_dir, "/", exec_id_), error);
    }
    // Output first: the runc shim wants stdout (and stderr without a
    // terminal) whenever any stdio is given.
    if (auto s = makeOutput(stdout_, spec_.stdout || (spec_.tty && spec_.stderr)); !s.ok()) {
      return s;
    }
    if (!spec_.tty) {
      if (auto s = makeOutput(stderr_, spec_.stderr); !s.ok()) {
        return s;
      }
    }
    if (spec_.stdin) {
      stdin_path_ = dir_ + "/stdin";
      if (::mkfifo(stdin_path_.c_str(), 0600) != 0) {
        const int error = errno;
        stdin_path_.clear();
        return errnoStatus("containerd exec: mkfifo " + dir_ + "/stdin", error);
      }
      // Read-write, so that the FIFO stays open (and takes bytes) whatever
      // the shim has opened yet; replaced by a write-only end once it runs.
      stdin_fd_.reset(::open(stdin_path_.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
      if (!stdin_fd_.valid()) {
        return errnoStatus("containerd exec: open " + stdin_path_, errno);
      }
      stdin_open_ = true;
    }
    return absl::OkStatus();
  }

  void start() {
    ExecRequest request;
    request.container_id = spec_.container_id;
    request.exec_id = exec_id_;
    request.args = spec_.command;
    request.terminal = spec_.tty;
    request.stdin_path = stdin_path_;
    request.stdout_path = stdout_.path;
    request.stderr_path = stderr_.path;
    CRISP_LOG(kRuntime, debug, "[X{}] containerd exec {} in {} ({})", id_, exec_id_,
              spec_.container_id, spec_.tty ? "tty" : "fifos");
    exec_call_ = client_.exec(request, [self = shared_from_this()](absl::StatusOr<uint32_t> pid) {
      self->onStarted(std::move(pid));
    });
  }

  // session::ExecProcess, through ContainerdExecProcess.
  void writeStdin(Buffer& data) {
    if (!stdin_open_ || stdin_closing_ || data.empty()) {
      data.drain(data.length());
      return;
    }
    uint8_t last;
    data.copyOut(&last, 1, data.length() - 1);
    last_stdin_byte_ = last;
    stdin_queue_.move(data);
    if (stdin_queue_.length() > session::ExecProcess::kStdinHighWatermark) {
      above_high_watermark_ = true;
    }
    updateStdinInterest();
  }

  size_t stdinQueuedBytes() const { return stdin_queue_.length(); }

  void closeStdin() {
    if (!stdin_open_ || stdin_closing_) {
      return;
    }
    stdin_closing_ = true;
    if (spec_.tty) {
      // A terminal has no half-close: its line discipline turns VEOF into
      // end-of-file, and in canonical mode a first one only ends a pending
      // partial line.
      if (last_stdin_byte_ >= 0 && last_stdin_byte_ != '\n') {
        stdin_queue_.add(&kTerminalEof, 1);
      }
      stdin_queue_.add(&kTerminalEof, 1);
      updateStdinInterest();
      return;
    }
    maybeFinishStdinClose();
  }

  void resize(session::TerminalSize size) {
    if (!spec_.tty || size.width == 0 || size.height == 0 || callbacks_ == nullptr) {
      return;
    }
    pending_size_ = size;
    sendResize();
  }

  void pauseOutput(bool paused) {
    if (paused_ == paused || callbacks_ == nullptr) {
      return;
    }
    paused_ = paused;
    updateOutputInterest(stdout_);
    updateOutputInterest(stderr_);
    if (state_ != State::kExited) {
      return;
    }
    if (paused) {
      idle_timer_.disable();
    } else {
      // Never deliver from inside the caller's call: let the loop do it.
      idle_timer_.enable(drain_expired_ || outputDone() ? std::chrono::milliseconds(0)
                                                        : kExitDrainIdle);
    }
  }

  // The adapter destroyed its ExecProcess: no more callbacks; the process is
  // killed and deleted, the files removed.
  void detach() {
    if (callbacks_ == nullptr) {
      return;
    }
    callbacks_ = nullptr;
    if (state_ == State::kDone) {
      return;
    }
    CRISP_LOG(kRuntime, debug, "[X{}] exec closed before it ended; killing {}", id_, exec_id_);
    dropStdin();
    paused_ = false;
    if (resize_call_ != 0) {
      client_.cancel(resize_call_);
      resize_call_ = 0;
    }
    updateOutputInterest(stdout_);
    updateOutputInterest(stderr_);
    switch (state_) {
      case State::kStarting:
        break;  // killed once started (onStarted)
      case State::kRunning:
        sendKill();
        break;
      case State::kExited:
        deleteProcess();
        break;
      case State::kDeleting:
      case State::kDone:
        break;
    }
  }

 private:
  struct Output {
    const char* name = "";
    std::string path;
    runtime::UniqueFd fd;
    event::FdWatcherPtr watcher;
    bool is_stderr = false;
    bool wanted = false;
    bool eof = true;
    bool enlarged = false;
  };

  absl::Status makeOutput(Output& out, bool wanted) {
    out.path = absl::StrCat(dir_, "/", out.name);
    if (::mkfifo(out.path.c_str(), 0600) != 0) {
      const int error = errno;
      out.path.clear();
      return errnoStatus(absl::StrCat("containerd exec: mkfifo ", dir_, "/", out.name), error);
    }
    // Non-blocking: there is no writer yet. Until the shim opens its end the
    // loop reports nothing, so the first EOF read is the real one.
    out.fd.reset(::open(out.path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!out.fd.valid()) {
      return errnoStatus("containerd exec: open " + out.path, errno);
    }
    out.wanted = wanted;
    out.eof = false;
    out.watcher = std::make_unique<event::FdWatcher>(
        dispatcher_, out.fd.get(), [this, &out](short) { onOutputReady(out); });
    updateOutputInterest(out);
    return absl::OkStatus();
  }

  // ---- start ----

  void onStarted(absl::StatusOr<uint32_t> pid) {
    exec_call_ = 0;
    if (!pid.ok()) {
      CRISP_LOG(kRuntime, debug, "[X{}] containerd exec {} failed: {}", id_, exec_id_,
                pid.status().ToString());
      // The client deleted a process that failed to start; nothing to free
      // in containerd.
      finish(session::ExitStatus::error(absl::StrCat("cannot exec in container \"",
                                                     spec_.container_id, "\": ",
                                                     pid.status().message())));
      return;
    }
    state_ = State::kRunning;
    pid_ = *pid;
    CRISP_LOG(kRuntime, debug, "[X{}] exec {} runs as host pid {}", id_, exec_id_, pid_);
    wait_call_ = client_.wait(spec_.container_id, exec_id_,
                              [self = shared_from_this()](absl::StatusOr<ProcessExit> exit) {
                                self->onWaited(std::move(exit));
                              });
    if (callbacks_ == nullptr) {
      sendKill();
      return;
    }
    if (stdin_fd_.valid()) {
      // A write-only end lets crisp see EPIPE once the shim stops reading
      // (the process closed its stdin or is gone) instead of filling the FIFO
      // for nobody. Opening it cannot fail: crisp's read-write end, closed
      // only after, is a reader.
      const int wronly = ::open(stdin_path_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (wronly >= 0) {
        stdin_fd_.reset(wronly);
      } else {
        CRISP_LOG(kRuntime, debug, "[X{}] stdin FIFO not opened ({}); stdin ends", id_,
                  std::strerror(errno));
        dropStdin();
      }
    }
    if (stdin_fd_.valid()) {
      stdin_watcher_ = std::make_unique<event::FdWatcher>(
          dispatcher_, stdin_fd_.get(), [this](short) { onStdinWritable(); });
      awaitStdinReader();
    }
    if (spec_.tty && pending_size_.has_value()) {
      sendResize();
    } else {
      stdin_released_ = true;
    }
    updateStdinInterest();
    maybeFinishStdinClose();
  }

  // ---- terminal size ----

  void sendResize() {
    if (state_ != State::kRunning || resize_call_ != 0 || !pending_size_.has_value() ||
        (applied_size_.has_value() && *applied_size_ == *pending_size_)) {
      return;
    }
    const session::TerminalSize size = *pending_size_;
    resize_call_ = client_.resize(
        spec_.container_id, exec_id_, size.width, size.height,
        [self = shared_from_this(), size](const absl::Status& status) {
          self->onResized(size, status);
        });
  }

  void onResized(session::TerminalSize size, const absl::Status& status) {
    resize_call_ = 0;
    if (status.ok()) {
      applied_size_ = size;
    } else {
      // The process may have exited meanwhile; nothing a user could act on.
      CRISP_LOG(kRuntime, debug, "[X{}] resize to {}x{}: {}", id_, size.width, size.height,
                status.ToString());
      applied_size_ = size;  // not retried
    }
    stdin_released_ = true;
    sendResize();
    updateStdinInterest();
  }

  // ---- stdin ----

  // The shim opens its end of the stdin FIFO asynchronously: its reader may
  // not exist yet when Start returns. Written to before, the FIFO would fail
  // the write (EPIPE: no reader); closed before, by crisp and by CloseIO,
  // the shim's open would wait for a writer forever and the process never see
  // the end of its input. So nothing is written or closed until a reader is
  // counted: a non-blocking write-only open fails with ENXIO until one exists
  // (one still blocked in its open counts, and a writer's open releases it).
  void awaitStdinReader() {
    if (!stdin_fd_.valid() || state_ != State::kRunning) {
      return;
    }
    runtime::UniqueFd probe(::open(stdin_path_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
    if (probe.valid()) {
      stdin_reader_seen_ = true;
      reader_timer_.disable();
      updateStdinInterest();
      maybeFinishStdinClose();
      return;
    }
    // Checked again soon, backing off; a process that never reads its stdin
    // keeps it queued (and its client paused) until it exits.
    reader_backoff_ = std::min(reader_backoff_ * 2, kReaderBackoffMax);
    reader_timer_.enable(reader_backoff_);
  }

  void updateStdinInterest() {
    if (stdin_watcher_ == nullptr || !stdin_reader_seen_) {
      return;
    }
    // With a terminal, bytes typed after a resize wait for it, as they would
    // on a local terminal.
    const bool want = stdin_fd_.valid() && stdin_released_ && !stdin_queue_.empty() &&
                      (!spec_.tty || resize_call_ == 0);
    stdin_watcher_->setEnabled(want ? event::FdWatcher::kWrite : 0);
  }

  void onStdinWritable() {
    auto self = shared_from_this();
    size_t consumed = 0;
    while (!stdin_queue_.empty() && stdin_fd_.valid()) {
      const size_t before = stdin_queue_.length();
      const int n = writeWithoutSigpipe(stdin_queue_, stdin_fd_.get(), sigpipeIgnored());
      if (n > 0) {
        consumed += before - stdin_queue_.length();
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!stdin_enlarged_) {
          // The process reads slower than stdin comes: give the FIFO room.
          stdin_enlarged_ = true;
          if (::fcntl(stdin_fd_.get(), F_SETPIPE_SZ, kBulkPipeBytes) > 0) {
            continue;
          }
        }
        break;
      }
      // EPIPE: the shim stopped reading (the process closed its stdin).
      CRISP_LOG(kRuntime, debug, "[X{}] stdin not taken any more ({}); dropping {} bytes", id_,
                std::strerror(errno), stdin_queue_.length());
      consumed += stdin_queue_.length();
      dropStdin();
      break;
    }
    updateStdinInterest();
    maybeFinishStdinClose();
    if (consumed > 0) {
      maybeSignalDrained();
    }
  }

  void maybeSignalDrained() {
    if (above_high_watermark_ &&
        stdin_queue_.length() < session::ExecProcess::kStdinHighWatermark / 2) {
      above_high_watermark_ = false;
      if (callbacks_ != nullptr) {
        callbacks_->onStdinDrained();
      }
    }
  }

  // A client's close, once the process runs and the queue is written.
  void maybeFinishStdinClose() {
    if (!stdin_closing_ || spec_.tty || !stdin_open_ || state_ != State::kRunning ||
        !stdin_reader_seen_ || !stdin_queue_.empty()) {
      return;
    }
    closeStdinFd();
    // The shim holds a writer of its own; CloseIO closes it, and the copier
    // then reads the FIFO to its end.
    client_.closeStdin(spec_.container_id, exec_id_,
                       [self = shared_from_this()](const absl::Status& status) {
                         if (!status.ok()) {
                           CRISP_LOG(kRuntime, debug, "[X{}] CloseIO: {}", self->id_,
                                     status.ToString());
                         }
                       });
  }

  void closeStdinFd() {
    reader_timer_.disable();
    stdin_open_ = false;
    stdin_watcher_.reset();
    stdin_fd_.reset();
  }

  // Ends stdin without CloseIO: the process exited, or no longer reads it.
  void dropStdin() {
    stdin_queue_.drain(stdin_queue_.length());
    closeStdinFd();
  }

  // ---- output ----

  void updateOutputInterest(Output& out) {
    if (out.watcher == nullptr) {
      return;
    }
    const bool reading = out.fd.valid() && !out.eof &&
                         (!paused_ || !out.wanted || discarding() || callbacks_ == nullptr);
    out.watcher->setEnabled(reading ? event::FdWatcher::kRead : 0);
  }

  // After the decision to end (drain over, or deleting): whatever still comes
  // is read and dropped, so that the shim's copier can finish.
  bool discarding() const { return state_ == State::kDeleting || state_ == State::kDone; }

  void onOutputReady(Output& out) {
    auto self = shared_from_this();
    if (!readOutput(out, kMaxReadPerEvent)) {
      return;
    }
    if (state_ == State::kExited && outputDone()) {
      deleteProcess();
    }
  }

  // Reads up to `limit` bytes and delivers them. Returns false when the
  // session ended meanwhile (state kDone).
  bool readOutput(Output& out, size_t limit) {
    if (!out.fd.valid() || out.eof) {
      return true;
    }
    Buffer data;
    bool eof = false;
    while (data.length() < limit) {
      const int n = data.readFrom(out.fd.get(), kReadChunk);
      if (n > 0) {
        if (n == kReadChunk && !out.enlarged) {
          // A full chunk: a bulk writer. A larger FIFO lets the shim copy
          // further ahead; refused by the kernel it stays as it is.
          out.enlarged = true;
          (void)::fcntl(out.fd.get(), F_SETPIPE_SZ, kBulkPipeBytes);
        }
        if (n < kReadChunk) {
          break;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      }
      eof = true;  // 0: the shim closed its end; an error ends it the same way
      break;
    }
    if (!data.empty()) {
      if (out.wanted && callbacks_ != nullptr && !discarding()) {
        if (out.is_stderr) {
          callbacks_->onStderr(data);
        } else {
          callbacks_->onStdout(data);
        }
      } else {
        data.drain(data.length());
      }
      if (state_ == State::kDone) {
        return false;
      }
      if (state_ == State::kExited && !paused_) {
        idle_timer_.enable(kExitDrainIdle);
      }
    }
    if (eof) {
      out.eof = true;
      out.watcher->setEnabled(0);
    } else {
      updateOutputInterest(out);
    }
    return true;
  }

  bool outputDone() const { return stdout_.eof && stderr_.eof; }

  // ---- the end ----

  void sendKill() {
    client_.kill(spec_.container_id, exec_id_, SIGKILL,
                 [self = shared_from_this()](const absl::Status& status) {
                   // NOT_FOUND or FAILED_PRECONDITION: it had already exited.
                   if (!status.ok()) {
                     CRISP_LOG(kRuntime, debug, "[X{}] kill: {}", self->id_, status.ToString());
                   }
                 });
  }

  void onWaited(absl::StatusOr<ProcessExit> exit) {
    wait_call_ = 0;
    if (exit.ok()) {
      CRISP_LOG(kRuntime, debug, "[X{}] exec {} exited: {}", id_, exec_id_, exit->exit_status);
      status_ = session::ExitStatus::exited(static_cast<int>(exit->exit_status));
    } else {
      CRISP_LOG(kRuntime, warn, "[X{}] exec {} in {}: no exit status: {}", id_, exec_id_,
                spec_.container_id, exit.status().ToString());
      status_ = session::ExitStatus::error(
          absl::StrCat("exit status of the command is unknown: ", exit.status().message()));
    }
    state_ = State::kExited;
    // stdin stays open until now; what is still queued has no reader.
    const bool had_queue = !stdin_queue_.empty();
    dropStdin();
    if (callbacks_ == nullptr || outputDone()) {
      deleteProcess();
      return;
    }
    max_timer_.enable(kExitDrainMax);
    if (!paused_) {
      idle_timer_.enable(kExitDrainIdle);
    }
    if (had_queue) {
      maybeSignalDrained();
    }
  }

  void onDrainTimer() {
    if (state_ != State::kExited) {
      return;
    }
    if (paused_ && callbacks_ != nullptr) {
      return;
    }
    auto self = shared_from_this();
    for (Output* out : {&stdout_, &stderr_}) {
      if (!readOutput(*out, kFinalDrainLimit)) {
        return;
      }
    }
    if (!outputDone()) {
      CRISP_LOG(kRuntime, debug,
                "[X{}] exec {} exited; its output is still held open (a background process?), "
                "finishing without it",
                id_, exec_id_);
    }
    deleteProcess();
  }

  void deleteProcess() {
    if (state_ != State::kExited) {
      return;
    }
    state_ = State::kDeleting;
    idle_timer_.disable();
    max_timer_.disable();
    updateOutputInterest(stdout_);
    updateOutputInterest(stderr_);
    client_.deleteProcess(spec_.container_id, exec_id_,
                          [self = shared_from_this()](absl::StatusOr<ProcessExit> result) {
                            if (!result.ok()) {
                              CRISP_LOG(kRuntime, warn, "[X{}] exec {} in {} not deleted: {}",
                                        self->id_, self->exec_id_, self->spec_.container_id,
                                        result.status().ToString());
                            }
                            self->finish(self->status_);
                          });
  }

  void finish(const session::ExitStatus& status) {
    state_ = State::kDone;
    idle_timer_.disable();
    max_timer_.disable();
    releaseFiles();
    if (callbacks_ != nullptr) {
      session::ExecCallbacks* callbacks = std::exchange(callbacks_, nullptr);
      callbacks->onExit(status);
    }
  }

  // Closes every descriptor and removes the FIFOs and their directory.
  void releaseFiles() {
    stdin_queue_.drain(stdin_queue_.length());
    closeStdinFd();
    for (Output* out : {&stdout_, &stderr_}) {
      out->watcher.reset();
      out->fd.reset();
      out->eof = true;
    }
    for (std::string* path : {&stdin_path_, &stdout_.path, &stderr_.path}) {
      if (!path->empty()) {
        if (::unlink(path->c_str()) != 0 && errno != ENOENT) {
          CRISP_LOG(kRuntime, warn, "[X{}] unlink {}: {}", id_, *path, std::strerror(errno));
        }
        path->clear();
      }
    }
    if (!dir_.empty()) {
      if (::rmdir(dir_.c_str()) != 0 && errno != ENOENT) {
        CRISP_LOG(kRuntime, warn, "[X{}] rmdir {}: {}", id_, dir_, std::strerror(errno));
      }
      dir_.clear();
    }
  }

  event::Dispatcher& dispatcher_;
  ContainerdClient& client_;
  const session::ExecSpec spec_;
  session::ExecCallbacks* callbacks_;  // null once detached or finished
  const uint64_t id_;
  const std::string exec_id_;
  State state_ = State::kStarting;
  uint32_t pid_ = 0;
  session::ExitStatus status_;

  std::string dir_;
  std::string stdin_path_;
  runtime::UniqueFd stdin_fd_;
  event::FdWatcherPtr stdin_watcher_;
  Buffer stdin_queue_;
  bool stdin_open_ = false;
  bool stdin_closing_ = false;
  // With a terminal, held until the first size is set.
  bool stdin_released_ = false;
  bool stdin_reader_seen_ = false;
  std::chrono::milliseconds reader_backoff_{1};
  bool stdin_enlarged_ = false;
  bool above_high_watermark_ = false;
  int last_stdin_byte_ = -1;

  Output stdout_;
  Output stderr_;
  bool paused_ = false;
  bool drain_expired_ = false;
  event::Timer idle_timer_;
  event::Timer reader_timer_;
  event::Timer max_timer_;

  std::optional<session::TerminalSize> pending_size_;
  std::optional<session::TerminalSize> applied_size_;

  ContainerdClient::CallId exec_call_ = 0;
  ContainerdClient::CallId wait_call_ = 0;
  ContainerdClient::CallId resize_call_ = 0;
};

class ContainerdExecProcess : public session::ExecProcess {
 public:
  explicit ContainerdExecProcess(std::shared_ptr<ExecCore> core) : core_(std::move(core)) {}
  ~ContainerdExecProcess() override { core_->detach(); }

  void writeStdin(Buffer& data) override { core_->writeStdin(data); }
  size_t stdinQueuedBytes() const override { return core_->stdinQueuedBytes(); }
  void closeStdin() override { core_->closeStdin(); }
  void resize(session::TerminalSize size) override { core_->resize(size); }
  void pauseOutput(bool paused) override { core_->pauseOutput(paused); }

  const std::string& execId() const { return core_->execId(); }

 private:
  std::shared_ptr<ExecCore> core_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
    event::Dispatcher& dispatcher, ContainerdClient& client, const ContainerdExecOptions& options,
    const session::ExecSpec& spec, std::optional<session::TerminalSize> initial,
    session::ExecCallbacks& callbacks) {
  if (spec.operation != session::Operation::kExec) {
    return absl::InvalidArgumentError("containerd exec: only exec, not attach");
  }
  if (spec.command.empty() || spec.command[0].empty()) {
    return absl::InvalidArgumentError("exec needs a command");
  }
  auto core = std::make_shared<ExecCore>(dispatcher, client, spec, callbacks);
  if (absl::Status prepared = core->prepare(options.fifo_dir, initial); !prepared.ok()) {
    return prepared;  // `core` removes what it made
  }
  core->start();
  return std::unique_ptr<session::ExecProcess>(std::make_unique<ContainerdExecProcess>(core));
}

std::string containerdExecId(const session::ExecProcess& process) {
  const auto* exec = dynamic_cast<const ContainerdExecProcess*>(&process);
  return exec == nullptr ? std::string() : exec->execId();
}

}  // namespace crisp::containerd
