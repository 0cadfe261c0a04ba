#include "source/stream/spdy_portforward.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/runtime/embedded/embedded_runtime.h"
#include "source/session/portforward.h"
#include "source/stream/raw_socket_transport.h"

#include "test/runtime/embedded/port_servers.h"
#include "test/stream/port_probe.h"
#include "test/stream/spdy_test_client.h"

namespace crisp::stream {
namespace {

using runtime::testing::patternByte;
using runtime::testing::TestPortServer;
using std::chrono::milliseconds;
using testing::LoopThread;
using testing::SpdyTestClient;
using Mode = TestPortServer::Mode;
using Frame = SpdyTestClient::Frame;

constexpr size_t kChunk = 64 * 1024;

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

// Open descriptors of this process.
int openFdCount() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (::readdir(d) != nullptr) {
      ++n;
    }
    ::closedir(d);
  }
  return n;
}

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(rng());
  }
  return s;
}

using ProbeRuntime = testing::PortProbeRuntime;

struct PairIds {
  uint32_t error = 0;
  uint32_t data = 0;
};

spdy::HeaderList pairHeaders(const char* type, uint16_t port,
                             const std::optional<std::string>& request_id) {
  spdy::HeaderList h{{"streamtype", type}, {"port", std::to_string(port)}};
  if (request_id.has_value()) {
    h.emplace_back("requestid", *request_id);
  }
  return h;
}

class SpdyPortForwardTest : public ::testing::Test {
 protected:
  static SpdyPortForwardConfig testConfig() {
    SpdyPortForwardConfig config;
    config.connection.linger_timeout = milliseconds(200);
    return config;
  }

  void SetUp() override {
    embedded_ = testing::startDemoRuntime();
    ASSERT_NE(embedded_, nullptr);
    probe_ = std::make_unique<ProbeRuntime>(*embedded_);
  }

  void TearDown() override {
    loop_.stop();
    session_.reset();
    if (embedded_ != nullptr) {
      embedded_->stop();
    }
  }

  void start(const std::string& sandbox = "demo",
             const SpdyPortForwardConfig& config = testConfig()) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = std::make_unique<SpdyTestClient>(fds[0]);
    const int server_fd = fds[1];
    loop_.run([&] {
      UpgradedConnection up;
      up.connection_id = 100;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd, "client");
      up.protocol = Protocol::kSpdyPortForward;
      up.stream_request.spec = session::PortForwardSpec{sandbox, {}};
      session_ = std::make_unique<SpdyPortForward>(
          loop_.dispatcher(), *probe_, std::move(up), config, [this](SpdyPortForward&) {
            done_ = true;
            loop_.dispatcher().deferredDelete(std::move(session_));
          });
      session_->start();
      return 0;
    });
  }

  // Opens a pair as client-go does: error (FIN'd at once), then data.
  PairIds openPair(uint16_t port, const std::optional<std::string>& request_id) {
    PairIds ids;
    ids.error = client_->openStreamWithHeaders(pairHeaders("error", port, request_id));
    client_->data(ids.error, "", true);
    ids.data = client_->openStreamWithHeaders(pairHeaders("data", port, request_id));
    return ids;
  }

  bool pairEnded(const PairIds& ids) {
    return client_->waitFor([&] {
      const auto& e = client_->stream(ids.error);
      return e.fin || e.reset;
    });
  }

  size_t pairCount() {
    return loop_.run([&] { return session_ != nullptr ? session_->pairCount() : size_t{0}; });
  }
  size_t streamCount() {
    return loop_.run(
        [&] { return session_ != nullptr ? session_->connection().streamCount() : size_t{0}; });
  }
  bool waitForNoPairs() {
    return loop_.waitUntil([&] {
      return session_ != nullptr && session_->pairCount() == 0 &&
             session_->connection().streamCount() == 0;
    });
  }
  bool connectionUp() {
    return !client_->goAwayReceived() && !client_->eof() && !done_ &&
           loop_.run([&] { return session_ != nullptr && session_->connection().open(); });
  }

  std::unique_ptr<runtime::EmbeddedRuntime> embedded_;
  std::unique_ptr<ProbeRuntime> probe_;
  LoopThread loop_;
  std::unique_ptr<SpdyPortForward> session_;
  bool done_ = false;  // loop thread only
  std::unique_ptr<SpdyTestClient> client_;
};

TEST_F(SpdyPortForwardTest, EchoPairCarries8MiBByteExact) {
  TestPortServer echo(Mode::kEcho);
  session::SessionMetrics& sm = session::SessionMetrics::get();
  stats::Counter& sessions = sm.sessions_total.counter({"portforward", "spdy/portforward.k8s.io"});
  const uint64_t sessions_before = sessions.value();
  const uint64_t ok_before = session::PortForwardMetrics::get().ok.value();
  start();
  EXPECT_EQ(sessions.value(), sessions_before + 1);
  const PairIds ids = openPair(echo.port(), "0");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->stream(ids.error).replied && client_->stream(ids.data).replied; }));
  const std::string data = randomBytes(8 << 20, 11);
  for (size_t off = 0; off < data.size(); off += kChunk) {
    ASSERT_TRUE(client_->data(ids.data, std::string_view(data).substr(off, kChunk)))
        << client_->error();
  }
  ASSERT_TRUE(client_->data(ids.data, "", true));
  ASSERT_TRUE(
      client_->waitFor([&] { return client_->stream(ids.data).fin; }, std::chrono::seconds(20)))
      << client_->stream(ids.data).data.size();
  const std::string& echoed = client_->stream(ids.data).data;
  ASSERT_EQ(echoed.size(), data.size());
  EXPECT_TRUE(echoed == data);
  // The pair ended normally: the error stream is FIN'd with nothing on it.
  ASSERT_TRUE(pairEnded(ids));
  EXPECT_TRUE(client_->stream(ids.error).fin);
  EXPECT_EQ(client_->stream(ids.error).data, "");
  EXPECT_TRUE(waitForNoPairs());
  EXPECT_EQ(session::PortForwardMetrics::get().ok.value(), ok_before + 1);
  EXPECT_TRUE(connectionUp());
}

TEST_F(SpdyPortForwardTest, ApplicationResetEndsOnlyItsOwnPair) {
  // Streaming case B02, raw.
  TestPortServer reset(Mode::kReset);
  TestPortServer http(Mode::kHttp);
  start();
  const PairIds a = openPair(reset.port(), "1");
  client_->data(a.data, "hello");
  ASSERT_TRUE(client_->waitFor([&] {
    return client_->stream(a.data).fin && client_->stream(a.error).fin;
  })) << client_->error();
  // No text: any error-stream text makes kubectl close the whole connection.
  EXPECT_EQ(client_->stream(a.error).data, "");
  EXPECT_FALSE(client_->stream(a.data).reset);
  EXPECT_EQ(reset.accepted(), 1u);
  // As client-go does once the remote side ended.
  client_->rst(a.data, spdy::RstStatus::kCancel);
  EXPECT_TRUE(connectionUp());

  const PairIds b = openPair(http.port(), "2");
  client_->data(b.data, "GET / HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(b.data).fin; }));
  const std::string& response = client_->stream(b.data).data;
  EXPECT_EQ(response.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << response;
  EXPECT_NE(response.find("hello from port " + std::to_string(http.port())), std::string::npos);
  // client-go resets the data stream once it read our FIN.
  client_->rst(b.data, spdy::RstStatus::kCancel);
  ASSERT_TRUE(pairEnded(b));
  EXPECT_EQ(client_->stream(b.error).data, "");
  EXPECT_TRUE(waitForNoPairs());
  EXPECT_TRUE(connectionUp());
  EXPECT_EQ(client_->count(Frame::Type::kGoAway), 0u);
}

TEST_F(SpdyPortForwardTest, PodEofEndsTheErrorStreamWithoutWaitingForTheClient) {
  // kubectl 1.27 closes its local connection (and only then FINs the data
  // stream) once the error stream ended: the server must not wait for the
  // client's FIN before ending the error stream.
  TestPortServer http(Mode::kHttp);
  start();
  const PairIds ids = openPair(http.port(), "1");
  client_->data(ids.data, "GET / HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->stream(ids.data).fin && client_->stream(ids.error).fin; }));
  EXPECT_EQ(client_->stream(ids.error).data, "");
  EXPECT_NE(client_->stream(ids.data).data.find("hello from port"), std::string::npos);
  EXPECT_EQ(pairCount(), 1u);  // the client may still send
  client_->data(ids.data, "", true);
  EXPECT_TRUE(waitForNoPairs());
  EXPECT_TRUE(connectionUp());
}

TEST_F(SpdyPortForwardTest, RefusedPortGetsTheKubeletsTextAndOthersGoOn) {
  TestPortServer echo(Mode::kEcho);
  const uint16_t port = closedPort();
  const uint64_t refused_before = session::PortForwardMetrics::get().refused.value();
  start();
  const PairIds ids = openPair(port, "5");
  client_->data(ids.data, "lost");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->stream(ids.error).fin && client_->stream(ids.data).reset; }));
  const std::string p = std::to_string(port);
  EXPECT_EQ(client_->stream(ids.error).data,
            "error forwarding port " + p + " to pod demo, uid : failed to connect to localhost:" +
                p + " in the network of pod sandbox \"demo\": 127.0.0.1:" + p +
                ": connection refused; [::1]:" + p + ": connection refused");
  EXPECT_EQ(client_->stream(ids.data).rst_status, spdy::RstStatus::kCancel);
  EXPECT_EQ(session::PortForwardMetrics::get().refused.value(), refused_before + 1);
  EXPECT_TRUE(waitForNoPairs());

  const PairIds next = openPair(echo.port(), "6");
  client_->data(next.data, "still here", true);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(next.data).fin; }));
  EXPECT_EQ(client_->stream(next.data).data, "still here");
  EXPECT_TRUE(connectionUp());
}

TEST_F(SpdyPortForwardTest, UnknownSandboxGetsTheRuntimesText) {
  const uint64_t errors_before = session::PortForwardMetrics::get().error.value();
  start("nope");
  const PairIds ids = openPair(8080, "1");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.error).fin; }));
  EXPECT_EQ(client_->stream(ids.error).data,
            "error forwarding port 8080 to pod nope, uid : pod sandbox \"nope\" not found");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).reset; }));
  EXPECT_EQ(session::PortForwardMetrics::get().error.value(), errors_before + 1);
  EXPECT_TRUE(waitForNoPairs());
}

TEST_F(SpdyPortForwardTest, TwentyThousandPairsLeaveNoTrace) {
  // Streaming case B07, raw: every finished pair leaves every table.
  TestPortServer echo(Mode::kEcho);
  start();
  const int fds_before = openFdCount();
  constexpr int kPairs = 20000;
  constexpr int kBatch = 100;
  for (int first = 1; first <= kPairs; first += kBatch) {
    std::vector<PairIds> batch;
    client_->cork();
    for (int r = first; r < first + kBatch; ++r) {
      PairIds ids;
      ids.error = client_->openStreamWithHeaders(
          pairHeaders("error", echo.port(), std::to_string(r)), spdy::kFlagFin);
      ids.data =
          client_->openStreamWithHeaders(pairHeaders("data", echo.port(), std::to_string(r)));
      client_->data(ids.data, "x", true);
      batch.push_back(ids);
    }
    ASSERT_TRUE(client_->uncork()) << client_->error();
    ASSERT_TRUE(client_->waitFor([&] {
      return std::all_of(batch.begin(), batch.end(), [&](const PairIds& ids) {
        return client_->stream(ids.data).fin && client_->stream(ids.error).fin;
      });
    })) << "batch from request "
        << first;
    for (const PairIds& ids : batch) {
      ASSERT_EQ(client_->stream(ids.data).data, "x");
      ASSERT_EQ(client_->stream(ids.error).data, "");
    }
  }
  EXPECT_TRUE(waitForNoPairs());
  EXPECT_EQ(loop_.run([&] { return session_->pairsFinished(); }), uint64_t{kPairs});
  EXPECT_EQ(echo.accepted(), uint64_t{kPairs});
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
  // Sockets close on the loop iteration after their pair (or server
  // connection) ended.
  EXPECT_TRUE(echo.waitUntil([&] { return openFdCount() <= fds_before; }))
      << openFdCount() << " descriptors open, " << fds_before << " before";
  // A request id may be used again once its pair is gone.
  const PairIds again = openPair(echo.port(), "1");
  client_->data(again.data, "again", true);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(again.data).fin; }));
  EXPECT_EQ(client_->stream(again.data).data, "again");
  EXPECT_TRUE(connectionUp());
}

TEST_F(SpdyPortForwardTest, AdmissionFailuresAreResetWithCancel) {
  TestPortServer echo(Mode::kEcho);
  start();
  const std::string port = std::to_string(echo.port());
  const std::vector<spdy::HeaderList> bad = {
      {{"streamtype", "data"}, {"requestid", "1"}},
      {{"streamtype", "data"}, {"port", ""}},
      {{"streamtype", "data"}, {"port", "0"}},
      {{"streamtype", "data"}, {"port", "65536"}},
      {{"streamtype", "data"}, {"port", "http"}},
      {{"streamtype", "data"}, {"port", "-80"}},
      {{"port", port}},
      {{"streamtype", ""}, {"port", port}},
      {{"streamtype", "DATA"}, {"port", port}},
      {{"streamtype", "stdout"}, {"port", port}},
  };
  for (const spdy::HeaderList& headers : bad) {
    const uint32_t id = client_->openStreamWithHeaders(headers);
    ASSERT_TRUE(client_->waitFor([&] { return client_->stream(id).reset; })) << id;
    EXPECT_EQ(client_->stream(id).rst_status, spdy::RstStatus::kCancel);
    EXPECT_FALSE(client_->stream(id).replied);
  }
  EXPECT_EQ(pairCount(), 0u);
  EXPECT_EQ(probe_->connects.load(), 0);
  const PairIds ids = openPair(echo.port(), "1");
  client_->data(ids.data, "admitted", true);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).fin; }));
  EXPECT_EQ(client_->stream(ids.data).data, "admitted");
  EXPECT_TRUE(connectionUp());
}

TEST_F(SpdyPortForwardTest, PartnerTimeoutWritesTheKubeletsText) {
  SpdyPortForwardConfig config = testConfig();
  config.stream_creation_timeout = milliseconds(200);
  start("demo", config);
  const uint32_t error = client_->openStreamWithHeaders(pairHeaders("error", 80, "7"));
  const uint32_t data = client_->openStreamWithHeaders(pairHeaders("data", 80, "8"));
  ASSERT_TRUE(
      client_->waitFor([&] { return client_->stream(error).fin && client_->stream(data).reset; }));
  EXPECT_EQ(client_->stream(error).data, "(conn=100, request=7) timed out waiting for streams");
  EXPECT_EQ(client_->stream(data).rst_status, spdy::RstStatus::kCancel);
  EXPECT_EQ(pairCount(), 0u);
  EXPECT_EQ(probe_->connects.load(), 0);
  EXPECT_TRUE(connectionUp());
}

TEST_F(SpdyPortForwardTest, DuplicateStreamIsRefusedAndReported) {
  TestPortServer echo(Mode::kEcho);
  start();
  const uint32_t error = client_->openStreamWithHeaders(pairHeaders("error", echo.port(), "3"));
  const uint32_t twin = client_->openStreamWithHeaders(pairHeaders("error", echo.port(), "3"));
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(twin).reset; }));
  EXPECT_EQ(client_->stream(twin).rst_status, spdy::RstStatus::kCancel);
  const std::string text = "error processing stream for request 3: error stream already assigned";
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(error).data == text; }));
  EXPECT_FALSE(client_->stream(error).fin);
  // The pair itself goes on.
  const uint32_t data = client_->openStreamWithHeaders(pairHeaders("data", echo.port(), "3"));
  client_->data(data, "paired", true);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(data).fin; }));
  EXPECT_EQ(client_->stream(data).data, "paired");
  EXPECT_TRUE(connectionUp());
}

TEST_F(SpdyPortForwardTest, PairsByStreamIdWithoutRequestId) {
  TestPortServer echo(Mode::kEcho);
  start();
  for (const char* text : {"first", "second"}) {
    const PairIds ids = openPair(echo.port(), std::nullopt);
    EXPECT_EQ(ids.data, ids.error + 2);
    client_->data(ids.data, text, true);
    ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).fin; }));
    EXPECT_EQ(client_->stream(ids.data).data, text);
    ASSERT_TRUE(pairEnded(ids));
  }
  EXPECT_TRUE(waitForNoPairs());
}

TEST_F(SpdyPortForwardTest, ClientFinHalfClosesAndThePodKeepsSending) {
  constexpr uint64_t kBytes = 4 << 20;
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  start();
  const PairIds ids = openPair(source.port(), "1");
  client_->data(ids.data, "", true);
  ASSERT_TRUE(
      client_->waitFor([&] { return client_->stream(ids.data).fin; }, std::chrono::seconds(10)));
  const std::string& got = client_->stream(ids.data).data;
  ASSERT_EQ(got.size(), kBytes);
  for (size_t i = 0; i < got.size(); i += 997) {
    ASSERT_EQ(got[i], patternByte(i)) << i;
  }
  ASSERT_TRUE(pairEnded(ids));
  EXPECT_EQ(client_->stream(ids.error).data, "");
  EXPECT_TRUE(waitForNoPairs());
}

TEST_F(SpdyPortForwardTest, SlowClientPausesThePod) {
  constexpr uint64_t kBytes = 64 << 20;
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  start();
  const PairIds ids = openPair(source.port(), "1");
  // Not reading: the output queue passes its high watermark and the pod
  // connection is paused instead of buffering 64 MiB.
  ASSERT_TRUE(loop_.waitUntil([&] { return probe_->pauses.load() > 0; }));
  const size_t queued = loop_.run([&] { return session_->connection().queuedOutputBytes(); });
  EXPECT_LT(queued, size_t{4} << 20);
  client_->data(ids.data, "", true);
  ASSERT_TRUE(
      client_->waitFor([&] { return client_->stream(ids.data).fin; }, std::chrono::seconds(30)));
  const std::string& got = client_->stream(ids.data).data;
  ASSERT_EQ(got.size(), kBytes);
  for (size_t i = 0; i < got.size(); i += 65537) {
    ASSERT_EQ(got[i], patternByte(i)) << i;
  }
  EXPECT_GT(probe_->resumes.load(), 0);
}

TEST_F(SpdyPortForwardTest, SlowPodPausesTheClient) {
  TestPortServer hold(Mode::kHold);
  start();
  const PairIds ids = openPair(hold.port(), "1");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).replied; }));
  // The pod reads nothing until the queue toward it is full; meanwhile the
  // client keeps sending (its sends block once crisp stops reading).
  std::thread releaser([&] {
    hold.waitUntil(
        [&] { return probe_->max_queued.load() > session::PortConnection::kWriteHighWatermark; });
    hold.release();
  });
  const std::string data = randomBytes(16 << 20, 5);
  bool sent = true;
  for (size_t off = 0; off < data.size() && sent; off += kChunk) {
    sent = client_->data(ids.data, std::string_view(data).substr(off, kChunk));
  }
  releaser.join();
  ASSERT_TRUE(sent) << client_->error();
  client_->data(ids.data, "", true);
  ASSERT_TRUE(
      client_->waitFor([&] { return client_->stream(ids.data).fin; }, std::chrono::seconds(20)));
  EXPECT_TRUE(client_->stream(ids.data).data == data);
  // Never far above the high watermark: reading stopped instead.
  EXPECT_LT(probe_->max_queued.load(), size_t{3} << 20);
}

TEST_F(SpdyPortForwardTest, ClientGoneClosesPodConnections) {
  TestPortServer echo(Mode::kEcho);
  start();
  const PairIds ids = openPair(echo.port(), "1");
  client_->data(ids.data, "ping");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).data == "ping"; }));
  EXPECT_EQ(echo.open(), 1u);
  client_->closeSocket();
  ASSERT_TRUE(loop_.waitUntil([&] { return done_; }));
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
}

TEST_F(SpdyPortForwardTest, PairLimitRefusesNewPairs) {
  SpdyPortForwardConfig config = testConfig();
  config.max_pairs = 2;
  start("demo", config);
  const uint32_t a = client_->openStreamWithHeaders(pairHeaders("error", 80, "1"));
  const uint32_t b = client_->openStreamWithHeaders(pairHeaders("error", 80, "2"));
  const uint32_t c = client_->openStreamWithHeaders(pairHeaders("error", 80, "3"));
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(c).reset; }));
  EXPECT_TRUE(client_->stream(a).replied);
  EXPECT_TRUE(client_->stream(b).replied);
  EXPECT_FALSE(client_->stream(c).replied);
  EXPECT_EQ(pairCount(), 2u);
}

TEST_F(SpdyPortForwardTest, EarlyDataBeyondTheLimitResetsTheStream) {
  SpdyPortForwardConfig config = testConfig();
  config.max_early_data_bytes = 1024;
  start("demo", config);
  const uint32_t data = client_->openStreamWithHeaders(pairHeaders("data", 80, "9"));
  client_->data(data, std::string(1024, 'a'));
  client_->data(data, "b");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(data).reset; }));
  EXPECT_EQ(client_->stream(data).rst_status, spdy::RstStatus::kFlowControlError);
  EXPECT_EQ(pairCount(), 0u);
  EXPECT_EQ(probe_->connects.load(), 0);
  EXPECT_TRUE(connectionUp());
}

TEST_F(SpdyPortForwardTest, HandlerServesPortForwardAndRefusesOthers) {
  TestPortServer echo(Mode::kEcho);
  SpdyPortForwardHandler handler(*probe_, testConfig());
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  SpdyTestClient client(fds[0]);
  loop_.run([&] {
    UpgradedConnection up;
    up.connection_id = 7;
    up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fds[1], "client");
    up.protocol = Protocol::kSpdyPortForward;
    up.stream_request.spec = session::PortForwardSpec{"demo", {echo.port()}};
    handler.onUpgrade(loop_.dispatcher(), std::move(up));
    return 0;
  });
  EXPECT_EQ(loop_.run([&] { return handler.activeSessions(loop_.dispatcher()); }), 1u);
  const uint32_t error = client.openStreamWithHeaders(pairHeaders("error", echo.port(), "0"));
  const uint32_t data = client.openStreamWithHeaders(pairHeaders("data", echo.port(), "0"));
  client.data(data, "via handler", true);
  ASSERT_TRUE(client.waitFor([&] { return client.stream(data).fin; }));
  EXPECT_EQ(client.stream(data).data, "via handler");
  (void)error;
  loop_.run([&] {
    handler.closeAll(loop_.dispatcher());
    return 0;
  });
  ASSERT_TRUE(client.waitFor([&] { return client.goAwayReceived(); }));
  client.closeSocket();
  ASSERT_TRUE(loop_.waitUntil([&] { return handler.activeSessions(loop_.dispatcher()) == 0; }));

  // An exec request handed to the port-forward handler is closed at once.
  int other[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, other), 0);
  SpdyTestClient exec_client(other[0]);
  loop_.run([&] {
    UpgradedConnection up;
    up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), other[1], "client");
    up.protocol = Protocol::kSpdyRemoteCommandV4;
    up.stream_request.spec = session::ExecSpec{};
    handler.onUpgrade(loop_.dispatcher(), std::move(up));
    return 0;
  });
  EXPECT_TRUE(exec_client.waitForEof());
  EXPECT_EQ(loop_.run([&] { return handler.activeSessions(loop_.dispatcher()); }), 0u);
  loop_.stop();
}

}  // namespace
}  // namespace crisp::stream
