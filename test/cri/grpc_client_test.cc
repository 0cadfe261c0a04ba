// GrpcClient behaviour that the server tests do not cover, and the blocking
// unary helper against a server running on its own thread.

#include "source/cri/grpc_client.h"

#include <future>
#include <thread>

#include <gtest/gtest.h>

#include "source/cri/grpc_server.h"

#include "test/cri/grpc_test_util.h"

namespace crisp::cri {
namespace {

using testing::CallRecorder;
using testing::RecordedCall;
using testing::RecordingHandler;
using testing::runUntil;

// A GrpcServer on its own Dispatcher thread, as the CRI front runs.
class ServerThread {
 public:
  explicit ServerThread(const std::string& socket) : server_(dispatcher_) {
    server_.registerUnary("/test.Echo/Unary", [](std::string request, GrpcServer::UnaryDone done) {
      done("echo:" + request);
    });
    server_.registerUnary("/test.Echo/Fail", [](std::string, GrpcServer::UnaryDone done) {
      done(absl::FailedPreconditionError("not ready: 100%"));
    });
    // Never answers; the UnaryDone is kept until the server goes away.
    server_.registerUnary("/test.Echo/Hang", [this](std::string, GrpcServer::UnaryDone done) {
      hung_.push_back(std::move(done));
    });
    status_ = server_.listenUnix(socket, 0600);
    thread_ = std::thread([this] { dispatcher_.run(); });
  }
  ~ServerThread() {
    std::promise<void> stopped;
    dispatcher_.post([&] {
      hung_.clear();
      stopped.set_value();
      dispatcher_.exit();
    });
    stopped.get_future().wait();
    thread_.join();
  }
  const absl::Status& status() const { return status_; }

 private:
  event::Dispatcher dispatcher_;
  GrpcServer server_;
  std::vector<GrpcServer::UnaryDone> hung_;
  absl::Status status_;
  std::thread thread_;
};

TEST(UnaryCallBlockingTest, ReturnsResponseOrStatusFromServerOnAnotherThread) {
  testing::TempDir dir;
  const std::string socket = dir.file("crisp.sock");
  ServerThread server(socket);
  ASSERT_TRUE(server.status().ok()) << server.status();

  auto ok = unaryCallBlocking(socket, "/test.Echo/Unary", std::string("a\0b", 3),
                              std::chrono::seconds(5), {{"x-id", "1"}});
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, std::string("echo:a\0b", 8));

  auto failed = unaryCallBlocking(socket, "/test.Echo/Fail", "", std::chrono::seconds(5));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(std::string(failed.status().message()), "not ready: 100%");

  auto unknown = unaryCallBlocking(socket, "/test.Echo/Nope", "", std::chrono::seconds(5));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnimplemented);

  const auto start = std::chrono::steady_clock::now();
  auto hung = unaryCallBlocking(socket, "/test.Echo/Hang", "", std::chrono::milliseconds(200));
  EXPECT_EQ(hung.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(UnaryCallBlockingTest, MissingSocketIsUnavailableNamingIt) {
  testing::TempDir dir;
  const std::string socket = dir.file("absent.sock");
  auto result = unaryCallBlocking(socket, "/test.Echo/Unary", "", std::chrono::seconds(5));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::string(result.status().message()), socket + ": no such file or directory");
}

class GrpcClientTest : public ::testing::Test {
 protected:
  void SetUp() override { startServer(); }

  void startServer() {
    server_ = std::make_unique<GrpcServer>(dispatcher_);
    server_->registerUnary("/test.Echo/Unary", [](std::string request, GrpcServer::UnaryDone done) {
      done("echo:" + request);
    });
    server_->setFallback(&handler_);
    ASSERT_TRUE(server_->listenUnix(socket_, 0600).ok());
  }

  CallRecorder unary(GrpcClient& client, const std::string& path, const std::string& request,
                     const Metadata& metadata = {}) {
    CallRecorder rec;
    auto call = client.startCall(path, metadata, std::nullopt, rec);
    call->sendMessage(request);
    call->halfClose();
    EXPECT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
    return rec;
  }

  testing::TempDir dir_;
  const std::string socket_ = dir_.file("crisp.sock");
  event::Dispatcher dispatcher_;
  RecordingHandler handler_;
  std::unique_ptr<GrpcServer> server_;
};

TEST_F(GrpcClientTest, ResponseOverClientLimitIsResourceExhausted) {
  GrpcClientOptions options;
  options.max_message_bytes = 1024;
  GrpcClient client(dispatcher_, socket_, options);
  CallRecorder small = unary(client, "/test.Echo/Unary", std::string(1019, 'a'));  // 1024 back
  EXPECT_TRUE(small.status->ok()) << *small.status;
  CallRecorder big = unary(client, "/test.Echo/Unary", std::string(1020, 'a'));
  EXPECT_EQ(big.status->code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(big.messages.empty());
}

TEST_F(GrpcClientTest, NonGrpcHttpAnswerMapsToAStatus) {
  GrpcClient client(dispatcher_, socket_);
  // The server answers a non-gRPC content type with HTTP 415.
  CallRecorder rec = unary(client, "/test.Echo/Unary", "x", {{"content-type", "text/plain"}});
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kUnknown);
  EXPECT_NE(rec.status->message().find("415"), std::string::npos);
}

TEST_F(GrpcClientTest, RestartedServerIsReachedOnANewConnection) {
  GrpcClient client(dispatcher_, socket_);
  EXPECT_TRUE(unary(client, "/test.Echo/Unary", "1").status->ok());
  EXPECT_EQ(client.connectionCount(), 1u);

  server_.reset();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return client.connectionCount() == 0; }));
  CallRecorder down = unary(client, "/test.Echo/Unary", "2");
  EXPECT_EQ(down.status->code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::string(down.status->message()), socket_ + ": no such file or directory");

  startServer();
  CallRecorder up = unary(client, "/test.Echo/Unary", "3");
  EXPECT_TRUE(up.status->ok()) << *up.status;
  EXPECT_EQ(up.messages, std::vector<std::string>{"echo:3"});
}

TEST_F(GrpcClientTest, ServerDisconnectFailsOpenCallsWithPeerName) {
  GrpcClientOptions options;
  options.peer_name = "test runtime";
  GrpcClient client(dispatcher_, socket_, options);
  CallRecorder rec;
  auto call = client.startCall("/test.Hang/Call", {}, std::nullopt, rec);
  call->sendMessage("x");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));
  server_.reset();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(rec.status->message().rfind("test runtime: ", 0), 0u) << *rec.status;
  EXPECT_FALSE(call->sendMessage("after"));
  EXPECT_FALSE(call->active());
}

TEST_F(GrpcClientTest, DestroyingAnOpenCallResetsItWithoutCallback) {
  GrpcClient client(dispatcher_, socket_);
  {
    CallRecorder rec;
    auto call = client.startCall("/test.Hang/Call", {}, std::nullopt, rec);
    call->sendMessage("x");
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));
  }
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls[0]->cancelled.has_value(); }));
  EXPECT_EQ(handler_.calls[0]->cancelled->code(), absl::StatusCode::kCancelled);
  // The connection stays usable.
  EXPECT_TRUE(unary(client, "/test.Echo/Unary", "y").status->ok());
}

TEST_F(GrpcClientTest, ManyConcurrentCallsShareOneConnection) {
  GrpcClient client(dispatcher_, socket_);
  constexpr int kCalls = 200;
  std::vector<CallRecorder> recs(kCalls);
  std::vector<std::unique_ptr<ClientCall>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(client.startCall("/test.Echo/Unary", {}, std::nullopt, recs[i]));
    calls.back()->sendMessage(std::to_string(i));
    calls.back()->halfClose();
  }
  ASSERT_TRUE(runUntil(dispatcher_, [&] {
    for (const auto& r : recs) {
      if (!r.closed()) {
        return false;
      }
    }
    return true;
  }));
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(recs[i].status->ok()) << i << ": " << *recs[i].status;
    EXPECT_EQ(recs[i].messages, std::vector<std::string>{"echo:" + std::to_string(i)});
  }
  EXPECT_EQ(server_->connectionCount(), 1u);
}

}  // namespace
}  // namespace crisp::cri
