#include "source/stream/spdy_remotecommand.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/stream/raw_socket_transport.h"

#include "test/stream/fake_exec_runtime.h"
#include "test/stream/spdy_test_client.h"

namespace crisp::stream {
namespace {

// The server end of a test connection as the HTTP/1.1 front hands it over:
// `leftover` read past the head, `response` (the 101) queued.
TransportPtr rawTransport(event::Dispatcher& dispatcher, int fd, const std::string& leftover = "",
                          const std::string& response = "") {
  Buffer in;
  in.add(leftover);
  Buffer out;
  out.add(response);
  return std::make_unique<RawSocketTransport>(dispatcher, fd, "client", std::move(in),
                                              std::move(out));
}

using session::ExecSpec;
using session::ExitStatus;
using session::TerminalSize;
using std::chrono::milliseconds;
using testing::LoopThread;
using testing::SpdyTestClient;
using Frame = SpdyTestClient::Frame;

constexpr char kSuccessJson[] = R"({"metadata":{},"status":"Success"})";
using testing::execSpec;
using testing::FakeRuntime;
using testing::fnv;
using testing::kFnvOffset;
using testing::outputByte;
using testing::Record;
using testing::Script;

// Stops a loop when it goes out of scope, before the objects declared ahead
// of it (which live on that loop) are destroyed.
struct StopLoop {
  LoopThread& loop;
  ~StopLoop() { loop.stop(); }
};

struct StreamIds {
  uint32_t error = 0;
  uint32_t in = 0;
  uint32_t out = 0;
  uint32_t err = 0;
  uint32_t resize = 0;
};

class SpdyRemoteCommandTest : public ::testing::Test {
 protected:
  static SpdyRemoteCommandConfig testConfig() {
    SpdyRemoteCommandConfig config;
    config.connection.linger_timeout = milliseconds(200);
    return config;
  }

  void start(const ExecSpec& spec, Protocol protocol = Protocol::kSpdyRemoteCommandV4,
             const SpdyRemoteCommandConfig& config = testConfig()) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = std::make_unique<SpdyTestClient>(fds[0]);
    const int server_fd = fds[1];
    loop_.run([&] {
      UpgradedConnection up;
      up.connection_id = 100;
      up.transport = rawTransport(loop_.dispatcher(), server_fd);
      up.protocol = protocol;
      up.stream_request.spec = spec;
      session_ = std::make_unique<SpdyRemoteCommand>(
          loop_.dispatcher(), runtime_, std::move(up), config, [this](SpdyRemoteCommand&) {
            done_ = true;
            loop_.dispatcher().deferredDelete(std::move(session_));
          });
      session_->start();
      return 0;
    });
  }

  void TearDown() override {
    loop_.stop();
    session_.reset();
  }

  // Opens streams in client-go's order, each after the previous one's reply.
  StreamIds openStreams(bool in, bool out, bool err, bool resize) {
    StreamIds ids;
    auto open = [&](const char* type) {
      const uint32_t id = client_->openStream(type);
      EXPECT_TRUE(client_->waitFor([&] { return client_->stream(id).replied; }))
          << "no SYN_REPLY for " << type;
      return id;
    };
    ids.error = open("error");
    if (in) {
      ids.in = open("stdin");
    }
    if (out) {
      ids.out = open("stdout");
    }
    if (err) {
      ids.err = open("stderr");
    }
    if (resize) {
      ids.resize = open("resize");
    }
    return ids;
  }

  bool sessionDone() {
    return loop_.waitUntil([&] { return done_; });
  }

  // The error stream payload once the server FIN'd it.
  // Some tests move 16 MiB through the test client's decoder first: well
  // within a second when built plain, many seconds under ThreadSanitizer; the
  // bound is for a hang only.
  std::string statusOn(uint32_t error_id) {
    EXPECT_TRUE(client_->waitFor([&] { return client_->stream(error_id).fin; },
                                 std::chrono::seconds(60)))
        << "error stream not finished; " << client_->error();
    return client_->stream(error_id).data;
  }

  std::optional<size_t> firstData(uint32_t id) {
    return client_->find([&](const Frame& f) {
      return f.type == Frame::Type::kData && f.stream_id == id && f.data_size > 0;
    });
  }
  std::optional<size_t> lastData(uint32_t id) {
    return client_->findLast(
        [&](const Frame& f) { return f.type == Frame::Type::kData && f.stream_id == id; });
  }
  std::optional<size_t> firstRst() {
    return client_->find([](const Frame& f) { return f.type == Frame::Type::kRst; });
  }

  void startAndWaitRunning(const ExecSpec& spec, Protocol protocol, StreamIds& ids) {
    start(spec, protocol);
    ids = openStreams(spec.stdin, spec.stdout, spec.stderr && !spec.tty,
                      spec.tty && protocol >= Protocol::kSpdyRemoteCommandV3 &&
                          protocol != Protocol::kSpdyPortForward);
    ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.starts == 1; }));
  }

  void exitAll(const ExitStatus& status) {
    loop_.run([&] {
      runtime_.exitAll(status);
      return 0;
    });
  }

  LoopThread loop_;
  FakeRuntime runtime_;
  std::unique_ptr<SpdyRemoteCommand> session_;
  bool done_ = false;  // loop thread only
  std::unique_ptr<SpdyTestClient> client_;
};

// No frame for the idle timeout ends the exec; the client reads why on the
// error stream (a Failure it shows), then GOAWAY.
TEST_F(SpdyRemoteCommandTest, IdleTimeoutEndsTheSessionWithAStatus) {
  const uint64_t before = session::SessionMetrics::get().idle_timeouts.value();
  SpdyRemoteCommandConfig config = testConfig();
  config.connection.idle_timeout = milliseconds(300);
  start(execSpec({"sleep", "1d"}, false, true, true, false), Protocol::kSpdyRemoteCommandV4,
        config);
  const StreamIds ids = openStreams(true, true, false, false);
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 1; }));
  EXPECT_EQ(statusOn(ids.error),
            R"j({"metadata":{},"status":"Failure","message":"crisp ended the session: no )j"
            R"j(input or output for 300ms (stream.stream_idle_timeout)","reason":"Timeout",)j"
            R"j("details":{"causes":[{"message":"crisp ended the session: no input or output )j"
            R"j(for 300ms (stream.stream_idle_timeout)"}]},"code":504})j");
  EXPECT_TRUE(client_->stream(ids.out).fin);
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_TRUE(client_->goAwayReceived());
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0; }));
  EXPECT_TRUE(sessionDone());
  EXPECT_EQ(session::SessionMetrics::get().idle_timeouts.value(), before + 1);
}

// The end of a drain: the client reads that crisp is shutting down.
TEST_F(SpdyRemoteCommandTest, ShutdownEndsTheSessionWithAStatus) {
  StreamIds ids;
  startAndWaitRunning(execSpec({"sleep", "1d"}, false, true, true, false),
                      Protocol::kSpdyRemoteCommandV4, ids);
  loop_.run([&] {
    session_->endForShutdown();
    return 0;
  });
  const std::string status = statusOn(ids.error);
  EXPECT_NE(status.find(R"("status":"Failure","message":"crisp is shutting down)"),
            std::string::npos)
      << status;
  EXPECT_NE(status.find(R"("reason":"ServiceUnavailable")"), std::string::npos) << status;
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0; }));
  EXPECT_TRUE(sessionDone());
}

// B01: piped stdin, then FIN; `cat; exit 3` must see EOF and the exit code
// must reach the client after all of stdout.
TEST_F(SpdyRemoteCommandTest, PipedStdinEofEndsCatAndReportsExitCode3) {
  const auto began = std::chrono::steady_clock::now();
  runtime_.script.echo_stdin = true;
  runtime_.script.exit_on_stdin_eof = ExitStatus::exited(3);
  start(execSpec({"sh", "-c", "cat; exit 3"}, false, true, true, true));
  const StreamIds ids = openStreams(true, true, true, false);
  ASSERT_TRUE(client_->data(ids.in, "a\nb\n"));
  ASSERT_TRUE(client_->data(ids.in, "", true));
  const std::string status = statusOn(ids.error);
  EXPECT_EQ(status,
            R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero )"
            R"(exit code: error executing command [sh -c cat; exit 3], exit code 3",)"
            R"("reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode",)"
            R"("message":"3"}]}})");
  EXPECT_EQ(client_->stream(ids.out).data, "a\nb\n");
  EXPECT_TRUE(client_->stream(ids.out).fin);
  EXPECT_EQ(client_->stream(ids.err).data, "");
  EXPECT_TRUE(client_->stream(ids.err).fin);
  // Output, then the status; no stream reset before it.
  const auto out_last = lastData(ids.out);
  const auto err_last = lastData(ids.err);
  const auto status_frame = firstData(ids.error);
  ASSERT_TRUE(out_last && err_last && status_frame);
  EXPECT_LT(*out_last, *status_frame);
  EXPECT_LT(*err_last, *status_frame);
  const auto rst = firstRst();
  if (rst.has_value()) {
    EXPECT_GT(*rst, *status_frame);
  }
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kOk);
  EXPECT_LT(std::chrono::steady_clock::now() - began, std::chrono::seconds(5));

  const Record r = runtime_.snapshot();
  EXPECT_EQ(r.stdin_head, "a\nb\n");
  EXPECT_TRUE(r.stdin_closed);
  EXPECT_FALSE(r.spec.tty);
  EXPECT_EQ(r.spec.command, (std::vector<std::string>{"sh", "-c", "cat; exit 3"}));
  client_->closeSocket();
  EXPECT_TRUE(sessionDone());
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0 && r.destroyed == 1; }));
}

// B03: the exit code travels as a structured status on v4, as text before.
TEST_F(SpdyRemoteCommandTest, ExitCodesPerNegotiatedVersion) {
  struct Case {
    Protocol protocol;
    ExitStatus status;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {Protocol::kSpdyRemoteCommandV4, ExitStatus::exited(5),
       R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero exit )"
       R"(code: error executing command [sh -c exit 5], exit code 5","reason":)"
       R"("NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"5"}]}})"},
      {Protocol::kSpdyRemoteCommandV4, ExitStatus::exited(0), kSuccessJson},
      {Protocol::kSpdyRemoteCommandV4, ExitStatus::exited(255),
       R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero exit )"
       R"(code: error executing command [sh -c exit 5], exit code 255","reason":)"
       R"("NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"255"}]}})"},
      {Protocol::kSpdyRemoteCommandV4, ExitStatus::exited(137),
       R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero exit )"
       R"(code: error executing command [sh -c exit 5], exit code 137","reason":)"
       R"("NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"137"}]}})"},
      // v1: plain text, delivered (the kubelet's early reset is not copied).
      {Protocol::kSpdyRemoteCommandV1, ExitStatus::exited(3),
       "command terminated with non-zero exit code: error executing command [sh -c exit 5], "
       "exit code 3"},
      {Protocol::kSpdyRemoteCommandV2, ExitStatus::exited(0), ""},
      {Protocol::kSpdyRemoteCommandV3, ExitStatus::error("shim died"),
       "Internal error occurred: error executing command in container: shim died"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(protocolName(c.protocol) + std::string(" exit ") +
                 std::to_string(c.status.exit_code));
    LoopThread loop;
    FakeRuntime runtime;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    SpdyTestClient client(fds[0]);
    std::unique_ptr<SpdyRemoteCommand> session;
    StopLoop stop_first{loop};
    loop.run([&] {
      UpgradedConnection up;
      up.transport = rawTransport(loop.dispatcher(), fds[1]);
      up.protocol = c.protocol;
      up.stream_request.spec = execSpec({"sh", "-c", "exit 5"}, false, false, true, true);
      session = std::make_unique<SpdyRemoteCommand>(loop.dispatcher(), runtime, std::move(up),
                                                    testConfig(), nullptr);
      session->start();
      return 0;
    });
    const uint32_t error = client.openStream("error");
    const uint32_t out = client.openStream("stdout");
    const uint32_t err = client.openStream("stderr");
    ASSERT_TRUE(runtime.waitUntil([](const Record& r) { return r.starts == 1; }));
    loop.run([&] {
      runtime.exitAll(c.status);
      return 0;
    });
    ASSERT_TRUE(client.waitFor([&] { return client.stream(error).fin; }));
    EXPECT_EQ(client.stream(error).data, c.expected);
    EXPECT_FALSE(client.stream(error).reset);
    EXPECT_TRUE(client.stream(out).fin);
    EXPECT_TRUE(client.stream(err).fin);
    EXPECT_TRUE(client.waitForEof());
    loop.stop();
  }
}

// B05: every byte of a large output precedes the status.
TEST_F(SpdyRemoteCommandTest, LargeOutputIsDeliveredWholeBeforeTheStatus) {
  constexpr size_t kBytes = 4 * 1024 * 1024 + 123;
  runtime_.script.output_bytes = kBytes;
  runtime_.script.exit_after_output = ExitStatus::success();
  start(execSpec({"sh", "-c", "seq 1 2000000"}, false, false, true, true));
  const StreamIds ids = openStreams(false, true, true, false);
  EXPECT_EQ(statusOn(ids.error), kSuccessJson);
  const std::string& out = client_->stream(ids.out).data;
  ASSERT_EQ(out.size(), kBytes);
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i], outputByte(i)) << "at offset " << i;
  }
  const auto out_last = lastData(ids.out);
  const auto status_frame = firstData(ids.error);
  ASSERT_TRUE(out_last && status_frame);
  EXPECT_TRUE(client_->frames()[*out_last].fin());
  EXPECT_LT(*out_last, *status_frame);
  // No frame larger than 32 KiB.
  for (const auto& f : client_->frames()) {
    if (f.type == Frame::Type::kData) {
      EXPECT_LE(f.data_size, 32u * 1024);
    }
  }
  EXPECT_TRUE(client_->waitForEof());
}

// B13 and resizes: with a tty there is no stderr stream; the session starts
// after error, stdin, stdout and resize, with the first size as `initial`.
TEST_F(SpdyRemoteCommandTest, TtySessionStartsWithoutStderrAndAppliesResizes) {
  start(execSpec({"sh"}, true, true, true, true));
  const uint32_t error = client_->openStream("error");
  const uint32_t in = client_->openStream("stdin");
  const uint32_t out = client_->openStream("stdout");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(out).replied; }));
  EXPECT_EQ(runtime_.snapshot().starts, 0);
  // The resize stream and its first size in one write: the size is there
  // before the exec starts.
  client_->cork();
  const uint32_t resize = client_->openStream("resize");
  client_->data(resize, "{\"Width\":100,\"Height\":30}\n");
  ASSERT_TRUE(client_->uncork());
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.starts == 1; }));
  Record r = runtime_.snapshot();
  EXPECT_TRUE(r.spec.tty);
  ASSERT_TRUE(r.initial.has_value());
  EXPECT_EQ(*r.initial, (TerminalSize{100, 30}));
  EXPECT_TRUE(r.resizes.empty());

  // Later sizes reach resize(), also when a document is split across frames.
  ASSERT_TRUE(client_->data(resize, "{\"Width\":120,\"Height\":40}\n{\"Width\":"));
  ASSERT_TRUE(client_->data(resize, "90, \"Height\":20}\n"));
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.resizes.size() == 2; }));
  r = runtime_.snapshot();
  EXPECT_EQ(r.resizes[0], (TerminalSize{120, 40}));
  EXPECT_EQ(r.resizes[1], (TerminalSize{90, 20}));
  // A bad document ends resizing, not the session.
  ASSERT_TRUE(client_->data(resize, "{\"Width\":\"wide\"}\n{\"Width\":1,\"Height\":1}\n"));
  ASSERT_TRUE(client_->data(in, "still here"));
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.stdin_head == "still here"; }));
  EXPECT_EQ(runtime_.snapshot().resizes.size(), 2u);

  exitAll(ExitStatus::success());
  EXPECT_EQ(statusOn(error), kSuccessJson);
  EXPECT_TRUE(client_->stream(out).fin);
  EXPECT_TRUE(client_->waitForEof());
}

TEST_F(SpdyRemoteCommandTest, TtyBeforeV3HasNoResizeStream) {
  start(execSpec({"sh"}, true, true, true, false), Protocol::kSpdyRemoteCommandV2);
  openStreams(true, true, false, false);
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.starts == 1; }));
  EXPECT_FALSE(runtime_.snapshot().initial.has_value());
}

TEST_F(SpdyRemoteCommandTest, StdinSentBeforeStartIsDeliveredAfterIt) {
  runtime_.script.echo_stdin = true;
  runtime_.script.exit_on_stdin_eof = ExitStatus::success();
  start(execSpec({"cat"}, false, true, true, false));
  client_->cork();
  const uint32_t error = client_->openStream("error");
  const uint32_t in = client_->openStream("stdin");
  client_->data(in, "early ");
  client_->data(in, "input", true);
  const uint32_t out = client_->openStream("stdout");
  ASSERT_TRUE(client_->uncork());
  EXPECT_EQ(statusOn(error), kSuccessJson);
  EXPECT_EQ(client_->stream(out).data, "early input");
  EXPECT_TRUE(runtime_.snapshot().stdin_closed);
}

// Streams of unknown type are answered but not counted; duplicates are ignored.
TEST_F(SpdyRemoteCommandTest, UnknownAndDuplicateStreamsAreNotCounted) {
  start(execSpec({"true"}, false, false, true, false));
  const uint32_t error = client_->openStream("error");
  const uint32_t junk = client_->openStream("data");
  const uint32_t untyped = client_->openStreamWithHeaders({{"other", "x"}});
  const uint32_t dup = client_->openStream("ERROR");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(dup).replied; }));
  EXPECT_TRUE(client_->stream(junk).replied);
  EXPECT_TRUE(client_->stream(untyped).replied);
  EXPECT_EQ(runtime_.snapshot().starts, 0);
  const uint32_t out = client_->openStream("StdOut");
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.starts == 1; }));
  exitAll(ExitStatus::exited(1));
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(error).fin; }));
  EXPECT_NE(client_->stream(error).data.find("\"message\":\"1\""), std::string::npos);
  EXPECT_TRUE(client_->stream(dup).data.empty());
  EXPECT_TRUE(client_->stream(out).fin);
}

// B15: a client PING is answered ahead of stdout DATA already queued.
TEST_F(SpdyRemoteCommandTest, PingReplyOvertakesQueuedOutput) {
  constexpr size_t kBytes = 16 * 1024 * 1024;
  runtime_.script.output_bytes = kBytes;
  runtime_.script.exit_after_output = ExitStatus::success();
  SpdyRemoteCommandConfig config = testConfig();
  config.connection.output_high_watermark = 512 * 1024;
  config.connection.output_low_watermark = 128 * 1024;
  start(execSpec({"sh", "-c", "head -c 16M /dev/zero"}, false, false, true, false),
        Protocol::kSpdyRemoteCommandV4, config);
  // The client never reads before the server is paused, so the pause seen is
  // the settled one (the socket full and the queue past the watermark).
  client_->setReadWhileWriting(false);
  client_->cork();
  StreamIds ids;
  ids.error = client_->openStream("error");
  ids.out = client_->openStream("stdout");
  ASSERT_TRUE(client_->uncork());
  // The client stops reading; the server fills the socket and its queue.
  ASSERT_TRUE(
      runtime_.waitUntil([](const Record& r) { return !r.pauses.empty() && r.pauses.back(); }));
  ASSERT_TRUE(client_->ping(1));
  ASSERT_TRUE(loop_.waitUntil([&] { return session_->connection().pingsReceived() == 1; }));
  const auto [written, queued] = loop_.run([&] {
    return std::make_pair(session_->connection().bytesWritten(),
                          session_->connection().queuedOutputBytes());
  });
  ASSERT_GE(queued, 256u * 1024);
  const uint64_t produced_at_ping = runtime_.snapshot().stdout_produced;

  ASSERT_EQ(statusOn(ids.error), kSuccessJson);
  ASSERT_EQ(client_->stream(ids.out).data.size(), kBytes);
  const auto pong =
      client_->find([](const Frame& f) { return f.type == Frame::Type::kPing && f.ping_id == 1; });
  ASSERT_TRUE(pong.has_value());
  size_t before = 0;
  for (size_t i = 0; i < *pong; ++i) {
    before += client_->frames()[i].data_size;
  }
  // Only what was already in the socket, plus at most one write batch, came
  // before the reply; the queued rest came after it.
  EXPECT_LE(before, written + 64 * 1024);
  EXPECT_LE(before + 192 * 1024, produced_at_ping);
}

// The end of a drain with a slow reader: the status overtakes the output
// still queued, so a client cut off before the rest still has it; the
// output queued before it is delivered all the same.
TEST_F(SpdyRemoteCommandTest, ShutdownStatusOvertakesTheQueuedOutputOfASlowReader) {
  runtime_.script.output_bytes = 16 * 1024 * 1024;
  SpdyRemoteCommandConfig config = testConfig();
  config.connection.output_high_watermark = 2 * 1024 * 1024;
  config.connection.output_low_watermark = 512 * 1024;
  start(execSpec({"yes"}, false, false, true, false), Protocol::kSpdyRemoteCommandV4, config);
  client_->setReadWhileWriting(false);
  client_->cork();
  StreamIds ids;
  ids.error = client_->openStream("error");
  ids.out = client_->openStream("stdout");
  ASSERT_TRUE(client_->uncork());
  ASSERT_TRUE(
      runtime_.waitUntil([](const Record& r) { return !r.pauses.empty() && r.pauses.back(); }));
  const auto [written, queued] = loop_.run([&] {
    session_->endForShutdown();
    return std::make_pair(session_->connection().bytesWritten(),
                          session_->connection().queuedOutputBytes());
  });
  ASSERT_GE(queued, 1024u * 1024);
  const std::string status = statusOn(ids.error);
  EXPECT_NE(status.find(R"("reason":"ServiceUnavailable")"), std::string::npos) << status;
  const auto status_frame = lastData(ids.error);
  ASSERT_TRUE(status_frame.has_value());
  size_t before = 0;
  for (size_t i = 0; i < *status_frame; ++i) {
    before += client_->frames()[i].data_size;
  }
  // Behind what the socket already held and one write batch, not behind the
  // megabyte still queued.
  EXPECT_LE(before, written + config.connection.transport_queue_bytes +
                        config.connection.max_data_frame_bytes);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.out).fin; },
                               std::chrono::seconds(60)));
  EXPECT_GE(client_->stream(ids.out).data.size(), written + queued - 64 * 1024);
  EXPECT_LT(*status_frame, *lastData(ids.out));
  EXPECT_TRUE(sessionDone());
}

// B12: a client that stops reading pauses the process; the queue stays bounded.
TEST_F(SpdyRemoteCommandTest, SlowReaderPausesTheProcessAndBufferingStaysBounded) {
  constexpr size_t kBytes = 16 * 1024 * 1024;
  runtime_.script.output_bytes = kBytes;
  runtime_.script.exit_after_output = ExitStatus::success();
  SpdyRemoteCommandConfig config = testConfig();
  config.connection.output_high_watermark = 256 * 1024;
  config.connection.output_low_watermark = 64 * 1024;
  start(execSpec({"yes"}, false, false, true, false), Protocol::kSpdyRemoteCommandV4, config);
  // The client never reads before the server is paused, so the pause seen is
  // the settled one (the socket full and the queue past the watermark).
  client_->setReadWhileWriting(false);
  client_->cork();
  StreamIds ids;
  ids.error = client_->openStream("error");
  ids.out = client_->openStream("stdout");
  ASSERT_TRUE(client_->uncork());
  ASSERT_TRUE(
      runtime_.waitUntil([](const Record& r) { return !r.pauses.empty() && r.pauses.back(); }));
  const auto [written, queued] = loop_.run([&] {
    return std::make_pair(session_->connection().bytesWritten(),
                          session_->connection().queuedOutputBytes());
  });
  EXPECT_LE(queued, 256u * 1024 + 32 * 1024);
  const Record paused = runtime_.snapshot();
  EXPECT_LE(paused.stdout_produced, written + queued);
  EXPECT_LT(paused.stdout_produced, kBytes / 4);
  // Still paused a while later: nothing more was produced.
  EXPECT_FALSE(runtime_.waitUntil(
      [&](const Record& r) { return r.stdout_produced != paused.stdout_produced; },
      milliseconds(100)));

  ASSERT_EQ(statusOn(ids.error), kSuccessJson);
  const std::string& out = client_->stream(ids.out).data;
  ASSERT_EQ(out.size(), kBytes);
  for (size_t i = 0; i < out.size(); i += 4093) {
    ASSERT_EQ(out[i], outputByte(i)) << "at offset " << i;
  }
  const Record r = runtime_.snapshot();
  EXPECT_NE(std::find(r.pauses.begin(), r.pauses.end(), false), r.pauses.end());
}

// B17: 20 MB of stdin in 16 KiB frames, FIN and GOAWAY right behind: every
// byte reaches the process, with reading paused while its stdin is full.
TEST_F(SpdyRemoteCommandTest, LargeStdinFollowedByGoAwayArrivesWhole) {
  constexpr size_t kBytes = 8 * 1000 * 1000;
  constexpr size_t kFrame = 16 * 1024;
  runtime_.script.slow_stdin = true;
  // The process must read slower than the client writes for its queue to
  // reach the watermark: 8 KiB a tick, and nothing until the queue is past
  // the mark, so that a client slowed down by a sanitizer or a loaded machine
  // still gets there.
  runtime_.script.slow_stdin_bytes = 8 * 1024;
  runtime_.script.slow_stdin_start_at = session::ExecProcess::kStdinHighWatermark + 1;
  runtime_.script.exit_on_stdin_eof = ExitStatus::success();
  start(
      execSpec({"sh", "-c", "cat > /tmp/in.bin; sha256sum /tmp/in.bin"}, false, true, true, true));
  const StreamIds ids = openStreams(true, true, true, false);
  std::mt19937 rng(2024);
  std::string chunk(kFrame, '\0');
  uint64_t hash = kFnvOffset;
  size_t sent = 0;
  while (sent < kBytes) {
    client_->cork();
    for (int i = 0; i < 64 && sent < kBytes; ++i) {
      const size_t n = std::min(kFrame, kBytes - sent);
      for (size_t k = 0; k < n; ++k) {
        chunk[k] = static_cast<char>(rng());
      }
      hash = fnv(hash, chunk.data(), n);
      client_->data(ids.in, std::string_view(chunk.data(), n));
      sent += n;
    }
    if (sent == kBytes) {
      client_->data(ids.in, "", true);
      client_->goAway(ids.err);
    }
    ASSERT_TRUE(client_->uncork()) << client_->error();
  }
  EXPECT_EQ(statusOn(ids.error), kSuccessJson);
  const Record r = runtime_.snapshot();
  EXPECT_EQ(r.stdin_bytes, kBytes);
  EXPECT_EQ(r.stdin_hash, hash);
  EXPECT_TRUE(r.stdin_closed);
  // Backpressure worked: the process's queue went past the watermark and
  // stayed within one read batch of it.
  EXPECT_GT(r.max_stdin_queue, session::ExecProcess::kStdinHighWatermark);
  EXPECT_LE(r.max_stdin_queue, session::ExecProcess::kStdinHighWatermark + 128 * 1024);
  EXPECT_TRUE(client_->waitForEof());
}

TEST_F(SpdyRemoteCommandTest, ClientDroppingTheConnectionEndsTheExec) {
  StreamIds ids;
  startAndWaitRunning(execSpec({"sleep", "1d"}, false, true, true, true),
                      Protocol::kSpdyRemoteCommandV4, ids);
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 1; }));
  client_->closeSocket();
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0 && r.destroyed == 1; }));
  EXPECT_TRUE(sessionDone());
}

TEST_F(SpdyRemoteCommandTest, ClientResettingStdoutEndsTheExec) {
  StreamIds ids;
  startAndWaitRunning(execSpec({"sleep", "1d"}, false, true, true, true),
                      Protocol::kSpdyRemoteCommandV4, ids);
  ASSERT_TRUE(client_->rst(ids.out));
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.destroyed == 1; }));
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kOk);
  EXPECT_TRUE(client_->stream(ids.error).reset);  // no status for a client that left
  EXPECT_TRUE(client_->stream(ids.error).data.empty());
  client_->closeSocket();
  EXPECT_TRUE(sessionDone());
}

TEST_F(SpdyRemoteCommandTest, ClientResettingStdinOnlyClosesStdin) {
  runtime_.script.exit_on_stdin_eof = ExitStatus::exited(2);
  StreamIds ids;
  startAndWaitRunning(execSpec({"cat"}, false, true, true, false), Protocol::kSpdyRemoteCommandV4,
                      ids);
  ASSERT_TRUE(client_->rst(ids.in));
  const std::string status = statusOn(ids.error);
  EXPECT_NE(status.find("\"reason\":\"NonZeroExitCode\""), std::string::npos) << status;
  EXPECT_TRUE(runtime_.snapshot().stdin_closed);
}

TEST_F(SpdyRemoteCommandTest, StreamCreationTimeoutEndsTheConnection) {
  SpdyRemoteCommandConfig config = testConfig();
  config.stream_creation_timeout = milliseconds(200);
  const uint64_t before = session::SessionMetrics::get().creation_timeouts.value();
  const auto began = std::chrono::steady_clock::now();
  start(execSpec({"ls"}, false, true, true, true), Protocol::kSpdyRemoteCommandV4, config);
  const uint32_t error = client_->openStream("error");
  const uint32_t in = client_->openStream("stdin");
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_GE(std::chrono::steady_clock::now() - began, milliseconds(150));
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kOk);
  EXPECT_TRUE(client_->stream(error).reset);
  EXPECT_TRUE(client_->stream(in).reset);
  EXPECT_TRUE(client_->stream(error).data.empty());
  EXPECT_EQ(runtime_.snapshot().starts, 0);
  EXPECT_EQ(session::SessionMetrics::get().creation_timeouts.value(), before + 1);
  client_->closeSocket();
  EXPECT_TRUE(sessionDone());
}

TEST_F(SpdyRemoteCommandTest, MalformedSpdyFromTheClientGetsGoAwayAndEndsTheExec) {
  StreamIds ids;
  startAndWaitRunning(execSpec({"sleep", "1d"}, false, true, true, true),
                      Protocol::kSpdyRemoteCommandV4, ids);
  // A control frame claiming SPDY version 2.
  ASSERT_TRUE(client_->raw(std::string("\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01", 12)));
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kProtocolError);
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0; }));
  client_->closeSocket();
  EXPECT_TRUE(sessionDone());
}

TEST_F(SpdyRemoteCommandTest, MalformedSpdyBeforeStreamsIsHandledToo) {
  start(execSpec({"ls"}, false, false, true, false));
  // A control frame of SPDY version 2, then junk.
  ASSERT_TRUE(client_->raw(std::string("\x80\x02\x00\x01\x00\x00\x00\x08junkjunk", 16)));
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_EQ(runtime_.snapshot().starts, 0);
  client_->closeSocket();
  EXPECT_TRUE(sessionDone());
}

// B20: a start failure is a Failure status on the error stream, and every
// stream is closed.
TEST_F(SpdyRemoteCommandTest, StartFailureIsReportedAsInternalError) {
  runtime_.script.start_error = absl::NotFoundError("exec: \"/no/such/binary\": not found");
  start(execSpec({"/no/such/binary"}, false, true, true, true));
  const StreamIds ids = openStreams(true, true, true, false);
  EXPECT_EQ(statusOn(ids.error),
            R"({"metadata":{},"status":"Failure","message":"Internal error occurred: error )"
            R"(executing command in container: exec: \"/no/such/binary\": not found",)"
            R"("reason":"InternalError","details":{"causes":[{"message":"error executing )"
            R"(command in container: exec: \"/no/such/binary\": not found"}]},"code":500})");
  EXPECT_TRUE(client_->stream(ids.out).fin);
  EXPECT_TRUE(client_->stream(ids.err).fin);
  ASSERT_TRUE(client_->waitForEof(milliseconds(2000)));
  // stdin was neither finished nor left open: it was reset.
  EXPECT_TRUE(client_->stream(ids.in).reset);
}

TEST_F(SpdyRemoteCommandTest, StartFailureOnV2IsPlainText) {
  runtime_.script.start_error = absl::UnavailableError("runtime is down");
  start(execSpec({"ls"}, false, false, true, false), Protocol::kSpdyRemoteCommandV2);
  const StreamIds ids = openStreams(false, true, false, false);
  EXPECT_EQ(statusOn(ids.error),
            "Internal error occurred: error executing command in container: runtime is down");
}

TEST_F(SpdyRemoteCommandTest, RuntimeErrorAfterStartIsInternalError) {
  StreamIds ids;
  startAndWaitRunning(execSpec({"x"}, false, false, true, false), Protocol::kSpdyRemoteCommandV4,
                      ids);
  exitAll(ExitStatus::error("OCI runtime exec failed: <boom> & more"));
  EXPECT_EQ(statusOn(ids.error),
            R"({"metadata":{},"status":"Failure","message":"Internal error occurred: error )"
            R"(executing command in container: OCI runtime exec failed: \u003cboom\u003e )"
            R"(\u0026 more","reason":"InternalError","details":{"causes":[{"message":"error )"
            R"(executing command in container: OCI runtime exec failed: \u003cboom\u003e \u0026 )"
            R"(more"}]},"code":500})");
}

TEST_F(SpdyRemoteCommandTest, AttachUsesAttachPrefixAndNoExitCodes) {
  ExecSpec spec = execSpec({}, false, true, true, true);
  spec.operation = session::Operation::kAttach;
  StreamIds ids;
  startAndWaitRunning(spec, Protocol::kSpdyRemoteCommandV4, ids);
  EXPECT_EQ(runtime_.snapshot().spec.operation, session::Operation::kAttach);
  exitAll(ExitStatus::error("container exited"));
  EXPECT_EQ(statusOn(ids.error),
            R"({"metadata":{},"status":"Failure","message":"Internal error occurred: error )"
            R"(attaching to container: container exited","reason":"InternalError","details":)"
            R"({"causes":[{"message":"error attaching to container: container exited"}]},)"
            R"("code":500})");
}

TEST_F(SpdyRemoteCommandTest, NoStreamsRequestedFailsPromptly) {
  start(execSpec({"ls"}, false, false, false, false));
  const uint32_t error = client_->openStream("error");
  const std::string status = statusOn(error);
  EXPECT_NE(status.find("one of stdin, stdout, or stderr must be set"), std::string::npos)
      << status;
  EXPECT_EQ(runtime_.snapshot().starts, 0);
}

// B07: many short-lived streams on one connection leave nothing behind.
TEST_F(SpdyRemoteCommandTest, ManyShortLivedStreamsLeaveTheTableEmpty) {
  runtime_.script.echo_stdin = true;
  runtime_.script.exit_on_stdin_eof = ExitStatus::success();
  start(execSpec({"cat"}, false, true, true, false));
  constexpr int kStreams = 20000;
  constexpr int kBatch = 1000;
  for (int done = 0; done < kStreams; done += kBatch) {
    client_->cork();
    for (int i = 0; i < kBatch; ++i) {
      const uint32_t id = client_->openStream("data");
      client_->rst(id);
    }
    ASSERT_TRUE(client_->uncork()) << client_->error();
  }
  ASSERT_TRUE(client_->ping(1));
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Frame::Type::kPing) == 1; }));
  EXPECT_EQ(loop_.run([&] { return session_->connection().streamCount(); }), 0u);
  EXPECT_EQ(client_->count(Frame::Type::kSynReply), static_cast<size_t>(kStreams));
  EXPECT_EQ(runtime_.snapshot().starts, 0);

  // The connection still serves the real session.
  const StreamIds ids = openStreams(true, true, false, false);
  ASSERT_TRUE(client_->data(ids.in, "still works", true));
  EXPECT_EQ(statusOn(ids.error), kSuccessJson);
  EXPECT_EQ(client_->stream(ids.out).data, "still works");
}

TEST_F(SpdyRemoteCommandTest, ActiveGaugeFollowsTheSession) {
  auto& gauge =
      session::SessionMetrics::get().sessions_active.gauge({"exec", "spdy/v3.channel.k8s.io"});
  const int64_t before = gauge.value();
  StreamIds ids;
  startAndWaitRunning(execSpec({"x"}, false, false, true, false), Protocol::kSpdyRemoteCommandV3,
                      ids);
  EXPECT_EQ(gauge.value(), before + 1);
  exitAll(ExitStatus::success());
  EXPECT_EQ(statusOn(ids.error), "");
  ASSERT_TRUE(client_->waitForEof());
  client_->closeSocket();
  ASSERT_TRUE(sessionDone());
  EXPECT_EQ(gauge.value(), before);
}

// The handler over a real loopback TCP connection, with the 101 still to be
// written and the first frames already read by the HTTP layer.
TEST_F(SpdyRemoteCommandTest, UpgradeHandlerServesALoopbackConnection) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 1), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int client_fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(client_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const int server_fd = accept(listener, nullptr, nullptr);
  ASSERT_GE(server_fd, 0);
  ::close(listener);

  SpdyUpgradeHandler handler(runtime_, testConfig());
  StopLoop stop_first{loop_};
  client_ = std::make_unique<SpdyTestClient>(client_fd);
  client_->cork();
  const uint32_t error = client_->openStream("error");
  const uint32_t out = client_->openStream("stdout");
  const std::string leftover = client_->takeCorked();
  client_->uncork();
  const std::string response =
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
  EXPECT_EQ(loop_.run([&] {
    UpgradedConnection up;
    up.connection_id = 42;
    up.transport = rawTransport(loop_.dispatcher(), server_fd, leftover, response);
    up.protocol = Protocol::kSpdyRemoteCommandV4;
    up.stream_request.spec = execSpec({"date"}, false, false, true, false);
    handler.onUpgrade(loop_.dispatcher(), std::move(up));
    return handler.activeSessions(loop_.dispatcher());
  }),
            1u);
  EXPECT_EQ(client_->readRawUntil("\r\n\r\n"), response);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(out).replied; }));
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.starts == 1; }));
  exitAll(ExitStatus::exited(4));
  const std::string status = statusOn(error);
  EXPECT_NE(status.find(R"({"reason":"ExitCode","message":"4"})"), std::string::npos) << status;
  ASSERT_TRUE(client_->waitForEof());
  client_->closeSocket();
  EXPECT_TRUE(loop_.waitUntil([&] { return handler.activeSessions(loop_.dispatcher()) == 0; }));
  loop_.stop();
}

TEST_F(SpdyRemoteCommandTest, UpgradeHandlerClosesPortForwardWithoutAHandler) {
  SpdyUpgradeHandler handler(runtime_, testConfig());
  StopLoop stop_first{loop_};
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  client_ = std::make_unique<SpdyTestClient>(fds[0]);
  EXPECT_EQ(loop_.run([&] {
    UpgradedConnection up;
    up.transport = rawTransport(loop_.dispatcher(), fds[1]);
    up.protocol = Protocol::kSpdyPortForward;
    up.stream_request.spec = session::PortForwardSpec{"pod", {80}};
    handler.onUpgrade(loop_.dispatcher(), std::move(up));
    return handler.activeSessions(loop_.dispatcher());
  }),
            0u);
  EXPECT_TRUE(client_->waitForEof());
  loop_.stop();
}

TEST_F(SpdyRemoteCommandTest, UpgradeHandlerCloseAllEndsRunningSessions) {
  SpdyUpgradeHandler handler(runtime_, testConfig());
  StopLoop stop_first{loop_};
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  client_ = std::make_unique<SpdyTestClient>(fds[0]);
  loop_.run([&] {
    UpgradedConnection up;
    up.transport = rawTransport(loop_.dispatcher(), fds[1]);
    up.protocol = Protocol::kSpdyRemoteCommandV4;
    up.stream_request.spec = execSpec({"sleep", "1d"}, false, false, true, false);
    handler.onUpgrade(loop_.dispatcher(), std::move(up));
    return 0;
  });
  const StreamIds ids = openStreams(false, true, false, false);
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 1; }));
  loop_.run([&] {
    handler.closeAll(loop_.dispatcher());
    return 0;
  });
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0; }));
  // The running command's client is told why it ended, before the GOAWAY.
  const std::string status = statusOn(ids.error);
  EXPECT_NE(status.find(R"("status":"Failure","message":"crisp is shutting down: the session was )"
                        R"(ended as crisp stopped")"),
            std::string::npos)
      << status;
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kOk);
  client_->closeSocket();
  EXPECT_TRUE(loop_.waitUntil([&] { return handler.activeSessions(loop_.dispatcher()) == 0; }));
  loop_.stop();
}

}  // namespace
}  // namespace crisp::stream
