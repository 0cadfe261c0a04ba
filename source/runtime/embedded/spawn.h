#pragma once

// Process spawning for the embedded runtime: fork + execve of one command as
// its own session and process-group leader, with pipes or a pseudo-terminal for
// its stdio, a pidfd to learn of its exit, and a close-on-exec error pipe on
// which the child reports why it could not exec.
//
// Everything the child needs (argv, envp, candidate paths, user ids) is
// prepared before fork(); between fork and execve the child only makes
// async-signal-safe calls, so spawning is safe from any thread of crisp.
//
// Usage:
//   SpawnOptions o; o.argv = {"ls", "-l"}; o.env = buildEnvironment(cfg_env, false);
//   o.working_dir = "/"; o.pipe_stdout = true;
//   absl::StatusOr<SpawnedProcess> p = spawnProcess(o);
//   ... watch p->pidfd; when readable: reapPidfd(p->pidfd.get(), &code) ...
//   if (auto err = readExecFailure(*p)) { ... the command never ran ... }

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <sys/types.h>

#include "source/runtime/embedded/unique_fd.h"
#include "source/session/runtime.h"

namespace crisp::runtime {

// The PATH given to a command whose environment has none.
inline constexpr const char* kDefaultPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Credentials a child switches to before exec.
struct UserIds {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
};

// Resolves "name", "uid", "name:group" or "uid:gid" with the thread-safe NSS
// calls (getpwnam_r and friends). May block on NSS; call it at start-up, not on
// a session's loop. A numeric uid without a passwd entry is accepted (gid 0 or
// the given one, no supplementary groups). InvalidArgument when a name is
// unknown or the text is malformed.
absl::StatusOr<UserIds> resolveUser(const std::string& user);

// The environment of a command: exactly `env`, plus PATH=kDefaultPath when
// `env` has no PATH, plus TERM=xterm when `tty` and `env` has no TERM. crisp's
// own environment is never inherited.
std::vector<std::string> buildEnvironment(const std::vector<std::string>& env, bool tty);

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in the PATH of `env` unless it has '/'
  std::vector<std::string> env;   // final "KEY=value" list (see buildEnvironment)
  std::string working_dir = "/";
  std::optional<UserIds> user;  // switched to in the child when set (needs root)

  // With tty, stdin, stdout and stderr are all the slave side of a new pty and
  // the parent gets its master. `initial_size` is applied before exec.
  bool tty = false;
  std::optional<session::TerminalSize> initial_size;
  // Without tty: a pipe for each selected stream, /dev/null for the others.
  bool pipe_stdin = false;
  bool pipe_stdout = false;
  bool pipe_stderr = false;
};

// A child that was forked. Parent-side descriptors are close-on-exec and
// non-blocking. Owning this object does not reap the child: the owner watches
// `pidfd` and calls reapChild(), or kills and hands it to a reaper.
struct SpawnedProcess {
  pid_t pid = -1;
  UniqueFd pidfd;       // readable once the child has exited
  UniqueFd stdin_fd;    // write end of the stdin pipe (pipes only)
  UniqueFd stdout_fd;   // read end of the stdout pipe (pipes only)
  UniqueFd stderr_fd;   // read end of the stderr pipe (pipes only)
  UniqueFd pty_master;  // tty only: stdin, stdout and stderr together
  UniqueFd exec_error;  // read end of the exec error pipe: EOF once exec succeeded
  // For error messages: the command's argv[0] and working directory.
  std::string executable;
  std::string working_dir;
  bool path_lookup = false;  // argv[0] had no '/' and was searched in PATH
};

// Forks and execs. Fails at once (and leaves nothing behind) when descriptors,
// the pty or fork itself cannot be had, or when argv is empty. A command that
// cannot be executed is not a failure here: the child reports it through
// `exec_error` and exits with 127 (see readExecFailure()).
absl::StatusOr<SpawnedProcess> spawnProcess(const SpawnOptions& options);

// After the child exited (or when exec_error is readable): the reason the child
// could not run the command, e.g. `exec: "/no/such/binary": no such file or
// directory`, or nullopt when exec succeeded or nothing is known yet.
// Non-blocking; closes exec_error once it has an answer.
std::optional<std::string> readExecFailure(SpawnedProcess& process);

// Blocks up to `timeout` until the child has exec'd (OK) or reported why it
// could not (FailedPrecondition with the reason). DeadlineExceeded when the
// child has done neither in time. For start-up only, never on a session's loop.
absl::Status waitForExec(SpawnedProcess& process, std::chrono::milliseconds timeout);

// Kills the child's process group and blocks until the child is reaped. For
// start-up failures only, never on a session's loop.
void killAndWait(SpawnedProcess& process);

// Reaps the child behind `pidfd` if it has exited, without blocking (waitid
// with P_PIDFD; never waits for any other child). Returns true once reaped and
// then sets `code` to the exit code, or 128+N after death by signal N; -1 when
// the child had already been reaped elsewhere.
bool reapPidfd(int pidfd, int& code);

}  // namespace crisp::runtime
