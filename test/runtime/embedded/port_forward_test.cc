#include "source/runtime/embedded/port_forward.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/common/dispatcher.h"
#include "source/runtime/embedded/embedded_runtime.h"

#include "test/runtime/embedded/port_servers.h"
#include "test/runtime/embedded/test_util.h"

namespace crisp::runtime {
namespace {

using session::PortError;
using testing::NamespaceThread;
using testing::runUntil;
using testing::TestPortServer;
using Mode = TestPortServer::Mode;

// Records what a PortConnection reports.
class RecordingPortCallbacks : public session::PortCallbacks {
 public:
  void onConnected() override { ++connected; }
  void onData(Buffer& data) override {
    received += data.toString();
    ++data_calls;
  }
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
  int data_calls = 0;
  std::string received;
  std::optional<PortError> error;
};

// A loopback port nothing listens on (bound, then closed).
uint16_t closedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string refusedText(uint16_t port, const std::string& sandbox) {
  const std::string p = std::to_string(port);
  return "failed to connect to localhost:" + p + " in the network of pod sandbox \"" + sandbox +
         "\": 127.0.0.1:" + p + ": connection refused; [::1]:" + p + ": connection refused";
}

PortTarget target(uint16_t port, const std::string& netns = "") {
  PortTarget t;
  t.pod_sandbox_id = "demo";
  t.network_namespace = netns;
  t.port = port;
  return t;
}

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(rng());
  }
  return s;
}

class PortForwardTest : public ::testing::Test {
 protected:
  std::unique_ptr<session::PortConnection> connect(const PortTarget& t,
                                                   NetnsSocketFactory* factory = nullptr) {
    auto conn = connectLoopbackPort(dispatcher_, t, factory, cb_);
    EXPECT_TRUE(conn.ok()) << conn.status();
    return conn.ok() ? std::move(conn).value() : nullptr;
  }

  void write(session::PortConnection& conn, const std::string& bytes) {
    Buffer b;
    b.add(bytes);
    conn.write(b);
    EXPECT_TRUE(b.empty());
  }

  event::Dispatcher dispatcher_;
  RecordingPortCallbacks cb_;
};

TEST_F(PortForwardTest, EchoesBytesAndClosesBothDirections) {
  TestPortServer echo(Mode::kEcho);
  auto conn = connect(target(echo.port()));
  // Bytes written while connecting are sent once connected.
  write(*conn, "hello, ");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.connected == 1; }));
  write(*conn, "pod");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.received == "hello, pod"; }));
  // Our FIN reaches the server, which echoes the end and closes.
  conn->shutdownWrite();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.closed == 1; }));
  EXPECT_EQ(cb_.eofs, 1);
  EXPECT_EQ(cb_.errors, 0);
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
}

TEST_F(PortForwardTest, LargeTransferIsByteExactWithBackpressure) {
  TestPortServer echo(Mode::kEcho);
  auto conn = connect(target(echo.port()));
  const std::string data = randomBytes(8 << 20, 7);
  write(*conn, data);
  // The whole transfer is queued at once: far above the high watermark.
  EXPECT_GT(conn->queuedBytes(), session::PortConnection::kWriteHighWatermark);
  conn->shutdownWrite();
  ASSERT_TRUE(runUntil(
      dispatcher_, [&] { return cb_.ended(); }, std::chrono::seconds(20)));
  EXPECT_EQ(cb_.closed, 1);
  EXPECT_EQ(cb_.received.size(), data.size());
  EXPECT_TRUE(cb_.received == data);
  // It fell below the low watermark once on its way to empty.
  EXPECT_EQ(cb_.drained, 1);
  EXPECT_EQ(conn->queuedBytes(), 0u);
}

TEST_F(PortForwardTest, RefusedPortReportsBothAddresses) {
  const uint16_t port = closedPort();
  auto conn = connect(target(port));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.ended(); }));
  ASSERT_TRUE(cb_.error.has_value());
  EXPECT_EQ(cb_.error->kind, PortError::Kind::kRefused);
  EXPECT_EQ(cb_.error->message, refusedText(port, "demo"));
  EXPECT_EQ(cb_.connected, 0);
}

TEST_F(PortForwardTest, FallsBackToIpv6Loopback) {
  TestPortServer echo(Mode::kEcho, TestPortServer::Family::kIpv6);
  auto conn = connect(target(echo.port()));
  write(*conn, "over v6");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.received == "over v6" || cb_.ended(); }));
  EXPECT_EQ(cb_.connected, 1);
  EXPECT_EQ(cb_.received, "over v6");
}

TEST_F(PortForwardTest, ApplicationResetIsALostConnection) {
  TestPortServer reset(Mode::kReset);
  auto conn = connect(target(reset.port()));
  write(*conn, "hello");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.ended(); }));
  ASSERT_TRUE(cb_.error.has_value());
  EXPECT_EQ(cb_.error->kind, PortError::Kind::kConnectionLost);
  EXPECT_NE(cb_.error->message.find("localhost:" + std::to_string(reset.port())), std::string::npos)
      << cb_.error->message;
  EXPECT_NE(cb_.error->message.find("connection reset by peer"), std::string::npos)
      << cb_.error->message;
}

TEST_F(PortForwardTest, PausedReadingHoldsThePodsBytes) {
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", 4 << 20);
  auto conn = connect(target(source.port()));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.data_calls > 0; }));
  conn->pauseReading(true);
  const size_t at_pause = cb_.received.size();
  // Nothing more arrives while paused, for a while of loop time.
  EXPECT_FALSE(runUntil(
      dispatcher_, [&] { return cb_.received.size() > at_pause; }, std::chrono::milliseconds(200)));
  conn->pauseReading(false);
  conn->shutdownWrite();
  ASSERT_TRUE(runUntil(
      dispatcher_, [&] { return cb_.ended(); }, std::chrono::seconds(10)));
  EXPECT_EQ(cb_.closed, 1);
  ASSERT_EQ(cb_.received.size(), 4u << 20);
  for (size_t i = 0; i < cb_.received.size(); i += 4093) {
    ASSERT_EQ(cb_.received[i], testing::patternByte(i)) << i;
  }
}

// Takes bytes from the connection's pipe as an adapter splicing them to its
// client would: at most `max_take` per offer (the backend reads the rest of
// the offer and delivers it with onData()), and with `defer` only promises
// them: it pauses reading and moves them later (moveOwed()), as a client
// socket that took a frame in part does.
class PipeTakingCallbacks : public RecordingPortCallbacks {
 public:
  explicit PipeTakingCallbacks(size_t max_take, bool defer = false)
      : max_take_(max_take), defer_(defer) {}

  bool canTakeDataPipe() const override { return owed_ == 0; }
  size_t onDataPipe(int pipe_fd, size_t limit) override {
    EXPECT_EQ(owed_, 0u) << "offered while paused";
    const size_t take = std::min(limit, max_take_);
    ++offers;
    if (defer_) {
      pipe_fd_ = pipe_fd;
      owed_ = take;
      connection->pauseReading(true);
    } else {
      readFromPipe(pipe_fd, take);
    }
    return take;
  }

  // Moves what was promised (from the loop, not a callback) and resumes.
  void moveOwed() {
    if (owed_ == 0) {
      return;
    }
    readFromPipe(pipe_fd_, owed_);
    owed_ = 0;
    connection->pauseReading(false);
  }

  session::PortConnection* connection = nullptr;
  size_t from_pipe = 0;
  int offers = 0;

 private:
  void readFromPipe(int fd, size_t n) {
    std::string bytes(n, '\0');
    size_t got = 0;
    while (got < n) {
      const ssize_t r = ::read(fd, bytes.data() + got, n - got);
      ASSERT_GT(r, 0) << "the pipe holds less than offered";
      got += static_cast<size_t>(r);
    }
    received += bytes;
    from_pipe += n;
  }

  const size_t max_take_;
  const bool defer_;
  int pipe_fd_ = -1;
  size_t owed_ = 0;
};

TEST_F(PortForwardTest, PipeOffersTakenInPartKeepTheOrder) {
  constexpr size_t kBytes = 8 << 20;
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  PipeTakingCallbacks cb(40000);
  auto conn = connectLoopbackPort(dispatcher_, target(source.port()), nullptr, cb);
  ASSERT_TRUE(conn.ok()) << conn.status();
  cb.connection = conn->get();
  (*conn)->shutdownWrite();
  ASSERT_TRUE(runUntil(
      dispatcher_, [&] { return cb.ended(); }, std::chrono::seconds(20)));
  EXPECT_EQ(cb.closed, 1);
  EXPECT_EQ(cb.eofs, 1);
  ASSERT_EQ(cb.received.size(), kBytes);
  for (size_t i = 0; i < kBytes; ++i) {
    ASSERT_EQ(cb.received[i], testing::patternByte(i)) << i;
  }
  // Both paths carried bytes: the takes, and the rest of larger offers.
  EXPECT_GT(cb.from_pipe, 0u);
  EXPECT_GT(cb.data_calls, 0);
}

TEST_F(PortForwardTest, BytesPromisedFromThePipeHoldReadingUntilMoved) {
  constexpr size_t kBytes = 8 << 20;
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  PipeTakingCallbacks cb(100000, /*defer=*/true);
  auto conn = connectLoopbackPort(dispatcher_, target(source.port()), nullptr, cb);
  ASSERT_TRUE(conn.ok()) << conn.status();
  cb.connection = conn->get();
  (*conn)->shutdownWrite();
  // Nothing is read from the pipe (nor offered) while bytes are promised:
  // they are still there to move. What the offers left behind is offered
  // again after the resume, ahead of anything newer, and the end comes last.
  ASSERT_TRUE(runUntil(
      dispatcher_,
      [&] {
        cb.moveOwed();
        return cb.ended();
      },
      std::chrono::seconds(30)));
  EXPECT_EQ(cb.closed, 1);
  EXPECT_EQ(cb.errors, 0);
  ASSERT_EQ(cb.received.size(), kBytes);
  for (size_t i = 0; i < kBytes; ++i) {
    ASSERT_EQ(cb.received[i], testing::patternByte(i)) << i;
  }
  EXPECT_EQ(cb.from_pipe, kBytes);
  EXPECT_GT(cb.offers, 1);
}

TEST_F(PortForwardTest, HeldServerFillsTheQueueThenDrains) {
  TestPortServer hold(Mode::kHold);
  auto conn = connect(target(hold.port()));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.connected == 1; }));
  write(*conn, randomBytes(16 << 20, 3));
  // The kernel takes a few MiB at most; the rest stays queued here.
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return conn->queuedBytes() < (16u << 20); }));
  EXPECT_GT(conn->queuedBytes(), session::PortConnection::kWriteHighWatermark);
  EXPECT_EQ(cb_.drained, 0);
  hold.release();
  ASSERT_TRUE(runUntil(
      dispatcher_, [&] { return cb_.drained == 1; }, std::chrono::seconds(10)));
  EXPECT_LE(conn->queuedBytes(), session::PortConnection::kWriteLowWatermark);
}

TEST_F(PortForwardTest, PortZeroIsRefusedAtOnce) {
  auto conn = connectLoopbackPort(dispatcher_, target(0), nullptr, cb_);
  ASSERT_FALSE(conn.ok());
  EXPECT_EQ(conn.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(PortForwardTest, DestroyingTheConnectionStopsCallbacks) {
  TestPortServer echo(Mode::kEcho);
  auto conn = connect(target(echo.port()));
  conn.reset();
  runUntil(
      dispatcher_, [] { return false; }, std::chrono::milliseconds(50));
  EXPECT_EQ(cb_.connected + cb_.errors + cb_.closed, 0);
  EXPECT_TRUE(echo.waitUntil([&] { return echo.accepted() <= 1 && echo.open() == 0; }));
}

// The pod network: a fresh network namespace on a thread of the test.
class NetnsPortForwardTest : public PortForwardTest {
 protected:
  void SetUp() override {
    if (!ns_.ok()) {
      GTEST_SKIP() << "cannot create a network namespace here (needs root): " << ns_.error();
    }
  }

  NamespaceThread ns_;
  NetnsSocketFactory factory_;
};

TEST_F(NetnsPortForwardTest, ConnectsInsideTheNamespaceOnly) {
  TestPortServer echo(Mode::kEcho, TestPortServer::Family::kIpv4, ns_.path());
  auto conn = connect(target(echo.port(), ns_.path()), &factory_);
  write(*conn, "inside");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.received == "inside" || cb_.ended(); }));
  EXPECT_EQ(cb_.received, "inside");
  EXPECT_EQ(factory_.served(), 1u);

  // The same port in crisp's own network has nobody listening.
  RecordingPortCallbacks outside;
  auto host = connectLoopbackPort(dispatcher_, target(echo.port()), nullptr, outside);
  ASSERT_TRUE(host.ok());
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return outside.ended(); }));
  ASSERT_TRUE(outside.error.has_value());
  EXPECT_EQ(outside.error->kind, PortError::Kind::kRefused);
}

TEST_F(NetnsPortForwardTest, RefusedInsideTheNamespace) {
  const uint16_t port = closedPort();
  auto conn = connect(target(port, ns_.path()), &factory_);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.ended(); }));
  ASSERT_TRUE(cb_.error.has_value());
  EXPECT_EQ(cb_.error->kind, PortError::Kind::kRefused);
  EXPECT_EQ(cb_.error->message, refusedText(port, "demo"));
}

TEST_F(NetnsPortForwardTest, MissingNamespaceIsAConnectFailure) {
  auto conn = connect(target(80, "/run/netns/crisp-no-such-namespace"), &factory_);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.ended(); }));
  ASSERT_TRUE(cb_.error.has_value());
  EXPECT_EQ(cb_.error->kind, PortError::Kind::kConnectFailed);
  EXPECT_EQ(cb_.error->message,
            "failed to connect to localhost:80 in the network of pod sandbox \"demo\": cannot "
            "open network namespace \"/run/netns/crisp-no-such-namespace\": no such file or "
            "directory");
}

TEST_F(NetnsPortForwardTest, ConnectionDestroyedWhileTheNamespaceIsEnteredGetsNothing) {
  TestPortServer echo(Mode::kEcho, TestPortServer::Family::kIpv4, ns_.path());
  auto conn = connect(target(echo.port(), ns_.path()), &factory_);
  conn.reset();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return factory_.served() == 1; }));
  runUntil(
      dispatcher_, [] { return false; }, std::chrono::milliseconds(50));
  EXPECT_EQ(cb_.connected + cb_.errors + cb_.closed, 0);
  // The sockets made for it were closed, never connected.
  EXPECT_EQ(echo.accepted(), 0u);
}

TEST_F(NetnsPortForwardTest, StoppedFactoryCancels) {
  factory_.stop();
  auto conn = connect(target(80, ns_.path()), &factory_);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.ended(); }));
  ASSERT_TRUE(cb_.error.has_value());
  EXPECT_EQ(cb_.error->kind, PortError::Kind::kConnectFailed);
  EXPECT_NE(cb_.error->message.find("the runtime is stopping"), std::string::npos);
}

// Through EmbeddedRuntime: configuration, sandbox lookup and namespaces.
class EmbeddedPortForwardTest : public PortForwardTest {};

TEST_F(EmbeddedPortForwardTest, ConnectsToASandboxPortAndRejectsUnknownSandboxes) {
  TestPortServer echo(Mode::kEcho);
  EmbeddedContainerConfig c;
  c.id = "demo";
  EmbeddedRuntime rt({c});
  ASSERT_TRUE(rt.start().ok());
  auto conn = rt.connectPort(dispatcher_, "demo", echo.port(), cb_);
  ASSERT_TRUE(conn.ok()) << conn.status();
  Buffer b;
  b.add("ping");
  (*conn)->write(b);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.received == "ping" || cb_.ended(); }));
  EXPECT_EQ(cb_.received, "ping");

  RecordingPortCallbacks other;
  auto missing = rt.connectPort(dispatcher_, "nope", echo.port(), other);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "pod sandbox \"nope\" not found");
  rt.stop();
  auto stopped = rt.connectPort(dispatcher_, "demo", echo.port(), other);
  EXPECT_EQ(stopped.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EmbeddedPortForwardTest, ValidatesTheNetworkNamespace) {
  struct Case {
    std::string path;
    std::string problem;
  };
  for (const Case& k : {
           Case{"relative/ns",
                "container \"demo\": network_namespace \"relative/ns\" is not an "
                "absolute path"},
           Case{"/no/such/netns",
                "container \"demo\": cannot open network_namespace "
                "\"/no/such/netns\": No such file or directory"},
           Case{"/proc/self/ns/uts",
                "container \"demo\": network_namespace "
                "\"/proc/self/ns/uts\" is not a network namespace"},
       }) {
    EmbeddedContainerConfig c;
    c.id = "demo";
    c.network_namespace = k.path;
    EmbeddedRuntime rt({c});
    absl::Status s = rt.start();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.path;
    EXPECT_EQ(s.message(), k.problem);
  }
}

TEST_F(NetnsPortForwardTest, EmbeddedRuntimeUsesTheContainersNamespace) {
  TestPortServer echo(Mode::kEcho, TestPortServer::Family::kIpv4, ns_.path());
  EmbeddedContainerConfig c;
  c.id = "demo";
  c.network_namespace = ns_.path();
  EmbeddedRuntime rt({c});
  ASSERT_TRUE(rt.start().ok());
  auto conn = rt.connectPort(dispatcher_, "demo", echo.port(), cb_);
  ASSERT_TRUE(conn.ok()) << conn.status();
  Buffer b;
  b.add("in the pod");
  (*conn)->write(b);
  (*conn)->shutdownWrite();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return cb_.ended(); }));
  EXPECT_EQ(cb_.closed, 1);
  EXPECT_EQ(cb_.received, "in the pod");
}

}  // namespace
}  // namespace crisp::runtime
