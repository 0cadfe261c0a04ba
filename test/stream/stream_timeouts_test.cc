// stream_creation_timeout and stream_idle_timeout on the SPDY sessions, each
// counted in crisp_session_timeouts_total{kind} whichever session hits it:
// exec/attach and port-forward (whole session idle, one pair's partner late).
// The WebSocket side is covered in ws_remotecommand_test (idle) and has no
// creation timeout: its channels exist with the connection.

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "source/session/remotecommand.h"
#include "source/session/runtime.h"
#include "source/stream/raw_socket_transport.h"
#include "source/stream/spdy_portforward.h"
#include "source/stream/spdy_remotecommand.h"

#include "test/stream/spdy_test_client.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;
using testing::LoopThread;
using testing::SpdyTestClient;
using Frame = SpdyTestClient::Frame;

// Timeouts never reach the runtime: nothing is started or connected.
class IdleRuntime : public session::Runtime {
 public:
  std::vector<session::ContainerInfo> listContainers() const override { return {}; }
  absl::StatusOr<session::ContainerInfo> container(const std::string& id) const override {
    return absl::NotFoundError(id);
  }
  absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
      event::Dispatcher&, const session::ExecSpec&, std::optional<session::TerminalSize>,
      session::ExecCallbacks&) override {
    return absl::UnimplementedError("no processes here");
  }
};

uint64_t idleTimeouts() { return session::SessionMetrics::get().idle_timeouts.value(); }
uint64_t creationTimeouts() { return session::SessionMetrics::get().creation_timeouts.value(); }

class StreamTimeoutsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    loop_.stop();
    exec_.reset();
    port_forward_.reset();
  }

  int connect() {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = std::make_unique<SpdyTestClient>(fds[0]);
    return fds[1];
  }

  void startExec(const SpdyRemoteCommandConfig& config) {
    const int fd = connect();
    loop_.run([&] {
      UpgradedConnection up;
      up.connection_id = 100;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fd, "client");
      up.protocol = Protocol::kSpdyRemoteCommandV4;
      session::ExecSpec spec;
      spec.operation = session::Operation::kExec;
      spec.container_id = "demo";
      spec.command = {"true"};
      spec.stdout = true;
      up.stream_request.spec = spec;
      exec_ = std::make_unique<SpdyRemoteCommand>(
          loop_.dispatcher(), runtime_, std::move(up), config,
          [this](SpdyRemoteCommand&) { loop_.dispatcher().deferredDelete(std::move(exec_)); });
      exec_->start();
      return 0;
    });
  }

  void startPortForward(const SpdyPortForwardConfig& config) {
    const int fd = connect();
    loop_.run([&] {
      UpgradedConnection up;
      up.connection_id = 100;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fd, "client");
      up.protocol = Protocol::kSpdyPortForward;
      up.stream_request.spec = session::PortForwardSpec{"demo", {}};
      port_forward_ = std::make_unique<SpdyPortForward>(
          loop_.dispatcher(), runtime_, std::move(up), config, [this](SpdyPortForward&) {
            loop_.dispatcher().deferredDelete(std::move(port_forward_));
          });
      port_forward_->start();
      return 0;
    });
  }

  // A round trip: true once the answer to this ping arrived.
  bool ping(uint32_t id) {
    return client_->ping(id) && client_->waitFor([&] {
      return client_
          ->find([&](const Frame& f) { return f.type == Frame::Type::kPing && f.ping_id == id; })
          .has_value();
    });
  }

  LoopThread loop_;
  IdleRuntime runtime_;
  std::unique_ptr<SpdyRemoteCommand> exec_;
  std::unique_ptr<SpdyPortForward> port_forward_;
  std::unique_ptr<SpdyTestClient> client_;
};

TEST_F(StreamTimeoutsTest, IdleExecSessionIsClosedAndCounted) {
  SpdyRemoteCommandConfig config;
  config.stream_creation_timeout = std::chrono::seconds(30);
  config.connection.idle_timeout = milliseconds(200);
  config.connection.linger_timeout = milliseconds(200);
  const uint64_t idle = idleTimeouts();
  const uint64_t creation = creationTimeouts();
  startExec(config);
  const uint32_t error = client_->openStream("error");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(error).replied; }));
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kOk);
  // The error stream says why before the close, even before the exec started.
  EXPECT_TRUE(client_->stream(error).fin);
  EXPECT_NE(client_->stream(error).data.find(
                "crisp ended the session: no input or output for 200ms"),
            std::string::npos)
      << client_->stream(error).data;
  EXPECT_EQ(idleTimeouts(), idle + 1);
  EXPECT_EQ(creationTimeouts(), creation);
}

TEST_F(StreamTimeoutsTest, IdlePortForwardSessionIsClosedAndCounted) {
  SpdyPortForwardConfig config;
  config.connection.idle_timeout = milliseconds(200);
  config.connection.linger_timeout = milliseconds(200);
  const uint64_t idle = idleTimeouts();
  startPortForward(config);
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kOk);
  EXPECT_EQ(idleTimeouts(), idle + 1);
}

// Any frame re-arms the idle timer: a client that pings (as client-go does
// every 5 s) keeps its session through many idle periods; once it stops,
// the session ends one period later.
TEST_F(StreamTimeoutsTest, PingsKeepAPortForwardSessionPastTheIdleTimeout) {
  SpdyPortForwardConfig config;
  config.connection.idle_timeout = milliseconds(300);
  config.connection.linger_timeout = milliseconds(200);
  const uint64_t idle = idleTimeouts();
  startPortForward(config);
  const auto began = std::chrono::steady_clock::now();
  uint32_t id = 1;
  while (std::chrono::steady_clock::now() - began < milliseconds(1200)) {
    ASSERT_TRUE(ping(id)) << "closed after " << id << " pings";
    id += 2;
    // Waits for an EOF that must not come within a third of the idle period.
    EXPECT_FALSE(client_->waitFor([&] { return client_->eof(); }, milliseconds(100)));
  }
  EXPECT_FALSE(client_->goAwayReceived());
  EXPECT_EQ(idleTimeouts(), idle);
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_EQ(idleTimeouts(), idle + 1);
}

// A pair whose partner never comes: the kubelet's text on its error stream,
// the session goes on, and the timeout is counted as a creation timeout.
TEST_F(StreamTimeoutsTest, PortForwardPairCreationTimeoutIsCounted) {
  SpdyPortForwardConfig config;
  config.stream_creation_timeout = milliseconds(200);
  const uint64_t creation = creationTimeouts();
  startPortForward(config);
  const uint32_t error = client_->openStreamWithHeaders(
      {{"streamtype", "error"}, {"port", "8080"}, {"requestid", "3"}});
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(error).fin; }));
  EXPECT_EQ(client_->stream(error).data, "(conn=100, request=3) timed out waiting for streams");
  EXPECT_EQ(creationTimeouts(), creation + 1);
  EXPECT_TRUE(ping(1));
  EXPECT_FALSE(client_->goAwayReceived());
}

}  // namespace
}  // namespace crisp::stream
