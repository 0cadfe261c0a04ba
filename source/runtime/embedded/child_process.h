#pragma once

// ChildProcess: one spawned child driven by one dispatcher. It feeds the
// child's stdin from a queue, reads its stdout/stderr (or pty) as output
// arrives, learns of its exit through its pidfd (no SIGCHLD handler, no
// waitpid(-1)) and reports the end once, after all output was handed over.
//
// When output is complete: after the child was reaped, every output stream
// must reach EOF. A background grandchild may keep a pipe or the pty open
// forever, so after the exit the streams are read until they have been quiet
// for kExitDrainIdle, and never longer than kExitDrainMax in all; whatever
// the grandchild writes after that is not delivered. While output is paused the
// drain waits (bytes still in the pipe are not dropped because a client is
// slow); it resumes with pauseOutput(false).
//
// Threading: construct, use and destroy on the dispatcher's thread; callbacks
// run there. A callback may destroy the ChildProcess.
//
// Destroying it before the child was reaped kills the child's process group
// with SIGKILL and reaps the child on the same dispatcher once it is dead
// (the pidfd stays open until then). Background processes left behind by a
// child that exited by itself are not killed.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/runtime/embedded/spawn.h"
#include "source/runtime/embedded/unique_fd.h"
#include "source/session/runtime.h"

namespace crisp::runtime {

class ChildProcess {
 public:
  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    // Output of the child; with a pty everything arrives as stdout
    // (is_stderr false). The callee drains `data`.
    virtual void onChildOutput(bool is_stderr, Buffer& data) = 0;
    // Without a pty, offered before each read of stdout or stderr: the
    // callee may move up to `limit` bytes out of that pipe `pipe_fd` itself
    // and returns how many it took; 0 declines and the bytes are read and
    // delivered with onChildOutput(). Bytes it took but has not moved yet
    // stay in the pipe: it pauses output before returning, and nothing is
    // read from either pipe while paused (see
    // session::ExecCallbacks::onStdoutPipe()).
    virtual size_t onChildOutputPipe(bool is_stderr, int pipe_fd, size_t limit) {
      (void)is_stderr;
      (void)pipe_fd;
      (void)limit;
      return 0;
    }
    // `bytes` left the stdin queue: written to the child, or dropped because the
    // child no longer reads its stdin.
    virtual void onChildStdinConsumed(size_t bytes) = 0;
    // Called once and last: the child was reaped and its output is complete.
    // `exit_code` is the code, 128+N after death by signal N, or -1 when unknown.
    // `exec_failure` is set when the command could not be executed at all.
    virtual void onChildFinished(int exit_code, const std::optional<std::string>& exec_failure) = 0;
  };

  static constexpr std::chrono::milliseconds kExitDrainIdle{100};
  static constexpr std::chrono::milliseconds kExitDrainMax{2000};
  // Bytes read from one stream per readiness event, to keep the loop fair.
  static constexpr size_t kMaxReadPerEvent = 256 * 1024;

  // Takes the child's descriptors. With a pty, `pty_stdin` says whether stdin
  // writes are accepted (the pty is the child's stdin either way).
  ChildProcess(event::Dispatcher& dispatcher, SpawnedProcess process, Callbacks& callbacks,
               bool pty_stdin);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Queues bytes for stdin (drains `data`). Dropped when stdin is not open.
  void writeStdin(Buffer& data);
  size_t stdinQueuedBytes() const { return stdin_queue_.length(); }
  // True while writeStdin() accepts bytes.
  bool stdinOpen() const;
  // Without a pty, while stdin is open: the stdin pipe, for a caller that
  // writes into it itself, once the queue was written to it (tried here,
  // without waiting); -1 while bytes are still queued, and with a pty. From
  // the first call on, the pipe is not enlarged (and shrunk back when it
  // was; see session::ExecProcess::stdinPipe()).
  int stdinPipe();
  // After the queued bytes: closes the stdin pipe, or with a pty writes the
  // terminal's EOF character (VEOF, normally ^D) - twice when the last byte
  // written was not a newline, since in canonical mode the first one only ends
  // the pending partial line. The pty itself stays open, since it is also the
  // child's stdout.
  void closeStdin();
  // Sets the pty's window size (TIOCSWINSZ); ignored without a pty.
  void resize(session::TerminalSize size);
  // While paused, output is not read: the child blocks once the pipe is full.
  void pauseOutput(bool paused);
  // Sends `sig` to the child's process group; a no-op once it was reaped.
  void signalGroup(int sig);

  pid_t pid() const { return pid_; }
  bool reaped() const { return reaped_; }
  bool finished() const { return finished_; }

 private:
  // One descriptor and its watcher: a pipe end or the pty master (which both
  // reads output and takes stdin).
  struct Endpoint {
    UniqueFd fd;
    event::FdWatcherPtr watcher;
    bool reads = false;  // carries output
    bool is_stderr = false;
    bool read_eof = true;
    bool writes = false;  // takes stdin
    bool write_closed = true;
    // The pipe was found full once and enlarged (see readOutput()).
    bool enlarged = false;
  };

  Endpoint& stdinEndpoint() { return tty_ ? stdout_ : stdin_; }
  const Endpoint& stdinEndpoint() const { return tty_ ? stdout_ : stdin_; }
  void watch(Endpoint& ep);
  void updateInterest(Endpoint& ep);
  void onReady(Endpoint& ep, short events);
  // Reads up to `limit` bytes and delivers them. Returns false if `this` was
  // destroyed by a callback.
  bool readOutput(Endpoint& ep, size_t limit);
  bool outputDone() const;
  // Returns false if `this` was destroyed by a callback.
  bool flushStdin();
  void closeStdinNow();
  void stopWriting(Endpoint& ep);
  void onPidfdReady();
  void maybeFinish();
  void drainAndFinish();
  void finish();

  event::Dispatcher& dispatcher_;
  Callbacks& callbacks_;
  SpawnedProcess process_;  // pid, pidfd, exec error pipe; stdio moved to endpoints
  const pid_t pid_;
  const bool tty_;
  Endpoint stdin_;
  Endpoint stdout_;
  Endpoint stderr_;
  event::FdWatcherPtr pidfd_watcher_;
  event::Timer idle_timer_;
  event::Timer max_timer_;

  Buffer stdin_queue_;
  bool stdin_closing_ = false;
  int last_stdin_byte_ = -1;
  // stdinPipe() was asked for: the pipe keeps its default size.
  bool stdin_spliced_ = false;
  bool paused_ = false;
  bool reaped_ = false;
  bool drain_expired_ = false;
  bool draining_ = false;
  bool finished_ = false;
  int exit_code_ = -1;
  std::optional<std::string> exec_failure_;
  // Expires when `this` is destroyed; checked after every callback.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace crisp::runtime
