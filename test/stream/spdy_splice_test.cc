// Exec stdout spliced from the embedded runtime's pipe into a SPDY client's
// TCP socket: the bytes, their framing and their order against stderr and the
// status must be exactly those of the copying path, however little the
// client's socket takes at a time.

#include <chrono>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "source/runtime/embedded/embedded_runtime.h"
#include "source/stream/raw_socket_transport.h"
#include "source/stream/spdy_remotecommand.h"
#include "test/stream/spdy_test_client.h"
#include "test/stream/tls_test_util.h"

namespace crisp::stream {
namespace {

using testing::LoopThread;
using testing::SpdyTestClient;
using Frame = SpdyTestClient::Frame;

class SpdySpliceTest : public ::testing::Test {
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
      return 0;
    });
    loop_.stop();
  }

  // Starts a v4 session for `command` over a loopback TCP connection whose
  // client side receives into a small buffer, so that the server's socket
  // takes little at a time.
  void start(const std::vector<std::string>& command) {
    auto [client_fd, server_fd] = testing::loopbackPair();
    const int small = 16 * 1024;
    ASSERT_EQ(::setsockopt(client_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    ASSERT_EQ(::setsockopt(server_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    client_ = std::make_unique<SpdyTestClient>(client_fd);
    session::ExecSpec spec;
    spec.operation = session::Operation::kExec;
    spec.container_id = "box";
    spec.command = command;
    spec.stdout = true;
    spec.stderr = true;
    loop_.run([&, fd = server_fd] {
      UpgradedConnection up;
      up.connection_id = 1;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fd, "client");
      up.protocol = Protocol::kSpdyRemoteCommandV4;
      up.stream_request.spec = spec;
      session_ = std::make_unique<SpdyRemoteCommand>(loop_.dispatcher(), *runtime_, std::move(up),
                                                     SpdyRemoteCommandConfig{},
                                                     [](SpdyRemoteCommand&) {});
      session_->start();
      return 0;
    });
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
};

TEST_F(SpdySpliceTest, StdoutArrivesWholeAndInOrderBetweenStderrAndBeforeTheStatus) {
  start({"sh", "-c",
         "seq 1 300000; echo middle >&2; seq 300001 600000; echo end >&2; exit 3"});
  const uint32_t error = open("error");
  const uint32_t out = open("stdout");
  const uint32_t err = open("stderr");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(error).fin; },
                               std::chrono::seconds(60)))
      << client_->error();
  std::string expected;
  for (int i = 1; i <= 600000; ++i) {
    expected += std::to_string(i) + "\n";
  }
  const std::string& stdout_bytes = client_->stream(out).data;
  EXPECT_EQ(stdout_bytes.size(), expected.size());
  EXPECT_TRUE(stdout_bytes == expected) << "stdout differs";
  EXPECT_EQ(client_->stream(err).data, "middle\nend\n");
  EXPECT_NE(client_->stream(error).data.find("NonZeroExitCode"), std::string::npos)
      << client_->stream(error).data;
  EXPECT_NE(client_->stream(error).data.find("\"3\""), std::string::npos);
  // Every stdout and stderr frame, FINs included, comes before the status.
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

}  // namespace
}  // namespace crisp::stream
