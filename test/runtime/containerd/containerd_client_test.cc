#include "source/runtime/containerd/containerd_client.h"

#include <chrono>
#include <csignal>
#include <cstdint>
#include <limits>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "gtest/gtest.h"

#include "api/containerd/services/containers/v1/containers.pb.h"
#include "api/containerd/services/tasks/v1/tasks.pb.h"
#include "api/containerd/types/task/task.pb.h"
#include "source/common/dispatcher.h"
#include "source/cri/grpc_server.h"
#include "test/cri/grpc_test_util.h"

namespace crisp::containerd {
namespace {

using cri::testing::field;
using cri::testing::RecordedCall;
using cri::testing::RecordingHandler;
using cri::testing::runUntil;
using cri::testing::settle;
using cri::testing::TempDir;
using nlohmann::json;

constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();

json containerSpec() {
  return json{
      {"ociVersion", "1.0.2-dev"},
      {"process",
       {{"terminal", false},
        {"consoleSize", {{"height", 10}, {"width", 20}}},
        {"user", {{"uid", 1000}, {"gid", 1001}, {"additionalGids", {1001, 20}}}},
        {"args", {"sleep", "100"}},
        {"env", {"PATH=/bin", "HOSTNAME=pod"}},
        {"cwd", "/work"},
        {"rlimits", {{{"type", "RLIMIT_NOFILE"}, {"hard", kUnlimited}, {"soft", kUnlimited}}}},
        {"noNewPrivileges", true}}},
      {"root", {{"path", "rootfs"}}}};
}

TEST(ExecProcessSpec, IsTheContainersProcessWithTheRequestsArgsAndTerminal) {
  auto process = execProcessSpec(containerSpec(), {"ls", "-l"}, false);
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_EQ((*process)["args"], json({"ls", "-l"}));
  EXPECT_EQ((*process)["terminal"], false);
  EXPECT_EQ((*process)["env"], json({"PATH=/bin", "HOSTNAME=pod"}));
  EXPECT_EQ((*process)["cwd"], "/work");
  EXPECT_EQ((*process)["user"]["uid"], 1000);
  EXPECT_EQ((*process)["user"]["additionalGids"], json({1001, 20}));
  EXPECT_EQ((*process)["noNewPrivileges"], true);
  EXPECT_FALSE(process->contains("consoleSize"));
  // 64-bit limits survive the JSON round trip exactly.
  const std::string text = process->dump();
  EXPECT_NE(text.find("\"hard\":18446744073709551615"), std::string::npos) << text;
}

TEST(ExecProcessSpec, TerminalGetsTermUnlessTheContainerSetsOne) {
  auto process = execProcessSpec(containerSpec(), {"sh"}, true);
  ASSERT_TRUE(process.ok());
  EXPECT_EQ((*process)["terminal"], true);
  EXPECT_EQ((*process)["env"], json({"PATH=/bin", "HOSTNAME=pod", "TERM=xterm"}));

  json spec = containerSpec();
  spec["process"]["env"].push_back("TERM=vt100");
  process = execProcessSpec(spec, {"sh"}, true);
  ASSERT_TRUE(process.ok());
  EXPECT_EQ((*process)["env"], json({"PATH=/bin", "HOSTNAME=pod", "TERM=vt100"}));

  spec = containerSpec();
  spec["process"].erase("env");
  process = execProcessSpec(spec, {"sh"}, true);
  ASSERT_TRUE(process.ok());
  EXPECT_EQ((*process)["env"], json({"TERM=xterm"}));
}

TEST(ExecProcessSpec, RefusesASpecWithoutProcessAndAnEmptyCommand) {
  EXPECT_EQ(execProcessSpec(json{{"ociVersion", "1"}}, {"sh"}, false).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(execProcessSpec(json{{"process", "x"}}, {"sh"}, false).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(execProcessSpec(containerSpec(), {}, false).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ValidIdentifier, FollowsContainerdsRule) {
  EXPECT_TRUE(validIdentifier("a"));
  EXPECT_TRUE(validIdentifier("crisp-0123abcd"));
  EXPECT_TRUE(validIdentifier("a.b_c-d"));
  EXPECT_TRUE(validIdentifier(std::string(kMaxIdentifierLength, 'x')));
  EXPECT_FALSE(validIdentifier(std::string(kMaxIdentifierLength + 1, 'x')));
  EXPECT_FALSE(validIdentifier(""));
  EXPECT_FALSE(validIdentifier("-a"));
  EXPECT_FALSE(validIdentifier("a-"));
  EXPECT_FALSE(validIdentifier("a--b"));
  EXPECT_FALSE(validIdentifier("a b"));
  EXPECT_FALSE(validIdentifier("a/b"));
  EXPECT_TRUE(validIdentifier(ContainerdClient::newExecId()));
  EXPECT_NE(ContainerdClient::newExecId(), ContainerdClient::newExecId());
}

// crisp's gRPC server on a unix socket, answering as containerd would.
class FakeContainerdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.setFallback(&handler_);
    ASSERT_TRUE(server_.listenUnix(dir_.file("containerd.sock"), 0600).ok());
    handler_.on_half_close = [this](RecordedCall& call) { answer(call); };
  }

  void answer(RecordedCall& call) {
    const std::string& path = call.call->path();
    if (path == "/containerd.services.containers.v1.Containers/Get") {
      if (!get_status_.ok()) {
        call.call->finish(get_status_);
        return;
      }
      ::containerd::services::containers::v1::GetContainerResponse response;
      response.mutable_container()->set_id("c1");
      response.mutable_container()->mutable_spec()->set_value(spec_.dump());
      for (const auto& [key, value] : labels_) {
        (*response.mutable_container()->mutable_labels())[key] = value;
      }
      call.call->sendMessage(response.SerializeAsString());
      call.call->finish(absl::OkStatus());
    } else if (path == "/containerd.services.tasks.v1.Tasks/Get") {
      if (!task_status_.ok()) {
        call.call->finish(task_status_);
        return;
      }
      ::containerd::services::tasks::v1::GetResponse response;
      response.mutable_process()->set_container_id("c1");
      response.mutable_process()->set_pid(4242);
      response.mutable_process()->set_status(task_state_);
      call.call->sendMessage(response.SerializeAsString());
      call.call->finish(absl::OkStatus());
    } else if (path == "/containerd.services.tasks.v1.Tasks/Start") {
      if (!start_status_.ok()) {
        call.call->finish(start_status_);
        return;
      }
      ::containerd::services::tasks::v1::StartResponse response;
      response.set_pid(4242);
      call.call->sendMessage(response.SerializeAsString());
      call.call->finish(absl::OkStatus());
    } else if (path == "/containerd.services.tasks.v1.Tasks/Kill") {
      if (!kill_status_.ok()) {
        call.call->finish(kill_status_);
        return;
      }
      killed_ = true;
      call.call->sendMessage("");
      call.call->finish(absl::OkStatus());
    } else if (path == "/containerd.services.tasks.v1.Tasks/Wait") {
      // Held open while the process "runs"; answered once it was killed.
      if (killed_) {
        ::containerd::services::tasks::v1::WaitResponse response;
        response.set_exit_status(137);
        call.call->sendMessage(response.SerializeAsString());
        call.call->finish(absl::OkStatus());
      }
    } else {
      // Exec, DeleteProcess: google.protobuf.Empty / an empty DeleteResponse.
      call.call->sendMessage("");
      call.call->finish(absl::OkStatus());
    }
  }

  std::vector<std::string> paths() const {
    std::vector<std::string> out;
    for (const auto& call : handler_.calls) {
      out.push_back(call->call->path());
    }
    return out;
  }

  ExecRequest request() const {
    ExecRequest r;
    r.container_id = "c1";
    r.exec_id = "e1";
    r.args = {"ls"};
    r.stdout_path = "/fifo/out";
    r.stderr_path = "/fifo/err";
    return r;
  }

  event::Dispatcher dispatcher_;
  TempDir dir_;
  RecordingHandler handler_;
  cri::GrpcServer server_{dispatcher_};
  absl::Status start_status_;
  absl::Status kill_status_;
  bool killed_ = false;
  // Containers/Get and Tasks/Get answers.
  json spec_ = containerSpec();
  std::map<std::string, std::string> labels_{{kKindLabel, "container"}};
  absl::Status get_status_;
  absl::Status task_status_;
  ::containerd::v1::types::Status task_state_ = ::containerd::v1::types::RUNNING;
};

TEST_F(FakeContainerdTest, ExecIsGetExecStartInTheNamespaceWithTheContainersProcess) {
  ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
  std::optional<absl::StatusOr<uint32_t>> pid;
  client.exec(request(), [&](absl::StatusOr<uint32_t> r) { pid = r; });
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return pid.has_value(); }));
  ASSERT_TRUE(pid->ok()) << pid->status();
  EXPECT_EQ(**pid, 4242u);
  EXPECT_EQ(paths(), (std::vector<std::string>{
                         "/containerd.services.containers.v1.Containers/Get",
                         "/containerd.services.tasks.v1.Tasks/Exec",
                         "/containerd.services.tasks.v1.Tasks/Start"}));
  for (const auto& call : handler_.calls) {
    EXPECT_EQ(field(call->call->metadata(), "containerd-namespace"), "k8s.io");
    EXPECT_TRUE(call->call->deadline().has_value());
  }
  ::containerd::services::tasks::v1::ExecProcessRequest exec;
  ASSERT_TRUE(exec.ParseFromString(handler_.calls[1]->messages.at(0)));
  EXPECT_EQ(exec.container_id(), "c1");
  EXPECT_EQ(exec.exec_id(), "e1");
  EXPECT_EQ(exec.stdout(), "/fifo/out");
  EXPECT_EQ(exec.stderr(), "/fifo/err");
  EXPECT_EQ(exec.spec().type_url(), kProcessTypeUrl);
  json process = json::parse(exec.spec().value());
  EXPECT_EQ(process["args"], json({"ls"}));
  EXPECT_EQ(process["cwd"], "/work");
  EXPECT_EQ(client.activeCalls(), 0u);
}

TEST_F(FakeContainerdTest, ExecsProcessCallsGetTheProcessDeadline) {
  ContainerdClientOptions options;
  options.call_timeout = std::chrono::seconds(1);
  ASSERT_EQ(options.process_timeout, std::chrono::minutes(2));
  ContainerdClient client(dispatcher_, dir_.file("containerd.sock"), options);
  const auto before = std::chrono::steady_clock::now();
  std::optional<absl::StatusOr<uint32_t>> pid;
  client.exec(request(), [&](absl::StatusOr<uint32_t> r) { pid = r; });
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return pid.has_value(); }));
  ASSERT_TRUE(pid->ok()) << pid->status();
  ASSERT_EQ(handler_.calls.size(), 3u);
  // Containers/Get: the call deadline; Tasks/Exec and Tasks/Start: two minutes.
  ASSERT_TRUE(handler_.calls[0]->call->deadline().has_value());
  EXPECT_LT(*handler_.calls[0]->call->deadline(), before + std::chrono::seconds(5));
  for (size_t i : {1, 2}) {
    ASSERT_TRUE(handler_.calls[i]->call->deadline().has_value()) << paths()[i];
    EXPECT_GT(*handler_.calls[i]->call->deadline(), before + std::chrono::seconds(100))
        << paths()[i];
  }
}

TEST_F(FakeContainerdTest, FailedStartKillsWaitsForAndDeletesTheProcess) {
  // A Start that failed late (its deadline) may have left the process running.
  start_status_ = absl::DeadlineExceededError("Deadline Exceeded");
  ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
  std::optional<absl::StatusOr<uint32_t>> pid;
  client.exec(request(), [&](absl::StatusOr<uint32_t> r) { pid = r; });
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return pid.has_value(); }));
  EXPECT_EQ(pid->status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(pid->status().message(), "containerd Tasks/Start: Deadline Exceeded");
  EXPECT_EQ(paths(), (std::vector<std::string>{
                         "/containerd.services.containers.v1.Containers/Get",
                         "/containerd.services.tasks.v1.Tasks/Exec",
                         "/containerd.services.tasks.v1.Tasks/Start",
                         "/containerd.services.tasks.v1.Tasks/Kill",
                         "/containerd.services.tasks.v1.Tasks/Wait",
                         "/containerd.services.tasks.v1.Tasks/DeleteProcess"}));
  ::containerd::services::tasks::v1::KillRequest kill;
  ASSERT_TRUE(kill.ParseFromString(handler_.calls[3]->messages.at(0)));
  EXPECT_EQ(kill.container_id(), "c1");
  EXPECT_EQ(kill.exec_id(), "e1");
  EXPECT_EQ(kill.signal(), static_cast<uint32_t>(SIGKILL));
  EXPECT_FALSE(kill.all());
  ::containerd::services::tasks::v1::WaitRequest wait;
  ASSERT_TRUE(wait.ParseFromString(handler_.calls[4]->messages.at(0)));
  EXPECT_EQ(wait.exec_id(), "e1");
  EXPECT_TRUE(handler_.calls[4]->call->deadline().has_value());
  ::containerd::services::tasks::v1::DeleteProcessRequest del;
  ASSERT_TRUE(del.ParseFromString(handler_.calls[5]->messages.at(0)));
  EXPECT_EQ(del.container_id(), "c1");
  EXPECT_EQ(del.exec_id(), "e1");
  EXPECT_EQ(client.activeCalls(), 0u);
}

TEST_F(FakeContainerdTest, ProcessThatNeverRanIsDeletedAfterTheRefusedKill) {
  start_status_ = absl::Status(absl::StatusCode::kUnknown, "runc exec failed: no sh");
  kill_status_ = absl::FailedPreconditionError("process not created");
  ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
  std::optional<absl::StatusOr<uint32_t>> pid;
  client.exec(request(), [&](absl::StatusOr<uint32_t> r) { pid = r; });
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return pid.has_value(); }));
  // Start's error, not Kill's.
  EXPECT_EQ(pid->status().code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(pid->status().message(), "containerd Tasks/Start: runc exec failed: no sh");
  ASSERT_EQ(paths().size(), 5u);
  EXPECT_EQ(paths()[3], "/containerd.services.tasks.v1.Tasks/Kill");
  EXPECT_EQ(paths()[4], "/containerd.services.tasks.v1.Tasks/DeleteProcess");
  EXPECT_EQ(client.activeCalls(), 0u);
}

TEST_F(FakeContainerdTest, ExecInAPodSandboxOrANonCriRecordIsNotFound) {
  ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
  auto exec = [&] {
    std::optional<absl::StatusOr<uint32_t>> pid;
    client.exec(request(), [&](absl::StatusOr<uint32_t> r) { pid = r; });
    EXPECT_TRUE(runUntil(dispatcher_, [&] { return pid.has_value(); }));
    return pid.value_or(absl::DeadlineExceededError("no answer")).status();
  };
  labels_[kKindLabel] = "sandbox";
  EXPECT_EQ(exec(), absl::NotFoundError("container \"c1\" not found (it is a pod sandbox; "
                                        "only the CRI plugin's containers take execs)"));
  labels_.clear();
  EXPECT_EQ(exec(), absl::NotFoundError("container \"c1\" not found (it has no "
                                        "io.cri-containerd.kind label; only the CRI plugin's "
                                        "containers take execs)"));
  // Nothing but the two Containers/Get.
  EXPECT_EQ(handler_.calls.size(), 2u);
  EXPECT_EQ(client.activeCalls(), 0u);
}

TEST_F(FakeContainerdTest, WaitHasNoDeadlineAndCancelEndsItWithoutCallback) {
  ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
  bool called = false;
  auto id = client.wait("c1", "e1", [&](auto) { called = true; });
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));
  EXPECT_FALSE(handler_.calls[0]->call->deadline().has_value());
  EXPECT_EQ(field(handler_.calls[0]->call->metadata(), "grpc-timeout"), std::nullopt);
  client.cancel(id);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls[0]->cancelled.has_value(); }));
  settle(dispatcher_);
  EXPECT_FALSE(called);
  EXPECT_EQ(client.activeCalls(), 0u);
}

TEST_F(FakeContainerdTest, DestroyingTheClientEndsItsCallsWithoutCallbacks) {
  bool called = false;
  {
    ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
    client.wait("c1", "e1", [&](auto) { called = true; });
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));
  }
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls[0]->cancelled.has_value(); }));
  settle(dispatcher_);
  EXPECT_FALSE(called);
}

TEST_F(FakeContainerdTest, ACallbackMayDestroyTheClient) {
  auto client = std::make_unique<ContainerdClient>(dispatcher_, dir_.file("containerd.sock"));
  bool done = false;
  client->closeStdin("c1", "e1", [&](const absl::Status& s) {
    EXPECT_TRUE(s.ok()) << s;
    client.reset();
    done = true;
  });
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return done; }));
  settle(dispatcher_);
  ::containerd::services::tasks::v1::CloseIORequest close;
  ASSERT_TRUE(close.ParseFromString(handler_.calls.at(0)->messages.at(0)));
  EXPECT_TRUE(close.stdin());
}

TEST_F(FakeContainerdTest, RefusedExecAnswersFromTheLoopAndCanBeCancelled) {
  ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
  ExecRequest lone_stdout = request();
  lone_stdout.stderr_path.clear();
  std::optional<absl::StatusOr<uint32_t>> pid;
  client.exec(lone_stdout, [&](absl::StatusOr<uint32_t> r) { pid = r; });
  EXPECT_FALSE(pid.has_value());
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return pid.has_value(); }));
  EXPECT_EQ(pid->status().code(), absl::StatusCode::kInvalidArgument);

  bool called = false;
  auto id = client.exec(lone_stdout, [&](auto) { called = true; });
  client.cancel(id);
  settle(dispatcher_);
  EXPECT_FALSE(called);
  EXPECT_TRUE(handler_.calls.empty());
  EXPECT_EQ(client.activeCalls(), 0u);
}

TEST(SandboxNamespacePath, IsTheSpecsNetworkPathElseTheTasksOwn) {
  json cni = {{"linux",
               {{"namespaces",
                 {{{"type", "pid"}},
                  {{"type", "ipc"}, {"path", "/proc/1/ns/ipc"}},
                  {{"type", "network"}, {"path", "/var/run/netns/cni-1234"}}}}}}};
  EXPECT_EQ(sandboxNamespacePath(cni, 42), "/var/run/netns/cni-1234");
  // A namespace runc makes (no path), or none at all (host network).
  json own = {{"linux", {{"namespaces", {{{"type", "network"}}, {{"type", "pid"}}}}}}};
  EXPECT_EQ(sandboxNamespacePath(own, 42), "/proc/42/ns/net");
  json host = {{"linux", {{"namespaces", {{{"type", "pid"}}}}}}};
  EXPECT_EQ(sandboxNamespacePath(host, 42), "/proc/42/ns/net");
  EXPECT_EQ(sandboxNamespacePath(json::object(), 7), "/proc/7/ns/net");
  // Shapes that are not a spec's: ignored, never a crash.
  EXPECT_EQ(sandboxNamespacePath(json{{"linux", "x"}}, 7), "/proc/7/ns/net");
  EXPECT_EQ(sandboxNamespacePath(json{{"linux", {{"namespaces", {1, "network"}}}}}, 7),
            "/proc/7/ns/net");
  EXPECT_EQ(sandboxNamespacePath(
                json{{"linux", {{"namespaces", {{{"type", "network"}, {"path", 3}}}}}}}, 7),
            "/proc/7/ns/net");
}

class SandboxNetworkTest : public FakeContainerdTest {
 protected:
  void SetUp() override {
    FakeContainerdTest::SetUp();
    spec_["linux"]["namespaces"] =
        json::array({{{"type", "pid"}}, {{"type", "network"}, {"path", "/var/run/netns/cni-9"}}});
    labels_[kKindLabel] = "sandbox";
  }

  absl::StatusOr<SandboxNetwork> lookup(const std::string& id = "sb1") {
    ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
    std::optional<absl::StatusOr<SandboxNetwork>> result;
    client.sandboxNetwork(id, [&](absl::StatusOr<SandboxNetwork> r) { result = std::move(r); });
    EXPECT_FALSE(result.has_value());
    EXPECT_TRUE(runUntil(dispatcher_, [&] { return result.has_value(); }));
    EXPECT_EQ(client.activeCalls(), 0u);
    return result.value_or(absl::DeadlineExceededError("no answer"));
  }
};

TEST_F(SandboxNetworkTest, IsContainersGetThenTasksGetAndPrefersTheSpecsPath) {
  auto network = lookup();
  ASSERT_TRUE(network.ok()) << network.status();
  EXPECT_EQ(network->pid, 4242u);
  EXPECT_EQ(network->namespace_path, "/var/run/netns/cni-9");
  EXPECT_EQ(paths(), (std::vector<std::string>{"/containerd.services.containers.v1.Containers/Get",
                                               "/containerd.services.tasks.v1.Tasks/Get"}));
  ::containerd::services::containers::v1::GetContainerRequest get;
  ASSERT_TRUE(get.ParseFromString(handler_.calls[0]->messages.at(0)));
  EXPECT_EQ(get.id(), "sb1");
  ::containerd::services::tasks::v1::GetRequest task;
  ASSERT_TRUE(task.ParseFromString(handler_.calls[1]->messages.at(0)));
  EXPECT_EQ(task.container_id(), "sb1");
  EXPECT_EQ(task.exec_id(), "");
  for (const auto& call : handler_.calls) {
    EXPECT_EQ(field(call->call->metadata(), "containerd-namespace"), "k8s.io");
    EXPECT_TRUE(call->call->deadline().has_value());
  }
}

TEST_F(SandboxNetworkTest, HostNetworkSandboxIsTheTasksNamespace) {
  spec_["linux"]["namespaces"] = json::array({{{"type", "pid"}}});
  auto network = lookup();
  ASSERT_TRUE(network.ok()) << network.status();
  EXPECT_EQ(network->namespace_path, "/proc/4242/ns/net");
}

TEST_F(SandboxNetworkTest, UnknownSandboxIsNotFound) {
  get_status_ = absl::NotFoundError("container \"sb1\" in namespace \"k8s.io\": not found");
  auto network = lookup();
  EXPECT_EQ(network.status(), absl::NotFoundError("pod sandbox \"sb1\" not found"));
  EXPECT_EQ(handler_.calls.size(), 1u);
}

TEST_F(SandboxNetworkTest, ACriContainerIsNotASandbox) {
  labels_[kKindLabel] = "container";
  auto network = lookup();
  EXPECT_EQ(network.status(),
            absl::NotFoundError(
                "pod sandbox \"sb1\" not found (\"sb1\" is a container, not a pod sandbox)"));
  EXPECT_EQ(handler_.calls.size(), 1u);
  // Without the CRI plugin's label, any container with a task will do.
  labels_.clear();
  EXPECT_TRUE(lookup().ok());
}

TEST_F(SandboxNetworkTest, SandboxWithoutRunningTaskIsNotRunning) {
  task_status_ = absl::NotFoundError("no running task found: task sb1 not found");
  EXPECT_EQ(lookup().status(),
            absl::FailedPreconditionError("pod sandbox \"sb1\" is not running (it has no task)"));
  task_status_ = absl::OkStatus();
  task_state_ = ::containerd::v1::types::STOPPED;
  EXPECT_EQ(lookup().status(), absl::FailedPreconditionError(
                                   "pod sandbox \"sb1\" is not running (its task is stopped)"));
  task_state_ = ::containerd::v1::types::PAUSED;
  EXPECT_EQ(lookup().status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SandboxNetworkTest, OtherErrorsKeepContainerdsCodeAndMethod) {
  task_status_ = absl::UnavailableError("shim gone");
  EXPECT_EQ(lookup().status(), absl::UnavailableError("containerd Tasks/Get: shim gone"));
  spec_ = json::array();
  EXPECT_EQ(lookup().status().code(), absl::StatusCode::kInternal);
}

TEST_F(SandboxNetworkTest, CancelDuringEitherStepEndsWithoutCallback) {
  for (size_t step = 0; step < 2; ++step) {
    handler_.calls.clear();
    handler_.on_half_close = [this, step](RecordedCall& call) {
      if (handler_.calls.size() <= step) {
        answer(call);
      }  // else held: the step in flight
    };
    ContainerdClient client(dispatcher_, dir_.file("containerd.sock"));
    bool called = false;
    auto id = client.sandboxNetwork("sb1", [&](auto) { called = true; });
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == step + 1; }));
    client.cancel(id);
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls[step]->cancelled.has_value(); }));
    settle(dispatcher_);
    EXPECT_FALSE(called) << "step " << step;
    EXPECT_EQ(client.activeCalls(), 0u);
  }
}

}  // namespace
}  // namespace crisp::containerd
