// containerd::startExec() against a real containerd: run by
// containerd_exec_test.py, which starts a private containerd and passes
//   CONTAINERD_SOCKET     containerd's gRPC socket
//   CONTAINER_ID          a running container (command: sleep 2147483647)
//   EXITED_CONTAINER_ID   a container whose command has ended
//   SANDBOX_ID            the pod sandbox of CONTAINER_ID
//   FIFO_DIR              a directory of the test's own for the sessions' FIFOs
// Sessions run on a dispatcher thread, as in crisp; the test thread waits for
// their results. Figures of the bulk transfers are printed as FIGURE lines.

#include <dirent.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/runtime/containerd/containerd_client.h"
#include "source/runtime/containerd/containerd_exec.h"

namespace crisp::containerd {
namespace {

using session::ExitStatus;

constexpr auto kTimeout = std::chrono::seconds(120);

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

double threadCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

std::vector<std::string> listDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return names;
  }
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      names.push_back(e->d_name);
    }
  }
  ::closedir(d);
  return names;
}

size_t openDescriptors() { return listDir("/proc/self/fd").size(); }

// One session's callbacks. Touched on the loop thread only; the test thread
// reads results through futures, or after run() returns.
class Session : public session::ExecCallbacks {
 public:
  void onStdout(Buffer& data) override {
    EXPECT_FALSE(ended_) << "output after onExit";
    EXPECT_FALSE(destroyed_) << "callback after the process was destroyed";
    stdout_bytes += data.length();
    if (stdout_sink) {
      stdout_sink(data);
    } else {
      out += data.toString();
    }
    data.drain(data.length());
    outputArrived();
  }
  void onStderr(Buffer& data) override {
    EXPECT_FALSE(ended_) << "output after onExit";
    EXPECT_FALSE(destroyed_) << "callback after the process was destroyed";
    err += data.toString();
    outputArrived();
  }
  void onExit(const ExitStatus& status) override {
    EXPECT_FALSE(ended_) << "onExit twice";
    EXPECT_FALSE(destroyed_) << "callback after the process was destroyed";
    ended_ = true;
    exit_promise_.set_value(status);
  }
  void onStdinDrained() override {
    EXPECT_FALSE(destroyed_) << "callback after the process was destroyed";
    if (on_drained) {
      on_drained();
    }
  }

  void outputArrived() {
    if (!first_output_set_) {
      first_output_set_ = true;
      first_output_.set_value();
    }
    if (on_output) {
      on_output();
    }
  }

  // Loop thread: destroys the process, as an adapter whose client left.
  void destroy() {
    process.reset();
    destroyed_ = true;
  }

  std::future<ExitStatus> exitFuture() { return exit_promise_.get_future(); }
  std::future<void> firstOutput() { return first_output_.get_future(); }

  std::unique_ptr<session::ExecProcess> process;
  std::string out;
  std::string err;
  uint64_t stdout_bytes = 0;
  std::function<void(Buffer&)> stdout_sink;
  std::function<void()> on_drained;
  std::function<void()> on_output;

 private:
  bool ended_ = false;
  bool destroyed_ = false;
  bool first_output_set_ = false;
  std::promise<ExitStatus> exit_promise_;
  std::promise<void> first_output_;
};

// A dispatcher on its own thread with a ContainerdClient living on it.
class Loop {
 public:
  Loop() : thread_([this] { dispatcher_.run(); }) {
    run([this] { client_ = std::make_unique<ContainerdClient>(dispatcher_, env("CONTAINERD_SOCKET")); });
  }
  ~Loop() {
    run([this] { client_.reset(); });
    dispatcher_.exit();
    thread_.join();
  }

  // Runs `fn` on the loop and waits for it.
  void run(std::function<void()> fn) {
    std::promise<void> done;
    dispatcher_.post([&] {
      fn();
      done.set_value();
    });
    done.get_future().get();
  }

  // Runs `start(done)` on the loop and waits for done(result).
  template <class T>
  T call(std::function<void(std::function<void(T)>)> start) {
    auto promise = std::make_shared<std::promise<T>>();
    std::future<T> future = promise->get_future();
    dispatcher_.post([start, promise] {
      start([promise](T value) { promise->set_value(std::move(value)); });
    });
    return future.get();
  }

  event::Dispatcher& dispatcher() { return dispatcher_; }
  ContainerdClient& client() { return *client_; }

 private:
  event::Dispatcher dispatcher_;
  std::unique_ptr<ContainerdClient> client_;
  std::thread thread_;
};

class ContainerdExecCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(env("CONTAINERD_SOCKET").empty()) << "run by containerd_exec_test.py";
    container_ = env("CONTAINER_ID");
    options_.fifo_dir = absl::StrCat(env("FIFO_DIR"), "/sessions");
    ::mkdir(options_.fifo_dir.c_str(), 0700);
  }

  void TearDown() override {
    EXPECT_EQ(listDir(options_.fifo_dir), std::vector<std::string>())
        << "FIFOs left in " << options_.fifo_dir;
  }

  static session::ExecSpec spec(std::vector<std::string> command, bool in, bool out, bool err,
                                bool tty = false) {
    session::ExecSpec s;
    s.operation = session::Operation::kExec;
    s.container_id = env("CONTAINER_ID");
    s.command = std::move(command);
    s.stdin = in;
    s.stdout = out;
    s.stderr = err;
    s.tty = tty;
    return s;
  }

  // Starts a session on the loop; fails the test when startExec refuses.
  void start(Session& session, const session::ExecSpec& s,
             std::optional<session::TerminalSize> initial = std::nullopt) {
    absl::Status status;
    loop_.run([&] {
      auto process = startExec(loop_.dispatcher(), loop_.client(), options_, s, initial, session);
      if (process.ok()) {
        session.process = std::move(*process);
      } else {
        status = process.status();
      }
    });
    ASSERT_TRUE(status.ok()) << status;
  }

  ExitStatus waitExit(std::future<ExitStatus>& exit) {
    if (exit.wait_for(kTimeout) != std::future_status::ready) {
      ADD_FAILURE() << "no onExit within " << kTimeout.count() << " s";
      return ExitStatus::error("timeout");
    }
    return exit.get();
  }

  void write(Session& session, const std::string& data) {
    loop_.run([&] {
      Buffer b;
      b.add(data);
      session.process->writeStdin(b);
    });
  }
  void closeStdin(Session& session) {
    loop_.run([&] { session.process->closeStdin(); });
  }
  void destroy(Session& session) {
    loop_.run([&] { session.destroy(); });
  }

  // Feeds `total` bytes of `block` (repeated, each copy's first 8 bytes set to
  // its index) to stdin, keeping to the watermarks, then closes stdin.
  // Returns the SHA-256 of what was fed, once all of it is queued.
  std::future<std::string> feed(Session& session, uint64_t total) {
    auto state = std::make_shared<FeedState>();
    state->total = total;
    state->block.resize(1 << 20);
    std::mt19937_64 rng(42);
    for (size_t i = 0; i + 8 <= state->block.size(); i += 8) {
      const uint64_t v = rng();
      std::memcpy(&state->block[i], &v, 8);
    }
    state->sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(state->sha, EVP_sha256(), nullptr);
    std::future<std::string> digest = state->digest.get_future();
    loop_.run([&session, state] {
      session.on_drained = [&session, state] { state->pump(*session.process); };
      state->pump(*session.process);
    });
    return digest;
  }

  struct FeedState {
    uint64_t total = 0;
    uint64_t sent = 0;
    uint64_t index = 0;
    std::string block;
    EVP_MD_CTX* sha = nullptr;
    std::promise<std::string> digest;
    ~FeedState() { EVP_MD_CTX_free(sha); }

    void pump(session::ExecProcess& process) {
      while (sent < total && process.stdinQueuedBytes() <= session::ExecProcess::kStdinHighWatermark) {
        std::memcpy(&block[0], &index, 8);
        ++index;
        const size_t n = std::min<uint64_t>(block.size(), total - sent);
        EVP_DigestUpdate(sha, block.data(), n);
        Buffer b;
        b.add(block.data(), n);
        process.writeStdin(b);
        sent += n;
        if (sent == total) {
          process.closeStdin();
          unsigned char md[32];
          unsigned int len = 0;
          EVP_DigestFinal_ex(sha, md, &len);
          std::string hex;
          for (unsigned i = 0; i < len; ++i) {
            absl::StrAppend(&hex, absl::Hex(md[i], absl::kZeroPad2));
          }
          digest.set_value(hex);
        }
      }
    }
  };

  // containerd still knows the exec: DeleteProcess finds it.
  bool containerdKnows(const std::string& exec_id) {
    auto deleted = loop_.call<absl::StatusOr<ProcessExit>>(
        [&](auto done) { loop_.client().deleteProcess(container_, exec_id, done); });
    return deleted.status().code() != absl::StatusCode::kNotFound;
  }

  // Processes in the container other than its main one and the `ps` asking.
  std::vector<std::string> strayProcesses() {
    Session ps;
    auto exit = ps.exitFuture();
    start(ps, spec({"ps", "-o", "pid,args"}, false, true, true));
    EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess) << ps.err;
    std::vector<std::string> stray;
    for (absl::string_view line : absl::StrSplit(ps.out, '\n', absl::SkipEmpty())) {
      if (absl::StrContains(line, "PID") || absl::StrContains(line, "ps -o pid,args") ||
          absl::StrContains(line, "sleep 2147483647")) {
        continue;
      }
      stray.emplace_back(line);
    }
    loop_.run([&] { ps.process.reset(); });
    return stray;
  }

  Loop loop_;
  std::string container_;
  ContainerdExecOptions options_;
};

TEST_F(ContainerdExecCheck, StdoutStderrAndExitCode) {
  Session s;
  auto exit = s.exitFuture();
  start(s, spec({"sh", "-c", "echo out; echo err >&2; exit 7"}, false, true, true));
  const ExitStatus status = waitExit(exit);
  EXPECT_EQ(status.kind, ExitStatus::Kind::kNonZeroExit) << status.message;
  EXPECT_EQ(status.exit_code, 7);
  EXPECT_EQ(s.out, "out\n");
  EXPECT_EQ(s.err, "err\n");
  const std::string id = containerdExecId(*s.process);
  EXPECT_FALSE(id.empty());
  EXPECT_FALSE(containerdKnows(id)) << "exec " << id << " left in containerd";
  loop_.run([&] { s.process.reset(); });
}

TEST_F(ContainerdExecCheck, SuccessAndSignalExits) {
  {
    Session s;
    auto exit = s.exitFuture();
    start(s, spec({"true"}, false, false, false));
    EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess);
    loop_.run([&] { s.process.reset(); });
  }
  for (int sig : {SIGKILL, SIGUSR1}) {
    Session s;
    auto exit = s.exitFuture();
    start(s, spec({"sh", "-c", absl::StrCat("kill -", sig, " $$")}, false, true, true));
    const ExitStatus status = waitExit(exit);
    EXPECT_EQ(status.kind, ExitStatus::Kind::kNonZeroExit) << status.message;
    EXPECT_EQ(status.exit_code, 128 + sig);
    loop_.run([&] { s.process.reset(); });
  }
}

TEST_F(ContainerdExecCheck, OnlyTheRequestedStreamsAreDelivered) {
  Session s;
  auto exit = s.exitFuture();
  start(s, spec({"sh", "-c", "echo out; echo err >&2"}, false, false, true));
  EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess);
  EXPECT_EQ(s.out, "");
  EXPECT_EQ(s.err, "err\n");
  loop_.run([&] { s.process.reset(); });
}

TEST_F(ContainerdExecCheck, ClosingStdoutDoesNotEndStdin) {
  constexpr uint64_t kBytes = 64ull << 20;
  Session s;
  auto exit = s.exitFuture();
  start(s, spec({"sh", "-c", "exec 1>&-; wc -c >&2"}, true, true, true));
  auto digest = feed(s, kBytes);
  EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess) << s.err;
  EXPECT_EQ(std::string(absl::StripAsciiWhitespace(s.err)), std::to_string(kBytes));
  EXPECT_EQ(s.out, "");
  loop_.run([&] { s.process.reset(); });
}

TEST_F(ContainerdExecCheck, GibibyteOfStdoutIsByteExact) {
  constexpr uint64_t kBytes = 1ull << 30;
  const std::string line = "abcdefghijklmnopqrstuvwxyz0123456789\n";
  std::string pattern;
  while (pattern.size() < (1u << 18)) {
    pattern += line;
  }
  Session s;
  uint64_t offset = 0;
  bool same = true;
  double verify_cpu = 0;
  std::string chunk;
  s.stdout_sink = [&](Buffer& data) {
    const double t0 = threadCpuSeconds();
    const size_t n = data.length();
    chunk.resize(n);
    data.copyOut(chunk.data(), n);
    size_t at = 0;
    while (at < n && same) {
      const size_t phase = (offset + at) % line.size();
      const size_t len = std::min(n - at, pattern.size() - phase);
      same = std::memcmp(chunk.data() + at, pattern.data() + phase, len) == 0;
      at += len;
    }
    offset += n;
    verify_cpu += threadCpuSeconds() - t0;
  };
  double loop_cpu0 = 0;
  loop_.run([&] { loop_cpu0 = threadCpuSeconds(); });
  const auto t0 = std::chrono::steady_clock::now();
  auto exit = s.exitFuture();
  start(s, spec({"sh", "-c", absl::StrCat("yes ", line.substr(0, line.size() - 1), " | head -c ",
                                          kBytes)},
                false, true, true));
  EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess) << s.err;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double loop_cpu = 0;
  loop_.run([&] { loop_cpu = threadCpuSeconds() - loop_cpu0; });
  EXPECT_EQ(s.stdout_bytes, kBytes);
  EXPECT_TRUE(same) << "stdout differs from the pattern before byte " << offset;
  std::printf("FIGURE stdout 1 GiB: %.1f s, %.0f MiB/s, loop CPU %.2f s (of which %.2f s checking "
              "the bytes)\n",
              seconds, 1024 / seconds, loop_cpu, verify_cpu);
  loop_.run([&] { s.process.reset(); });
}

TEST_F(ContainerdExecCheck, HalfGibibyteOfStdinIsByteExact) {
  constexpr uint64_t kBytes = 512ull << 20;
  Session s;
  auto exit = s.exitFuture();
  double loop_cpu0 = 0;
  loop_.run([&] { loop_cpu0 = threadCpuSeconds(); });
  const auto t0 = std::chrono::steady_clock::now();
  start(s, spec({"sha256sum"}, true, true, true));
  auto digest = feed(s, kBytes);
  EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess) << s.err;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double loop_cpu = 0;
  loop_.run([&] { loop_cpu = threadCpuSeconds() - loop_cpu0; });
  ASSERT_EQ(digest.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(s.out, digest.get() + "  -\n");
  std::printf("FIGURE stdin 512 MiB: %.1f s, %.0f MiB/s, loop CPU %.2f s (with hashing the "
              "input)\n",
              seconds, 512 / seconds, loop_cpu);
  loop_.run([&] { s.process.reset(); });
}

TEST_F(ContainerdExecCheck, PausedOutputStopsTheProcess) {
  constexpr uint64_t kBytes = 64ull << 20;
  Session s;
  auto exit = s.exitFuture();
  loop_.run([&] {
    auto process = startExec(loop_.dispatcher(), loop_.client(), options_,
                             spec({"head", "-c", std::to_string(kBytes), "/dev/zero"}, false,
                                  true, true),
                             std::nullopt, s);
    ASSERT_TRUE(process.ok()) << process.status();
    s.process = std::move(*process);
    s.process->pauseOutput(true);
  });
  // Paused from the start: the process cannot write 64 MiB into FIFOs and
  // pipes, so it can neither end nor have anything delivered.
  EXPECT_EQ(exit.wait_for(std::chrono::seconds(2)), std::future_status::timeout);
  uint64_t delivered = 1;
  loop_.run([&] { delivered = s.stdout_bytes; });
  EXPECT_EQ(delivered, 0u);
  loop_.run([&] { s.process->pauseOutput(false); });
  EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess);
  EXPECT_EQ(s.stdout_bytes, kBytes);
  loop_.run([&] { s.process.reset(); });
}

TEST_F(ContainerdExecCheck, StdinClosedAtOnceGivesEof) {
  Session s;
  auto exit = s.exitFuture();
  start(s, spec({"sh", "-c", "cat; echo done"}, true, true, true));
  write(s, "early\n");
  closeStdin(s);
  EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess);
  EXPECT_EQ(s.out, "early\ndone\n");
  loop_.run([&] { s.process.reset(); });
}

TEST_F(ContainerdExecCheck, TerminalSizeInitialAndResized) {
  Session s;
  auto exit = s.exitFuture();
  start(s, spec({"sh", "-c", "while read l; do [ \"$l\" = q ] && exit 3; stty size; done"}, true,
                true, false, /*tty=*/true),
        session::TerminalSize{80, 25});
  std::promise<void> got_first;
  std::promise<void> got_second;
  bool first_set = false;
  bool second_set = false;
  loop_.run([&] {
    s.on_output = [&] {
      if (!first_set && absl::StrContains(s.out, "25 80\r\n")) {
        first_set = true;
        got_first.set_value();
      }
      if (!second_set && absl::StrContains(s.out, "30 100\r\n")) {
        second_set = true;
        got_second.set_value();
      }
    };
  });
  // Typed at once: held until the initial size is set.
  write(s, "a\n");
  ASSERT_EQ(got_first.get_future().wait_for(kTimeout), std::future_status::ready) << s.out;
  loop_.run([&] { s.process->resize({100, 30}); });
  write(s, "b\n");
  ASSERT_EQ(got_second.get_future().wait_for(kTimeout), std::future_status::ready) << s.out;
  write(s, "q\n");
  const ExitStatus status = waitExit(exit);
  EXPECT_EQ(status.exit_code, 3) << status.message;
  EXPECT_EQ(s.err, "");
  loop_.run([&] {
    s.on_output = nullptr;
    s.process.reset();
  });
}

TEST_F(ContainerdExecCheck, TerminalStdinCloseIsEndOfFile) {
  Session s;
  auto exit = s.exitFuture();
  start(s, spec({"sh", "-c", "cat >/dev/null; echo EOF-seen"}, true, true, false, true));
  write(s, "partial line");
  closeStdin(s);
  EXPECT_EQ(waitExit(exit).kind, ExitStatus::Kind::kSuccess);
  EXPECT_TRUE(absl::StrContains(s.out, "EOF-seen")) << s.out;
  loop_.run([&] { s.process.reset(); });
}

TEST_F(ContainerdExecCheck, EarlyCloseKillsAndDeletesTheProcess) {
  Session s;
  auto exit = s.exitFuture();
  auto first = s.firstOutput();
  // stdin flows once Start has answered: the echo shows the session knows
  // the process runs (a close before that is the other path, in the test of
  // 100 sessions).
  start(s, spec({"sh", "-c", "read l; echo $l; exec sleep 1000"}, true, true, true));
  write(s, "up\n");
  ASSERT_EQ(first.wait_for(kTimeout), std::future_status::ready);
  const std::string id = containerdExecId(*s.process);
  destroy(s);
  // The kill and delete go on without the session; the FIFOs go last.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!listDir(options_.fifo_dir).empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(listDir(options_.fifo_dir), std::vector<std::string>());
  EXPECT_FALSE(containerdKnows(id)) << "exec " << id << " left in containerd";
  EXPECT_EQ(exit.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "onExit after the process was destroyed";
  EXPECT_EQ(strayProcesses(), std::vector<std::string>());
}

TEST_F(ContainerdExecCheck, ContainerdErrorsReachTheUser) {
  struct Case {
    std::string container;
    std::vector<std::string> command;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"crisp-no-such-container", {"true"}, "not found"},
      {env("EXITED_CONTAINER_ID"), {"true"}, ""},
      // containerd's CRI plugin has no container of that id either.
      {env("SANDBOX_ID"), {"true"}, "it is a pod sandbox"},
      {container_, {"/no/such/binary"}, "/no/such/binary"},
  };
  for (const Case& c : cases) {
    Session s;
    auto exit = s.exitFuture();
    session::ExecSpec sp = spec(c.command, true, true, true);
    sp.container_id = c.container;
    start(s, sp);
    const ExitStatus status = waitExit(exit);
    EXPECT_EQ(status.kind, ExitStatus::Kind::kError) << c.container << ": " << status.message;
    EXPECT_TRUE(absl::StrContains(status.message, c.container)) << status.message;
    EXPECT_TRUE(absl::StrContains(status.message, c.expect)) << status.message;
    std::printf("%s %s -> %s\n", c.container.c_str(), c.command[0].c_str(),
                status.message.c_str());
    loop_.run([&] { s.process.reset(); });
  }
  // What startExec refuses itself.
  loop_.run([&] {
    Session s;
    session::ExecSpec attach = spec({}, false, true, true);
    attach.operation = session::Operation::kAttach;
    EXPECT_EQ(startExec(loop_.dispatcher(), loop_.client(), options_, attach, std::nullopt, s)
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(startExec(loop_.dispatcher(), loop_.client(), options_, spec({}, false, true, true),
                        std::nullopt, s)
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
  });
}

TEST_F(ContainerdExecCheck, HundredSessionsLeaveNothingBehind) {
  // One session first, so that the client's connection is open when counting.
  {
    Session s;
    auto exit = s.exitFuture();
    start(s, spec({"true"}, false, true, true));
    waitExit(exit);
    loop_.run([&] { s.process.reset(); });
  }
  const size_t fds_before = openDescriptors();
  std::vector<std::string> ids;
  int cut = 0;
  for (int i = 0; i < 100; ++i) {
    Session s;
    auto exit = s.exitFuture();
    auto first = s.firstOutput();
    const bool tty = i % 4 == 1;
    const bool cut_short = i % 3 == 0;
    std::vector<std::string> command =
        cut_short ? (i % 2 == 0 ? std::vector<std::string>{"yes"}
                                : std::vector<std::string>{"sh", "-c", "echo up; exec cat"})
                  : std::vector<std::string>{"sh", "-c", absl::StrCat("echo ", i, "; cat")};
    start(s, spec(command, true, true, !tty, tty), session::TerminalSize{80, 24});
    ids.push_back(containerdExecId(*s.process));
    if (cut_short) {
      ASSERT_EQ(first.wait_for(kTimeout), std::future_status::ready);
      if (i % 2 == 0) {
        loop_.run([&] { s.process->pauseOutput(true); });
      }
      destroy(s);
      ++cut;
      continue;
    }
    write(s, "x\n");
    closeStdin(s);
    const ExitStatus status = waitExit(exit);
    EXPECT_EQ(status.kind, ExitStatus::Kind::kSuccess) << i << ": " << status.message;
    EXPECT_TRUE(absl::StrContains(s.out, absl::StrCat(i))) << i << ": " << s.out;
    loop_.run([&] { s.process.reset(); });
  }
  // The cut sessions finish their cleanup on the loop.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((!listDir(options_.fifo_dir).empty() || openDescriptors() > fds_before) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(listDir(options_.fifo_dir), std::vector<std::string>());
  EXPECT_EQ(openDescriptors(), fds_before);
  for (const std::string& id : ids) {
    EXPECT_FALSE(containerdKnows(id)) << "exec " << id << " left in containerd";
  }
  EXPECT_EQ(strayProcesses(), std::vector<std::string>());
  std::printf("100 sessions, %d cut short: nothing left\n", cut);
}

}  // namespace
}  // namespace crisp::containerd
