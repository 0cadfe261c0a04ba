// The SPDY-over-WebSocket tunnel (`SPDY/3.1+portforward.k8s.io`): a
// SpdyPortForward on a WsTransport, driven by a SPDY test client whose bytes
// travel inside WebSocket binary messages (WsTunnelBridge), as kubectl 1.31+
// sends them.

#include <algorithm>
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
#include "source/stream/spdy_portforward.h"
#include "source/stream/ws_transport.h"

#include "test/runtime/embedded/port_servers.h"
#include "test/stream/port_probe.h"
#include "test/stream/spdy_test_client.h"
#include "test/stream/ws_test_client.h"
#include "test/stream/ws_tunnel_bridge.h"

namespace crisp::stream {
namespace {

using runtime::testing::patternByte;
using runtime::testing::TestPortServer;
using std::chrono::milliseconds;
using testing::LoopThread;
using testing::PortProbeRuntime;
using testing::SpdyTestClient;
using testing::WsTestClient;
using testing::WsTunnelBridge;
using Frame = SpdyTestClient::Frame;
using Mode = TestPortServer::Mode;

constexpr size_t kChunk = 64 * 1024;
constexpr char kTunnelLabel[] = "ws/SPDY/3.1+portforward.k8s.io";

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

struct PairIds {
  uint32_t error = 0;
  uint32_t data = 0;
};

spdy::HeaderList pairHeaders(const char* type, uint16_t port, const std::string& request_id) {
  return {{"streamtype", type}, {"port", std::to_string(port)}, {"requestid", request_id}};
}

class WsTunnelTest : public ::testing::Test {
 protected:
  static SpdyPortForwardConfig sessionConfig() {
    SpdyPortForwardConfig config;
    config.connection.linger_timeout = milliseconds(200);
    return config;
  }
  static WsTransportConfig transportConfig() {
    WsTransportConfig config;
    config.connection.close_timeout = milliseconds(500);
    config.connection.linger_timeout = milliseconds(200);
    return config;
  }

  void SetUp() override {
    embedded_ = testing::startDemoRuntime();
    ASSERT_NE(embedded_, nullptr);
    probe_ = std::make_unique<PortProbeRuntime>(*embedded_);
  }

  void TearDown() override {
    loop_.stop();
    session_.reset();
    client_.reset();
    bridge_.reset();
    if (embedded_ != nullptr) {
      embedded_->stop();
    }
  }

  void start(const std::string& sandbox = "demo",
             const WsTransportConfig& transport_config = transportConfig()) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    int plain = -1;
    bridge_ = std::make_unique<WsTunnelBridge>(fds[0], &plain);
    client_ = std::make_unique<SpdyTestClient>(plain);
    const int server_fd = fds[1];
    const bool ok = loop_.run([&] {
      UpgradedConnection up;
      up.connection_id = 100;
      up.protocol = Protocol::kWsSpdyTunnelPortForward;
      up.stream_request.spec = session::PortForwardSpec{sandbox, {}};
      auto tunnel = WsTransport::create(
          loop_.dispatcher(),
          std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd, "client"), 100,
          transport_config);
      if (!tunnel.ok()) {
        return false;
      }
      transport_ = tunnel->get();
      up.transport = std::move(tunnel).value();
      session_ = std::make_unique<SpdyPortForward>(
          loop_.dispatcher(), *probe_, std::move(up), sessionConfig(), [this](SpdyPortForward&) {
            done_ = true;
            transport_ = nullptr;
            loop_.dispatcher().deferredDelete(std::move(session_));
          });
      session_->start();
      return true;
    });
    ASSERT_TRUE(ok);
  }

  // Opens a pair as client-go does: error (FIN'd at once), then data.
  PairIds openPair(uint16_t port, const std::string& request_id) {
    PairIds ids;
    ids.error = client_->openStreamWithHeaders(pairHeaders("error", port, request_id));
    client_->data(ids.error, "", true);
    ids.data = client_->openStreamWithHeaders(pairHeaders("data", port, request_id));
    return ids;
  }

  bool waitForNoPairs() {
    return loop_.waitUntil([&] {
      return session_ != nullptr && session_->pairCount() == 0 &&
             session_->connection().streamCount() == 0;
    });
  }
  bool tunnelUp() {
    return !client_->goAwayReceived() && !client_->eof() && bridge_->closeCode() == 0 &&
           loop_.run([&] {
             return session_ != nullptr && session_->connection().open() &&
                    transport_->connection().open();
           });
  }
  bool sessionDone() {
    return loop_.waitUntil([&] { return done_; });
  }

  std::unique_ptr<runtime::EmbeddedRuntime> embedded_;
  std::unique_ptr<PortProbeRuntime> probe_;
  LoopThread loop_;
  std::unique_ptr<SpdyPortForward> session_;
  WsTransport* transport_ = nullptr;  // owned by the session; loop thread only
  bool done_ = false;                 // loop thread only
  std::unique_ptr<WsTunnelBridge> bridge_;
  std::unique_ptr<SpdyTestClient> client_;
};

TEST_F(WsTunnelTest, EchoPairCarries4MiBByteExact) {
  TestPortServer echo(Mode::kEcho);
  session::SessionMetrics& sm = session::SessionMetrics::get();
  stats::Counter& sessions = sm.sessions_total.counter({"portforward", kTunnelLabel});
  const uint64_t sessions_before = sessions.value();
  start();
  EXPECT_EQ(sessions.value(), sessions_before + 1);
  EXPECT_EQ(sm.sessions_active.gauge({"portforward", kTunnelLabel}).value(), 1);
  const PairIds ids = openPair(echo.port(), "0");
  ASSERT_TRUE(client_->waitFor([&] {
    return client_->stream(ids.error).replied && client_->stream(ids.data).replied;
  })) << client_->error()
      << bridge_->error();
  const std::string data = randomBytes(4 << 20, 21);
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
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.error).fin; }));
  EXPECT_EQ(client_->stream(ids.error).data, "");
  EXPECT_TRUE(waitForNoPairs());
  EXPECT_TRUE(tunnelUp());
  // Everything came in binary messages of bounded size.
  EXPECT_EQ(bridge_->textMessages(), 0u);
  EXPECT_GE(bridge_->binaryMessages(), data.size() / transportConfig().max_message_bytes);
  EXPECT_TRUE(bridge_->error().empty()) << bridge_->error();
}

TEST_F(WsTunnelTest, PingIsEchoed) {
  start();
  ASSERT_TRUE(client_->ping(7));
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Frame::Type::kPing) == 1; }));
  const auto ping = client_->find([](const Frame& f) { return f.type == Frame::Type::kPing; });
  EXPECT_EQ(client_->frames()[*ping].ping_id, 7u);
  EXPECT_TRUE(tunnelUp());
}

TEST_F(WsTunnelTest, ApplicationResetEndsOnlyItsOwnPair) {
  // Streaming case B02 through the tunnel.
  TestPortServer reset(Mode::kReset);
  TestPortServer http(Mode::kHttp);
  start();
  const PairIds a = openPair(reset.port(), "1");
  client_->data(a.data, "hello");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->stream(a.data).fin && client_->stream(a.error).fin; }));
  EXPECT_EQ(client_->stream(a.error).data, "");
  client_->rst(a.data, spdy::RstStatus::kCancel);
  EXPECT_TRUE(tunnelUp());

  const PairIds b = openPair(http.port(), "2");
  client_->data(b.data, "GET / HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(b.data).fin; }));
  const std::string& response = client_->stream(b.data).data;
  EXPECT_EQ(response.rfind("HTTP/1.0 200 OK\r\n", 0), 0u) << response;
  client_->rst(b.data, spdy::RstStatus::kCancel);
  EXPECT_TRUE(waitForNoPairs());
  EXPECT_TRUE(tunnelUp());
  EXPECT_EQ(client_->count(Frame::Type::kGoAway), 0u);
}

TEST_F(WsTunnelTest, ManyPairsLeaveNoTrace) {
  // Streaming case B07 through the tunnel.
  TestPortServer echo(Mode::kEcho);
  start();
  const int fds_before = openFdCount();
  constexpr int kPairs = 5000;
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
  EXPECT_TRUE(echo.waitUntil([&] { return openFdCount() <= fds_before; }))
      << openFdCount() << " descriptors open, " << fds_before << " before";
  EXPECT_TRUE(tunnelUp());
}

TEST_F(WsTunnelTest, RefusedPortGetsTheKubeletsText) {
  const uint16_t port = closedPort();
  start();
  const PairIds ids = openPair(port, "5");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->stream(ids.error).fin && client_->stream(ids.data).reset; }));
  const std::string p = std::to_string(port);
  EXPECT_EQ(client_->stream(ids.error).data,
            "error forwarding port " + p + " to pod demo, uid : failed to connect to localhost:" +
                p + " in the network of pod sandbox \"demo\": 127.0.0.1:" + p +
                ": connection refused; [::1]:" + p + ": connection refused");
  EXPECT_TRUE(waitForNoPairs());
  EXPECT_TRUE(tunnelUp());
}

TEST_F(WsTunnelTest, SlowClientPausesThePod) {
  constexpr uint64_t kBytes = 32 << 20;
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  start();
  const PairIds ids = openPair(source.port(), "1");
  // The SPDY client reads nothing: the WebSocket's queue fills, the tunnel
  // holds the SPDY output back, and the pod connection is paused.
  ASSERT_TRUE(loop_.waitUntil([&] { return probe_->pauses.load() > 0; }, std::chrono::seconds(10)));
  const size_t queued = loop_.run([&] {
    return session_->connection().queuedOutputBytes() +
           transport_->connection().queuedOutputBytes();
  });
  EXPECT_LT(queued, size_t{4} << 20);
  // What a SPDY PING reply (sent ahead of the session's queued DATA) still
  // waits behind: the tunnel's held bytes and the WebSocket's socket queue.
  const size_t below_spdy = loop_.run(
      [&] { return transport_->queuedBytes() + transport_->connection().queuedOutputBytes(); });
  EXPECT_LT(below_spdy, size_t{512} << 10);
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

TEST_F(WsTunnelTest, SlowPodPausesTheClient) {
  TestPortServer hold(Mode::kHold);
  start();
  const PairIds ids = openPair(hold.port(), "1");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).replied; }));
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
  EXPECT_LT(probe_->max_queued.load(), size_t{3} << 20);
}

TEST_F(WsTunnelTest, ClientCloseFrameEndsTheSessionAndPodConnections) {
  TestPortServer echo(Mode::kEcho);
  start();
  const PairIds ids = openPair(echo.port(), "1");
  client_->data(ids.data, "ping");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).data == "ping"; }));
  EXPECT_EQ(echo.open(), 1u);
  bridge_->sendClose(websocket::kCloseNormal);
  ASSERT_TRUE(sessionDone());
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
  EXPECT_TRUE(echo.waitUntil([&] { return bridge_->closeCode() == websocket::kCloseNormal; }));
}

TEST_F(WsTunnelTest, DroppedTunnelClosesPodConnections) {
  TestPortServer echo(Mode::kEcho);
  start();
  const PairIds ids = openPair(echo.port(), "1");
  client_->data(ids.data, "ping");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).data == "ping"; }));
  bridge_->dropConnection();
  ASSERT_TRUE(sessionDone());
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
  EXPECT_TRUE(client_->waitForEof());
}

TEST_F(WsTunnelTest, TextMessageIsNotSpdyAndEndsTheTunnel) {
  TestPortServer echo(Mode::kEcho);
  start();
  const PairIds ids = openPair(echo.port(), "1");
  client_->data(ids.data, "ping");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).data == "ping"; }));
  bridge_->sendText("not spdy");
  ASSERT_TRUE(sessionDone());
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
  EXPECT_TRUE(
      echo.waitUntil([&] { return bridge_->closeCode() == websocket::kCloseUnsupportedData; }));
}

TEST_F(WsTunnelTest, BytesThatAreNotSpdyGetGoAwayAndAClose) {
  TestPortServer echo(Mode::kEcho);
  start();
  const PairIds ids = openPair(echo.port(), "1");
  client_->data(ids.data, "ping");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(ids.data).data == "ping"; }));
  // A control frame of version 2: not SPDY/3.1.
  client_->raw(std::string("\x80\x02\x00\x01\x00\x00\x00\x00", 8));
  ASSERT_TRUE(client_->waitFor([&] { return client_->goAwayReceived(); }));
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kProtocolError);
  ASSERT_TRUE(sessionDone());
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
  EXPECT_TRUE(loop_.waitUntil([&] { return bridge_->closeCode() == websocket::kCloseNormal; }));
}

TEST_F(WsTunnelTest, ServerCloseSendsGoAwayThenClosesTheWebSocket) {
  start();
  loop_.run([&] {
    session_->close();
    return 0;
  });
  ASSERT_TRUE(client_->waitFor([&] { return client_->goAwayReceived(); }));
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kOk);
  ASSERT_TRUE(sessionDone());
  EXPECT_TRUE(loop_.waitUntil([&] { return bridge_->closeCode() == websocket::kCloseNormal; }));
  EXPECT_TRUE(client_->waitForEof());
}

// What the tunnel's owner sees of its transport; nothing is asserted on it.
class IgnoringTransportCallbacks : public TransportCallbacks {
 public:
  void onTransportData(Buffer& data) override { data.drain(data.length()); }
  void onTransportEof() override {}
  void onTransportDrained() override {}
  void onTransportError(const std::string&) override {}
};

// Messages end where the segments of what was written end (the header and
// payload of a SPDY frame, one read each), so none is cut and copied; only a
// segment larger than a message is.
TEST(WsTransportTest, MessagesEndAtSegmentBoundaries) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  WsTestClient client(fds[0]);
  LoopThread loop;
  IgnoringTransportCallbacks callbacks;
  std::unique_ptr<WsTransport> transport;
  WsTransportConfig config;
  config.max_message_bytes = 128 * 1024;
  // Three pieces of 40 KiB fit in one message whole, the fourth starts the
  // next; then one piece of 200 KiB is cut at the limit.
  const std::vector<size_t> pieces = {40 * 1024, 40 * 1024, 40 * 1024, 40 * 1024, 200 * 1024};
  std::string expected;
  ASSERT_TRUE(loop.run([&] {
    auto made = WsTransport::create(
        loop.dispatcher(),
        std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "client"), 7, config);
    if (!made.ok()) {
      return false;
    }
    transport = std::move(made).value();
    transport->setCallbacks(callbacks);
    transport->start();
    Buffer data;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const std::string bytes(pieces[i], static_cast<char>('a' + i));
      Buffer segment;
      segment.add(bytes);
      data.move(segment);
      expected += bytes;
    }
    transport->write(data);
    return true;
  }));
  std::string received;
  std::vector<size_t> sizes;
  auto collect = [&] {
    received.clear();
    sizes.clear();
    for (const WsTestClient::Event& e : client.events()) {
      if (e.kind == WsTestClient::Event::Kind::kMessage) {
        // The client reads a binary message's first byte as its channel.
        received += static_cast<char>(e.channel) + e.data;
        sizes.push_back(e.data.size() + 1);
      }
    }
    return received.size() >= expected.size();
  };
  ASSERT_TRUE(client.waitFor(collect)) << client.error();
  EXPECT_EQ(sizes, (std::vector<size_t>{120 * 1024, 40 * 1024, 128 * 1024, 72 * 1024}));
  EXPECT_TRUE(received == expected);
  loop.run([&] {
    transport.reset();
    return 0;
  });
}

}  // namespace
}  // namespace crisp::stream
