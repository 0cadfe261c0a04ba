#include "source/runtime/embedded/spawn.h"

#include <cerrno>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

namespace crisp::runtime {
namespace {

// What the child writes on the error pipe before _exit(127).
enum class ChildStage : int32_t {
  kSetsid = 1,
  kControllingTerminal,
  kStdio,
  kSetgroups,
  kSetgid,
  kSetuid,
  kChdir,
  kExec,
};

struct ChildError {
  int32_t stage;
  int32_t error;
};

// Everything the child uses, prepared before fork so that the child allocates
// nothing and calls only async-signal-safe functions.
struct ChildPlan {
  char* const* argv;
  char* const* envp;
  const char* const* candidates;  // null-terminated paths to try with execve
  const char* working_dir;
  bool set_ids;
  uid_t uid;
  gid_t gid;
  const gid_t* groups;
  size_t group_count;
  bool tty;
  int stdio[3];  // descriptors for 0, 1, 2 (all >= 3)
  int error_fd;
  int max_fd;  // for the close loop when close_range is unavailable
};

// The kernel's struct sigaction for rt_sigaction(2) (not glibc's layout).
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

[[noreturn]] void childFail(const ChildPlan& plan, ChildStage stage, int error) {
  const ChildError e{static_cast<int32_t>(stage), error};
  // A write of 8 bytes to a pipe is atomic; nothing to do if it fails.
  ssize_t ignored = ::write(plan.error_fd, &e, sizeof(e));
  (void)ignored;
  ::_exit(127);
}

void closeOthers(const ChildPlan& plan) {
  const int keep = plan.error_fd;
  bool ok = true;
  if (keep > 3 && ::syscall(SYS_close_range, 3u, static_cast<unsigned>(keep - 1), 0u) != 0) {
    ok = false;
  }
  if (ok && ::syscall(SYS_close_range, static_cast<unsigned>(keep + 1), ~0u, 0u) == 0) {
    return;
  }
  for (int fd = 3; fd < plan.max_fd; ++fd) {
    if (fd != keep) {
      ::close(fd);
    }
  }
}

// Runs in the child between vfork and execve. Async-signal-safe calls only;
// the credential changes use raw system calls because after fork the child is
// single-threaded and glibc's wrappers would try to signal the parent's
// (absent) threads.
[[noreturn]] void runChild(const ChildPlan& plan) {
  // SIG_IGN dispositions survive exec (SIGPIPE ignored by crisp would leak into
  // the command); handlers are reset by exec anyway. The raw system call also
  // reaches the signals that glibc reserves for itself and whose disposition
  // its wrapper refuses to change. Then the mask that the parent blocked
  // around fork is cleared.
  KernelSigaction dfl;
  ::memset(&dfl, 0, sizeof(dfl));
  dfl.handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) {
      ::syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof(dfl.mask));
    }
  }
  sigset_t empty;
  ::sigemptyset(&empty);
  ::sigprocmask(SIG_SETMASK, &empty, nullptr);

  if (::setsid() < 0) {
    childFail(plan, ChildStage::kSetsid, errno);
  }
  if (plan.tty && ::ioctl(plan.stdio[0], TIOCSCTTY, 0) < 0) {
    childFail(plan, ChildStage::kControllingTerminal, errno);
  }
  for (int i = 0; i < 3; ++i) {
    if (::dup2(plan.stdio[i], i) < 0) {
      childFail(plan, ChildStage::kStdio, errno);
    }
  }
  if (plan.set_ids) {
    if (::syscall(SYS_setgroups, plan.group_count, plan.groups) != 0) {
      childFail(plan, ChildStage::kSetgroups, errno);
    }
    if (::syscall(SYS_setresgid, plan.gid, plan.gid, plan.gid) != 0) {
      childFail(plan, ChildStage::kSetgid, errno);
    }
    if (::syscall(SYS_setresuid, plan.uid, plan.uid, plan.uid) != 0) {
      childFail(plan, ChildStage::kSetuid, errno);
    }
  }
  // After the switch, so that the directory is entered with the user's rights.
  if (::chdir(plan.working_dir) != 0) {
    childFail(plan, ChildStage::kChdir, errno);
  }
  closeOthers(plan);

  // PATH search with execvp's rules: a missing entry moves on, a permission
  // error is remembered and reported if nothing else is found, any other error
  // stops the search.
  int error = ENOENT;
  bool saw_eacces = false;
  for (const char* const* c = plan.candidates; *c != nullptr; ++c) {
    ::execve(*c, plan.argv, plan.envp);
    const int e = errno;
    if (e == EACCES) {
      saw_eacces = true;
    } else if (e == ENOENT || e == ENOTDIR || e == ESTALE || e == ENODEV || e == ETIMEDOUT) {
      error = e;
    } else {
      error = e;
      saw_eacces = false;
      break;
    }
  }
  childFail(plan, ChildStage::kExec, saw_eacces ? EACCES : error);
}

std::string errorText(int error) {
  char buf[256];
  std::string text = ::strerror_r(error, buf, sizeof(buf));
  // Lower-case first letter, as the runtimes' own messages read.
  if (!text.empty()) {
    text[0] = absl::ascii_tolower(static_cast<unsigned char>(text[0]));
  }
  return text;
}

absl::Status errnoStatus(const std::string& what, int error) {
  return absl::InternalError(absl::StrCat(what, ": ", errorText(error)));
}

// Moves a descriptor the child will dup2 away from 0-2, so that placing one
// stream cannot overwrite the source of another.
absl::Status keepAboveStdio(UniqueFd& fd) {
  if (!fd.valid() || fd.get() > 2) {
    return absl::OkStatus();
  }
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) {
    return errnoStatus("dup", errno);
  }
  fd.reset(moved);
  return absl::OkStatus();
}

absl::Status setNonBlocking(const UniqueFd& fd) {
  if (!fd.valid()) {
    return absl::OkStatus();
  }
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    return errnoStatus("fcntl", errno);
  }
  return absl::OkStatus();
}

// A close-on-exec pipe: [0] read end, [1] write end.
absl::Status makePipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return errnoStatus("pipe", errno);
  }
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return absl::OkStatus();
}

absl::Status openPty(UniqueFd& master, UniqueFd& slave,
                     const std::optional<session::TerminalSize>& size) {
  master.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!master.valid()) {
    return errnoStatus("posix_openpt", errno);
  }
  if (::grantpt(master.get()) != 0 || ::unlockpt(master.get()) != 0) {
    return errnoStatus("unlockpt", errno);
  }
  char name[128];
  if (::ptsname_r(master.get(), name, sizeof(name)) != 0) {
    return errnoStatus("ptsname", errno);
  }
  slave.reset(::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC));
  if (!slave.valid()) {
    return errnoStatus(absl::StrCat("open ", name), errno);
  }
  if (size.has_value() && size->width > 0 && size->height > 0) {
    struct winsize ws {};
    ws.ws_col = size->width;
    ws.ws_row = size->height;
    if (::ioctl(master.get(), TIOCSWINSZ, &ws) != 0) {
      return errnoStatus("TIOCSWINSZ", errno);
    }
  }
  return absl::OkStatus();
}

std::string pathOf(const std::vector<std::string>& env) {
  for (const auto& kv : env) {
    if (kv.rfind("PATH=", 0) == 0) {
      return kv.substr(5);
    }
  }
  return kDefaultPath;
}

bool allDigits(const std::string& s) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return true;
}

size_t initialNssBufferSize() {
  const long n = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  return n > 0 ? static_cast<size_t>(n) : 16384;
}

// Looks up a passwd entry by name or uid. Returns false when there is none.
bool lookupPasswd(const std::string& name, const uid_t* uid, std::string& out_name, uid_t& out_uid,
                  gid_t& out_gid, int& error) {
  std::vector<char> buf(initialNssBufferSize());
  for (;;) {
    struct passwd pw;
    struct passwd* result = nullptr;
    const int rc = uid != nullptr
                       ? ::getpwuid_r(*uid, &pw, buf.data(), buf.size(), &result)
                       : ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &result);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    error = rc;
    if (rc != 0 || result == nullptr) {
      return false;
    }
    out_name = pw.pw_name;
    out_uid = pw.pw_uid;
    out_gid = pw.pw_gid;
    return true;
  }
}

bool lookupGroup(const std::string& name, gid_t& out_gid, int& error) {
  std::vector<char> buf(initialNssBufferSize());
  for (;;) {
    struct group gr;
    struct group* result = nullptr;
    const int rc = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &result);
    if (rc == ERANGE && buf.size() < (1u << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    error = rc;
    if (rc != 0 || result == nullptr) {
      return false;
    }
    out_gid = gr.gr_gid;
    return true;
  }
}

std::string describeFailure(const SpawnedProcess& p, const ChildError& e) {
  const std::string text = errorText(e.error);
  switch (static_cast<ChildStage>(e.stage)) {
    case ChildStage::kExec:
      if (p.path_lookup && e.error == ENOENT) {
        return absl::StrCat("exec: \"", p.executable, "\": executable file not found in $PATH");
      }
      return absl::StrCat("exec: \"", p.executable, "\": ", text);
    case ChildStage::kChdir:
      return absl::StrCat("chdir \"", p.working_dir, "\": ", text);
    case ChildStage::kSetgroups:
      return absl::StrCat("setgroups: ", text);
    case ChildStage::kSetgid:
      return absl::StrCat("setgid: ", text);
    case ChildStage::kSetuid:
      return absl::StrCat("setuid: ", text);
    case ChildStage::kSetsid:
    case ChildStage::kControllingTerminal:
    case ChildStage::kStdio:
      return absl::StrCat("setting up stdio for \"", p.executable, "\": ", text);
  }
  return absl::StrCat("starting \"", p.executable, "\": ", text);
}

}  // namespace

absl::StatusOr<UserIds> resolveUser(const std::string& user) {
  std::vector<std::string> parts = absl::StrSplit(user, absl::MaxSplits(':', 1));
  const std::string& u = parts[0];
  if (u.empty() || (parts.size() == 2 && parts[1].empty())) {
    return absl::InvalidArgumentError(absl::StrCat("malformed user \"", user, "\""));
  }
  UserIds ids;
  std::string name;
  bool have_entry = false;
  int error = 0;
  if (allDigits(u)) {
    uint32_t uid = 0;
    if (!absl::SimpleAtoi(u, &uid)) {
      return absl::InvalidArgumentError(absl::StrCat("malformed uid \"", u, "\""));
    }
    ids.uid = uid;
    const uid_t key = uid;
    uid_t found_uid;
    have_entry = lookupPasswd("", &key, name, found_uid, ids.gid, error);
  } else {
    have_entry = lookupPasswd(u, nullptr, name, ids.uid, ids.gid, error);
    if (!have_entry) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown user \"", u, "\"", error != 0 ? ": " + errorText(error) : ""));
    }
  }
  if (parts.size() == 2) {
    const std::string& g = parts[1];
    if (allDigits(g)) {
      uint32_t gid = 0;
      if (!absl::SimpleAtoi(g, &gid)) {
        return absl::InvalidArgumentError(absl::StrCat("malformed gid \"", g, "\""));
      }
      ids.gid = gid;
    } else if (!lookupGroup(g, ids.gid, error)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown group \"", g, "\""));
    }
  }
  if (have_entry) {
    int count = 32;
    for (;;) {
      std::vector<gid_t> groups(static_cast<size_t>(count));
      int n = count;
      if (::getgrouplist(name.c_str(), ids.gid, groups.data(), &n) >= 0) {
        groups.resize(static_cast<size_t>(n));
        ids.groups = std::move(groups);
        break;
      }
      if (n <= count || count > 65536) {
        break;
      }
      count = n;
    }
  }
  return ids;
}

std::vector<std::string> buildEnvironment(const std::vector<std::string>& env, bool tty) {
  std::vector<std::string> out = env;
  bool has_path = false;
  bool has_term = false;
  for (const auto& kv : env) {
    has_path = has_path || kv.rfind("PATH=", 0) == 0;
    has_term = has_term || kv.rfind("TERM=", 0) == 0;
  }
  if (!has_path) {
    out.push_back(absl::StrCat("PATH=", kDefaultPath));
  }
  if (tty && !has_term) {
    out.push_back("TERM=xterm");
  }
  return out;
}

absl::StatusOr<SpawnedProcess> spawnProcess(const SpawnOptions& options) {
  if (options.argv.empty() || options.argv[0].empty()) {
    return absl::InvalidArgumentError("empty command");
  }
  SpawnedProcess p;
  p.executable = options.argv[0];
  p.working_dir = options.working_dir.empty() ? "/" : options.working_dir;
  p.path_lookup = p.executable.find('/') == std::string::npos;

  // Strings and arrays for the child, built now: the child must not allocate.
  std::vector<std::string> candidates;
  if (p.path_lookup) {
    for (absl::string_view dir : absl::StrSplit(pathOf(options.env), ':')) {
      candidates.push_back(dir.empty() ? absl::StrCat("./", p.executable)
                                       : absl::StrCat(dir, "/", p.executable));
    }
  } else {
    candidates.push_back(p.executable);
  }
  std::vector<const char*> candidate_ptrs;
  for (const auto& c : candidates) {
    candidate_ptrs.push_back(c.c_str());
  }
  candidate_ptrs.push_back(nullptr);
  std::vector<char*> argv;
  for (const auto& a : options.argv) {
    argv.push_back(const_cast<char*>(a.c_str()));
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : options.env) {
    envp.push_back(const_cast<char*>(e.c_str()));
  }
  envp.push_back(nullptr);

  // Descriptors. Child-side ends are closed in the parent right after fork.
  UniqueFd child_stdio[3];
  UniqueFd dev_null;
  UniqueFd pty_slave;
  UniqueFd error_write;
  absl::Status status = makePipe(p.exec_error, error_write);
  if (status.ok() && options.tty) {
    status = openPty(p.pty_master, pty_slave, options.initial_size);
  } else if (status.ok()) {
    if (!options.pipe_stdin || !options.pipe_stdout || !options.pipe_stderr) {
      dev_null.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
      if (!dev_null.valid()) {
        status = errnoStatus("open /dev/null", errno);
      }
    }
    if (status.ok() && options.pipe_stdin) {
      status = makePipe(child_stdio[0], p.stdin_fd);
    }
    if (status.ok() && options.pipe_stdout) {
      status = makePipe(p.stdout_fd, child_stdio[1]);
    }
    if (status.ok() && options.pipe_stderr) {
      status = makePipe(p.stderr_fd, child_stdio[2]);
    }
  }
  for (UniqueFd* fd :
       {&child_stdio[0], &child_stdio[1], &child_stdio[2], &dev_null, &pty_slave, &error_write}) {
    if (status.ok()) {
      status = keepAboveStdio(*fd);
    }
  }
  for (const UniqueFd* fd :
       {&p.stdin_fd, &p.stdout_fd, &p.stderr_fd, &p.pty_master, &p.exec_error}) {
    if (status.ok()) {
      status = setNonBlocking(*fd);
    }
  }
  if (!status.ok()) {
    return status;
  }

  ChildPlan plan{};
  plan.argv = argv.data();
  plan.envp = envp.data();
  plan.candidates = candidate_ptrs.data();
  plan.working_dir = p.working_dir.c_str();
  plan.set_ids = options.user.has_value();
  if (plan.set_ids) {
    plan.uid = options.user->uid;
    plan.gid = options.user->gid;
    plan.groups = options.user->groups.data();
    plan.group_count = options.user->groups.size();
  }
  plan.tty = options.tty;
  for (int i = 0; i < 3; ++i) {
    plan.stdio[i] = options.tty ? pty_slave.get()
                                : (child_stdio[i].valid() ? child_stdio[i].get() : dev_null.get());
  }
  plan.error_fd = error_write.get();
  struct rlimit lim {};
  plan.max_fd = ::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
                        lim.rlim_cur < (1u << 20)
                    ? static_cast<int>(lim.rlim_cur)
                    : (1 << 16);

  // No signal handler of crisp may run in the child before it resets them.
  sigset_t all;
  sigset_t previous;
  ::sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  // vfork: the child borrows crisp's memory until it execs, so starting a
  // command costs the same whatever crisp's size (fork copied the page
  // tables of the whole process). runChild() is written for this: it only
  // reads `plan`, makes raw system calls, and ends in execve or _exit.
  const pid_t pid = ::vfork();
  if (pid == 0) {
    runChild(plan);
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) {
    return errnoStatus("fork", fork_errno);
  }
  p.pid = pid;
  // The child holds its ends now; ours would keep EOF from ever arriving.
  for (UniqueFd* fd :
       {&child_stdio[0], &child_stdio[1], &child_stdio[2], &dev_null, &pty_slave, &error_write}) {
    fd->reset();
  }
  // The pid cannot be reused before we reap it, so the pidfd names this child.
  p.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!p.pidfd.valid()) {
    const int error = errno;
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    int ignored;
    ::waitpid(pid, &ignored, 0);
    return errnoStatus("pidfd_open", error);
  }
  return p;
}

std::optional<std::string> readExecFailure(SpawnedProcess& process) {
  if (!process.exec_error.valid()) {
    return std::nullopt;
  }
  ChildError e{};
  ssize_t n;
  do {
    n = ::read(process.exec_error.get(), &e, sizeof(e));
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return std::nullopt;  // exec not done yet
  }
  process.exec_error.reset();
  if (n == 0) {
    return std::nullopt;  // closed by a successful exec
  }
  if (n != static_cast<ssize_t>(sizeof(e))) {
    return absl::StrCat("starting \"", process.executable, "\": incomplete error report");
  }
  return describeFailure(process, e);
}

absl::Status waitForExec(SpawnedProcess& process, std::chrono::milliseconds timeout) {
  if (!process.exec_error.valid()) {
    return absl::OkStatus();
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("\"", process.executable, "\" did not start in time"));
    }
    struct pollfd pfd {
      process.exec_error.get(), POLLIN, 0
    };
    const int rc = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (rc < 0 && errno == EINTR) {
      continue;
    }
    if (rc < 0) {
      return errnoStatus("poll", errno);
    }
    if (rc == 0) {
      continue;
    }
    if (auto failure = readExecFailure(process)) {
      return absl::FailedPreconditionError(*failure);
    }
    return absl::OkStatus();
  }
}

void killAndWait(SpawnedProcess& process) {
  if (process.pid <= 0 || !process.pidfd.valid()) {
    return;
  }
  // The child may not have called setsid yet: signal it by pid as well.
  ::kill(-process.pid, SIGKILL);
  ::kill(process.pid, SIGKILL);
  siginfo_t info;
  int rc;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(process.pidfd.get()), &info, WEXITED);
  } while (rc < 0 && errno == EINTR);
  process.pidfd.reset();
  process.pid = -1;
}

bool reapPidfd(int pidfd, int& code) {
  siginfo_t info;
  ::memset(&info, 0, sizeof(info));
  int rc;
  do {
    rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    // ECHILD: reaped already. Anything else means the pidfd is unusable; either
    // way there is nothing left to wait for, and reporting "running" would
    // make a level-triggered watcher spin.
    code = -1;
    return true;
  }
  if (info.si_pid == 0) {
    return false;  // still running
  }
  code = info.si_code == CLD_EXITED ? info.si_status : 128 + info.si_status;
  return true;
}

}  // namespace crisp::runtime
