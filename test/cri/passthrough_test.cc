// Passthrough between a test client and a fake upstream runtime (a GrpcServer
// with a recording handler), all on real unix sockets and one Dispatcher.

#include "source/cri/passthrough.h"

#include <algorithm>
#include <cstring>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "source/cri/grpc_client.h"
#include "source/cri/grpc_server.h"

#include "test/cri/grpc_test_util.h"

namespace crisp::cri {
namespace {

using testing::CallRecorder;
using testing::field;
using testing::RecordedCall;
using testing::RecordingHandler;
using testing::runUntil;

constexpr char kVersion[] = "/runtime.v1.RuntimeService/Version";
constexpr char kEvents[] = "/runtime.v1.RuntimeService/GetContainerEvents";

class PassthroughTest : public ::testing::Test {
 protected:
  void SetUp() override {
    startUpstream();
    passthrough_ = std::make_unique<Passthrough>(dispatcher_, upstream_socket_);
    front_.setFallback(passthrough_.get());
    ASSERT_TRUE(front_.listenUnix(front_socket_, 0600).ok());
  }

  void TearDown() override {
    client_.reset();
    upstream_.reset();
    testing::settle(dispatcher_);
  }

  void startUpstream() {
    upstream_ = std::make_unique<GrpcServer>(dispatcher_);
    upstream_->setFallback(&runtime_);
    ASSERT_TRUE(upstream_->listenUnix(upstream_socket_, 0600).ok());
  }

  CallRecorder unary(const std::string& path, const std::string& request,
                     const Metadata& metadata = {},
                     std::optional<std::chrono::steady_clock::time_point> deadline = {}) {
    CallRecorder rec;
    auto call = client_->startCall(path, metadata, deadline, rec);
    call->sendMessage(request);
    call->halfClose();
    EXPECT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
    return rec;
  }

  testing::TempDir dir_;
  const std::string upstream_socket_ = dir_.file("runtime.sock");
  const std::string front_socket_ = dir_.file("crisp.sock");
  event::Dispatcher dispatcher_;
  RecordingHandler runtime_;  // The fake runtime's handler.
  std::unique_ptr<GrpcServer> upstream_;
  GrpcServer front_{dispatcher_};
  std::unique_ptr<Passthrough> passthrough_;
  std::unique_ptr<GrpcClient> client_ = std::make_unique<GrpcClient>(dispatcher_, front_socket_);
};

TEST_F(PassthroughTest, UnaryCallForwardedUnchangedWithMetadata) {
  const std::string request("\x0a\x04v1\x00\xff", 6);
  runtime_.on_half_close = [](RecordedCall& rc) {
    rc.call->sendHeaders({{"x-runtime", "fake"}});
    rc.call->sendMessage(std::string("\x0a\x07"
                                     "0.1.0\x00",
                                     8) +
                         rc.messages.at(0));
    rc.call->finish(absl::OkStatus(), {{"x-runtime-trailer", "t"}});
  };
  const Metadata metadata = {
      {"user-agent", "kubelet/v1.30"}, {"x-request-id", "r-1"}, {"x-trace-bin", "AAEC"}};
  CallRecorder rec = unary(kVersion, request, metadata);

  ASSERT_EQ(runtime_.calls.size(), 1u);
  const RecordedCall& upstream_call = *runtime_.calls[0];
  EXPECT_EQ(upstream_call.call->path(), kVersion);
  EXPECT_EQ(upstream_call.messages, std::vector<std::string>{request});
  const Metadata& seen = upstream_call.call->metadata();
  EXPECT_EQ(field(seen, "user-agent"), "kubelet/v1.30");
  EXPECT_EQ(field(seen, "x-request-id"), "r-1");
  EXPECT_EQ(field(seen, "x-trace-bin"), "AAEC");
  EXPECT_EQ(field(seen, "content-type"), "application/grpc");
  EXPECT_EQ(field(seen, "te"), "trailers");
  EXPECT_FALSE(field(seen, "grpc-timeout").has_value());

  ASSERT_TRUE(rec.status.has_value());
  EXPECT_TRUE(rec.status->ok()) << *rec.status;
  ASSERT_TRUE(rec.headers.has_value());
  EXPECT_EQ(field(*rec.headers, "x-runtime"), "fake");
  EXPECT_EQ(rec.messages, std::vector<std::string>{std::string("\x0a\x07"
                                                               "0.1.0\x00",
                                                               8) +
                                                   request});
  EXPECT_EQ(rec.trailers, (Metadata{{"x-runtime-trailer", "t"}}));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return passthrough_->activeCalls() == 0; }));
}

TEST_F(PassthroughTest, ServerStreamingIsForwardedAsItComes) {
  runtime_.on_half_close = [](RecordedCall& rc) { rc.call->sendMessage("event-0"); };
  CallRecorder rec;
  auto call = client_->startCall(kEvents, {}, std::nullopt, rec);
  call->sendMessage("");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.messages.size() == 1; }));
  EXPECT_FALSE(rec.closed());
  RecordedCall& upstream_call = *runtime_.calls.at(0);
  upstream_call.call->sendMessage("event-1");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.messages.size() == 2; }));
  upstream_call.call->sendMessage("event-2");
  upstream_call.call->finish(absl::OkStatus());
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
  EXPECT_TRUE(rec.status->ok()) << *rec.status;
  EXPECT_EQ(rec.messages, (std::vector<std::string>{"event-0", "event-1", "event-2"}));
}

TEST_F(PassthroughTest, DeadlineReachesTheUpstreamAsGrpcTimeout) {
  runtime_.on_half_close = [](RecordedCall& rc) {
    rc.call->sendMessage("v");
    rc.call->finish(absl::OkStatus());
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  CallRecorder rec = unary(kVersion, "", {}, deadline);
  EXPECT_TRUE(rec.status->ok()) << *rec.status;
  ASSERT_EQ(runtime_.calls.size(), 1u);
  const ServerCall& upstream_call = *runtime_.calls[0]->call;
  const auto timeout = field(upstream_call.metadata(), "grpc-timeout");
  ASSERT_TRUE(timeout.has_value());
  const auto parsed = parseGrpcTimeout(*timeout);
  ASSERT_TRUE(parsed.has_value()) << *timeout;
  EXPECT_LE(*parsed, std::chrono::seconds(5));
  EXPECT_GT(*parsed, std::chrono::seconds(4));
  ASSERT_TRUE(upstream_call.deadline().has_value());
  EXPECT_LE(*upstream_call.deadline(), deadline + std::chrono::milliseconds(10));
}

TEST_F(PassthroughTest, ExpiredDeadlineEndsBothHops) {
  CallRecorder rec;
  auto call = client_->startCall(
      kVersion, {}, std::chrono::steady_clock::now() + std::chrono::milliseconds(150), rec);
  call->sendMessage("");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] {
    return rec.closed() && runtime_.calls.size() == 1 && runtime_.calls[0]->cancelled.has_value();
  }));
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kDeadlineExceeded);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return passthrough_->activeCalls() == 0; }));
}

TEST_F(PassthroughTest, UpstreamErrorStatusMessageAndTrailersReachTheClient) {
  runtime_.on_half_close = [](RecordedCall& rc) {
    rc.call->finish(absl::NotFoundError("container \"abc\" not found: 50% \xc3\xa9"),
                    {{"grpc-status-details-bin", "CAUQ"}, {"x-extra", "1"}});
  };
  CallRecorder rec = unary("/runtime.v1.RuntimeService/ContainerStatus", "abc");
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(rec.status->message()), "container \"abc\" not found: 50% \xc3\xa9");
  EXPECT_EQ(rec.trailers, (Metadata{{"grpc-status-details-bin", "CAUQ"}, {"x-extra", "1"}}));
  EXPECT_FALSE(rec.headers.has_value());  // Trailers-only stays trailers-only.
}

TEST_F(PassthroughTest, UnknownMethodIsForwardedByPath) {
  runtime_.on_half_close = [](RecordedCall& rc) {
    rc.call->sendMessage("future:" + rc.messages.at(0));
    rc.call->finish(absl::OkStatus());
  };
  CallRecorder rec = unary("/runtime.v2.FutureService/DoSomethingNew", "req");
  EXPECT_TRUE(rec.status->ok()) << *rec.status;
  EXPECT_EQ(rec.messages, std::vector<std::string>{"future:req"});
  EXPECT_EQ(runtime_.calls.at(0)->call->path(), "/runtime.v2.FutureService/DoSomethingNew");

  // And an upstream UNIMPLEMENTED comes back as it is.
  upstream_->setFallback(nullptr);
  CallRecorder missing = unary("/runtime.v1.RuntimeService/NoSuchMethod", "");
  EXPECT_EQ(missing.status->code(), absl::StatusCode::kUnimplemented);
}

TEST_F(PassthroughTest, MissingUpstreamSocketIsUnavailableWithClearMessage) {
  upstream_.reset();  // Removes the socket file.
  testing::settle(dispatcher_);
  CallRecorder rec = unary(kVersion, "");
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::string(rec.status->message()),
            "upstream runtime " + upstream_socket_ + ": no such file or directory");

  // The runtime comes (back): the next call reaches it without any restart.
  startUpstream();
  runtime_.on_half_close = [](RecordedCall& rc) {
    rc.call->sendMessage("up");
    rc.call->finish(absl::OkStatus());
  };
  CallRecorder again = unary(kVersion, "");
  EXPECT_TRUE(again.status->ok()) << *again.status;
  EXPECT_EQ(again.messages, std::vector<std::string>{"up"});
}

TEST_F(PassthroughTest, RefusedUpstreamIsUnavailableWithClearMessage) {
  upstream_.reset();
  testing::settle(dispatcher_);
  // A socket file nobody listens on.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, upstream_socket_.data(), upstream_socket_.size());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  CallRecorder rec = unary(kVersion, "");
  ::close(fd);
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(std::string(rec.status->message()),
            "upstream runtime " + upstream_socket_ + ": connection refused");
}

TEST_F(PassthroughTest, UpstreamDyingMidStreamEndsTheClientCall) {
  runtime_.on_half_close = [](RecordedCall& rc) { rc.call->sendMessage("event-0"); };
  CallRecorder rec;
  auto call = client_->startCall(kEvents, {}, std::nullopt, rec);
  call->sendMessage("");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.messages.size() == 1; }));
  upstream_.reset();  // The runtime goes away with the stream open.
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(rec.status->message().find("upstream runtime " + upstream_socket_), std::string::npos)
      << *rec.status;
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return passthrough_->activeCalls() == 0; }));
}

TEST_F(PassthroughTest, ClientCancelAndDisconnectCancelUpstream) {
  CallRecorder rec;
  auto call = client_->startCall(kEvents, {}, std::nullopt, rec);
  call->sendMessage("");
  ASSERT_TRUE(runUntil(dispatcher_, [&] {
    return runtime_.calls.size() == 1 && runtime_.calls[0]->messages.size() == 1;
  }));
  call->cancel();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return runtime_.calls[0]->cancelled.has_value(); }));
  EXPECT_EQ(runtime_.calls[0]->cancelled->code(), absl::StatusCode::kCancelled);

  CallRecorder second;
  auto call2 = client_->startCall(kEvents, {}, std::nullopt, second);
  call2->sendMessage("");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return runtime_.calls.size() == 2; }));
  client_.reset();  // The kubelet goes away.
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return runtime_.calls[1]->cancelled.has_value(); }));
  ASSERT_TRUE(runUntil(dispatcher_, [&] {
    return passthrough_->activeCalls() == 0 && upstream_->activeStreamCount() == 0 &&
           front_.activeStreamCount() == 0;
  }));
}

TEST_F(PassthroughTest, BidiStreamingIsForwardedBothWays) {
  runtime_.on_message = [](RecordedCall& rc) { rc.call->sendMessage("re:" + rc.messages.back()); };
  runtime_.on_half_close = [](RecordedCall& rc) {
    rc.call->finish(absl::OkStatus(), {{"x-count", std::to_string(rc.messages.size())}});
  };
  CallRecorder rec;
  auto call = client_->startCall("/test.Bidi/Chat", {}, std::nullopt, rec);
  for (int i = 0; i < 3; ++i) {
    call->sendMessage("m" + std::to_string(i));
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.messages.size() == size_t(i) + 1; }));
  }
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
  EXPECT_TRUE(rec.status->ok());
  EXPECT_EQ(rec.messages, (std::vector<std::string>{"re:m0", "re:m1", "re:m2"}));
  EXPECT_EQ(field(rec.trailers, "x-count"), "3");
}

TEST_F(PassthroughTest, TenMebibyteMessagesPassBothWays) {
  runtime_.on_half_close = [](RecordedCall& rc) {
    std::string reply = rc.messages.at(0);
    std::reverse(reply.begin(), reply.end());
    rc.call->sendMessage(reply);
    rc.call->finish(absl::OkStatus());
  };
  std::string big(10 * 1024 * 1024, '\0');
  for (size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<char>(i * 31 + (i >> 12));
  }
  CallRecorder rec = unary("/runtime.v1.ImageService/PullImage", big);
  ASSERT_TRUE(rec.status->ok()) << *rec.status;
  ASSERT_EQ(rec.messages.size(), 1u);
  std::string expected = big;
  std::reverse(expected.begin(), expected.end());
  EXPECT_TRUE(rec.messages[0] == expected);
}

TEST_F(PassthroughTest, SlowClientThrottlesTheUpstreamInsteadOfBuffering) {
  constexpr int kMessages = 256;
  const std::string chunk(64 * 1024, 'e');
  runtime_.on_half_close = [&](RecordedCall& rc) {
    for (int i = 0; i < kMessages; ++i) {
      rc.call->sendMessage(std::to_string(i) + ":" + chunk);
    }
    rc.call->finish(absl::OkStatus());
  };
  CallRecorder rec;
  auto call = client_->startCall(kEvents, {}, std::nullopt, rec);
  call->pauseReading(true);  // A kubelet that does not read.
  call->sendMessage("");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return runtime_.calls.size() == 1; }));
  // Give the proxy every chance to pull everything into its own memory.
  bool waited = false;
  event::Timer pause(dispatcher_, [&] { waited = true; });
  pause.enable(std::chrono::milliseconds(300));
  runUntil(dispatcher_, [&] { return waited; });
  // Most of the 16 MiB is still queued at the runtime: crisp holds at most a
  // few windows and watermarks of it.
  EXPECT_GT(runtime_.calls[0]->call->bufferedBytes(), size_t{8} * 1024 * 1024);
  EXPECT_FALSE(rec.closed());

  call->pauseReading(false);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
  ASSERT_TRUE(rec.status->ok()) << *rec.status;
  ASSERT_EQ(rec.messages.size(), size_t{kMessages});
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_EQ(rec.messages[i], std::to_string(i) + ":" + chunk);
  }
}

}  // namespace
}  // namespace crisp::cri
