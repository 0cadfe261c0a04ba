// Exec through the embedded runtime: real processes, a real dispatcher on the
// test thread, every wait bounded.

#include <algorithm>
#include <memory>
#include <random>
#include <sstream>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "source/runtime/embedded/embedded_runtime.h"
#include "source/runtime/embedded/spawn.h"

#include "test/runtime/embedded/test_util.h"

namespace crisp::runtime {
namespace {

using std::chrono::milliseconds;
using testing::lines;
using testing::openFdCount;
using testing::processDead;
using testing::processGone;
using testing::RecordingCallbacks;
using testing::runUntil;

class EmbeddedExecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EmbeddedContainerConfig box;
    box.id = "box";
    box.working_dir = "/tmp";
    box.env = {"FOO=bar baz"};
    runtime_ = std::make_unique<EmbeddedRuntime>(std::vector<EmbeddedContainerConfig>{box});
    ASSERT_TRUE(runtime_->start().ok());
  }

  static session::ExecSpec spec(std::vector<std::string> command, bool in, bool out, bool err,
                                bool tty = false) {
    session::ExecSpec s;
    s.operation = session::Operation::kExec;
    s.container_id = "box";
    s.command = std::move(command);
    s.stdin = in;
    s.stdout = out;
    s.stderr = err;
    s.tty = tty;
    return s;
  }

  std::unique_ptr<session::ExecProcess> start(const session::ExecSpec& s,
                                              RecordingCallbacks& callbacks,
                                              std::optional<session::TerminalSize> size = {}) {
    auto process = runtime_->startExec(dispatcher_, s, size, callbacks);
    EXPECT_TRUE(process.ok()) << process.status();
    return process.ok() ? std::move(*process) : nullptr;
  }

  bool waitExit(RecordingCallbacks& callbacks, milliseconds timeout = milliseconds(5000)) {
    return runUntil(
        dispatcher_, [&] { return callbacks.exit.has_value(); }, timeout);
  }

  event::Dispatcher dispatcher_;
  std::unique_ptr<EmbeddedRuntime> runtime_;
};

TEST_F(EmbeddedExecTest, EchoPrintsAndExitsZero) {
  RecordingCallbacks cb;
  auto p = start(spec({"echo", "hello", "world"}, false, true, true), cb);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.out, "hello world\n");
  EXPECT_EQ(cb.err, "");
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
  EXPECT_EQ(cb.exit_calls, 1);
}

TEST_F(EmbeddedExecTest, NonZeroExitCodeIsReported) {
  RecordingCallbacks cb;
  auto p = start(spec({"sh", "-c", "echo oops >&2; exit 7"}, false, true, true), cb);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kNonZeroExit);
  EXPECT_EQ(cb.exit->exit_code, 7);
  EXPECT_EQ(cb.err, "oops\n");
  EXPECT_EQ(cb.out, "");
}

TEST_F(EmbeddedExecTest, DeathBySignalIs128PlusSignal) {
  RecordingCallbacks cb;
  auto p = start(spec({"sh", "-c", "kill -9 $$"}, false, true, true), cb);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kNonZeroExit);
  EXPECT_EQ(cb.exit->exit_code, 137);
}

TEST_F(EmbeddedExecTest, StdoutAndStderrStaySeparateAndUnrequestedStreamsAreDropped) {
  RecordingCallbacks both;
  auto p1 = start(spec({"sh", "-c", "echo out; echo err >&2"}, false, true, true), both);
  ASSERT_TRUE(waitExit(both));
  EXPECT_EQ(both.out, "out\n");
  EXPECT_EQ(both.err, "err\n");

  RecordingCallbacks only_out;
  auto p2 = start(spec({"sh", "-c", "echo out; echo err >&2"}, false, true, false), only_out);
  ASSERT_TRUE(waitExit(only_out));
  EXPECT_EQ(only_out.out, "out\n");
  EXPECT_EQ(only_out.err, "");
  EXPECT_EQ(only_out.exit->kind, session::ExitStatus::Kind::kSuccess);
}

TEST_F(EmbeddedExecTest, StdinReachesCatAndCloseStdinEndsIt) {
  RecordingCallbacks cb;
  auto p = start(spec({"cat"}, true, true, true), cb);
  ASSERT_NE(p, nullptr);
  const std::string input = std::string("first line\n") + std::string("\0\x01\xff no newline", 15);
  Buffer data;
  data.add(input.substr(0, 7));
  p->writeStdin(data);
  EXPECT_EQ(data.length(), 0u);
  data.add(input.substr(7));
  p->writeStdin(data);
  p->closeStdin();
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.out, input);
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
}

TEST_F(EmbeddedExecTest, StdinNotRequestedReadsAsEmpty) {
  RecordingCallbacks cb;
  auto p = start(spec({"sh", "-c", "wc -c"}, false, true, true), cb);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.out, "0\n");
}

TEST_F(EmbeddedExecTest, EightMebibytesThroughCatWithPausedOutput) {
  constexpr size_t kTotal = 8 * 1024 * 1024;
  std::string input(kTotal, '\0');
  std::mt19937 rng(1234);
  for (auto& c : input) {
    c = static_cast<char>(rng());
  }
  RecordingCallbacks cb;
  auto p = start(spec({"cat"}, true, true, false), cb);
  ASSERT_NE(p, nullptr);

  size_t sent = 0;
  auto feed = [&] {
    // As an adapter does: stop above the high watermark, go on when drained.
    while (sent < kTotal && p->stdinQueuedBytes() <= session::ExecProcess::kStdinHighWatermark) {
      const size_t n = std::min<size_t>(100 * 1000, kTotal - sent);
      Buffer chunk;
      chunk.add(input.data() + sent, n);
      p->writeStdin(chunk);
      sent += n;
    }
    if (sent == kTotal) {
      p->closeStdin();
    }
  };
  cb.on_drained = feed;
  // Pause after every third chunk of output and resume a millisecond later.
  event::Timer resume(dispatcher_, [&] { p->pauseOutput(false); });
  int pauses = 0;
  cb.on_stdout = [&] {
    if (cb.stdout_chunks % 3 == 0 && !resume.enabled()) {
      ++pauses;
      p->pauseOutput(true);
      resume.enable(milliseconds(1));
    }
  };
  feed();
  ASSERT_TRUE(waitExit(cb, milliseconds(20000)));
  EXPECT_EQ(cb.out.size(), kTotal);
  EXPECT_TRUE(cb.out == input) << "output differs from input";
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
  EXPECT_GT(pauses, 0);
  EXPECT_GT(cb.drained, 0);
  EXPECT_EQ(p->stdinQueuedBytes(), 0u);
}

// A callee of the zero-copy offers (stdout and stderr) that takes what it is
// offered in place: every other offer it reads (as splice(2) would move) all
// of it at once; otherwise it promises up to 10,000 bytes, pauses output, and
// moves them 1 ms later before resuming, as an adapter whose socket took part
// of a frame.
class PipeTakingCallbacks : public RecordingCallbacks {
 public:
  explicit PipeTakingCallbacks(event::Dispatcher& dispatcher)
      : finish_(dispatcher, [this] { finishHeld(); }) {}

  size_t onStdoutPipe(int pipe_fd, size_t limit) override {
    ++offers;
    return take(pipe_fd, limit, out);
  }
  size_t onStderrPipe(int pipe_fd, size_t limit) override {
    ++stderr_offers;
    return take(pipe_fd, limit, err);
  }

  session::ExecProcess* process = nullptr;
  int offers = 0;
  int stderr_offers = 0;

 private:
  size_t take(int pipe_fd, size_t limit, std::string& into) {
    output_after_exit = output_after_exit || exit.has_value();
    EXPECT_EQ(held_, 0u) << "offered while bytes it promised are still in a pipe";
    int available = 0;
    if (::ioctl(pipe_fd, FIONREAD, &available) != 0 || available <= 0) {
      return 0;
    }
    const size_t want = std::min<size_t>(static_cast<size_t>(available), limit);
    if (++takes_ % 2 == 0) {
      EXPECT_EQ(readExactly(pipe_fd, want, into), want);
      return want;
    }
    held_ = std::min<size_t>(want, 10000);
    held_fd_ = ::dup(pipe_fd);
    held_into_ = &into;
    process->pauseOutput(true);
    finish_.enable(milliseconds(1));
    return held_;
  }

  static size_t readExactly(int fd, size_t n, std::string& into) {
    std::string chunk(n, '\0');
    size_t got = 0;
    while (got < n) {
      const ssize_t r = ::read(fd, chunk.data() + got, n - got);
      if (r <= 0) {
        break;
      }
      got += static_cast<size_t>(r);
    }
    into.append(chunk, 0, got);
    return got;
  }

  void finishHeld() {
    EXPECT_EQ(readExactly(held_fd_, held_, *held_into_), held_);
    ::close(held_fd_);
    held_ = 0;
    process->pauseOutput(false);
  }

  event::Timer finish_;
  int takes_ = 0;
  size_t held_ = 0;
  int held_fd_ = -1;
  std::string* held_into_ = nullptr;
};

// Each stream in turn carries the bulk, the other two short lines.
TEST_F(EmbeddedExecTest, OutputOfferedInPlaceIsWholeAndInOrderAndTheStatusComesLast) {
  std::string expected;
  for (int i = 1; i <= 200000; ++i) {
    expected += std::to_string(i) + "\n";
  }
  for (const bool bulk_on_stderr : {false, true}) {
    const std::string bulk = bulk_on_stderr ? " >&2" : "";
    const std::string other = bulk_on_stderr ? "" : " >&2";
    PipeTakingCallbacks cb(dispatcher_);
    auto p = start(spec({"sh", "-c",
                         "seq 1 100000" + bulk + "; echo middle" + other + "; seq 100001 200000" +
                             bulk + "; echo end" + other},
                        false, true, true),
                   cb);
    ASSERT_NE(p, nullptr);
    cb.process = p.get();
    ASSERT_TRUE(waitExit(cb, milliseconds(20000)));
    const std::string& bulk_bytes = bulk_on_stderr ? cb.err : cb.out;
    EXPECT_EQ(bulk_bytes.size(), expected.size()) << "stderr " << bulk_on_stderr;
    EXPECT_TRUE(bulk_bytes == expected) << "differs; stderr " << bulk_on_stderr;
    EXPECT_EQ(bulk_on_stderr ? cb.out : cb.err, "middle\nend\n");
    EXPECT_GT(bulk_on_stderr ? cb.stderr_offers : cb.offers, 2);
    EXPECT_FALSE(cb.output_after_exit);
    EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
  }
}

TEST_F(EmbeddedExecTest, NoOfferWithATtyOrForAnUnrequestedStream) {
  for (const bool tty : {true, false}) {
    PipeTakingCallbacks cb(dispatcher_);
    auto p = start(spec({"sh", "-c", "seq 1 1000; seq 1 1000 >&2"}, false, tty, !tty, tty), cb);
    ASSERT_NE(p, nullptr);
    cb.process = p.get();
    ASSERT_TRUE(waitExit(cb));
    EXPECT_EQ(cb.offers, 0) << "tty " << tty;
    if (tty) {
      EXPECT_EQ(cb.stderr_offers, 0);
    } else {
      EXPECT_GT(cb.stderr_offers, 0) << "stderr alone is offered";
    }
  }
  PipeTakingCallbacks cb(dispatcher_);
  auto p = start(spec({"sh", "-c", "seq 1 1000; seq 1 1000 >&2"}, false, true, false), cb);
  ASSERT_NE(p, nullptr);
  cb.process = p.get();
  ASSERT_TRUE(waitExit(cb));
  EXPECT_GT(cb.offers, 0);
  EXPECT_EQ(cb.stderr_offers, 0);
  EXPECT_EQ(cb.err, "");
}

TEST_F(EmbeddedExecTest, PausedOutputBlocksTheProcessInsteadOfBuffering) {
  RecordingCallbacks cb;
  auto p = start(
      spec({"sh", "-c", "head -c 4000000 /dev/zero; echo finished >&2"}, false, true, true), cb);
  ASSERT_NE(p, nullptr);
  p->pauseOutput(true);
  // While paused nothing is read, so the writer stays blocked on the full pipe.
  EXPECT_FALSE(runUntil(
      dispatcher_, [&] { return !cb.err.empty() || cb.exit.has_value(); }, milliseconds(300)));
  EXPECT_EQ(cb.out.size(), 0u);
  p->pauseOutput(false);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.out.size(), 4000000u);
  EXPECT_EQ(cb.err, "finished\n");
}

TEST_F(EmbeddedExecTest, ProcessThatStopsReadingStdinDoesNotHurtCrisp) {
  // head exits after one byte; later writes hit a closed pipe (EPIPE, and a
  // SIGPIPE that must not kill the test process).
  RecordingCallbacks cb;
  auto p = start(spec({"head", "-c", "1"}, true, true, true), cb);
  ASSERT_NE(p, nullptr);
  Buffer data;
  data.add(std::string(3 * 1024 * 1024, 'x'));
  p->writeStdin(data);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.out, "x");
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return p->stdinQueuedBytes() == 0; }));
}

TEST_F(EmbeddedExecTest, OutputIsCompleteBeforeExit) {
  RecordingCallbacks cb;
  auto p = start(spec({"seq", "1", "200000"}, false, true, true), cb);
  ASSERT_TRUE(waitExit(cb));
  size_t expected = 0;
  for (int i = 1; i <= 200000; ++i) {
    expected += std::to_string(i).size() + 1;
  }
  EXPECT_EQ(cb.out.size(), expected);
  EXPECT_EQ(cb.out.substr(0, 4), "1\n2\n");
  EXPECT_EQ(cb.out.substr(cb.out.size() - 7), "200000\n");
  EXPECT_FALSE(cb.output_after_exit);
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
}

TEST_F(EmbeddedExecTest, MissingBinaryFailsFastNamingIt) {
  for (bool tty : {false, true}) {
    SCOPED_TRACE(tty ? "tty" : "pipes");
    RecordingCallbacks cb;
    const auto started = std::chrono::steady_clock::now();
    auto p = start(spec({"/no/such/binary", "arg"}, true, true, !tty, tty), cb);
    ASSERT_TRUE(waitExit(cb, milliseconds(2000)));
    EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds(1000));
    EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kError);
    EXPECT_EQ(cb.exit->message, "exec: \"/no/such/binary\": no such file or directory");
    EXPECT_EQ(cb.exit_calls, 1);
  }
}

TEST_F(EmbeddedExecTest, CommandNotInPathFailsNamingIt) {
  RecordingCallbacks cb;
  auto p = start(spec({"no-such-command-for-crisp"}, false, true, true), cb);
  ASSERT_TRUE(waitExit(cb, milliseconds(2000)));
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kError);
  EXPECT_EQ(cb.exit->message,
            "exec: \"no-such-command-for-crisp\": executable file not found in $PATH");
}

TEST_F(EmbeddedExecTest, NonExecutableOrMalformedFilesAreReported) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = tmp != nullptr ? tmp : "/tmp";
  const std::string plain = dir + "/crisp-not-executable";
  const std::string garbage = dir + "/crisp-garbage-executable";
  ASSERT_EQ(std::system(("printf 'data' > " + plain + " && chmod 0644 " + plain).c_str()), 0);
  ASSERT_EQ(std::system(("printf '\\001\\002' > " + garbage + " && chmod 0755 " + garbage).c_str()),
            0);

  RecordingCallbacks denied;
  auto p1 = start(spec({plain}, false, true, true), denied);
  ASSERT_TRUE(waitExit(denied, milliseconds(2000)));
  EXPECT_EQ(denied.exit->kind, session::ExitStatus::Kind::kError);
  EXPECT_EQ(denied.exit->message, "exec: \"" + plain + "\": permission denied");

  RecordingCallbacks format;
  auto p2 = start(spec({garbage}, false, true, true), format);
  ASSERT_TRUE(waitExit(format, milliseconds(2000)));
  EXPECT_EQ(format.exit->kind, session::ExitStatus::Kind::kError);
  EXPECT_EQ(format.exit->message, "exec: \"" + garbage + "\": exec format error");
}

TEST_F(EmbeddedExecTest, WorkingDirAndEnvironmentAreTheContainers) {
  ASSERT_EQ(::setenv("CRISP_TEST_MUST_NOT_LEAK", "1", 1), 0);
  RecordingCallbacks pwd;
  auto p1 = start(spec({"pwd"}, false, true, true), pwd);
  ASSERT_TRUE(waitExit(pwd));
  EXPECT_EQ(pwd.out, "/tmp\n");

  RecordingCallbacks env;
  auto p2 = start(spec({"env"}, false, true, true), env);
  ASSERT_TRUE(waitExit(env));
  std::vector<std::string> got = lines(env.out);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"FOO=bar baz", std::string("PATH=") + kDefaultPath}));

  RecordingCallbacks tty_env;
  auto p3 = start(spec({"env"}, false, true, false, true), tty_env);
  ASSERT_TRUE(waitExit(tty_env));
  EXPECT_NE(tty_env.out.find("TERM=xterm\r\n"), std::string::npos) << tty_env.out;
  EXPECT_EQ(tty_env.out.find("CRISP_TEST_MUST_NOT_LEAK"), std::string::npos);
}

TEST_F(EmbeddedExecTest, ChildGetsNoDescriptorsSignalMaskOrIgnoredSignalsOfCrisp) {
  // A descriptor without close-on-exec and an ignored SIGPIPE in crisp must
  // not reach the command.
  const int leaked = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 3);
  struct sigaction ignore {};
  struct sigaction previous {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGPIPE, &ignore, &previous), 0);

  RecordingCallbacks fds;
  auto p1 = start(spec({"ls", "-1", "/proc/self/fd"}, true, true, true), fds);
  RecordingCallbacks status;
  auto p2 =
      start(spec({"grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"}, false, true, true), status);
  ::sigaction(SIGPIPE, &previous, nullptr);
  ::close(leaked);
  ASSERT_TRUE(waitExit(fds));
  ASSERT_TRUE(waitExit(status));
  // 0-2 are the pipes; 3 is ls's own handle on the directory.
  EXPECT_EQ(lines(fds.out), (std::vector<std::string>{"0", "1", "2", "3"}));
  EXPECT_EQ(status.out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

TEST_F(EmbeddedExecTest, TtyShowsInitialSizeAndFollowsResize) {
  RecordingCallbacks cb;
  auto p = start(spec({"sh"}, true, true, false, true), cb, session::TerminalSize{83, 27});
  ASSERT_NE(p, nullptr);
  Buffer data;
  data.add("stty size\n");
  p->writeStdin(data);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.out.find("27 83\r\n") != std::string::npos; }))
      << cb.out;
  p->resize({120, 41});
  data.add("stty size\n");
  p->writeStdin(data);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.out.find("41 120\r\n") != std::string::npos; }))
      << cb.out;
  data.add("exit 3\n");
  p->writeStdin(data);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.exit->exit_code, 3);
  EXPECT_EQ(cb.err, "");
}

TEST_F(EmbeddedExecTest, TtyCarriesStderrOnTheTerminal) {
  RecordingCallbacks cb;
  auto p = start(spec({"sh", "-c", "echo out; echo err >&2"}, false, true, false, true), cb);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(cb.out, "out\r\nerr\r\n");
  EXPECT_EQ(cb.err, "");
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
}

TEST_F(EmbeddedExecTest, TtyCloseStdinSendsEndOfFile) {
  RecordingCallbacks cb;
  auto p = start(spec({"sh", "-c", "stty -echo; cat; echo end"}, true, true, false, true), cb);
  ASSERT_NE(p, nullptr);
  Buffer data;
  data.add("partial");  // no newline: the first ^D only ends this line
  p->writeStdin(data);
  p->closeStdin();
  ASSERT_TRUE(waitExit(cb));
  EXPECT_NE(cb.out.find("partial"), std::string::npos) << cb.out;
  EXPECT_NE(cb.out.find("end\r\n"), std::string::npos) << cb.out;
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
}

TEST_F(EmbeddedExecTest, DestroyingARunningExecKillsItsProcessGroupWithoutLeaks) {
  const int fds_before = openFdCount();
  RecordingCallbacks cb;
  auto p = start(spec({"sh", "-c", "sleep 1000 & echo \"$$ $!\"; wait"}, true, true, true), cb);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.out.find('\n') != std::string::npos; }));
  int shell = 0;
  int background = 0;
  std::istringstream(cb.out) >> shell >> background;
  ASSERT_GT(shell, 0);
  ASSERT_GT(background, 0);
  EXPECT_FALSE(processDead(shell));
  EXPECT_FALSE(processDead(background));

  p.reset();
  // The shell is our child: it must be reaped (gone, not a zombie). The
  // background sleep belongs to the killed group and is dead too.
  ASSERT_TRUE(runUntil(
      dispatcher_,
      [&] { return processGone(shell) && processDead(background) && openFdCount() == fds_before; }))
      << "shell gone " << processGone(shell) << ", background dead " << processDead(background)
      << ", fds " << openFdCount() << " vs " << fds_before;
  EXPECT_FALSE(cb.exit.has_value());
}

TEST_F(EmbeddedExecTest, DestroyingRightAfterStartLeavesNothingBehind) {
  const int fds_before = openFdCount();
  for (int i = 0; i < 10; ++i) {
    RecordingCallbacks cb;
    auto p = start(spec({"sleep", "1000"}, true, true, true), cb);
    ASSERT_NE(p, nullptr);
    p.reset();  // possibly before the child even reached exec
  }
  // Each pidfd is closed only once its child was reaped.
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return openFdCount() == fds_before; }))
      << openFdCount() << " vs " << fds_before;
}

TEST_F(EmbeddedExecTest, BackgroundChildHoldingStdoutDoesNotHoldTheExit) {
  RecordingCallbacks cb;
  const auto started = std::chrono::steady_clock::now();
  auto p = start(spec({"sh", "-c", "sleep 1000 & echo $!"}, false, true, true), cb);
  ASSERT_TRUE(waitExit(cb, milliseconds(3000)));
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds(2500));
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
  const int background = std::atoi(cb.out.c_str());
  ASSERT_GT(background, 0);
  EXPECT_EQ(cb.out, std::to_string(background) + "\n");
  // It exited on its own, so its background child was left alone.
  EXPECT_FALSE(processDead(background));
  ::kill(background, SIGKILL);
}

TEST_F(EmbeddedExecTest, DestroyingInsideOnExitIsSafe) {
  RecordingCallbacks cb;
  std::unique_ptr<session::ExecProcess> p;
  cb.on_exit = [&] { p.reset(); };
  p = start(spec({"echo", "x"}, false, true, true), cb);
  ASSERT_TRUE(waitExit(cb));
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(cb.out, "x\n");
}

TEST_F(EmbeddedExecTest, UnknownContainerAndBadSpecsAreRefused) {
  RecordingCallbacks cb;
  session::ExecSpec s = spec({"true"}, false, true, true);
  s.container_id = "nope";
  auto missing = runtime_->startExec(dispatcher_, s, std::nullopt, cb);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("\"nope\""), absl::string_view::npos);

  auto empty = runtime_->startExec(dispatcher_, spec({}, false, true, true), std::nullopt, cb);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EmbeddedExecTest, ExecAfterStopIsRefused) {
  runtime_->stop();
  RecordingCallbacks cb;
  auto p = runtime_->startExec(dispatcher_, spec({"true"}, false, true, true), std::nullopt, cb);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
}

// Whether this process may switch to uid/gid 65534 (root outside a user
// namespace that denies setgroups, as Bazel's sandbox does).
bool canSwitchToNobody() {
  if (::geteuid() != 0) {
    return false;
  }
  const pid_t pid = ::fork();
  if (pid == 0) {
    const gid_t g = 65534;
    const bool ok = ::syscall(SYS_setgroups, 1, &g) == 0 &&
                    ::syscall(SYS_setresgid, g, g, g) == 0 &&
                    ::syscall(SYS_setresuid, 65534, 65534, 65534) == 0;
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  return pid > 0 && ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
         WEXITSTATUS(status) == 0;
}

TEST(EmbeddedExecUserTest, RunsAsTheConfiguredUserWhenRoot) {
  if (!canSwitchToNobody()) {
    GTEST_SKIP() << "this process may not switch users (not root, or a restricted namespace)";
  }
  EmbeddedContainerConfig c;
  c.id = "as-nobody";
  c.user = "65534:65534";
  EmbeddedRuntime rt({c});
  ASSERT_TRUE(rt.start().ok());
  event::Dispatcher d;
  RecordingCallbacks cb;
  session::ExecSpec s;
  s.container_id = "as-nobody";
  s.command = {"sh", "-c", "echo $(id -u) $(id -g) $(id -G)"};
  s.stdout = true;
  s.stderr = true;
  auto p = rt.startExec(d, s, std::nullopt, cb);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(runUntil(d, [&] { return cb.exit.has_value(); }));
  EXPECT_EQ(cb.out, "65534 65534 65534\n") << cb.err << cb.exit->message;
}

}  // namespace
}  // namespace crisp::runtime
