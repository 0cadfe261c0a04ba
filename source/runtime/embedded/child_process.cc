#include "source/runtime/embedded/child_process.h"

#include <cerrno>

#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "source/common/logger.h"
#include "source/common/pipe_write.h"

namespace crisp::runtime {
namespace {

constexpr int kReadChunk = 64 * 1024;
constexpr int kBulkPipeBytes = 1024 * 1024;
// The size of a pipe that stdin is spliced into (see stdinPipe()).
constexpr int kSplicePipeBytes = 64 * 1024;
// The last read after the drain timed out takes at most this much.
constexpr size_t kFinalDrainLimit = 1024 * 1024;

// Watches the pidfd of a killed child until it can be reaped, then deletes
// itself. Owned by the dispatcher that adopted it, which destroys it with
// itself when the child was still not reaped then (crisp is stopping).
class PidfdReaper {
 public:
  static void adopt(event::Dispatcher& dispatcher, UniqueFd pidfd) {
    PidfdReaper* reaper =
        dispatcher.adopt(std::unique_ptr<PidfdReaper>(new PidfdReaper(dispatcher, std::move(pidfd))));
    reaper->watcher_.setEnabled(event::FdWatcher::kRead);
  }

  ~PidfdReaper() {
    if (pidfd_.valid()) {
      int code;
      (void)reapPidfd(pidfd_.get(), code);  // a last try; SIGKILL is usually done by now
    }
  }

 private:
  PidfdReaper(event::Dispatcher& dispatcher, UniqueFd pidfd)
      : dispatcher_(dispatcher),
        pidfd_(std::move(pidfd)),
        watcher_(dispatcher, pidfd_.get(), [this](short) { onReady(); }) {}

  void onReady() {
    int code;
    if (!reapPidfd(pidfd_.get(), code)) {
      return;
    }
    watcher_.setEnabled(0);
    pidfd_.reset();
    dispatcher_.disownAndDelete(this);
  }

  event::Dispatcher& dispatcher_;
  UniqueFd pidfd_;
  event::FdWatcher watcher_;
};

}  // namespace

ChildProcess::ChildProcess(event::Dispatcher& dispatcher, SpawnedProcess process,
                           Callbacks& callbacks, bool pty_stdin)
    : dispatcher_(dispatcher),
      callbacks_(callbacks),
      process_(std::move(process)),
      pid_(process_.pid),
      tty_(process_.pty_master.valid()),
      idle_timer_(dispatcher, [this] { drainAndFinish(); }),
      max_timer_(dispatcher, [this] {
        drain_expired_ = true;
        if (!paused_) {
          drainAndFinish();
        }
      }) {
  if (tty_) {
    stdout_.fd = std::move(process_.pty_master);
    stdout_.reads = true;
    stdout_.read_eof = false;
    stdout_.writes = pty_stdin;
    stdout_.write_closed = !pty_stdin;
    watch(stdout_);
  } else {
    if (process_.stdin_fd.valid()) {
      stdin_.fd = std::move(process_.stdin_fd);
      stdin_.writes = true;
      stdin_.write_closed = false;
      watch(stdin_);
    }
    if (process_.stdout_fd.valid()) {
      stdout_.fd = std::move(process_.stdout_fd);
      stdout_.reads = true;
      stdout_.read_eof = false;
      watch(stdout_);
    }
    if (process_.stderr_fd.valid()) {
      stderr_.fd = std::move(process_.stderr_fd);
      stderr_.reads = true;
      stderr_.is_stderr = true;
      stderr_.read_eof = false;
      watch(stderr_);
    }
  }
  pidfd_watcher_ = std::make_unique<event::FdWatcher>(dispatcher_, process_.pidfd.get(),
                                                      [this](short) { onPidfdReady(); });
  pidfd_watcher_->setEnabled(event::FdWatcher::kRead);
}

ChildProcess::~ChildProcess() {
  *alive_ = false;
  if (!reaped_ && pid_ > 0) {
    // The child is not reaped, so neither its pid nor its process group id
    // (the same number once it called setsid) can have been reused. It may not
    // have reached setsid yet, so it is signalled by pid as well.
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    pidfd_watcher_.reset();
    int code;
    if (!reapPidfd(process_.pidfd.get(), code)) {
      PidfdReaper::adopt(dispatcher_, std::move(process_.pidfd));
    }
  }
}

void ChildProcess::watch(Endpoint& ep) {
  ep.watcher = std::make_unique<event::FdWatcher>(
      dispatcher_, ep.fd.get(), [this, &ep](short events) { onReady(ep, events); });
  updateInterest(ep);
}

void ChildProcess::updateInterest(Endpoint& ep) {
  if (ep.watcher == nullptr) {
    return;
  }
  short events = 0;
  if (ep.fd.valid() && ep.reads && !ep.read_eof && !paused_) {
    events |= event::FdWatcher::kRead;
  }
  if (ep.fd.valid() && ep.writes && !ep.write_closed && !stdin_queue_.empty()) {
    events |= event::FdWatcher::kWrite;
  }
  ep.watcher->setEnabled(events);
}

void ChildProcess::onReady(Endpoint& ep, short events) {
  if ((events & event::FdWatcher::kWrite) != 0 && ep.writes) {
    if (!flushStdin()) {
      return;
    }
  }
  if ((events & event::FdWatcher::kRead) != 0 && ep.reads && !ep.read_eof && !paused_) {
    if (!readOutput(ep, kMaxReadPerEvent)) {
      return;
    }
    maybeFinish();
  }
}

bool ChildProcess::readOutput(Endpoint& ep, size_t limit) {
  if (!ep.fd.valid() || ep.read_eof) {
    return true;
  }
  // Not in the final drain after the exit: that one takes up to its limit
  // into memory before the pipes are closed, where a splice would move only
  // what the client's socket takes at once and leave the rest behind.
  if (!tty_ && !draining_) {
    std::weak_ptr<bool> alive = alive_;
    const size_t taken = callbacks_.onChildOutputPipe(ep.is_stderr, ep.fd.get(), limit);
    if (alive.expired()) {
      return false;
    }
    if (taken > 0) {
      if (taken >= static_cast<size_t>(kReadChunk) && !ep.enlarged) {
        // A bulk writer, as below.
        ep.enlarged = true;
        (void)::fcntl(ep.fd.get(), F_SETPIPE_SZ, kBulkPipeBytes);
      }
      if (reaped_ && !draining_ && !paused_ && !finished_) {
        idle_timer_.enable(kExitDrainIdle);
      }
      updateInterest(ep);
      return true;
    }
  }
  Buffer data;
  bool eof = false;
  while (data.length() < limit) {
    const int n = data.readFrom(ep.fd.get(), kReadChunk);
    if (n > 0) {
      if (n == kReadChunk && !ep.enlarged && !tty_) {
        // The pipe held a whole chunk: this process writes in bulk. A larger
        // pipe lets it write far ahead, so it and crisp wake each other up
        // once per megabyte rather than once per page. Only bulk writers get
        // one (an idle or interactive session keeps the default 64 KiB);
        // when the kernel refuses (pipe-max-size, or the user's pipe pages
        // over fs.pipe-user-pages-soft) the pipe stays as it is.
        ep.enlarged = true;
        (void)::fcntl(ep.fd.get(), F_SETPIPE_SZ, kBulkPipeBytes);
      }
      if (n < kReadChunk) {
        // A short read emptied the pipe; asking again would only return
        // EAGAIN. The watcher (level-triggered) reports what comes next.
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
    // 0 is EOF on a pipe; a pty master reports EIO once every slave
    // descriptor is closed. Any other error ends the stream just the same.
    eof = true;
    break;
  }
  if (!data.empty()) {
    std::weak_ptr<bool> alive = alive_;
    callbacks_.onChildOutput(ep.is_stderr, data);
    if (alive.expired()) {
      return false;
    }
    if (reaped_ && !draining_ && !paused_ && !finished_) {
      idle_timer_.enable(kExitDrainIdle);
    }
  }
  if (eof) {
    ep.read_eof = true;
    if (ep.writes && !ep.write_closed) {
      // The pty is gone: nothing more can be written to the child either.
      stopWriting(ep);
      const size_t dropped = stdin_queue_.length();
      stdin_queue_.drain(dropped);
      if (dropped > 0) {
        std::weak_ptr<bool> alive = alive_;
        callbacks_.onChildStdinConsumed(dropped);
        if (alive.expired()) {
          return false;
        }
      }
    }
    if (ep.watcher != nullptr) {
      ep.watcher->setEnabled(0);
    }
    ep.fd.reset();
  } else {
    updateInterest(ep);
  }
  return true;
}

bool ChildProcess::outputDone() const {
  return (!stdout_.reads || stdout_.read_eof) && (!stderr_.reads || stderr_.read_eof);
}

bool ChildProcess::stdinOpen() const {
  const Endpoint& ep = stdinEndpoint();
  return ep.writes && !ep.write_closed && !stdin_closing_ && ep.fd.valid();
}

void ChildProcess::writeStdin(Buffer& data) {
  if (!stdinOpen() || data.empty()) {
    data.drain(data.length());
    return;
  }
  uint8_t last;
  data.copyOut(&last, 1, data.length() - 1);
  last_stdin_byte_ = last;
  stdin_queue_.move(data);
  updateInterest(stdinEndpoint());
}

int ChildProcess::stdinPipe() {
  if (tty_ || !stdinOpen()) {
    return -1;
  }
  Endpoint& ep = stdinEndpoint();
  stdin_spliced_ = true;
  if (ep.enlarged) {
    // A pipe is counted in slots, not bytes, and splice(2) from a socket
    // fills each slot with up to a whole socket buffer fragment (32 KiB and
    // more on loopback): a pipe enlarged for copied writes would hold many
    // times its size, all of it taken from the client while the process
    // does not read. The default 16 slots keep that near the stdin queue's
    // watermark. Until the pipe has drained enough to shrink, the caller
    // copies.
    if (::fcntl(ep.fd.get(), F_SETPIPE_SZ, kSplicePipeBytes) < 0) {
      return -1;
    }
    ep.enlarged = false;
  }
  if (!stdin_queue_.empty()) {
    std::weak_ptr<bool> alive = alive_;
    if (!flushStdin() || alive.expired()) {
      return -1;
    }
  }
  return stdin_queue_.empty() && stdinOpen() ? ep.fd.get() : -1;
}

void ChildProcess::closeStdin() {
  if (!stdinOpen()) {
    return;
  }
  stdin_closing_ = true;
  Endpoint& ep = stdinEndpoint();
  if (tty_) {
    // The line discipline turns VEOF into end-of-file for the reader; there is
    // no way to close only the input side of a terminal.
    uint8_t eof_char = 0x04;
    struct termios t;
    if (::tcgetattr(ep.fd.get(), &t) == 0 && t.c_cc[VEOF] != _POSIX_VDISABLE) {
      eof_char = t.c_cc[VEOF];
    }
    if (last_stdin_byte_ >= 0 && last_stdin_byte_ != '\n') {
      stdin_queue_.add(&eof_char, 1);
    }
    stdin_queue_.add(&eof_char, 1);
    updateInterest(ep);
    return;
  }
  if (stdin_queue_.empty()) {
    closeStdinNow();
  }
}

void ChildProcess::closeStdinNow() {
  Endpoint& ep = stdinEndpoint();
  stopWriting(ep);
  if (!tty_) {
    if (ep.watcher != nullptr) {
      ep.watcher->setEnabled(0);
    }
    ep.fd.reset();
  }
}

void ChildProcess::stopWriting(Endpoint& ep) {
  ep.write_closed = true;
  updateInterest(ep);
}

bool ChildProcess::flushStdin() {
  Endpoint& ep = stdinEndpoint();
  if (!ep.fd.valid() || ep.write_closed) {
    return true;
  }
  size_t consumed = 0;
  const bool sigpipe_ignored = sigpipeIgnored();
  while (!stdin_queue_.empty()) {
    const size_t before = stdin_queue_.length();
    const int n = writeWithoutSigpipe(stdin_queue_, ep.fd.get(), sigpipe_ignored);
    if (n > 0) {
      consumed += before - stdin_queue_.length();
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!ep.enlarged && !tty_ && !stdin_spliced_) {
        // The child reads slower than stdin comes: give the pipe room for
        // more, as readOutput() does for bulk output, and try again. (Not
        // once stdin is spliced into it too; see stdinPipe().)
        ep.enlarged = true;
        if (::fcntl(ep.fd.get(), F_SETPIPE_SZ, kBulkPipeBytes) > 0) {
          continue;
        }
      }
      break;
    }
    // EPIPE: the child closed its stdin (or exited); EIO: the pty is gone.
    consumed += stdin_queue_.length();
    stdin_queue_.drain(stdin_queue_.length());
    stdin_closing_ = true;
    break;
  }
  if (stdin_queue_.empty() && stdin_closing_) {
    closeStdinNow();
  } else {
    updateInterest(ep);
  }
  if (consumed > 0) {
    std::weak_ptr<bool> alive = alive_;
    callbacks_.onChildStdinConsumed(consumed);
    if (alive.expired()) {
      return false;
    }
  }
  return true;
}

void ChildProcess::resize(session::TerminalSize size) {
  if (!tty_ || !stdout_.fd.valid() || size.width == 0 || size.height == 0) {
    return;
  }
  struct winsize ws {};
  ws.ws_col = size.width;
  ws.ws_row = size.height;
  if (::ioctl(stdout_.fd.get(), TIOCSWINSZ, &ws) != 0) {
    CRISP_LOG(kRuntime, debug, "pid {}: TIOCSWINSZ failed: errno {}", pid_, errno);
  }
}

void ChildProcess::pauseOutput(bool paused) {
  if (paused_ == paused || finished_) {
    return;
  }
  paused_ = paused;
  updateInterest(stdout_);
  updateInterest(stderr_);
  if (!reaped_) {
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

void ChildProcess::signalGroup(int sig) {
  if (!reaped_ && pid_ > 0 && ::kill(-pid_, sig) != 0) {
    ::kill(pid_, sig);  // not yet its own group leader
  }
}

void ChildProcess::onPidfdReady() {
  if (reaped_) {
    return;
  }
  if (!reapPidfd(process_.pidfd.get(), exit_code_)) {
    return;
  }
  reaped_ = true;
  pidfd_watcher_->setEnabled(0);
  process_.pidfd.reset();
  // The child is gone, so its end of the error pipe is closed: this read
  // cannot block and gives the final answer.
  exec_failure_ = readExecFailure(process_);
  max_timer_.enable(kExitDrainMax);
  maybeFinish();
}

void ChildProcess::maybeFinish() {
  if (!reaped_ || finished_ || draining_) {
    return;
  }
  if (outputDone()) {
    finish();
    return;
  }
  if (!paused_ && !idle_timer_.enabled()) {
    idle_timer_.enable(kExitDrainIdle);
  }
}

void ChildProcess::drainAndFinish() {
  if (finished_ || !reaped_ || paused_) {
    return;
  }
  draining_ = true;
  for (Endpoint* ep : {&stdout_, &stderr_}) {
    if (ep->reads && !readOutput(*ep, kFinalDrainLimit)) {
      return;
    }
  }
  draining_ = false;
  if (!outputDone()) {
    CRISP_LOG(kRuntime, debug,
              "pid {} exited; its output is still held open (a background process?), "
              "finishing without it",
              pid_);
  }
  finish();
}

void ChildProcess::finish() {
  finished_ = true;
  idle_timer_.disable();
  max_timer_.disable();
  for (Endpoint* ep : {&stdin_, &stdout_, &stderr_}) {
    if (ep->watcher != nullptr) {
      ep->watcher->setEnabled(0);
    }
    ep->fd.reset();
    ep->read_eof = true;
    ep->write_closed = true;
  }
  stdin_queue_.drain(stdin_queue_.length());
  callbacks_.onChildFinished(exit_code_, exec_failure_);
}

}  // namespace crisp::runtime
