// Process spawning helpers: users, environment, exec failure reports.

#include "source/runtime/embedded/spawn.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

namespace crisp::runtime {
namespace {

TEST(ResolveUserTest, NamesAndNumbers) {
  auto root = resolveUser("root");
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->uid, 0u);
  EXPECT_EQ(root->gid, 0u);
  EXPECT_FALSE(root->groups.empty());

  auto numeric = resolveUser("4242:4343");
  ASSERT_TRUE(numeric.ok()) << numeric.status();
  EXPECT_EQ(numeric->uid, 4242u);
  EXPECT_EQ(numeric->gid, 4343u);
  EXPECT_TRUE(numeric->groups.empty());

  auto with_group = resolveUser("root:65534");
  ASSERT_TRUE(with_group.ok());
  EXPECT_EQ(with_group->gid, 65534u);
}

TEST(ResolveUserTest, RejectsUnknownAndMalformed) {
  EXPECT_EQ(resolveUser("no-such-user-for-crisp").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resolveUser("root:no-such-group-for-crisp").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resolveUser(":0").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resolveUser("0:").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resolveUser("99999999999").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BuildEnvironmentTest, AddsPathAndTermOnlyWhenMissing) {
  EXPECT_EQ(buildEnvironment({"A=1"}, false),
            (std::vector<std::string>{"A=1", std::string("PATH=") + kDefaultPath}));
  EXPECT_EQ(buildEnvironment({"PATH=/x"}, true),
            (std::vector<std::string>{"PATH=/x", "TERM=xterm"}));
  EXPECT_EQ(buildEnvironment({"TERM=vt100", "PATH=/x"}, true),
            (std::vector<std::string>{"TERM=vt100", "PATH=/x"}));
  // A variable that merely ends in PATH is not PATH.
  EXPECT_EQ(buildEnvironment({"MYPATH=/x"}, false).size(), 2u);
}

TEST(SpawnTest, EmptyCommandIsRefusedAtOnce) {
  SpawnOptions options;
  EXPECT_EQ(spawnProcess(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.argv = {""};
  EXPECT_EQ(spawnProcess(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SpawnTest, PathSearchUsesTheCommandsPathAndReapsWithExitCode) {
  SpawnOptions options;
  options.argv = {"sh", "-c", "exit 5"};
  options.env = {"PATH=/nonexistent:/bin:/usr/bin"};
  auto p = spawnProcess(options);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(waitForExec(*p, std::chrono::milliseconds(2000)).ok());
  struct pollfd pfd {
    p->pidfd.get(), POLLIN, 0
  };
  ASSERT_EQ(::poll(&pfd, 1, 5000), 1);
  int code = -1;
  ASSERT_TRUE(reapPidfd(p->pidfd.get(), code));
  EXPECT_EQ(code, 5);
}

TEST(SpawnTest, WaitForExecReportsTheFailure) {
  SpawnOptions options;
  options.argv = {"definitely-not-a-command"};
  options.env = {"PATH=/bin"};
  auto p = spawnProcess(options);
  ASSERT_TRUE(p.ok()) << p.status();
  const absl::Status status = waitForExec(*p, std::chrono::milliseconds(2000));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(),
            "exec: \"definitely-not-a-command\": executable file not found in $PATH");
  killAndWait(*p);
  EXPECT_FALSE(p->pidfd.valid());
}

TEST(SpawnTest, KillAndWaitEndsARunningChild) {
  SpawnOptions options;
  options.argv = {"sleep", "1000"};
  auto p = spawnProcess(options);
  ASSERT_TRUE(p.ok()) << p.status();
  const pid_t pid = p->pid;
  killAndWait(*p);
  EXPECT_NE(::kill(pid, 0), 0);  // reaped: the pid no longer names a process
}

}  // namespace
}  // namespace crisp::runtime
