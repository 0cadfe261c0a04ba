// GrpcServer and GrpcClient against each other on a real unix socket, both on
// the test thread's Dispatcher.

#include "source/cri/grpc_server.h"

#include <cstring>
#include <fstream>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "source/cri/grpc_client.h"
#include "source/cri/grpc_metrics.h"

#include "test/cri/grpc_test_util.h"

namespace crisp::cri {
namespace {

using testing::CallRecorder;
using testing::field;
using testing::RecordedCall;
using testing::RecordingHandler;
using testing::runUntil;

constexpr char kEcho[] = "/test.Echo/Unary";

class GrpcServerTest : public ::testing::Test {
 protected:
  void SetUp() override { startServer({}); }

  void TearDown() override {
    client_.reset();
    server_.reset();
    testing::settle(dispatcher_);
  }

  void startServer(GrpcServerOptions options) {
    client_.reset();
    server_.reset();
    server_ = std::make_unique<GrpcServer>(dispatcher_, options);
    server_->registerUnary(
        kEcho, [](std::string request, GrpcServer::UnaryDone done) { done("echo:" + request); });
    server_->setFallback(&handler_);
    ASSERT_TRUE(server_->listenUnix(socket_, 0600).ok());
    client_ = std::make_unique<GrpcClient>(dispatcher_, socket_);
  }

  // A unary call through the client; waits for its end.
  CallRecorder unary(const std::string& path, const std::string& request,
                     const Metadata& metadata = {}) {
    CallRecorder rec;
    auto call = client_->startCall(path, metadata, std::nullopt, rec);
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
  std::unique_ptr<GrpcClient> client_;
};

TEST_F(GrpcServerTest, UnaryEchoThroughClientAndCountsTheCall) {
  auto& ok_calls = criMetrics().calls_total.counter({kEcho, "OK"});
  const uint64_t before = ok_calls.value();
  CallRecorder rec = unary(kEcho, "hello");
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_TRUE(rec.status->ok()) << *rec.status;
  EXPECT_EQ(rec.messages, std::vector<std::string>{"echo:hello"});
  ASSERT_TRUE(rec.headers.has_value());
  EXPECT_EQ(field(*rec.headers, "content-type"), "application/grpc");
  EXPECT_EQ(ok_calls.value(), before + 1);

  // The connection is reused for the next call.
  CallRecorder again = unary(kEcho, "");
  EXPECT_EQ(again.messages, std::vector<std::string>{"echo:"});
  EXPECT_EQ(server_->connectionCount(), 1u);
  EXPECT_EQ(client_->connectionCount(), 1u);
}

TEST_F(GrpcServerTest, SocketFileGetsModeAndStaleSocketIsReplaced) {
  struct stat st;
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // A second server on the same path: the stale socket of the first is removed.
  server_.reset();
  testing::settle(dispatcher_);
  GrpcServer other(dispatcher_);
  ASSERT_TRUE(other.listenUnix(socket_, 0660).ok());
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  // A regular file in the way is not removed.
  const std::string file = dir_.file("not-a-socket");
  std::ofstream(file) << "keep me";
  GrpcServer third(dispatcher_);
  EXPECT_EQ(third.listenUnix(file, 0600).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(third.listenUnix(dir_.file(std::string(120, 'x')), 0600).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GrpcServerTest, SocketGetsItsGroupAndModeWhateverTheUmask) {
  // A umask that would leave the socket open to everyone: the socket file is
  // still created owner-only and then given exactly the group and mode asked.
  const mode_t previous = ::umask(0);
  // A group of the process's own (any user may give those), preferably not
  // its primary one, so that the change shows.
  gid_t gid = ::getgid();
  gid_t groups[64];
  const int count = ::getgroups(64, groups);
  for (int i = 0; i < count; ++i) {
    if (groups[i] != gid) {
      gid = groups[i];
      break;
    }
  }
  const std::string path = dir_.file("grouped.sock");
  GrpcServer server(dispatcher_);
  const absl::Status s = server.listenUnix(path, 0640, gid);
  ::umask(previous);
  ASSERT_TRUE(s.ok()) << s;
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_gid, gid);
  EXPECT_EQ(::umask(previous), previous) << "listenUnix left the umask changed";
}

TEST_F(GrpcServerTest, SocketOfALiveServerIsNeverTakenOver) {
  GrpcServer second(dispatcher_);
  const absl::Status s = second.listenUnix(socket_, 0600);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("in use"), absl::string_view::npos) << s;
  // The first server still answers on its socket.
  CallRecorder rec = unary(kEcho, "still here");
  EXPECT_EQ(rec.messages, std::vector<std::string>{"echo:still here"});
}

TEST_F(GrpcServerTest, SocketLeftByADeadProcessIsReplaced) {
  const std::string path = dir_.file("stale.sock");
  // A socket file nobody listens on, as a crashed server leaves it.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ::close(fd);
  GrpcServer server(dispatcher_);
  EXPECT_TRUE(server.listenUnix(path, 0600).ok());
}

TEST_F(GrpcServerTest, MetadataAndTrailersRoundTrip) {
  handler_.on_half_close = [](RecordedCall& rc) {
    rc.call->sendHeaders({{"x-response-header", "r1"}, {"connection", "dropped"}});
    rc.call->sendMessage("body");
    rc.call->finish(absl::OkStatus(), {{"x-trailer", "t1"}, {"x-trace-bin", "AAEC"}});
  };
  const Metadata metadata = {{"x-request-id", "abc"}, {"x-multi", "1"}, {"x-multi", "2"}};
  CallRecorder rec = unary("/test.Meta/Call", "req", metadata);
  ASSERT_EQ(handler_.calls.size(), 1u);
  const ServerCall& call = *handler_.calls[0]->call;
  EXPECT_EQ(call.path(), "/test.Meta/Call");
  EXPECT_FALSE(call.deadline().has_value());
  // Every non-pseudo header, in order, client metadata after the call headers.
  Metadata custom;
  for (const auto& f : call.metadata()) {
    ASSERT_NE(f.first[0], ':');
    if (f.first.rfind("x-", 0) == 0) {
      custom.push_back(f);
    }
  }
  EXPECT_EQ(custom, metadata);
  EXPECT_EQ(field(call.metadata(), "content-type"), "application/grpc");
  EXPECT_EQ(field(call.metadata(), "te"), "trailers");

  ASSERT_TRUE(rec.status.has_value());
  EXPECT_TRUE(rec.status->ok()) << *rec.status;
  ASSERT_TRUE(rec.headers.has_value());
  EXPECT_EQ(field(*rec.headers, "x-response-header"), "r1");
  EXPECT_FALSE(field(*rec.headers, "connection").has_value());
  EXPECT_EQ(rec.messages, std::vector<std::string>{"body"});
  EXPECT_EQ(rec.trailers, (Metadata{{"x-trailer", "t1"}, {"x-trace-bin", "AAEC"}}));
}

TEST_F(GrpcServerTest, ErrorStatusMessageIsPercentEncodedAndDecoded) {
  const std::string message = "container \"c1\" not found: 100% gone\n\xc3\xa9t\xc3\xa9";
  auto& counter = criMetrics().calls_total.counter({"/test.Err/Call", "NOT_FOUND"});
  const uint64_t before = counter.value();
  handler_.on_half_close = [&](RecordedCall& rc) {
    rc.call->finish(absl::NotFoundError(message), {{"x-detail", "d"}});
  };
  CallRecorder rec = unary("/test.Err/Call", "x");
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(std::string(rec.status->message()), message);
  // Nothing was sent before the status: a trailers-only response.
  EXPECT_FALSE(rec.headers.has_value());
  EXPECT_TRUE(rec.messages.empty());
  EXPECT_EQ(field(rec.trailers, "x-detail"), "d");
  EXPECT_EQ(counter.value(), before + 1);
}

TEST_F(GrpcServerTest, UnknownPathWithoutFallbackIsUnimplemented) {
  server_->setFallback(nullptr);
  CallRecorder rec = unary("/no.Such/Method", "x");
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(rec.status->message().find("/no.Such/Method"), std::string::npos);
}

TEST_F(GrpcServerTest, UnaryHandlerErrorsAndMisuse) {
  server_->registerUnary("/test.Unary/Fail", [](std::string, GrpcServer::UnaryDone done) {
    done(absl::PermissionDeniedError("no"));
  });
  server_->registerUnary("/test.Unary/Drop", [](std::string, GrpcServer::UnaryDone) {});
  CallRecorder fail = unary("/test.Unary/Fail", "x");
  EXPECT_EQ(fail.status->code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(std::string(fail.status->message()), "no");
  CallRecorder dropped = unary("/test.Unary/Drop", "x");
  EXPECT_EQ(dropped.status->code(), absl::StatusCode::kInternal);

  // Two request messages for a unary method.
  CallRecorder rec;
  auto call = client_->startCall(kEcho, {}, std::nullopt, rec);
  call->sendMessage("a");
  call->sendMessage("b");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kInternal);
}

TEST_F(GrpcServerTest, UnaryDoneFromAnotherThread) {
  std::vector<std::thread> threads;
  server_->registerUnary("/test.Unary/Async", [&](std::string request, GrpcServer::UnaryDone done) {
    threads.emplace_back([request, done] { done("async:" + request); });
  });
  CallRecorder rec = unary("/test.Unary/Async", "r");
  for (auto& t : threads) {
    t.join();
  }
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_TRUE(rec.status->ok()) << *rec.status;
  EXPECT_EQ(rec.messages, std::vector<std::string>{"async:r"});
}

TEST_F(GrpcServerTest, ServerStreamingSendsMessagesThenTrailers) {
  handler_.on_half_close = [](RecordedCall& rc) {
    for (int i = 0; i < 5; ++i) {
      rc.call->sendMessage("event-" + std::to_string(i));
    }
    rc.call->finish(absl::OkStatus(), {{"x-count", "5"}});
  };
  CallRecorder rec = unary("/test.Stream/Events", "subscribe");
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_TRUE(rec.status->ok()) << *rec.status;
  EXPECT_EQ(rec.messages,
            (std::vector<std::string>{"event-0", "event-1", "event-2", "event-3", "event-4"}));
  EXPECT_EQ(field(rec.trailers, "x-count"), "5");
}

TEST_F(GrpcServerTest, ServerStreamingMessagesArriveBeforeTheCallEnds) {
  handler_.on_half_close = [](RecordedCall& rc) { rc.call->sendMessage("first"); };
  CallRecorder rec;
  auto call = client_->startCall("/test.Stream/Open", {}, std::nullopt, rec);
  call->sendMessage("go");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.messages.size() == 1; }));
  EXPECT_FALSE(rec.closed());
  handler_.calls[0]->call->sendMessage("second");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.messages.size() == 2; }));
  handler_.calls[0]->call->finish(absl::OkStatus());
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
  EXPECT_TRUE(rec.status->ok());
}

TEST_F(GrpcServerTest, BidiStreamingEchoesEachMessageAsItArrives) {
  handler_.on_message = [](RecordedCall& rc) { rc.call->sendMessage("re:" + rc.messages.back()); };
  handler_.on_half_close = [](RecordedCall& rc) {
    rc.call->finish(absl::OkStatus(), {{"x-received", std::to_string(rc.messages.size())}});
  };
  CallRecorder rec;
  auto call = client_->startCall("/test.Bidi/Chat", {}, std::nullopt, rec);
  for (int i = 0; i < 3; ++i) {
    call->sendMessage("m" + std::to_string(i));
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.messages.size() == size_t(i) + 1; }));
  }
  EXPECT_FALSE(rec.closed());
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
  EXPECT_EQ(rec.messages, (std::vector<std::string>{"re:m0", "re:m1", "re:m2"}));
  EXPECT_EQ(field(rec.trailers, "x-received"), "3");
}

TEST_F(GrpcServerTest, TenMebibyteMessageBothWays) {
  std::string big(10 * 1024 * 1024, '\0');
  for (size_t i = 0; i < big.size(); ++i) {
    big[i] = static_cast<char>((i * 7919) >> 3);
  }
  CallRecorder rec = unary(kEcho, big);
  ASSERT_TRUE(rec.status.has_value());
  ASSERT_TRUE(rec.status->ok()) << *rec.status;
  ASSERT_EQ(rec.messages.size(), 1u);
  EXPECT_EQ(rec.messages[0].size(), big.size() + 5);
  EXPECT_TRUE(rec.messages[0] == "echo:" + big);
}

TEST_F(GrpcServerTest, MessageAtLimitPassesAndOnePastItIsResourceExhausted) {
  GrpcServerOptions options;
  options.max_message_bytes = 64 * 1024;
  startServer(options);
  CallRecorder at_limit = unary(kEcho, std::string(64 * 1024, 'a'));
  EXPECT_TRUE(at_limit.status->ok()) << *at_limit.status;

  handler_.on_call = [](RecordedCall&) {};
  CallRecorder past = unary("/test.Big/Call", std::string(64 * 1024 + 1, 'a'));
  ASSERT_TRUE(past.status.has_value());
  EXPECT_EQ(past.status->code(), absl::StatusCode::kResourceExhausted);
  // The handler is told the call is over.
  ASSERT_EQ(handler_.calls.size(), 1u);
  ASSERT_TRUE(handler_.calls[0]->cancelled.has_value());
  EXPECT_EQ(handler_.calls[0]->cancelled->code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(handler_.calls[0]->call->active());
  // The connection survives.
  CallRecorder after = unary(kEcho, "still here");
  EXPECT_EQ(after.messages, std::vector<std::string>{"echo:still here"});
}

TEST_F(GrpcServerTest, DefaultLimitRejectsMessageOverSixteenMebibytes) {
  CallRecorder rec = unary(kEcho, std::string(kDefaultMaxMessageBytes + 1, 'z'));
  ASSERT_TRUE(rec.status.has_value());
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(GrpcServerTest, CancellableUnaryIsToldWhenTheClientResetsBeforeTheAnswer) {
  int cancelled = 0;
  GrpcServer::UnaryDone pending;
  server_->registerCancellableUnary("/test.Slow/Call",
                                    [&](std::string, GrpcServer::UnaryDone done) {
                                      pending = std::move(done);
                                      return std::function<void()>([&] { ++cancelled; });
                                    });
  CallRecorder rec;
  auto call = client_->startCall("/test.Slow/Call", {}, std::nullopt, rec);
  call->sendMessage("x");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return static_cast<bool>(pending); }));
  call->cancel();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cancelled == 1; }));
  // A late answer is dropped; the cancel function ran once.
  pending(std::string("late"));
  testing::settle(dispatcher_);
  EXPECT_EQ(cancelled, 1);
}

TEST_F(GrpcServerTest, CancellableUnaryThatAnsweredIsNotCancelled) {
  int cancelled = 0;
  server_->registerCancellableUnary("/test.Quick/Call",
                                    [&](std::string request, GrpcServer::UnaryDone done) {
                                      done("ok:" + request);
                                      return std::function<void()>([&] { ++cancelled; });
                                    });
  CallRecorder rec = unary("/test.Quick/Call", "a");
  EXPECT_EQ(rec.messages, std::vector<std::string>{"ok:a"});
  client_.reset();
  testing::settle(dispatcher_);
  EXPECT_EQ(cancelled, 0);
}

TEST_F(GrpcServerTest, ClientResetIsSeenAsCancellation) {
  CallRecorder rec;
  auto call = client_->startCall("/test.Hang/Call", {}, std::nullopt, rec);
  call->sendMessage("x");
  ASSERT_TRUE(runUntil(dispatcher_, [&] {
    return handler_.calls.size() == 1 && handler_.calls[0]->messages.size() == 1;
  }));
  auto& cancelled = criMetrics().calls_total.counter({"/test.Hang/Call", "CANCELLED"});
  const uint64_t before = cancelled.value();
  call->cancel();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls[0]->cancelled.has_value(); }));
  EXPECT_EQ(handler_.calls[0]->cancelled->code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(handler_.calls[0]->call->active());
  EXPECT_FALSE(handler_.calls[0]->call->sendMessage("too late"));
  EXPECT_FALSE(rec.closed());  // cancel() has no callback.
  EXPECT_EQ(cancelled.value(), before + 1);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return server_->activeStreamCount() == 0; }));
}

TEST_F(GrpcServerTest, ClientDisconnectMidCallCancelsEveryCallAndLeaksNothing) {
  CallRecorder a;
  CallRecorder b;
  auto call_a = client_->startCall("/test.Hang/A", {}, std::nullopt, a);
  auto call_b = client_->startCall("/test.Hang/B", {}, std::nullopt, b);
  call_a->sendMessage("x");
  call_b->sendMessage("y");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 2; }));
  // The client process goes away: its connection closes with streams open.
  client_.reset();
  EXPECT_EQ(a.status->code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(runUntil(dispatcher_, [&] {
    return handler_.calls[0]->cancelled.has_value() && handler_.calls[1]->cancelled.has_value();
  }));
  EXPECT_EQ(handler_.calls[0]->cancelled->code(), absl::StatusCode::kCancelled);
  EXPECT_NE(handler_.calls[0]->cancelled->message().find("disconnected"), std::string::npos);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return server_->connectionCount() == 0; }));
  EXPECT_EQ(server_->activeStreamCount(), 0u);
  // Sends on the orphaned calls are refused, destroying them is harmless.
  EXPECT_FALSE(handler_.calls[0]->call->finish(absl::OkStatus()));
  handler_.calls.clear();
  call_a.reset();
  call_b.reset();
}

TEST_F(GrpcServerTest, DeadlineEndsTheCallOnBothSides) {
  CallRecorder rec;
  const auto start = std::chrono::steady_clock::now();
  auto call =
      client_->startCall("/test.Hang/Slow", {}, start + std::chrono::milliseconds(200), rec);
  call->sendMessage("x");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));
  const ServerCall& server_call = *handler_.calls[0]->call;
  ASSERT_TRUE(server_call.deadline().has_value());
  EXPECT_LE(*server_call.deadline(), start + std::chrono::seconds(1));
  auto timeout = field(server_call.metadata(), "grpc-timeout");
  ASSERT_TRUE(timeout.has_value());
  ASSERT_TRUE(runUntil(dispatcher_,
                       [&] { return rec.closed() && handler_.calls[0]->cancelled.has_value(); }));
  EXPECT_EQ(rec.status->code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(190));
  // Whichever side noticed first, the handler learns the call is over.
  const auto code = handler_.calls[0]->cancelled->code();
  EXPECT_TRUE(code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kCancelled)
      << *handler_.calls[0]->cancelled;
}

TEST_F(GrpcServerTest, DrainLetsCallsInFlightFinishAndRefusesNewOnes) {
  CallRecorder in_flight;
  auto call = client_->startCall("/test.Hang/Call", {}, std::nullopt, in_flight);
  call->sendMessage("x");
  call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));

  server_->drain();
  struct stat st;
  EXPECT_NE(::stat(socket_.c_str(), &st), 0);  // No new connections.
  testing::settle(dispatcher_);                // The GOAWAY reaches the client.

  // A new call goes to a new connection, which cannot be made any more.
  CallRecorder late;
  auto late_call = client_->startCall(kEcho, {}, std::nullopt, late);
  late_call->sendMessage("y");
  late_call->halfClose();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return late.closed(); }));
  EXPECT_EQ(late.status->code(), absl::StatusCode::kUnavailable);

  // The call in flight still completes, then the old connection closes.
  EXPECT_FALSE(in_flight.closed());
  handler_.calls[0]->call->sendMessage("done");
  handler_.calls[0]->call->finish(absl::OkStatus());
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return in_flight.closed(); }));
  EXPECT_TRUE(in_flight.status->ok()) << *in_flight.status;
  EXPECT_EQ(in_flight.messages, std::vector<std::string>{"done"});
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return server_->connectionCount() == 0; }));
}

TEST_F(GrpcServerTest, HandlerMayDropTheCallFromItsCancelCallback) {
  // The passthrough pattern: destroy the ServerCall while being told about its end.
  handler_.on_call = [](RecordedCall& rc) { (void)rc; };
  CallRecorder rec;
  auto call = client_->startCall("/test.Hang/Drop", {}, std::nullopt, rec);
  call->sendMessage("x");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));
  struct Dropper : ServerCall::Callbacks {
    void onMessage(std::string) override {}
    void onHalfClose() override {}
    void onCancel(const absl::Status&) override { owned.reset(); }
    std::unique_ptr<ServerCall> owned;
  } dropper;
  dropper.owned = std::move(handler_.calls[0]->call);
  dropper.owned->setCallbacks(&dropper);
  call->cancel();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return dropper.owned == nullptr; }));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return server_->activeStreamCount() == 0; }));
}

}  // namespace
}  // namespace crisp::cri
