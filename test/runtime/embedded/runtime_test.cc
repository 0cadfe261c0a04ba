// The embedded runtime's container model: listing, lookups, start-up
// validation and failures, stop.

#include <memory>

#include <gtest/gtest.h>
#include <unistd.h>

#include "source/runtime/embedded/embedded_runtime.h"

#include "test/runtime/embedded/test_util.h"

namespace crisp::runtime {
namespace {

using testing::RecordingCallbacks;
using testing::runUntil;

EmbeddedContainerConfig container(std::string id, std::vector<std::string> command) {
  EmbeddedContainerConfig c;
  c.id = std::move(id);
  c.command = std::move(command);
  return c;
}

TEST(EmbeddedRuntimeTest, ListsContainersWithTheirFacts) {
  EmbeddedContainerConfig main = container("web", {"sleep", "1000"});
  main.name = "web-server";
  main.image = "local/web:1";
  main.tty = true;
  main.stdin = true;
  EmbeddedContainerConfig bare = container("tools", {});
  const int64_t before = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  EmbeddedRuntime rt({main, bare});

  // Before start() nothing runs.
  auto not_yet = rt.container("web");
  ASSERT_TRUE(not_yet.ok());
  EXPECT_FALSE(not_yet->running);

  ASSERT_TRUE(rt.start().ok());
  const auto list = rt.listContainers();
  ASSERT_EQ(list.size(), 2u);
  const session::ContainerInfo& web = list[0];
  EXPECT_EQ(web.id, "web");
  EXPECT_EQ(web.name, "web-server");
  EXPECT_EQ(web.pod_sandbox_id, "web");
  EXPECT_EQ(web.image, "local/web:1");
  EXPECT_TRUE(web.running);
  EXPECT_TRUE(web.tty);
  EXPECT_TRUE(web.stdin);
  EXPECT_EQ(web.command, (std::vector<std::string>{"sleep", "1000"}));
  EXPECT_GE(web.created_at_ns, before);
  EXPECT_GE(web.started_at_ns, web.created_at_ns);

  const session::ContainerInfo& tools = list[1];
  EXPECT_EQ(tools.name, "tools");
  EXPECT_EQ(tools.image, "host");
  EXPECT_TRUE(tools.running);
  EXPECT_FALSE(tools.tty);
  EXPECT_TRUE(tools.command.empty());

  auto missing = rt.container("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "container \"nope\" not found");

  rt.stop();
  EXPECT_FALSE(rt.container("web")->running);
  EXPECT_FALSE(rt.container("tools")->running);
}

TEST(EmbeddedRuntimeTest, ExecWorksInAContainerWithoutMainProcess) {
  EmbeddedRuntime rt({container("tools", {})});
  ASSERT_TRUE(rt.start().ok());
  event::Dispatcher d;
  RecordingCallbacks cb;
  session::ExecSpec s;
  s.container_id = "tools";
  s.command = {"echo", "ok"};
  s.stdout = true;
  auto p = rt.startExec(d, s, std::nullopt, cb);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(runUntil(d, [&] { return cb.exit.has_value(); }));
  EXPECT_EQ(cb.out, "ok\n");
}

TEST(EmbeddedRuntimeTest, StartFailsNamingAMainProcessThatCannotRun) {
  EmbeddedRuntime rt({container("good", {"sleep", "1000"}), container("bad", {"/no/such/binary"})});
  const absl::Status status = rt.start();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(),
            "container \"bad\": exec: \"/no/such/binary\": no such file or directory");
  // Nothing is left running.
  EXPECT_FALSE(rt.container("good")->running);
  EXPECT_FALSE(rt.container("bad")->running);
}

TEST(EmbeddedRuntimeTest, StartFailsOnAMissingWorkingDirectory) {
  EmbeddedContainerConfig c = container("c", {"true"});
  c.working_dir = "/no/such/dir";
  EmbeddedRuntime rt({c});
  const absl::Status status = rt.start();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), "container \"c\": chdir \"/no/such/dir\": no such file or directory");
}

TEST(EmbeddedRuntimeTest, RejectsBadConfiguration) {
  struct Case {
    std::vector<EmbeddedContainerConfig> containers;
    std::string message_part;
  };
  EmbeddedContainerConfig relative = container("rel", {});
  relative.working_dir = "tmp";
  EmbeddedContainerConfig bad_env = container("env", {});
  bad_env.env = {"NOEQUALS"};
  EmbeddedContainerConfig bad_user = container("user", {});
  bad_user.user = "no-such-user-for-crisp";
  const std::vector<Case> cases = {
      {{container("", {})}, "empty id"},
      {{container("a", {}), container("a", {})}, "duplicate container id \"a\""},
      {{relative}, "not absolute"},
      {{bad_env}, "\"NOEQUALS\" is not KEY=value"},
      {{bad_user}, "unknown user \"no-such-user-for-crisp\""},
      {{container("argv", {""})}, "empty word"},
  };
  for (const auto& c : cases) {
    EmbeddedRuntime rt(c.containers);
    const absl::Status status = rt.start();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message_part;
    EXPECT_NE(status.message().find(c.message_part), absl::string_view::npos) << status.message();
  }
}

TEST(EmbeddedRuntimeTest, StartTwiceIsRefusedAndStopIsIdempotent) {
  EmbeddedRuntime rt({container("s", {"sleep", "1000"})});
  ASSERT_TRUE(rt.start().ok());
  EXPECT_EQ(rt.start().code(), absl::StatusCode::kFailedPrecondition);
  rt.stop();
  rt.stop();
  EXPECT_FALSE(rt.container("s")->running);
}

TEST(EmbeddedRuntimeTest, StopKillsAMainProcessThatIgnoresSigterm) {
  // The ignored SIGTERM is inherited by the loop's sleeps too.
  EmbeddedRuntime rt({container(
      "stubborn", {"sh", "-c", "trap '' TERM; while :; do echo ready; sleep 0.02; done"})});
  ASSERT_TRUE(rt.start().ok());
  // Attach until the trap is surely in place (output comes after it).
  event::Dispatcher d;
  RecordingCallbacks cb;
  session::ExecSpec s;
  s.operation = session::Operation::kAttach;
  s.container_id = "stubborn";
  s.stdout = true;
  auto p = rt.startExec(d, s, std::nullopt, cb);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(runUntil(d, [&] { return cb.out.find("ready\n") != std::string::npos; }));

  const auto started = std::chrono::steady_clock::now();
  rt.stop(std::chrono::milliseconds(200));
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, std::chrono::milliseconds(190));
  EXPECT_LT(took, std::chrono::milliseconds(1500));
  EXPECT_FALSE(rt.container("stubborn")->running);
  ASSERT_TRUE(runUntil(d, [&] { return cb.exit.has_value(); }));
  EXPECT_EQ(cb.exit->kind, session::ExitStatus::Kind::kSuccess);
}

TEST(EmbeddedRuntimeTest, MainProcessExitIsReportedAndNotRestarted) {
  EmbeddedRuntime rt({container("brief", {"true"})});
  ASSERT_TRUE(rt.start().ok());
  event::Dispatcher d;
  ASSERT_TRUE(runUntil(d, [&] { return !rt.container("brief")->running; }));
  // Still not running a while later.
  EXPECT_FALSE(runUntil(
      d, [&] { return rt.container("brief")->running; }, std::chrono::milliseconds(200)));
  RecordingCallbacks cb;
  session::ExecSpec s;
  s.container_id = "brief";
  s.command = {"true"};
  auto p = rt.startExec(d, s, std::nullopt, cb);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace crisp::runtime
