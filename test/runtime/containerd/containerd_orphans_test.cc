// killOrphanedExecs() against crisp's gRPC server playing containerd on its
// own thread: which execs are ended (only crisp's, in running tasks), in
// which order, and that a containerd that does not answer costs at most the
// deadline. Against a real containerd: //test/e2e:containerd_backend_test.

#include "source/runtime/containerd/containerd_orphans.h"

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"

#include "api/containerd/runc/options/oci.pb.h"
#include "api/containerd/services/tasks/v1/tasks.pb.h"
#include "api/containerd/types/task/task.pb.h"
#include "source/common/dispatcher.h"
#include "source/cri/grpc_server.h"
#include "test/cri/grpc_test_util.h"

namespace crisp::containerd {
namespace {

namespace tasks_v1 = ::containerd::services::tasks::v1;
using cri::testing::TempDir;

constexpr char kTasks[] = "/containerd.services.tasks.v1.Tasks/";

// A containerd with tasks and the exec processes in each; Kill ends a
// process (Wait answers then), DeleteProcess removes it.
class FakeContainerd {
 public:
  struct Task {
    bool running = true;
    // exec id -> the type URL the shim gives its ProcessDetails
    std::map<std::string, std::string> execs;
    // ListPids entries without details (the main process, an exec's children)
    int unnamed = 1;
  };

  // `list_status`: Tasks/List's error, if any. `wait_answers`: false for a
  // containerd that never answers Tasks/Wait.
  explicit FakeContainerd(std::map<std::string, Task> tasks,
                          absl::Status list_status = absl::OkStatus(), bool wait_answers = true)
      : tasks_(std::move(tasks)),
        list_status_(std::move(list_status)),
        wait_answers_(wait_answers) {
    on("List", [this](const std::string&, cri::GrpcServer::UnaryDone done) {
      if (!list_status_.ok()) {
        done(list_status_);
        return;
      }
      tasks_v1::ListTasksResponse response;
      for (const auto& [id, task] : tasks_) {
        auto* process = response.add_tasks();
        process->set_id(id);
        process->set_pid(100);
        process->set_status(task.running ? ::containerd::v1::types::RUNNING
                                         : ::containerd::v1::types::STOPPED);
      }
      done(response.SerializeAsString());
    });
    on("ListPids", [this](const std::string& bytes, cri::GrpcServer::UnaryDone done) {
      tasks_v1::ListPidsRequest request;
      request.ParseFromString(bytes);
      record("ListPids " + request.container_id());
      const Task& task = tasks_.at(request.container_id());
      tasks_v1::ListPidsResponse response;
      for (int i = 0; i < task.unnamed; ++i) {
        response.add_processes()->set_pid(100 + i);
      }
      for (const auto& [exec_id, type_url] : task.execs) {
        auto* process = response.add_processes();
        process->set_pid(200);
        ::containerd::runc::v1::ProcessDetails details;
        details.set_exec_id(exec_id);
        process->mutable_info()->set_type_url(type_url);
        process->mutable_info()->set_value(details.SerializeAsString());
      }
      done(response.SerializeAsString());
    });
    on("Kill", [this](const std::string& bytes, cri::GrpcServer::UnaryDone done) {
      tasks_v1::KillRequest request;
      request.ParseFromString(bytes);
      record("Kill " + request.container_id() + " " + request.exec_id() + " " +
             std::to_string(request.signal()));
      killed_[request.exec_id()] = true;
      done(std::string());
    });
    on("Wait", [this](const std::string& bytes, cri::GrpcServer::UnaryDone done) {
      tasks_v1::WaitRequest request;
      request.ParseFromString(bytes);
      record("Wait " + request.container_id() + " " + request.exec_id());
      if (!wait_answers_) {
        held_.push_back(std::move(done));  // a containerd that does not answer
        return;
      }
      tasks_v1::WaitResponse response;
      response.set_exit_status(killed_[request.exec_id()] ? 137 : 0);
      done(response.SerializeAsString());
    });
    on("DeleteProcess", [this](const std::string& bytes, cri::GrpcServer::UnaryDone done) {
      tasks_v1::DeleteProcessRequest request;
      request.ParseFromString(bytes);
      record("DeleteProcess " + request.container_id() + " " + request.exec_id());
      tasks_v1::DeleteResponse response;
      response.set_exit_status(137);
      done(response.SerializeAsString());
    });
    EXPECT_TRUE(server_.listenUnix(socket(), 0600).ok());
    thread_ = std::thread([this] { dispatcher_.run(); });
  }

  ~FakeContainerd() {
    dispatcher_.post([this] {
      held_.clear();
      dispatcher_.exit();
    });
    thread_.join();
  }

  std::string socket() const { return dir_.file("containerd.sock"); }

  // The calls made, in order (read after the sweep returned).
  std::vector<std::string> calls() {
    std::lock_guard<std::mutex> lock(mutex_);
    return calls_;
  }

 private:
  void on(const std::string& method,
          std::function<void(const std::string&, cri::GrpcServer::UnaryDone)> handler) {
    server_.registerUnary(
        kTasks + method,
        [handler = std::move(handler)](std::string request, cri::GrpcServer::UnaryDone done) {
          handler(request, std::move(done));
        });
  }

  void record(std::string call) {
    std::lock_guard<std::mutex> lock(mutex_);
    calls_.push_back(std::move(call));
  }

  const std::map<std::string, Task> tasks_;
  const absl::Status list_status_;
  const bool wait_answers_;
  std::map<std::string, bool> killed_;
  std::vector<cri::GrpcServer::UnaryDone> held_;
  std::mutex mutex_;
  std::vector<std::string> calls_;
  TempDir dir_;
  event::Dispatcher dispatcher_;
  cri::GrpcServer server_{dispatcher_};
  std::thread thread_;
};

constexpr char kDetails[] = "containerd.runc.v1.ProcessDetails";
constexpr char kCrispA[] = "crisp-0123456789abcdef01234567";
constexpr char kCrispB[] = "crisp-00000000000000ff";

TEST(KillOrphanedExecs, EndsOnlyCrispsExecsInRunningTasks) {
  FakeContainerd::Task web;
  web.execs = {{kCrispA, kDetails},
               // The CRI plugin's and another client's execs.
               {"9f2c1e0d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e", kDetails},
               {"crisp-other-client", kDetails},
               {"crisp-ABCDEF", kDetails}};
  FakeContainerd::Task db;
  // A prefixed type URL is read the same way.
  db.execs = {{kCrispB, std::string("types.googleapis.com/") + kDetails}};
  FakeContainerd::Task other_type;
  // Details of another runtime: not read as an exec id.
  other_type.execs = {{"crisp-0a", "example.com.Details"}};
  FakeContainerd::Task stopped;
  stopped.running = false;
  stopped.execs = {{"crisp-0b", kDetails}};
  FakeContainerd containerd(
      {{"web", web}, {"db", db}, {"other-type", other_type}, {"stopped", stopped}});

  absl::StatusOr<OrphanSweep> swept =
      killOrphanedExecs(containerd.socket(), std::chrono::seconds(5));
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(swept->found, 2u);
  EXPECT_EQ(swept->ended, 2u);

  // Per exec: SIGKILL, its end, then the delete. The containers' lists come
  // first; the order between the two execs is free.
  std::vector<std::string> calls = containerd.calls();
  std::vector<std::string> for_a, for_b, lists;
  for (const std::string& call : calls) {
    if (call.find(kCrispA) != std::string::npos) {
      for_a.push_back(call);
    } else if (call.find(kCrispB) != std::string::npos) {
      for_b.push_back(call);
    } else {
      lists.push_back(call);
    }
  }
  EXPECT_EQ(lists,
            (std::vector<std::string>{"ListPids db", "ListPids other-type", "ListPids web"}));
  EXPECT_EQ(for_a, (std::vector<std::string>{std::string("Kill web ") + kCrispA + " 9",
                                             std::string("Wait web ") + kCrispA,
                                             std::string("DeleteProcess web ") + kCrispA}));
  EXPECT_EQ(for_b, (std::vector<std::string>{std::string("Kill db ") + kCrispB + " 9",
                                             std::string("Wait db ") + kCrispB,
                                             std::string("DeleteProcess db ") + kCrispB}));
}

TEST(KillOrphanedExecs, NothingToEndWithoutCrispExecs) {
  FakeContainerd::Task web;
  web.execs = {{"exec-1", kDetails}};
  FakeContainerd containerd({{"web", web}});
  absl::StatusOr<OrphanSweep> swept =
      killOrphanedExecs(containerd.socket(), std::chrono::seconds(5));
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(swept->found, 0u);
  EXPECT_EQ(containerd.calls(), std::vector<std::string>{"ListPids web"});
}

TEST(KillOrphanedExecs, AContainerdThatDoesNotAnswerCostsTheDeadline) {
  FakeContainerd::Task web;
  web.execs = {{kCrispA, kDetails}};
  FakeContainerd containerd({{"web", web}}, absl::OkStatus(), /*wait_answers=*/false);
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<OrphanSweep> swept =
      killOrphanedExecs(containerd.socket(), std::chrono::milliseconds(500));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(swept.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(swept.status().message().find("0 of 1 found so far ended"), std::string::npos)
      << swept.status();
  // The event loop arms its timer from the time it cached at the start of
  // its iteration, a little before `start` here: it may fire a few
  // milliseconds short of the deadline as this thread measures it.
  EXPECT_GE(took, std::chrono::milliseconds(450));
  EXPECT_LT(took, std::chrono::seconds(3));
}

TEST(KillOrphanedExecs, ATaskListErrorIsReported) {
  FakeContainerd containerd({}, absl::UnavailableError("shutting down"));
  absl::StatusOr<OrphanSweep> swept =
      killOrphanedExecs(containerd.socket(), std::chrono::seconds(5));
  EXPECT_EQ(swept.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(swept.status().message().find("containerd Tasks/List: shutting down"),
            std::string::npos)
      << swept.status();
}

TEST(KillOrphanedExecs, AnUnreachableSocketIsReported) {
  TempDir dir;
  absl::StatusOr<OrphanSweep> swept =
      killOrphanedExecs(dir.file("none.sock"), std::chrono::seconds(5));
  EXPECT_EQ(swept.status().code(), absl::StatusCode::kUnavailable) << swept.status();
}

}  // namespace
}  // namespace crisp::containerd
