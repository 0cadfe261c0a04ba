// Exec stdout and stderr spliced from the embedded runtime's pipes into a
// SPDY or WebSocket client's TCP socket: the bytes, their framing and their
// order against the other stream and the status must be exactly those of the
// copying path, however little the client's socket takes at a time. Base64
// channels, which rewrite the bytes, take the copying path and must be just
// as exact.

#include <chrono>
#include <memory>
#include <string>

#include <gtest/gtest.h>
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

session::ExecSpec execSpec(const std::vector<std::string>& command) {
  session::ExecSpec spec;
  spec.operation = session::Operation::kExec;
  spec.container_id = "box";
  spec.command = command;
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

  void startSpdy(const std::vector<std::string>& command) {
    auto [client_fd, server_fd] = narrowConnection();
    client_ = std::make_unique<SpdyTestClient>(client_fd);
    loop_.run([&, fd = server_fd] {
      UpgradedConnection up;
      up.connection_id = 1;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fd, "client");
      up.protocol = Protocol::kSpdyRemoteCommandV4;
      up.stream_request.spec = execSpec(command);
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

}  // namespace
}  // namespace crisp::stream
