// Attach to main processes of the embedded runtime: the main process runs on
// the runtime's thread, the sessions on a dispatcher on the test thread.

#include <memory>

#include <gtest/gtest.h>

#include "source/runtime/embedded/embedded_runtime.h"

#include "test/runtime/embedded/test_util.h"

namespace crisp::runtime {
namespace {

using std::chrono::milliseconds;
using testing::RecordingCallbacks;
using testing::runUntil;

EmbeddedContainerConfig container(std::string id, std::vector<std::string> command, bool tty,
                                  bool stdin) {
  EmbeddedContainerConfig c;
  c.id = std::move(id);
  c.command = std::move(command);
  c.tty = tty;
  c.stdin = stdin;
  return c;
}

class EmbeddedAttachTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime_ = std::make_unique<EmbeddedRuntime>(std::vector<EmbeddedContainerConfig>{
        container("cat", {"cat"}, false, true),
        container("shell", {"sh"}, true, true),
        container("once", {"sh", "-c", "read line; echo \"got $line\"; echo bye >&2; exit 3"},
                  false, true),
        container("sleeper", {"sleep", "1000"}, false, false),
        container("noproc", {}, false, false),
    });
    ASSERT_TRUE(runtime_->start().ok());
  }

  // An interactive shell ignores SIGTERM; do not wait the default grace.
  void TearDown() override { runtime_->stop(milliseconds(100)); }

  static session::ExecSpec attach(std::string id, bool in, bool out, bool err, bool tty) {
    session::ExecSpec s;
    s.operation = session::Operation::kAttach;
    s.container_id = std::move(id);
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

  void write(session::ExecProcess& p, const std::string& text) {
    Buffer data;
    data.add(text);
    p.writeStdin(data);
  }

  bool running(const std::string& id) {
    auto info = runtime_->container(id);
    return info.ok() && info->running;
  }

  event::Dispatcher dispatcher_;
  std::unique_ptr<EmbeddedRuntime> runtime_;
};

TEST_F(EmbeddedAttachTest, StdinReachesTheMainProcessAndOutputComesBack) {
  RecordingCallbacks cb;
  auto p = start(attach("cat", true, true, true, false), cb);
  ASSERT_NE(p, nullptr);
  write(*p, "hello main\n");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.out == "hello main\n"; })) << cb.out;
  EXPECT_FALSE(cb.exit.has_value());
  EXPECT_TRUE(running("cat"));
  EXPECT_EQ(p->stdinQueuedBytes(), 0u);
}

TEST_F(EmbeddedAttachTest, TwoSessionsBothSeeTheOutput) {
  RecordingCallbacks writer;
  RecordingCallbacks watcher;
  auto a = start(attach("cat", true, true, true, false), writer);
  auto b = start(attach("cat", false, true, true, false), watcher);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  // Let both registrations reach the runtime's thread before output flows.
  write(*a, "ping\n");
  ASSERT_TRUE(
      runUntil(dispatcher_, [&] { return writer.out.find("ping\n") != std::string::npos; }));
  write(*a, "pong\n");
  ASSERT_TRUE(runUntil(dispatcher_,
                       [&] {
                         return writer.out.find("pong\n") != std::string::npos &&
                                watcher.out.find("pong\n") != std::string::npos;
                       }))
      << writer.out << "|" << watcher.out;
  // The session without stdin cannot write.
  write(*b, "ignored\n");
  write(*a, "last\n");
  ASSERT_TRUE(
      runUntil(dispatcher_, [&] { return watcher.out.find("last\n") != std::string::npos; }));
  EXPECT_EQ(watcher.out.find("ignored"), std::string::npos);
  EXPECT_EQ(writer.out.find("ignored"), std::string::npos);
}

TEST_F(EmbeddedAttachTest, DetachKeepsTheContainerRunning) {
  {
    RecordingCallbacks cb;
    auto p = start(attach("cat", true, true, true, false), cb);
    write(*p, "one\n");
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.out == "one\n"; }));
    p->closeStdin();
    p.reset();  // detach
    EXPECT_FALSE(cb.exit.has_value());
  }
  EXPECT_TRUE(running("cat"));
  RecordingCallbacks again;
  auto p = start(attach("cat", true, true, true, false), again);
  write(*p, "two\n");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return again.out == "two\n"; })) << again.out;
  EXPECT_TRUE(running("cat"));
}

TEST_F(EmbeddedAttachTest, MainProcessExitEndsAttachWithSuccessAfterItsOutput) {
  RecordingCallbacks cb;
  auto p = start(attach("once", true, true, true, false), cb);
  ASSERT_NE(p, nullptr);
  write(*p, "abc\n");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.exit.has_value(); }));
  EXPECT_EQ(cb.out, "got abc\n");
  EXPECT_EQ(cb.err, "bye\n");
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
  EXPECT_FALSE(cb.output_after_exit);
  EXPECT_EQ(cb.exit_calls, 1);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return !running("once"); }));

  // Not restarted; later attaches and execs are refused.
  RecordingCallbacks late;
  auto refused =
      runtime_->startExec(dispatcher_, attach("once", true, true, true, false), std::nullopt, late);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("not running"), absl::string_view::npos);
}

TEST_F(EmbeddedAttachTest, TtyAttachAppliesSizeAndResize) {
  RecordingCallbacks cb;
  auto p = start(attach("shell", true, true, false, true), cb, session::TerminalSize{91, 22});
  ASSERT_NE(p, nullptr);
  write(*p, "stty size\n");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.out.find("22 91\r\n") != std::string::npos; }))
      << cb.out;
  p->resize({132, 43});
  write(*p, "stty size\n");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.out.find("43 132\r\n") != std::string::npos; }))
      << cb.out;
  EXPECT_EQ(cb.err, "");
  // With a tty, stderr of the main process arrives on the terminal too.
  write(*p, "echo to-stderr >&2\n");
  ASSERT_TRUE(
      runUntil(dispatcher_, [&] { return cb.out.find("to-stderr\r\n") != std::string::npos; }));
  EXPECT_EQ(cb.err, "");
}

TEST_F(EmbeddedAttachTest, PausedSessionGetsHeldOutputOnResume) {
  RecordingCallbacks cb;
  auto p = start(attach("cat", true, true, true, false), cb);
  ASSERT_NE(p, nullptr);
  p->pauseOutput(true);
  write(*p, "held\n");
  EXPECT_FALSE(runUntil(
      dispatcher_, [&] { return !cb.out.empty(); }, milliseconds(200)));
  p->pauseOutput(false);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.out == "held\n"; })) << cb.out;
}

TEST_F(EmbeddedAttachTest, StopEndsAttachedSessions) {
  RecordingCallbacks cb;
  auto p = start(attach("sleeper", false, true, true, false), cb);
  ASSERT_NE(p, nullptr);
  // The registration was posted to the runtime's thread before stop() posts
  // its shutdown, so the session is attached when the main process ends.
  const auto started = std::chrono::steady_clock::now();
  runtime_->stop(milliseconds(300));
  EXPECT_LT(std::chrono::steady_clock::now() - started, milliseconds(1500));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb.exit.has_value(); }));
  EXPECT_EQ(cb.exit_calls, 1);
  EXPECT_FALSE(running("sleeper"));
  // Destroying the session after the runtime stopped is harmless.
  p.reset();
}

TEST_F(EmbeddedAttachTest, AttachWithoutMainProcessOrToUnknownContainerIsRefused) {
  RecordingCallbacks cb;
  auto none = runtime_->startExec(dispatcher_, attach("noproc", false, true, true, false),
                                  std::nullopt, cb);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  auto unknown =
      runtime_->startExec(dispatcher_, attach("ghost", false, true, true, false), std::nullopt, cb);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EmbeddedAttachTest, SessionDestroyedWhileOutputIsInFlight) {
  // Output posted to a session that is gone must be dropped, not delivered.
  for (int i = 0; i < 20; ++i) {
    RecordingCallbacks writer;
    auto a = start(attach("cat", true, true, true, false), writer);
    auto b_cb = std::make_unique<RecordingCallbacks>();
    auto b = start(attach("cat", false, true, true, false), *b_cb);
    write(*a, std::string(100000, 'z'));
    b.reset();
    b_cb.reset();
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return writer.out.size() >= 100000; }));
  }
  EXPECT_TRUE(running("cat"));
}

}  // namespace
}  // namespace crisp::runtime
