#include "source/stream/ws_remotecommand.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/codec/websocket/base64.h"
#include "source/stream/raw_socket_transport.h"
#include "source/stream/stream_limits.h"

#include "test/stream/fake_exec_runtime.h"
#include "test/stream/spdy_test_client.h"
#include "test/stream/ws_test_client.h"

namespace crisp::stream {
namespace {

using session::ExecSpec;
using session::ExitStatus;
using session::TerminalSize;
using std::chrono::milliseconds;
using testing::LoopThread;
using testing::rawFrame;
using testing::WsTestClient;
using websocket::MessageType;
using Event = WsTestClient::Event;

constexpr char kSuccessJson[] = R"({"metadata":{},"status":"Success"})";
using testing::execSpec;
using testing::FakeRuntime;
using testing::fnv;
using testing::kFnvOffset;
using testing::outputByte;
using testing::Record;
using testing::Script;

websocket::ChannelFraming framingOf(const std::string& subprotocol) {
  return subprotocol.find("base64") != std::string::npos ? websocket::ChannelFraming::kBase64
                                                         : websocket::ChannelFraming::kBinary;
}

// One client message on `channel` as the protocol frames it, for leftover bytes.
std::string clientChannelFrame(websocket::ChannelFraming framing, uint8_t channel,
                               std::string_view payload) {
  Buffer body;
  const MessageType type = websocket::encodeChannelMessage(framing, channel, payload, body);
  return rawFrame(static_cast<uint8_t>(type), body.toString());
}

// Stops a loop when it goes out of scope, before the objects declared ahead
// of it (which live on that loop) are destroyed.
struct StopLoop {
  LoopThread& loop;
  ~StopLoop() { loop.stop(); }
};

class WsRemoteCommandTest : public ::testing::Test {
 protected:
  static WsRemoteCommandConfig testConfig() {
    WsRemoteCommandConfig config;
    config.connection.close_timeout = milliseconds(300);
    config.connection.linger_timeout = milliseconds(300);
    return config;
  }

  void start(const ExecSpec& spec, const std::string& subprotocol = "v5.channel.k8s.io",
             const WsRemoteCommandConfig& config = testConfig(), const std::string& leftover = {}) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = std::make_unique<WsTestClient>(fds[0], framingOf(subprotocol));
    const int server_fd = fds[1];
    const bool ok = loop_.run([&] {
      Buffer input;
      input.add(leftover);
      WsSessionSetup setup;
      setup.connection_id = 100;
      setup.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd,
                                                             "socketpair", std::move(input));
      setup.subprotocol = subprotocol;
      setup.protocol_name = "ws/" + subprotocol;
      setup.spec = spec;
      auto created = WsRemoteCommand::create(
          loop_.dispatcher(), runtime_, std::move(setup), config, [this](WsRemoteCommand&) {
            done_ = true;
            loop_.dispatcher().deferredDelete(std::move(session_));
          });
      if (!created.ok()) {
        return false;
      }
      session_ = std::move(created).value();
      session_->start();
      return true;
    });
    ASSERT_TRUE(ok);
  }

  void TearDown() override {
    loop_.stop();
    session_.reset();
  }

  bool sessionDone() {
    return loop_.waitUntil([&] { return done_; });
  }

  // The decoded payload of the first error-channel message, once the server
  // closed the WebSocket.
  std::string statusAfterClose() {
    EXPECT_TRUE(client_->waitFor([&] { return client_->closeReceived(); }))
        << "no close; " << client_->error();
    return client_->channelData(websocket::kChannelError);
  }

  std::optional<size_t> lastOn(int channel) {
    return client_->findLast([&](const Event& e) {
      return e.kind == Event::Kind::kMessage && e.channel == channel && !e.data.empty();
    });
  }
  std::optional<size_t> firstOn(int channel) {
    return client_->find([&](const Event& e) {
      return e.kind == Event::Kind::kMessage && e.channel == channel && !e.data.empty();
    });
  }
  std::optional<size_t> closeEvent() {
    return client_->find([](const Event& e) { return e.kind == Event::Kind::kClose; });
  }

  void startAndWaitRunning(const ExecSpec& spec, const std::string& subprotocol) {
    start(spec, subprotocol);
    ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 1; }));
  }

  void exitAll(const ExitStatus& status) {
    loop_.run([&] {
      runtime_.exitAll(status);
      return 0;
    });
  }

  LoopThread loop_;
  FakeRuntime runtime_;
  std::unique_ptr<WsRemoteCommand> session_;
  bool done_ = false;  // loop thread only
  std::unique_ptr<WsTestClient> client_;
};

// B09 under v5: the CLOSE signal ends stdin, and sort's output, stderr, the
// status and a normal close follow, nothing lost.
TEST_F(WsRemoteCommandTest, V5CloseSignalEndsStdinAndEverythingArrives) {
  runtime_.script.sort = true;
  start(execSpec({"sh", "-c", "sort; echo end >&2"}, false, true, true, true));
  ASSERT_TRUE(client_->send(MessageType::kBinary, std::string("\x00"
                                                              "b\na\n",
                                                              5)));
  ASSERT_TRUE(client_->send(MessageType::kBinary, std::string("\xff\x00", 2)));
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  EXPECT_EQ(client_->channelData(1), "a\nb\n");
  EXPECT_EQ(client_->channelData(2), "end\n");
  EXPECT_EQ(client_->channelData(3), kSuccessJson);
  // The exact messages, in wire order: the ready signal, the output, the
  // status, the close.
  const auto& events = client_->events();
  ASSERT_GE(events.size(), 5u);
  EXPECT_EQ(events[0].kind, Event::Kind::kMessage);
  EXPECT_EQ(events[0].type, MessageType::kBinary);
  EXPECT_EQ(events[0].channel, 1);
  EXPECT_EQ(events[0].data, "");
  const auto out = lastOn(1);
  const auto err = lastOn(2);
  const auto status = firstOn(3);
  const auto close = closeEvent();
  ASSERT_TRUE(out && err && status && close);
  EXPECT_LT(*out, *status);
  EXPECT_LT(*err, *status);
  EXPECT_LT(*status, *close);
  for (const auto& e : events) {
    if (e.kind == Event::Kind::kMessage) {
      EXPECT_EQ(e.type, MessageType::kBinary);
    }
  }
  const Record r = runtime_.snapshot();
  EXPECT_EQ(r.stdin_head, "b\na\n");
  EXPECT_TRUE(r.stdin_closed);
  EXPECT_TRUE(sessionDone());
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0 && r.destroyed == 1; }));
}

// B09 under v4: the same bytes; FF 00 is an unknown channel, not stdin, and
// the command only ends with the connection.
TEST_F(WsRemoteCommandTest, V4IgnoresTheCloseSignalAndEndsOnlyWithTheSocket) {
  runtime_.script.sort = true;
  start(execSpec({"sh", "-c", "sort; echo end >&2"}, false, true, true, true), "v4.channel.k8s.io");
  ASSERT_TRUE(client_->send(MessageType::kBinary, std::string("\x00"
                                                              "b\na\n",
                                                              5)));
  ASSERT_TRUE(client_->send(MessageType::kBinary, std::string("\xff\x00", 2)));
  ASSERT_TRUE(client_->send(MessageType::kBinary, std::string("\x00"
                                                              "c\n",
                                                              3)));
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.stdin_bytes == 6; }));
  EXPECT_FALSE(client_->waitFor([&] { return client_->closeReceived(); }, milliseconds(300)));
  const Record r = runtime_.snapshot();
  EXPECT_EQ(r.stdin_head, "b\na\nc\n");
  EXPECT_FALSE(r.stdin_closed);
  EXPECT_EQ(r.live, 1);
  EXPECT_EQ(client_->channelData(1), "");
  client_->closeSocket();
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0 && r.destroyed == 1; }));
  EXPECT_TRUE(sessionDone());
}

// A malformed CLOSE signal under v5 ends the connection with 1002.
TEST_F(WsRemoteCommandTest, MalformedCloseSignalIsAProtocolError) {
  for (const std::string& bad :
       {std::string("\xff", 1), std::string("\xff\x00\x00", 3), std::string("\xff\x05", 2)}) {
    SCOPED_TRACE(bad.size());
    LoopThread loop;
    FakeRuntime runtime;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    WsTestClient client(fds[0]);
    std::unique_ptr<WsRemoteCommand> session;
    StopLoop stop_first{loop};
    loop.run([&] {
      WsSessionSetup setup;
      setup.transport =
          std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "socketpair");
      setup.subprotocol = "v5.channel.k8s.io";
      setup.spec = execSpec({"cat"}, false, true, true, false);
      session = WsRemoteCommand::create(loop.dispatcher(), runtime, std::move(setup), testConfig(),
                                        nullptr)
                    .value();
      session->start();
      return 0;
    });
    ASSERT_TRUE(runtime.waitUntil([](const Record& r) { return r.live == 1; }));
    ASSERT_TRUE(client.send(MessageType::kBinary, bad));
    ASSERT_TRUE(client.waitForEof());
    EXPECT_EQ(client.closeCode(), websocket::kCloseProtocolError);
    EXPECT_EQ(client.closeReason(), "ws.channel.bad_close_signal");
    EXPECT_TRUE(runtime.waitUntil([](const Record& r) { return r.live == 0; }));
    EXPECT_FALSE(runtime.snapshot().stdin_closed);
  }
}

// The CLOSE signal for a channel other than stdin, and repeats, change nothing.
TEST_F(WsRemoteCommandTest, CloseSignalForOtherChannelsAndRepeatsAreNoOps) {
  runtime_.script.echo_stdin = true;
  runtime_.script.exit_on_stdin_eof = ExitStatus::exited(2);
  startAndWaitRunning(execSpec({"cat"}, false, true, true, false), "v5.channel.k8s.io");
  ASSERT_TRUE(client_->sendStreamClose(1));
  ASSERT_TRUE(client_->sendStreamClose(4));
  ASSERT_TRUE(client_->sendChannel(0, "still open\n"));
  ASSERT_TRUE(client_->waitFor([&] { return client_->channelData(1) == "still open\n"; }));
  EXPECT_FALSE(runtime_.snapshot().stdin_closed);
  ASSERT_TRUE(client_->sendStreamClose(0));
  ASSERT_TRUE(client_->sendStreamClose(0));
  ASSERT_TRUE(client_->sendChannel(0, "after eof"));
  const std::string status = statusAfterClose();
  EXPECT_NE(status.find(R"({"reason":"ExitCode","message":"2"})"), std::string::npos) << status;
  EXPECT_EQ(client_->channelData(1), "still open\n");
  EXPECT_EQ(runtime_.snapshot().stdin_head, "still open\n");
}

// The base64 protocols: text frames, '0'+channel, base64 payloads, both ways.
TEST_F(WsRemoteCommandTest, Base64ProtocolsUseTextFramesBothWays) {
  struct Case {
    std::string subprotocol;
    std::string status;  // decoded error-channel payload after exit 0
  };
  for (const Case& c :
       {Case{"base64.channel.k8s.io", ""}, Case{"v4.base64.channel.k8s.io", kSuccessJson}}) {
    SCOPED_TRACE(c.subprotocol);
    LoopThread loop;
    FakeRuntime runtime;
    runtime.script.echo_stdin = true;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    WsTestClient client(fds[0], websocket::ChannelFraming::kBase64);
    std::unique_ptr<WsRemoteCommand> session;
    StopLoop stop_first{loop};
    loop.run([&] {
      WsSessionSetup setup;
      setup.transport =
          std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "socketpair");
      setup.subprotocol = c.subprotocol;
      setup.spec = execSpec({"cat"}, false, true, true, true);
      session = WsRemoteCommand::create(loop.dispatcher(), runtime, std::move(setup), testConfig(),
                                        nullptr)
                    .value();
      session->start();
      return 0;
    });
    // The exact bytes of a client's text message: '0' then base64("hi\x00\xff").
    ASSERT_TRUE(client.send(MessageType::kText, "0aGkA/w=="));
    // A message whose base64 does not decode is dropped and counted; the
    // session goes on.
    const uint64_t bad_base64 = protocolErrorCounter("ws.channel.bad_base64").value();
    ASSERT_TRUE(client.send(MessageType::kText, "0a!b="));
    ASSERT_TRUE(client.sendChannel(0, "second"));
    ASSERT_TRUE(client.waitFor(
        [&] { return client.channelData(1) == std::string("hi\x00\xff", 4) + "second"; }));
    EXPECT_EQ(protocolErrorCounter("ws.channel.bad_base64").value(), bad_base64 + 1);
    loop.run([&] {
      runtime.exitAll(ExitStatus::success());
      return 0;
    });
    ASSERT_TRUE(client.waitForEof());
    EXPECT_EQ(client.closeCode(), websocket::kCloseNormal);
    EXPECT_EQ(client.channelData(3), c.status);
    EXPECT_EQ(client.channelMessages(3), c.status.empty() ? 0u : 1u);
    // The ready signal is the text "1"; every message is text.
    ASSERT_FALSE(client.events().empty());
    EXPECT_EQ(client.events()[0].type, MessageType::kText);
    EXPECT_EQ(client.events()[0].channel, 1);
    EXPECT_EQ(client.events()[0].data, "");
    for (const auto& e : client.events()) {
      if (e.kind == Event::Kind::kMessage) {
        EXPECT_EQ(e.type, MessageType::kText);
      }
    }
    EXPECT_EQ(runtime.snapshot().stdin_head, std::string("hi\x00\xff", 4) + "second");
  }
}

// v1 ("" and channel.k8s.io): the error channel carries plain text, and
// nothing on success.
TEST_F(WsRemoteCommandTest, V1ErrorsArePlainText) {
  struct Case {
    std::string subprotocol;
    ExitStatus status;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"channel.k8s.io", ExitStatus::exited(3),
       "command terminated with non-zero exit code: error executing command [sh -c exit 3], "
       "exit code 3"},
      {"", ExitStatus::error("shim died"),
       "Internal error occurred: error executing command in container: shim died"},
      {"channel.k8s.io", ExitStatus::success(), ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("\"" + c.subprotocol + "\" " + c.expected);
    LoopThread loop;
    FakeRuntime runtime;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    WsTestClient client(fds[0]);
    std::unique_ptr<WsRemoteCommand> session;
    StopLoop stop_first{loop};
    loop.run([&] {
      WsSessionSetup setup;
      setup.transport =
          std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "socketpair");
      setup.subprotocol = c.subprotocol;
      setup.spec = execSpec({"sh", "-c", "exit 3"}, false, false, true, true);
      session = WsRemoteCommand::create(loop.dispatcher(), runtime, std::move(setup), testConfig(),
                                        nullptr)
                    .value();
      session->start();
      EXPECT_EQ(session->version(), session::RemoteCommandVersion::kV1);
      return 0;
    });
    ASSERT_TRUE(runtime.waitUntil([](const Record& r) { return r.live == 1; }));
    loop.run([&] {
      runtime.exitAll(c.status);
      return 0;
    });
    ASSERT_TRUE(client.waitForEof());
    EXPECT_EQ(client.closeCode(), websocket::kCloseNormal);
    EXPECT_EQ(client.channelData(3), c.expected);
    EXPECT_EQ(client.channelMessages(3), c.expected.empty() ? 0u : 1u);
  }
}

// Exit codes travel as a JSON Status under v4 and v5.
TEST_F(WsRemoteCommandTest, ExitCodesAreJsonUnderV4AndV5) {
  for (const std::string subprotocol : {"v4.channel.k8s.io", "v5.channel.k8s.io"}) {
    for (int code : {0, 7, 255, 137}) {
      SCOPED_TRACE(subprotocol + " exit " + std::to_string(code));
      LoopThread loop;
      FakeRuntime runtime;
      int fds[2];
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
      WsTestClient client(fds[0]);
      std::unique_ptr<WsRemoteCommand> session;
      StopLoop stop_first{loop};
      loop.run([&] {
        WsSessionSetup setup;
        setup.transport =
            std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "socketpair");
        setup.subprotocol = subprotocol;
        setup.spec = execSpec({"sh", "-c", "exit 7"}, false, false, true, true);
        session = WsRemoteCommand::create(loop.dispatcher(), runtime, std::move(setup),
                                          testConfig(), nullptr)
                      .value();
        session->start();
        return 0;
      });
      ASSERT_TRUE(runtime.waitUntil([](const Record& r) { return r.live == 1; }));
      loop.run([&] {
        runtime.exitAll(ExitStatus::exited(code));
        return 0;
      });
      ASSERT_TRUE(client.waitForEof());
      const std::string expected =
          code == 0 ? std::string(kSuccessJson)
                    : R"({"metadata":{},"status":"Failure","message":"command terminated with )"
                      R"(non-zero exit code: error executing command [sh -c exit 7], exit code )" +
                          std::to_string(code) +
                          R"(","reason":"NonZeroExitCode","details":{"causes":[{"reason":)"
                          R"("ExitCode","message":")" +
                          std::to_string(code) + R"("}]}})";
      EXPECT_EQ(client.channelData(3), expected);
      EXPECT_EQ(client.closeCode(), websocket::kCloseNormal);
    }
  }
}

// The ready signal: an empty message on stdout if requested, else stderr,
// else the error channel.
TEST_F(WsRemoteCommandTest, ReadySignalGoesOnTheFirstRequestedStream) {
  struct Case {
    ExecSpec spec;
    std::string subprotocol;
    std::string wire;  // the message body on the wire
  };
  const std::vector<Case> cases = {
      {execSpec({"x"}, false, true, true, true), "v5.channel.k8s.io", std::string("\x01", 1)},
      {execSpec({"x"}, false, true, false, true), "v4.channel.k8s.io", std::string("\x02", 1)},
      {execSpec({"x"}, false, true, false, false), "channel.k8s.io", std::string("\x03", 1)},
      {execSpec({"x"}, true, true, true, false), "v5.channel.k8s.io", std::string("\x01", 1)},
      {execSpec({"x"}, false, false, false, true), "base64.channel.k8s.io", "2"},
      {execSpec({"x"}, false, true, true, false), "v4.base64.channel.k8s.io", "1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.subprotocol + " ready " + std::to_string(static_cast<int>(c.wire[0])));
    LoopThread loop;
    FakeRuntime runtime;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    const int client_fd = fds[0];
    std::unique_ptr<WsRemoteCommand> session;
    StopLoop stop_first{loop};
    loop.run([&] {
      WsSessionSetup setup;
      setup.transport =
          std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "socketpair");
      setup.subprotocol = c.subprotocol;
      setup.spec = c.spec;
      session = WsRemoteCommand::create(loop.dispatcher(), runtime, std::move(setup), testConfig(),
                                        nullptr)
                    .value();
      session->start();
      return 0;
    });
    // The first frame on the wire, read raw: FIN, opcode, unmasked length, body.
    const uint8_t opcode = c.subprotocol.find("base64") != std::string::npos ? 0x1 : 0x2;
    const std::string expected = std::string(1, static_cast<char>(0x80 | opcode)) +
                                 std::string(1, static_cast<char>(c.wire.size())) + c.wire;
    std::string got;
    while (got.size() < expected.size()) {
      char buf[16];
      const ssize_t n = ::read(client_fd, buf, expected.size() - got.size());
      ASSERT_GT(n, 0);
      got.append(buf, static_cast<size_t>(n));
    }
    EXPECT_EQ(got, expected);
    ::close(client_fd);
  }
}

// Resize: the session starts at once; the first size arrives as `initial`
// when it was among the bytes the transport held, else as the first
// resize(); later ones follow, also split across messages; a bad document
// ends resizing only.
TEST_F(WsRemoteCommandTest, ResizesReachTheProcess) {
  const std::string first =
      clientChannelFrame(websocket::ChannelFraming::kBinary, 4, "{\"Width\":100,\"Height\":30}\n");
  start(execSpec({"sh"}, true, true, true, false), "v5.channel.k8s.io", testConfig(), first);
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) {
    return r.starts == 1 && (r.initial.has_value() || !r.resizes.empty());
  }));
  Record r = runtime_.snapshot();
  EXPECT_TRUE(r.spec.tty);
  const TerminalSize applied_first = r.initial.has_value() ? *r.initial : r.resizes[0];
  EXPECT_EQ(applied_first, (TerminalSize{100, 30}));
  const size_t before = r.resizes.size();

  ASSERT_TRUE(client_->sendChannel(4, "{\"Width\":120,\"Height\":40}\n{\"Width\":"));
  ASSERT_TRUE(client_->sendChannel(4, "90, \"Height\":20}\n"));
  ASSERT_TRUE(runtime_.waitUntil([&](const Record& r) { return r.resizes.size() == before + 2; }));
  r = runtime_.snapshot();
  EXPECT_EQ(r.resizes[before], (TerminalSize{120, 40}));
  EXPECT_EQ(r.resizes[before + 1], (TerminalSize{90, 20}));
  // A bad document ends resizing, not the session.
  ASSERT_TRUE(client_->sendChannel(4, "{\"Width\":\"wide\"}\n{\"Width\":1,\"Height\":1}\n"));
  ASSERT_TRUE(client_->sendChannel(0, "still here"));
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.stdin_head == "still here"; }));
  EXPECT_EQ(runtime_.snapshot().resizes.size(), before + 2);

  exitAll(ExitStatus::success());
  EXPECT_EQ(statusAfterClose(), kSuccessJson);
}

// Stdin and a CLOSE sent right behind the request (before the exec exists)
// reach the process after it starts.
TEST_F(WsRemoteCommandTest, StdinSentBeforeTheStartIsDeliveredAfterIt) {
  runtime_.script.echo_stdin = true;
  runtime_.script.exit_on_stdin_eof = ExitStatus::success();
  const std::string early = clientChannelFrame(websocket::ChannelFraming::kBinary, 0, "early ") +
                            clientChannelFrame(websocket::ChannelFraming::kBinary, 0, "input") +
                            rawFrame(0x2, std::string("\xff\x00", 2));
  start(execSpec({"cat"}, false, true, true, false), "v5.channel.k8s.io", testConfig(), early);
  EXPECT_EQ(statusAfterClose(), kSuccessJson);
  EXPECT_EQ(client_->channelData(1), "early input");
  EXPECT_TRUE(runtime_.snapshot().stdin_closed);
}

// Messages the session does not use are ignored: stdin when stdin was not
// requested, the output and error channels, unknown channels, empty messages.
// The command starts start_delay after the upgrade (client-go's executor may
// not be ready for messages before); the ready signal and input do not wait.
TEST_F(WsRemoteCommandTest, TheCommandStartsAfterTheStartDelay) {
  runtime_.script.echo_stdin = true;
  runtime_.script.exit_on_stdin_eof = ExitStatus::success();
  WsRemoteCommandConfig config = testConfig();
  config.start_delay = milliseconds(500);
  const std::string input = clientChannelFrame(websocket::ChannelFraming::kBinary, 0, "waited") +
                            rawFrame(0x2, std::string("\xff\x00", 2));
  start(execSpec({"cat"}, false, true, true, false), "v5.channel.k8s.io", config, input);
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Event::Kind::kMessage) >= 1; }));
  EXPECT_FALSE(runtime_.waitUntil([](const Record& r) { return r.starts > 0; }, milliseconds(250)));
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.starts == 1; }));
  EXPECT_EQ(statusAfterClose(), kSuccessJson);
  EXPECT_EQ(client_->channelData(1), "waited");
}

TEST_F(WsRemoteCommandTest, MessagesOnUnusedChannelsAreIgnored) {
  runtime_.script.echo_stdin = true;
  startAndWaitRunning(execSpec({"date"}, false, false, true, true), "v4.channel.k8s.io");
  ASSERT_TRUE(client_->sendChannel(0, "not requested"));
  ASSERT_TRUE(client_->sendChannel(1, "x"));
  ASSERT_TRUE(client_->sendChannel(2, "y"));
  ASSERT_TRUE(client_->sendChannel(3, "z"));
  const uint64_t unknown = protocolErrorCounter("ws.channel.unknown_channel").value();
  ASSERT_TRUE(client_->sendChannel(7, "w"));
  ASSERT_TRUE(client_->send(MessageType::kBinary, ""));
  ASSERT_TRUE(client_->ping("p"));
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Event::Kind::kPong) == 1; }));
  // Only the unknown channel is a violation; it is counted, not fatal.
  EXPECT_EQ(protocolErrorCounter("ws.channel.unknown_channel").value(), unknown + 1);
  EXPECT_EQ(runtime_.snapshot().stdin_bytes, 0u);
  exitAll(ExitStatus::success());
  EXPECT_EQ(statusAfterClose(), kSuccessJson);
  EXPECT_EQ(client_->channelData(1), "");
  EXPECT_EQ(client_->channelData(2), "");
}

// As the kubelet's server, the binary protocols read text messages too.
TEST_F(WsRemoteCommandTest, TextMessagesAreReadUnderBinaryProtocols) {
  runtime_.script.echo_stdin = true;
  startAndWaitRunning(execSpec({"cat"}, false, true, true, false), "v4.channel.k8s.io");
  ASSERT_TRUE(client_->send(MessageType::kText, std::string("\x00"
                                                            "typed",
                                                            6)));
  ASSERT_TRUE(client_->waitFor([&] { return client_->channelData(1) == "typed"; }));
  for (const auto& e : client_->events()) {
    EXPECT_EQ(e.type, MessageType::kBinary);  // what the server sends stays binary
  }
}

// No message for the idle timeout ends the exec; the client reads why on the
// error channel (a Failure it shows), then a normal close, as after an exit.
TEST_F(WsRemoteCommandTest, IdleTimeoutEndsTheSessionWithAStatus) {
  const uint64_t before = session::SessionMetrics::get().idle_timeouts.value();
  WsRemoteCommandConfig config = testConfig();
  config.connection.idle_timeout = milliseconds(200);
  start(execSpec({"sleep", "1d"}, false, true, true, false), "v5.channel.k8s.io", config);
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 1; }));
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  EXPECT_EQ(client_->channelData(3),
            R"j({"metadata":{},"status":"Failure","message":"crisp ended the session: no )j"
            R"j(input or output for 200ms (stream.stream_idle_timeout)","reason":"Timeout",)j"
            R"j("details":{"causes":[{"message":"crisp ended the session: no input or output )j"
            R"j(for 200ms (stream.stream_idle_timeout)"}]},"code":504})j");
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0; }));
  EXPECT_TRUE(sessionDone());
  EXPECT_EQ(session::SessionMetrics::get().idle_timeouts.value(), before + 1);
}

// The end of a drain: the exec ends and the client reads that crisp is
// shutting down, then a normal close.
TEST_F(WsRemoteCommandTest, ShutdownEndsTheSessionWithAStatus) {
  start(execSpec({"sleep", "1d"}, false, true, true, false), "v4.channel.k8s.io");
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 1; }));
  loop_.run([&] {
    session_->endForShutdown();
    return 0;
  });
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  const std::string status = client_->channelData(3);
  EXPECT_NE(status.find(R"("status":"Failure","message":"crisp is shutting down)"),
            std::string::npos)
      << status;
  EXPECT_NE(status.find(R"("reason":"ServiceUnavailable")"), std::string::npos) << status;
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0; }));
  EXPECT_TRUE(sessionDone());
}

// B05: every byte of a large output precedes the status, in messages no
// larger than the limit.
TEST_F(WsRemoteCommandTest, LargeOutputIsDeliveredWholeBeforeTheStatus) {
  constexpr size_t kBytes = 4 * 1024 * 1024 + 123;
  runtime_.script.output_bytes = kBytes;
  runtime_.script.output_chunk = 200 * 1024;
  runtime_.script.exit_after_output = ExitStatus::success();
  start(execSpec({"sh", "-c", "seq 1 2000000"}, false, false, true, true), "v4.channel.k8s.io");
  EXPECT_EQ(statusAfterClose(), kSuccessJson);
  const std::string out = client_->channelData(1);
  ASSERT_EQ(out.size(), kBytes);
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_EQ(out[i], outputByte(i)) << "at offset " << i;
  }
  const auto out_last = lastOn(1);
  const auto status = firstOn(3);
  ASSERT_TRUE(out_last && status);
  EXPECT_LT(*out_last, *status);
  // The process wrote 200 KiB at a time; the messages are cut to the limit.
  const size_t limit = testConfig().max_output_message_bytes;
  ASSERT_LT(limit, runtime_.script.output_chunk);
  EXPECT_GE(client_->channelMessages(1), kBytes / limit);
  for (const auto& e : client_->events()) {
    if (e.kind == Event::Kind::kMessage) {
      EXPECT_LE(e.data.size(), limit);
    }
  }
  EXPECT_TRUE(client_->waitForEof());
}

// B12: a client that stops reading pauses the process; the queue stays bounded.
TEST_F(WsRemoteCommandTest, SlowReaderPausesTheProcessAndBufferingStaysBounded) {
  constexpr size_t kBytes = 16 * 1024 * 1024;
  runtime_.script.output_bytes = kBytes;
  runtime_.script.exit_after_output = ExitStatus::success();
  WsRemoteCommandConfig config = testConfig();
  config.connection.output_high_watermark = 256 * 1024;
  config.connection.output_low_watermark = 64 * 1024;
  start(execSpec({"yes"}, false, false, true, false), "v5.channel.k8s.io", config);
  ASSERT_TRUE(
      runtime_.waitUntil([](const Record& r) { return !r.pauses.empty() && r.pauses.back(); }));
  const size_t queued = loop_.run([&] { return session_->connection().queuedOutputBytes(); });
  // One message of 32 KiB and its header may pass the mark.
  EXPECT_LE(queued, 256u * 1024 + 33 * 1024);
  const Record paused = runtime_.snapshot();
  EXPECT_LT(paused.stdout_produced, kBytes / 4);
  // Still paused a while later: nothing more was produced.
  EXPECT_FALSE(runtime_.waitUntil(
      [&](const Record& r) { return r.stdout_produced != paused.stdout_produced; },
      milliseconds(300)));
  // The client reads: everything arrives, in order.
  EXPECT_EQ(statusAfterClose(), kSuccessJson);
  const std::string out = client_->channelData(1);
  ASSERT_EQ(out.size(), kBytes);
  for (size_t i = 0; i < out.size(); i += 4093) {
    ASSERT_EQ(out[i], outputByte(i)) << "at offset " << i;
  }
  const Record r = runtime_.snapshot();
  EXPECT_NE(std::find(r.pauses.begin(), r.pauses.end(), false), r.pauses.end());
}

// B17 over WebSocket: 8 MB of stdin, every byte in order, with reading
// paused while the process's stdin is full.
TEST_F(WsRemoteCommandTest, LargeStdinArrivesWholeWithBackpressure) {
  constexpr size_t kBytes = 8 * 1000 * 1000;
  constexpr size_t kChunk = 32 * 1024;
  runtime_.script.slow_stdin = true;
  runtime_.script.slow_stdin_bytes = 32 * 1024;  // about 8 MB/s: ticks take ~4 ms
  // However slowly this client gets to send (a sanitizer, a loaded machine),
  // the queue fills up to the mark before the command starts reading.
  runtime_.script.slow_stdin_start_at = session::ExecProcess::kStdinHighWatermark + 1;
  runtime_.script.exit_on_stdin_eof = ExitStatus::success();
  start(execSpec({"sh", "-c", "cat > /tmp/in.bin"}, false, true, true, true));
  std::mt19937 rng(2024);
  std::string chunk(kChunk, '\0');
  uint64_t hash = kFnvOffset;
  size_t sent = 0;
  while (sent < kBytes) {
    client_->cork();
    for (int i = 0; i < 32 && sent < kBytes; ++i) {
      const size_t n = std::min(kChunk, kBytes - sent);
      for (size_t k = 0; k < n; ++k) {
        chunk[k] = static_cast<char>(rng());
      }
      hash = fnv(hash, chunk.data(), n);
      client_->sendChannel(0, std::string_view(chunk.data(), n));
      sent += n;
    }
    if (sent == kBytes) {
      client_->sendStreamClose(0);
    }
    ASSERT_TRUE(client_->uncork()) << client_->error();
  }
  EXPECT_EQ(statusAfterClose(), kSuccessJson);
  const Record r = runtime_.snapshot();
  EXPECT_EQ(r.stdin_bytes, kBytes);
  EXPECT_EQ(r.stdin_hash, hash);
  EXPECT_TRUE(r.stdin_closed);
  EXPECT_GT(r.max_stdin_queue, session::ExecProcess::kStdinHighWatermark);
  // Within one delivery of the transport (its read burst) of the mark.
  EXPECT_LE(r.max_stdin_queue, session::ExecProcess::kStdinHighWatermark + 320 * 1024);
}

TEST_F(WsRemoteCommandTest, ClientDroppingTheConnectionEndsTheExec) {
  startAndWaitRunning(execSpec({"sleep", "1d"}, false, true, true, true), "v5.channel.k8s.io");
  client_->closeSocket();
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0 && r.destroyed == 1; }));
  EXPECT_TRUE(sessionDone());
}

TEST_F(WsRemoteCommandTest, ClientCloseFrameEndsTheExec) {
  startAndWaitRunning(execSpec({"sleep", "1d"}, false, true, true, true), "v4.channel.k8s.io");
  ASSERT_TRUE(client_->close(websocket::kCloseNormal));
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0; }));
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  EXPECT_EQ(client_->channelMessages(3), 0u);  // no status for a client that left
  EXPECT_TRUE(sessionDone());
}

TEST_F(WsRemoteCommandTest, MalformedFramesCloseWithTheRightCodeAndEndTheExec) {
  struct Case {
    const char* name;
    std::string bytes;
    uint16_t code;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"unmasked",
       rawFrame(0x2,
                std::string("\x00"
                            "abc",
                            4),
                /*masked=*/false),
       websocket::kCloseProtocolError, "ws.unmasked_client_frame"},
      {"oversized", rawFrame(0x2, std::string(70 * 1024, 'x')), websocket::kCloseMessageTooBig,
       "ws.message_too_big"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    LoopThread loop;
    FakeRuntime runtime;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    WsTestClient client(fds[0]);
    std::unique_ptr<WsRemoteCommand> session;
    bool done = false;
    StopLoop stop_first{loop};
    WsRemoteCommandConfig config = testConfig();
    config.connection.max_message_bytes = 64 * 1024;
    loop.run([&] {
      WsSessionSetup setup;
      setup.transport =
          std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "socketpair");
      setup.subprotocol = "v5.channel.k8s.io";
      setup.spec = execSpec({"sleep", "1d"}, false, true, true, false);
      session = WsRemoteCommand::create(loop.dispatcher(), runtime, std::move(setup), config,
                                        [&](WsRemoteCommand&) { done = true; })
                    .value();
      session->start();
      return 0;
    });
    ASSERT_TRUE(runtime.waitUntil([](const Record& r) { return r.live == 1; }));
    ASSERT_TRUE(client.raw(c.bytes));
    ASSERT_TRUE(client.waitForEof());
    EXPECT_EQ(client.closeCode(), c.code);
    EXPECT_EQ(client.closeReason(), c.reason);
    EXPECT_TRUE(runtime.waitUntil([](const Record& r) { return r.live == 0; }));
    EXPECT_TRUE(loop.waitUntil([&] { return done; }));
    EXPECT_EQ(runtime.snapshot().stdin_bytes, 0u);
  }
}

TEST_F(WsRemoteCommandTest, PingIsAnsweredDuringASession) {
  startAndWaitRunning(execSpec({"sleep", "1d"}, false, true, true, false), "v5.channel.k8s.io");
  ASSERT_TRUE(client_->ping("kubectl"));
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Event::Kind::kPong) == 1; }));
  const auto pong = client_->find([](const Event& e) { return e.kind == Event::Kind::kPong; });
  EXPECT_EQ(client_->events()[*pong].data, "kubectl");
  EXPECT_EQ(runtime_.snapshot().live, 1);
}

// B20: a start failure is a Failure status on the error channel.
TEST_F(WsRemoteCommandTest, StartFailureIsReportedAsInternalError) {
  runtime_.script.start_error = absl::NotFoundError("exec: \"/no/such/binary\": not found");
  start(execSpec({"/no/such/binary"}, false, true, true, true));
  EXPECT_EQ(statusAfterClose(),
            R"({"metadata":{},"status":"Failure","message":"Internal error occurred: error )"
            R"(executing command in container: exec: \"/no/such/binary\": not found",)"
            R"("reason":"InternalError","details":{"causes":[{"message":"error executing )"
            R"(command in container: exec: \"/no/such/binary\": not found"}]},"code":500})");
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  EXPECT_TRUE(client_->waitForEof());
}

TEST_F(WsRemoteCommandTest, AttachUsesAttachPrefixAndNoExitCodes) {
  ExecSpec spec = execSpec({}, false, true, true, true);
  spec.operation = session::Operation::kAttach;
  startAndWaitRunning(spec, "v5.channel.k8s.io");
  EXPECT_EQ(runtime_.snapshot().spec.operation, session::Operation::kAttach);
  exitAll(ExitStatus::error("container exited"));
  EXPECT_EQ(statusAfterClose(),
            R"({"metadata":{},"status":"Failure","message":"Internal error occurred: error )"
            R"(attaching to container: container exited","reason":"InternalError","details":)"
            R"({"causes":[{"message":"error attaching to container: container exited"}]},)"
            R"("code":500})");
}

TEST_F(WsRemoteCommandTest, NoStreamsRequestedFailsPromptly) {
  start(execSpec({"ls"}, false, false, false, false), "v4.channel.k8s.io");
  const std::string status = statusAfterClose();
  EXPECT_NE(status.find("one of stdin, stdout, or stderr must be set"), std::string::npos)
      << status;
  EXPECT_EQ(runtime_.snapshot().starts, 0);
}

TEST_F(WsRemoteCommandTest, MetricsCountTheSessionUnderItsProtocol) {
  auto& metrics = session::SessionMetrics::get();
  auto& gauge = metrics.sessions_active.gauge({"exec", "ws/v5.channel.k8s.io"});
  auto& total = metrics.sessions_total.counter({"exec", "ws/v5.channel.k8s.io"});
  const int64_t active_before = gauge.value();
  const uint64_t total_before = total.value();
  const uint64_t in_before = metrics.bytes_in.value();
  const uint64_t out_before = metrics.bytes_out.value();
  runtime_.script.echo_stdin = true;
  runtime_.script.exit_on_stdin_eof = ExitStatus::success();
  startAndWaitRunning(execSpec({"cat"}, false, true, true, false), "v5.channel.k8s.io");
  EXPECT_EQ(gauge.value(), active_before + 1);
  EXPECT_EQ(total.value(), total_before + 1);
  ASSERT_TRUE(client_->sendChannel(0, "12345"));
  ASSERT_TRUE(client_->sendStreamClose(0));
  EXPECT_EQ(statusAfterClose(), kSuccessJson);
  ASSERT_TRUE(sessionDone());
  EXPECT_EQ(gauge.value(), active_before);
  EXPECT_EQ(metrics.bytes_in.value(), in_before + 5);
  EXPECT_EQ(metrics.bytes_out.value(), out_before + 5);
}

TEST_F(WsRemoteCommandTest, CreateRefusesANonChannelProtocol) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  WsTestClient client(fds[0]);
  const absl::Status status = loop_.run([&] {
    WsSessionSetup setup;
    setup.transport =
        std::make_unique<RawSocketTransport>(loop_.dispatcher(), fds[1], "socketpair");
    setup.subprotocol = "SPDY/3.1+portforward.k8s.io";
    setup.spec = execSpec({"ls"}, false, false, true, false);
    return WsRemoteCommand::create(loop_.dispatcher(), runtime_, std::move(setup), testConfig(),
                                   nullptr)
        .status();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  // The transport was closed.
  EXPECT_TRUE(client.waitForEof());
}

TEST_F(WsRemoteCommandTest, HandlerServesAndCloseAllEndsSessions) {
  WsUpgradeHandler handler(runtime_, testConfig());
  StopLoop stop_first{loop_};
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  client_ = std::make_unique<WsTestClient>(fds[0]);
  EXPECT_EQ(loop_.run([&] {
    WsSessionSetup setup;
    setup.transport =
        std::make_unique<RawSocketTransport>(loop_.dispatcher(), fds[1], "socketpair");
    setup.subprotocol = "v5.channel.k8s.io";
    setup.protocol_name = "ws/v5.channel.k8s.io";
    setup.spec = execSpec({"sleep", "1d"}, false, false, true, false);
    handler.serve(loop_.dispatcher(), std::move(setup));
    return handler.activeSessions(loop_.dispatcher());
  }),
            1u);
  ASSERT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 1; }));
  loop_.run([&] {
    handler.closeAll(loop_.dispatcher());
    return 0;
  });
  EXPECT_TRUE(runtime_.waitUntil([](const Record& r) { return r.live == 0; }));
  ASSERT_TRUE(client_->waitForEof());
  // The running command's client is told why it ended, then the connection
  // closes normally (kubectl shows the status only after a normal close).
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  const std::string status = client_->channelData(websocket::kChannelError);
  EXPECT_NE(status.find(R"("status":"Failure","message":"crisp is shutting down: the session was )"
                        R"(ended as crisp stopped")"),
            std::string::npos)
      << status;
  EXPECT_TRUE(loop_.waitUntil([&] { return handler.activeSessions(loop_.dispatcher()) == 0; }));
  loop_.stop();
}

// The handler over a real loopback TCP connection, as the HTTP/1.1 front
// hands it over: the 101 queued in the transport, the first client frames
// already read past the request head.
TEST_F(WsRemoteCommandTest, UpgradeHandlerServesALoopbackConnection) {
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

  runtime_.script.sort = true;
  WsUpgradeHandler handler(runtime_, testConfig());
  StopLoop stop_first{loop_};
  client_ = std::make_unique<WsTestClient>(client_fd);
  const std::string leftover = clientChannelFrame(websocket::ChannelFraming::kBinary, 0, "b\na\n") +
                               rawFrame(0x2, std::string("\xff\x00", 2));
  const std::string response =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n";
  EXPECT_EQ(loop_.run([&] {
    UpgradedConnection up;
    up.connection_id = 42;
    Buffer input;
    input.add(leftover);
    Buffer output;
    output.add(response);
    up.transport = std::make_unique<RawSocketTransport>(
        loop_.dispatcher(), server_fd, "127.0.0.1:1", std::move(input), std::move(output));
    up.protocol = Protocol::kWsV5Channel;
    up.stream_request.spec = execSpec({"sh", "-c", "sort; echo end >&2"}, false, true, true, true);
    handler.onUpgrade(loop_.dispatcher(), std::move(up));
    return handler.activeSessions(loop_.dispatcher());
  }),
            1u);
  EXPECT_EQ(client_->readRawUntil("\r\n\r\n"), response);
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  EXPECT_EQ(client_->channelData(1), "a\nb\n");
  EXPECT_EQ(client_->channelData(2), "end\n");
  EXPECT_EQ(client_->channelData(3), kSuccessJson);
  EXPECT_TRUE(loop_.waitUntil([&] { return handler.activeSessions(loop_.dispatcher()) == 0; }));
  loop_.stop();
}

// Records the upgrades handed to it.
class RecordingHandler : public UpgradeHandler {
 public:
  void onUpgrade(event::Dispatcher&, UpgradedConnection&& connection) override {
    protocols.push_back(connection.protocol);
    transports.push_back(std::move(connection.transport));
  }
  std::vector<Protocol> protocols;
  std::vector<TransportPtr> transports;
};

TEST_F(WsRemoteCommandTest, UpgradeHandlerPassesPortForwardOnOrClosesIt) {
  RecordingHandler port_forward;
  WsUpgradeHandler with(runtime_, testConfig(), &port_forward);
  WsUpgradeHandler without(runtime_, testConfig());
  StopLoop stop_first{loop_};
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  int other[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, other), 0);
  WsTestClient closed_client(other[0]);
  loop_.run([&] {
    UpgradedConnection up;
    up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fds[1], "pf");
    up.protocol = Protocol::kWsPortForwardV4;
    up.stream_request.spec = session::PortForwardSpec{"pod", {80}};
    with.onUpgrade(loop_.dispatcher(), std::move(up));
    UpgradedConnection refused;
    refused.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), other[1], "pf");
    refused.protocol = Protocol::kWsPortForwardBinary;
    refused.stream_request.spec = session::PortForwardSpec{"pod", {80}};
    without.onUpgrade(loop_.dispatcher(), std::move(refused));
    return 0;
  });
  EXPECT_EQ(port_forward.protocols, std::vector<Protocol>{Protocol::kWsPortForwardV4});
  EXPECT_EQ(loop_.run([&] { return with.activeSessions(loop_.dispatcher()); }), 0u);
  EXPECT_TRUE(closed_client.waitForEof());
  EXPECT_EQ(runtime_.snapshot().starts, 0);
  loop_.stop();
  port_forward.transports.clear();
  ::close(fds[0]);
}

// Plays the HTTP/1.1 front: owns the transport first and hands it to the
// handler from inside its own read callback, as Http1Server does.
class HandingOverOwner : public TransportCallbacks {
 public:
  HandingOverOwner(event::Dispatcher& dispatcher, UpgradeHandler& handler, TransportPtr transport,
                   Protocol protocol, session::StreamRequest request)
      : dispatcher_(dispatcher),
        handler_(handler),
        transport_(std::move(transport)),
        protocol_(protocol),
        request_(std::move(request)) {
    transport_->setCallbacks(*this);
    transport_->start();
  }

  void onTransportData(Buffer& data) override {
    if (transport_ == nullptr) {
      data.drain(data.length());
      return;
    }
    // The "request head" is the first line; the rest goes back to the new owner.
    std::string bytes = data.toString();
    const size_t head = bytes.find('\n');
    transport_->pauseReading(true);
    Buffer rest;
    rest.add(std::string_view(bytes).substr(head == std::string::npos ? bytes.size() : head + 1));
    transport_->unreadInput(rest);
    Buffer response;
    response.add("HTTP/1.1 101 Switching Protocols\r\n\r\n");
    transport_->write(response);
    UpgradedConnection up;
    up.connection_id = 77;
    up.transport = std::move(transport_);
    up.protocol = protocol_;
    up.stream_request = request_;
    handler_.onUpgrade(dispatcher_, std::move(up));
    handed_over = true;
  }
  void onTransportEof() override {}
  void onTransportDrained() override {}
  void onTransportError(const std::string&) override {}

  bool handed_over = false;

 private:
  event::Dispatcher& dispatcher_;
  UpgradeHandler& handler_;
  TransportPtr transport_;
  const Protocol protocol_;
  const session::StreamRequest request_;
};

TEST_F(WsRemoteCommandTest, HandOverFromInsideTheTransportsCallbackIsSafe) {
  struct Case {
    const char* name;
    Protocol protocol;
    session::StreamRequest request;
    bool served;
  };
  std::vector<Case> cases;
  cases.push_back({"exec", Protocol::kWsV5Channel,
                   session::StreamRequest{execSpec({"cat"}, false, true, true, false)}, true});
  cases.push_back({"port-forward without a handler", Protocol::kWsSpdyTunnelPortForward,
                   session::StreamRequest{session::PortForwardSpec{"pod", {80}}}, false});
  cases.push_back({"SPDY protocol on the WebSocket handler", Protocol::kSpdyRemoteCommandV4,
                   session::StreamRequest{execSpec({"cat"}, false, true, true, false)}, false});
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    LoopThread loop;
    FakeRuntime runtime;
    runtime.script.echo_stdin = true;
    runtime.script.exit_on_stdin_eof = ExitStatus::success();
    WsUpgradeHandler handler(runtime, testConfig());
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    WsTestClient client(fds[0]);
    std::unique_ptr<HandingOverOwner> owner;
    StopLoop stop_first{loop};
    loop.run([&] {
      owner = std::make_unique<HandingOverOwner>(
          loop.dispatcher(), handler,
          std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "front"), c.protocol,
          c.request);
      return 0;
    });
    // The request line and the first message in one write.
    Buffer body;
    websocket::encodeChannelMessage(websocket::ChannelFraming::kBinary, 0, "hi", body);
    ASSERT_TRUE(client.raw("GET /exec/x\n" + rawFrame(0x2, body.toString()) +
                           rawFrame(0x2, std::string("\xff\x00", 2))));
    if (c.served) {
      EXPECT_EQ(client.readRawUntil("\r\n\r\n"), "HTTP/1.1 101 Switching Protocols\r\n\r\n");
    }
    // A refused connection is closed at once (its queued 101 dropped).
    ASSERT_TRUE(client.waitForEof());
    EXPECT_TRUE(loop.run([&] { return owner->handed_over; }));
    if (c.served) {
      EXPECT_EQ(client.channelData(1), "hi");
      EXPECT_EQ(client.channelData(3), kSuccessJson);
      EXPECT_EQ(client.closeCode(), websocket::kCloseNormal);
    } else {
      EXPECT_FALSE(client.closeReceived());
      EXPECT_EQ(runtime.snapshot().starts, 0);
    }
    EXPECT_TRUE(loop.waitUntil([&] { return handler.activeSessions(loop.dispatcher()) == 0; }));
  }
}

}  // namespace
}  // namespace crisp::stream
