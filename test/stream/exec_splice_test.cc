// Exec stdout and stderr spliced from the embedded runtime's pipes into a
// SPDY or WebSocket client's TCP socket: the bytes, their framing and their
// order against the other stream and the status must be exactly those of the
// copying path, however little the client's socket takes at a time. Base64
// channels, which rewrite the bytes, take the copying path and must be just
// as exact. The other way, SPDY stdin spliced from the client's socket into
// the command's pipe must reach it whole and in order however the frames
// fall into reads, hold the client back while the command does not read, and
// end cleanly when the command or the client goes away mid-frame.

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "source/runtime/embedded/embedded_runtime.h"
#include "source/stream/raw_socket_transport.h"
#include "source/stream/spdy_remotecommand.h"
#include "source/stream/ws_remotecommand.h"

#include "test/stream/spdy_test_client.h"
#include "test/stream/tls_test_util.h"
#include "test/stream/ws_test_client.h"

namespace crisp::stream {
namespace {

using testing::LoopThread;
using testing::SpdyTestClient;
using testing::WsTestClient;
using Frame = SpdyTestClient::Frame;

// Writes stdout and stderr in turns and exits with 3.
const std::vector<std::string> kCommand = {
    "sh", "-c", "seq 1 300000; echo middle >&2; seq 300001 600000; echo end >&2; exit 3"};
// The same with the streams swapped: the bulk goes to stderr.
const std::vector<std::string> kStderrCommand = {
    "sh", "-c", "seq 1 300000 >&2; echo middle; seq 300001 600000 >&2; echo end; exit 3"};

// What seq writes for either command's bulk stream.
std::string expectedSeq() {
  std::string expected;
  for (int i = 1; i <= 600000; ++i) {
    expected += std::to_string(i) + "\n";
  }
  return expected;
}

session::ExecSpec execSpec(const std::vector<std::string>& command, bool stdin = false) {
  session::ExecSpec spec;
  spec.operation = session::Operation::kExec;
  spec.container_id = "box";
  spec.command = command;
  spec.stdin = stdin;
  spec.stdout = true;
  spec.stderr = true;
  return spec;
}

class ExecSpliceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::EmbeddedContainerConfig box;
    box.id = "box";
    box.working_dir = "/tmp";
    runtime_ = std::make_unique<runtime::EmbeddedRuntime>(
        std::vector<runtime::EmbeddedContainerConfig>{box});
    ASSERT_TRUE(runtime_->start().ok());
  }

  void TearDown() override {
    loop_.run([&] {
      session_.reset();
      ws_session_.reset();
      return 0;
    });
    loop_.stop();
  }

  // A loopback TCP connection {client, server} with small buffers on the
  // way from the server to the client, so that the server's socket takes
  // little at a time. The kernel doubles both; the client's window stays
  // above the server's segment size (half the largest window seen), or each
  // segment would wait for a zero-window probe.
  static std::pair<int, int> narrowConnection() {
    return testing::loopbackPair(/*client_receive_buffer=*/32 * 1024,
                                 /*server_send_buffer=*/16 * 1024);
  }

  void startSpdy(const std::vector<std::string>& command, bool stdin = false) {
    auto [client_fd, server_fd] = stdin ? testing::loopbackPair() : narrowConnection();
    client_ = std::make_unique<SpdyTestClient>(client_fd);
    loop_.run([&, fd = server_fd] {
      UpgradedConnection up;
      up.connection_id = 1;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fd, "client");
      up.protocol = Protocol::kSpdyRemoteCommandV4;
      up.stream_request.spec = execSpec(command, stdin);
      session_ =
          std::make_unique<SpdyRemoteCommand>(loop_.dispatcher(), *runtime_, std::move(up),
                                              SpdyRemoteCommandConfig{}, [](SpdyRemoteCommand&) {});
      session_->start();
      return 0;
    });
  }

  void startWs(const std::string& subprotocol, websocket::ChannelFraming framing) {
    auto [client_fd, server_fd] = narrowConnection();
    ws_client_ = std::make_unique<WsTestClient>(client_fd, framing);
    const bool ok = loop_.run([&, fd = server_fd] {
      WsSessionSetup setup;
      setup.connection_id = 2;
      setup.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fd, "client");
      setup.subprotocol = subprotocol;
      setup.protocol_name = "ws/" + subprotocol;
      setup.spec = execSpec(kCommand);
      auto created = WsRemoteCommand::create(loop_.dispatcher(), *runtime_, std::move(setup),
                                             WsRemoteCommandConfig{}, [](WsRemoteCommand&) {});
      if (!created.ok()) {
        return false;
      }
      ws_session_ = std::move(created).value();
      ws_session_->start();
      return true;
    });
    ASSERT_TRUE(ok);
  }

  // Runs the command over WebSocket and checks what the client got.
  void checkWs(const std::string& subprotocol, websocket::ChannelFraming framing) {
    startWs(subprotocol, framing);
    ASSERT_TRUE(ws_client_->waitFor([&] { return ws_client_->channelMessages(3) > 0; },
                                    std::chrono::seconds(60)))
        << ws_client_->error();
    const std::string expected = expectedSeq();
    const std::string out = ws_client_->channelData(1);
    EXPECT_EQ(out.size(), expected.size());
    EXPECT_TRUE(out == expected) << "stdout differs";
    EXPECT_EQ(ws_client_->channelData(2), "middle\nend\n");
    const std::string status = ws_client_->channelData(3);
    EXPECT_NE(status.find("NonZeroExitCode"), std::string::npos) << status;
    const auto first_status =
        ws_client_->find([](const WsTestClient::Event& e) { return e.channel == 3; });
    const auto last_output = ws_client_->findLast(
        [](const WsTestClient::Event& e) { return e.channel == 1 || e.channel == 2; });
    ASSERT_TRUE(first_status && last_output);
    EXPECT_LT(*last_output, *first_status);
  }

  // Runs `command` over SPDY and checks what the client got: seq's output
  // whole on the bulk stream, the two short lines on the other, and every
  // frame of both, FINs included, before the status.
  void checkSpdy(const std::vector<std::string>& command, bool bulk_on_stderr) {
    startSpdy(command);
    const uint32_t error = open("error");
    const uint32_t out = open("stdout");
    const uint32_t err = open("stderr");
    ASSERT_TRUE(
        client_->waitFor([&] { return client_->stream(error).fin; }, std::chrono::seconds(60)))
        << client_->error();
    const std::string expected = expectedSeq();
    const std::string& bulk_bytes = client_->stream(bulk_on_stderr ? err : out).data;
    EXPECT_EQ(bulk_bytes.size(), expected.size());
    EXPECT_TRUE(bulk_bytes == expected) << "bulk stream differs";
    EXPECT_EQ(client_->stream(bulk_on_stderr ? out : err).data, "middle\nend\n");
    EXPECT_NE(client_->stream(error).data.find("NonZeroExitCode"), std::string::npos)
        << client_->stream(error).data;
    EXPECT_NE(client_->stream(error).data.find("\"3\""), std::string::npos);
    const auto status = client_->find([&](const Frame& f) {
      return f.type == Frame::Type::kData && f.stream_id == error && f.data_size > 0;
    });
    const auto last_output = client_->findLast([&](const Frame& f) {
      return f.type == Frame::Type::kData && (f.stream_id == out || f.stream_id == err);
    });
    ASSERT_TRUE(status && last_output);
    EXPECT_LT(*last_output, *status);
    EXPECT_TRUE(client_->stream(out).fin);
    EXPECT_TRUE(client_->stream(err).fin);
  }

  uint32_t open(const char* type) {
    const uint32_t id = client_->openStream(type);
    EXPECT_TRUE(client_->waitFor([&] { return client_->stream(id).replied; }));
    return id;
  }

  std::unique_ptr<runtime::EmbeddedRuntime> runtime_;
  LoopThread loop_;
  std::unique_ptr<SpdyTestClient> client_;
  std::unique_ptr<SpdyRemoteCommand> session_;
  std::unique_ptr<WsTestClient> ws_client_;
  std::unique_ptr<WsRemoteCommand> ws_session_;
};

TEST_F(ExecSpliceTest, SpdyStdoutArrivesWholeAndInOrderBetweenStderrAndBeforeTheStatus) {
  checkSpdy(kCommand, /*bulk_on_stderr=*/false);
}

TEST_F(ExecSpliceTest, SpdyStderrArrivesWholeAndApartFromStdoutBeforeTheStatus) {
  checkSpdy(kStderrCommand, /*bulk_on_stderr=*/true);
}

TEST_F(ExecSpliceTest, WebSocketBinaryStdoutArrivesWholeAndInOrderBeforeTheStatus) {
  checkWs("v5.channel.k8s.io", websocket::ChannelFraming::kBinary);
}

TEST_F(ExecSpliceTest, WebSocketBase64StdoutTakesTheCopyingPathJustAsExactly) {
  checkWs("v4.base64.channel.k8s.io", websocket::ChannelFraming::kBase64);
}

std::string randomBytes(size_t bytes, uint32_t seed) {
  std::string out(bytes, '\0');
  std::mt19937 rng(seed);
  for (auto& c : out) {
    c = static_cast<char>(rng());
  }
  return out;
}

// Descriptors this process has open.
size_t openDescriptors() {
  size_t n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++n;
  }
  return n;
}

class ExecStdinSpliceTest : public ExecSpliceTest {
 protected:
  struct Ids {
    uint32_t error = 0;
    uint32_t in = 0;
    uint32_t out = 0;
  };

  Ids startWithStdin(const std::vector<std::string>& command) {
    startSpdy(command, /*stdin=*/true);
    Ids ids;
    ids.error = open("error");
    ids.in = open("stdin");
    ids.out = open("stdout");
    open("stderr");
    return ids;
  }

  // Waits for the status and checks that `cat` gave back `stdin` whole.
  void expectStdinEchoed(const Ids& ids, const std::string& stdin) {
    ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.error).fin; },
                                 std::chrono::seconds(60)))
        << client_->error();
    const std::string& out = client_->stream(ids.out).data;
    EXPECT_EQ(out.size(), stdin.size());
    EXPECT_TRUE(out == stdin) << "stdout differs from stdin";
    EXPECT_TRUE(client_->stream(ids.out).fin);
  }

  uint64_t splicedIn() {
    return loop_.run([&] { return session_->connection().bytesSplicedIn(); });
  }
  uint64_t readIn() {
    return loop_.run([&] { return session_->connection().bytesRead(); });
  }

  // Everything a client sends for `stdin` on stream `in` as DATA frames of
  // `frame_sizes` in turn, with a PING after every fifth, and FIN on an empty
  // frame at the end when `fin`.
  std::string wireFor(uint32_t in, const std::string& stdin, const std::vector<size_t>& frame_sizes,
                      bool fin) {
    client_->cork();
    size_t at = 0;
    for (size_t i = 0; at < stdin.size(); ++i) {
      const size_t n = std::min(frame_sizes[i % frame_sizes.size()], stdin.size() - at);
      client_->data(in, std::string_view(stdin).substr(at, n));
      at += n;
      if (i % 5 == 4) {
        client_->ping(static_cast<uint32_t>(2 * i + 1));
        ++pings_sent_;
      }
    }
    if (fin) {
      client_->data(in, "", true);
    }
    std::string wire = client_->takeCorked();
    client_->uncork();
    return wire;
  }

  size_t pings_sent_ = 0;
};

// Frames of many sizes, written in pieces that fall anywhere in them (a
// header alone, a payload in parts, the end of one frame with the start of
// the next), with PINGs between: `cat` gives back exactly what it got, and
// most of it went through the pipe without being copied.
TEST_F(ExecStdinSpliceTest, SpdyStdinIsSplicedIntoTheCommandWholeAndInOrder) {
  const Ids ids = startWithStdin({"cat"});
  const std::string stdin = randomBytes(12 * 1024 * 1024, 21);
  const std::string wire =
      wireFor(ids.in, stdin, {65536, 1, 300000, 8, 70000, 4096, 1 << 20, 65535}, true);
  std::mt19937 rng(22);
  for (size_t at = 0; at < wire.size();) {
    const size_t n = std::min<size_t>(wire.size() - at, 1 + rng() % 200000);
    ASSERT_TRUE(client_->raw(std::string_view(wire).substr(at, n))) << client_->error();
    at += n;
  }
  expectStdinEchoed(ids, stdin);
  EXPECT_NE(client_->stream(ids.error).data.find("Success"), std::string::npos)
      << client_->stream(ids.error).data;
  // The PINGs between the frames were read and answered.
  EXPECT_GT(pings_sent_, 0u);
  EXPECT_EQ(client_->count(Frame::Type::kPing), pings_sent_);
  // Frames under 16 KiB are copied, and so is the start of a large one read
  // ahead behind them, or any part that finds the pipe full with bytes still
  // queued for it.
  EXPECT_GT(splicedIn(), stdin.size() / 4);
}

// A command that reads nothing for a while: crisp takes what the pipe
// holds, then stops reading the client, neither buffering nor spinning; when
// the command reads, everything arrives.
TEST_F(ExecStdinSpliceTest, ACommandThatDoesNotReadHoldsTheClientBack) {
  // Made before the command starts its wait.
  const std::string stdin = randomBytes(16 * 1024 * 1024, 23);
  const Ids ids = startWithStdin({"sh", "-c", "sleep 3; exec cat"});
  const std::string wire = wireFor(ids.in, stdin, {65536}, true);
  client_->setSendTimeout(std::chrono::seconds(30));
  std::thread sender([&] { EXPECT_TRUE(client_->raw(wire)) << client_->error(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  rusage before{};
  ::getrusage(RUSAGE_SELF, &before);
  const uint64_t read_before = readIn();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const uint64_t read_after = readIn();
  rusage after{};
  ::getrusage(RUSAGE_SELF, &after);
  const auto cpu_us = [](const rusage& u) {
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000L + u.ru_utime.tv_usec +
           u.ru_stime.tv_usec;
  };
  // The pipe (1 MiB) and what went to the process's queue before the first
  // splice; the socket buffers hold the rest, then the client.
  EXPECT_LT(read_after, 4u * 1024 * 1024);
  EXPECT_EQ(read_after, read_before);
  EXPECT_LT(cpu_us(after) - cpu_us(before), 250000) << "crisp spins while the pipe is full";
  sender.join();
  expectStdinEchoed(ids, stdin);
}

// The command stops reading and exits inside a large frame: the rest of the
// frame is dropped, the status arrives, and nothing is left open.
TEST_F(ExecStdinSpliceTest, TheCommandExitingInsideAFrameEndsTheSessionCleanly) {
  const size_t descriptors = openDescriptors();
  const Ids ids = startWithStdin({"head", "-c", "100000"});
  const std::string stdin = randomBytes(8 * 1024 * 1024, 24);
  const std::string wire = wireFor(ids.in, stdin, {4 * 1024 * 1024}, true);
  // The session may end before the client has sent everything.
  client_->setSendTimeout(std::chrono::seconds(20));
  client_->raw(wire);
  ASSERT_TRUE(
      client_->waitFor([&] { return client_->stream(ids.error).fin; }, std::chrono::seconds(60)))
      << client_->error();
  EXPECT_NE(client_->stream(ids.error).data.find("Success"), std::string::npos)
      << client_->stream(ids.error).data;
  EXPECT_TRUE(client_->stream(ids.out).data == stdin.substr(0, 100000));
  EXPECT_GT(splicedIn(), 0u);
  EXPECT_TRUE(client_->waitForEof(std::chrono::seconds(20)));
  loop_.run([&] {
    session_.reset();
    return 0;
  });
  client_.reset();
  EXPECT_TRUE(loop_.waitUntil([&] { return openDescriptors() <= descriptors; }))
      << openDescriptors() << " descriptors open, " << descriptors << " before";
}

// The client resets the connection inside a frame whose payload is being
// spliced: the command is ended and nothing is left open.
TEST_F(ExecStdinSpliceTest, TheClientResettingInsideAFrameEndsTheSessionCleanly) {
  const size_t descriptors = openDescriptors();
  const Ids ids = startWithStdin({"sh", "-c", "cat >/dev/null"});
  const std::string stdin = randomBytes(4 * 1024 * 1024, 25);
  const std::string wire = wireFor(ids.in, stdin, {4 * 1024 * 1024}, false);
  // The header and part of the payload.
  ASSERT_TRUE(client_->raw(std::string_view(wire).substr(0, 300000)));
  ASSERT_TRUE(loop_.waitUntil([&] { return session_->connection().bytesSplicedIn() > 0; }));
  linger hard{1, 0};
  ASSERT_EQ(::setsockopt(client_->fd(), SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)), 0);
  client_->closeSocket();
  ASSERT_TRUE(loop_.waitUntil([&] { return !session_->connection().open(); }));
  loop_.run([&] {
    session_.reset();
    return 0;
  });
  client_.reset();
  // The command's process group is killed and reaped, its pipes closed.
  EXPECT_TRUE(loop_.waitUntil([&] { return openDescriptors() <= descriptors; },
                              std::chrono::seconds(10)))
      << openDescriptors() << " descriptors open, " << descriptors << " before";
}

}  // namespace
}  // namespace crisp::stream
