#include "source/runtime/containerd/containerd_port_forward.h"

#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include "absl/status/status.h"
#include "api/containerd/services/containers/v1/containers.pb.h"
#include "api/containerd/services/tasks/v1/tasks.pb.h"
#include "api/containerd/types/task/task.pb.h"
#include <nlohmann/json.hpp>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/cri/grpc_server.h"

#include "gtest/gtest.h"
#include "test/cri/grpc_test_util.h"
#include "test/runtime/embedded/port_servers.h"

namespace crisp::containerd {
namespace {

using cri::testing::RecordedCall;
using cri::testing::RecordingHandler;
using cri::testing::runUntil;
using cri::testing::settle;
using cri::testing::TempDir;
using nlohmann::json;
using runtime::testing::NamespaceThread;
using runtime::testing::TestPortServer;
using session::PortError;
using Mode = TestPortServer::Mode;

class RecordingPortCallbacks : public session::PortCallbacks {
 public:
  void onConnected() override { ++connected; }
  void onData(Buffer& data) override { received += data.toString(); }
  void onRemoteEof() override { ++eofs; }
  void onWriteDrained() override { ++drained; }
  void onClosed() override { ++closed; }
  void onError(const PortError& e) override {
    ++errors;
    error = e;
  }
  bool ended() const { return closed + errors > 0; }

  int connected = 0;
  int eofs = 0;
  int drained = 0;
  int closed = 0;
  int errors = 0;
  std::string received;
  std::optional<PortError> error;
};

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(rng());
  }
  return s;
}

std::string failureText(uint16_t port, const std::string& sandbox, const std::string& detail) {
  return "failed to connect to localhost:" + std::to_string(port) +
         " in the network of pod sandbox \"" + sandbox + "\": " + detail;
}

// containerd as far as the sandbox lookup goes: sandboxes by id, each with a
// network namespace path in its spec and a task in some state.
struct FakeSandbox {
  std::string netns_path;
  ::containerd::v1::types::Status state = ::containerd::v1::types::RUNNING;
};

// A pod whose network is a fresh namespace of the test, served by a fake
// containerd on a unix socket.
class SandboxPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!ns_.ok()) {
      GTEST_SKIP() << "cannot create a network namespace here (needs root): " << ns_.error();
    }
    sandboxes_["sb1"] = FakeSandbox{ns_.path()};
    server_.setFallback(&handler_);
    ASSERT_TRUE(server_.listenUnix(dir_.file("containerd.sock"), 0600).ok());
    handler_.on_half_close = [this](RecordedCall& call) {
      if (!hold_) {
        answer(call);
      }
    };
    client_ = std::make_unique<ContainerdClient>(dispatcher_, dir_.file("containerd.sock"));
  }

  void TearDown() override {
    conn_.reset();
    client_.reset();
    settle(dispatcher_);
  }

  void answer(RecordedCall& call) {
    const std::string& path = call.call->path();
    ::containerd::services::containers::v1::GetContainerRequest get;
    get.ParseFromString(call.messages.at(0));  // Tasks/Get's container_id is field 1 too
    auto it = sandboxes_.find(get.id());
    if (it == sandboxes_.end()) {
      call.call->finish(absl::NotFoundError("not found"));
      return;
    }
    if (path == "/containerd.services.containers.v1.Containers/Get") {
      ::containerd::services::containers::v1::GetContainerResponse response;
      response.mutable_container()->set_id(get.id());
      (*response.mutable_container()->mutable_labels())[kKindLabel] = "sandbox";
      json spec = {
          {"linux",
           {{"namespaces",
             {{{"type", "pid"}}, {{"type", "network"}, {"path", it->second.netns_path}}}}}}};
      response.mutable_container()->mutable_spec()->set_value(spec.dump());
      call.call->sendMessage(response.SerializeAsString());
    } else {
      ::containerd::services::tasks::v1::GetResponse response;
      response.mutable_process()->set_pid(1);
      response.mutable_process()->set_status(it->second.state);
      call.call->sendMessage(response.SerializeAsString());
    }
    call.call->finish(absl::OkStatus());
  }

  session::PortConnection& connect(const std::string& sandbox, uint16_t port) {
    auto conn = connectSandboxPort(dispatcher_, *client_, netns_, sandbox, port, cb_);
    EXPECT_TRUE(conn.ok()) << conn.status();
    conn_ = std::move(conn).value();
    return *conn_;
  }

  void write(session::PortConnection& conn, const std::string& bytes) {
    Buffer b;
    b.add(bytes);
    conn.write(b);
    EXPECT_TRUE(b.empty());
  }

  void expectFailure(PortError::Kind kind, const std::string& message) {
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.ended(); }));
    ASSERT_TRUE(cb_.error.has_value());
    EXPECT_EQ(cb_.error->kind, kind);
    EXPECT_EQ(cb_.error->message, message);
    EXPECT_EQ(cb_.errors, 1);
    EXPECT_EQ(cb_.connected + cb_.closed, 0);
  }

  NamespaceThread ns_;
  event::Dispatcher dispatcher_;
  TempDir dir_;
  RecordingHandler handler_;
  cri::GrpcServer server_{dispatcher_};
  std::map<std::string, FakeSandbox> sandboxes_;
  bool hold_ = false;
  std::unique_ptr<ContainerdClient> client_;
  runtime::NetnsSocketFactory netns_;
  RecordingPortCallbacks cb_;
  std::unique_ptr<session::PortConnection> conn_;
};

TEST_F(SandboxPortTest, ReachesTheSandboxesLoopbackAndNotCrisps) {
  TestPortServer pod(Mode::kEcho, TestPortServer::Family::kIpv4, ns_.path());
  auto& conn = connect("sb1", pod.port());
  // Written during the lookup: kept, then sent.
  write(conn, "asked before the namespace was known");
  EXPECT_EQ(conn.queuedBytes(), 36u);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.connected == 1 || cb_.ended(); }));
  ASSERT_EQ(cb_.connected, 1) << (cb_.error ? cb_.error->message : "");
  write(conn, ", and after");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.received.size() >= 47 || cb_.ended(); }));
  EXPECT_EQ(cb_.received, "asked before the namespace was known, and after");
  EXPECT_EQ(netns_.served(), 1u);

  // A server on crisp's own loopback is not in the pod's network.
  TestPortServer host(Mode::kEcho);
  RecordingPortCallbacks outside;
  auto other = connectSandboxPort(dispatcher_, *client_, netns_, "sb1", host.port(), outside);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return outside.ended(); }));
  ASSERT_TRUE(outside.error.has_value());
  EXPECT_EQ(outside.error->kind, PortError::Kind::kRefused);
  const std::string p = std::to_string(host.port());
  EXPECT_EQ(
      outside.error->message,
      failureText(host.port(), "sb1",
                  "127.0.0.1:" + p + ": connection refused; [::1]:" + p + ": connection refused"));
  EXPECT_EQ(host.accepted(), 0u);
}

TEST_F(SandboxPortTest, HalfCloseAndPauseGivenDuringTheLookupApply) {
  TestPortServer pod(Mode::kEcho, TestPortServer::Family::kIpv4, ns_.path());
  auto& conn = connect("sb1", pod.port());
  // Past the high watermark, and small enough for the paused echo (its queue
  // and the socket buffers) to take all but the low watermark's worth.
  const std::string data =
      randomBytes(session::PortConnection::kWriteHighWatermark + (256 << 10), 11);
  write(conn, data);
  EXPECT_EQ(conn.queuedBytes(), data.size());
  conn.pauseReading(true);
  conn.shutdownWrite();
  write(conn, "dropped: after the half-close");
  // Paused: the echo waits in TCP, nothing is delivered.
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.drained == 1 || cb_.ended(); }));
  EXPECT_EQ(cb_.connected, 1);
  EXPECT_LE(conn.queuedBytes(), session::PortConnection::kWriteLowWatermark);
  runUntil(
      dispatcher_, [] { return false; }, std::chrono::milliseconds(50));
  EXPECT_TRUE(cb_.received.empty());
  conn.pauseReading(false);
  ASSERT_TRUE(runUntil(
      dispatcher_, [&] { return cb_.ended(); }, std::chrono::seconds(20)));
  EXPECT_EQ(cb_.closed, 1);
  EXPECT_EQ(cb_.eofs, 1);
  EXPECT_EQ(cb_.errors, 0);
  EXPECT_TRUE(cb_.received == data) << cb_.received.size() << " bytes back of " << data.size();
}

TEST_F(SandboxPortTest, UnknownSandbox) {
  auto& conn = connect("nope", 8080);
  write(conn, "dropped");
  expectFailure(PortError::Kind::kConnectFailed,
                failureText(8080, "nope", "pod sandbox \"nope\" not found"));
  EXPECT_EQ(conn.queuedBytes(), 0u);
  EXPECT_EQ(netns_.served(), 0u);
}

TEST_F(SandboxPortTest, SandboxNotRunning) {
  sandboxes_["sb1"].state = ::containerd::v1::types::STOPPED;
  connect("sb1", 8080);
  expectFailure(
      PortError::Kind::kConnectFailed,
      failureText(8080, "sb1", "pod sandbox \"sb1\" is not running (its task is stopped)"));
}

TEST_F(SandboxPortTest, NamespaceGone) {
  sandboxes_["sb1"].netns_path = dir_.file("netns-gone");
  connect("sb1", 8080);
  expectFailure(PortError::Kind::kConnectFailed,
                failureText(8080, "sb1",
                            "cannot open network namespace \"" + dir_.file("netns-gone") +
                                "\": no such file or directory"));
}

TEST_F(SandboxPortTest, ContainerdUnreachable) {
  client_ = std::make_unique<ContainerdClient>(dispatcher_, dir_.file("no-containerd.sock"));
  connect("sb1", 8080);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.ended(); }));
  ASSERT_TRUE(cb_.error.has_value());
  EXPECT_EQ(cb_.error->kind, PortError::Kind::kConnectFailed);
  EXPECT_EQ(cb_.error->message.rfind(failureText(8080, "sb1", "containerd Containers/Get: "), 0),
            0u)
      << cb_.error->message;
}

TEST_F(SandboxPortTest, PortZeroIsRefusedAtOnce) {
  auto conn = connectSandboxPort(dispatcher_, *client_, netns_, "sb1", 0, cb_);
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kInvalidArgument);
  settle(dispatcher_);
  EXPECT_TRUE(handler_.calls.empty());
}

TEST_F(SandboxPortTest, DestroyedDuringTheLookupEndsWithoutCallback) {
  TestPortServer pod(Mode::kEcho, TestPortServer::Family::kIpv4, ns_.path());
  hold_ = true;
  write(connect("sb1", pod.port()), "never sent");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));
  conn_.reset();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls[0]->cancelled.has_value(); }));
  settle(dispatcher_);
  EXPECT_EQ(client_->activeCalls(), 0u);
  EXPECT_EQ(cb_.connected + cb_.errors + cb_.closed, 0);
  EXPECT_EQ(pod.accepted(), 0u);
  EXPECT_EQ(netns_.served(), 0u);
}

TEST_F(SandboxPortTest, ManyConnectionsEachLookUpTheSandbox) {
  TestPortServer pod(Mode::kEcho, TestPortServer::Family::kIpv4, ns_.path());
  constexpr int kConnections = 20;
  std::vector<RecordingPortCallbacks> callbacks(kConnections);
  std::vector<std::unique_ptr<session::PortConnection>> conns;
  for (int i = 0; i < kConnections; ++i) {
    auto conn = connectSandboxPort(dispatcher_, *client_, netns_, "sb1", pod.port(), callbacks[i]);
    ASSERT_TRUE(conn.ok());
    Buffer b;
    b.add("connection " + std::to_string(i));
    (*conn)->write(b);
    (*conn)->shutdownWrite();
    conns.push_back(std::move(conn).value());
  }
  ASSERT_TRUE(runUntil(
      dispatcher_,
      [&] {
        for (const auto& c : callbacks) {
          if (!c.ended()) {
            return false;
          }
        }
        return true;
      },
      std::chrono::seconds(20)));
  for (int i = 0; i < kConnections; ++i) {
    EXPECT_EQ(callbacks[i].closed, 1) << i;
    EXPECT_EQ(callbacks[i].received, "connection " + std::to_string(i));
  }
  EXPECT_EQ(handler_.calls.size(), 2u * kConnections);
  EXPECT_EQ(pod.accepted(), static_cast<uint64_t>(kConnections));
}

}  // namespace
}  // namespace crisp::containerd
