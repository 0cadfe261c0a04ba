#include "source/stream/ws_portforward.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/runtime/embedded/embedded_runtime.h"
#include "source/session/portforward.h"
#include "source/stream/raw_socket_transport.h"
#include "source/stream/ws_remotecommand.h"

#include "test/runtime/embedded/port_servers.h"
#include "test/stream/port_probe.h"
#include "test/stream/spdy_test_client.h"
#include "test/stream/ws_test_client.h"

namespace crisp::stream {
namespace {

using runtime::testing::patternByte;
using runtime::testing::TestPortServer;
using std::chrono::milliseconds;
using testing::LoopThread;
using testing::PortProbeRuntime;
using testing::WsTestClient;
using websocket::ChannelFraming;
using websocket::MessageType;
using Event = WsTestClient::Event;
using Mode = TestPortServer::Mode;

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

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(rng());
  }
  return s;
}

// The 2-byte little-endian port prefix every data and error channel starts with.
std::string portPrefix(uint16_t port) {
  return std::string{static_cast<char>(port & 0xFF), static_cast<char>(port >> 8)};
}

std::string refusedText(uint16_t port) {
  const std::string p = std::to_string(port);
  return "error forwarding port " + p + " to pod demo, uid : failed to connect to localhost:" + p +
         " in the network of pod sandbox \"demo\": 127.0.0.1:" + p +
         ": connection refused; [::1]:" + p + ": connection refused";
}

class WsPortForwardTest : public ::testing::Test {
 protected:
  static WsPortForwardConfig testConfig() {
    WsPortForwardConfig config;
    config.connection.close_timeout = milliseconds(500);
    config.connection.linger_timeout = milliseconds(200);
    config.tunnel.connection.linger_timeout = milliseconds(200);
    config.tunnel_transport.connection.close_timeout = milliseconds(500);
    config.tunnel_transport.connection.linger_timeout = milliseconds(200);
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
    if (embedded_ != nullptr) {
      embedded_->stop();
    }
  }

  void start(Protocol protocol, std::vector<uint16_t> ports, const std::string& sandbox = "demo",
             const WsPortForwardConfig& config = testConfig()) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = std::make_unique<WsTestClient>(fds[0], protocol == Protocol::kWsPortForwardV4Base64
                                                         ? ChannelFraming::kBase64
                                                         : ChannelFraming::kBinary);
    const int server_fd = fds[1];
    const bool ok = loop_.run([&] {
      UpgradedConnection up;
      up.connection_id = 100;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd, "client");
      up.protocol = protocol;
      up.stream_request.spec = session::PortForwardSpec{sandbox, ports};
      auto created = WsPortForward::create(loop_.dispatcher(), *probe_, std::move(up), config,
                                           [this](WsPortForward&) {
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

  // Waits until every port's prefix arrived on both of its channels.
  bool prefixesArrived(size_t ports) {
    return client_->waitFor([&] {
      for (size_t ch = 0; ch < 2 * ports; ++ch) {
        if (client_->channelData(static_cast<int>(ch)).size() < 2) {
          return false;
        }
      }
      return true;
    });
  }

  bool sessionDone() {
    return loop_.waitUntil([&] { return done_; });
  }
  size_t activePorts() {
    return loop_.run([&] { return session_ != nullptr ? session_->activePorts() : size_t{0}; });
  }
  bool connectionOpen() {
    return loop_.run([&] { return session_ != nullptr && session_->connection().open(); });
  }

  std::unique_ptr<runtime::EmbeddedRuntime> embedded_;
  std::unique_ptr<PortProbeRuntime> probe_;
  LoopThread loop_;
  std::unique_ptr<WsPortForward> session_;
  bool done_ = false;  // loop thread only
  std::unique_ptr<WsTestClient> client_;
};

// The prefixes are the first bytes on the wire, in the kubelet's order; an
// unknown sandbox then gets the SPDY path's text on each error channel, and
// the socket closes normally once both forwards ended.
TEST_F(WsPortForwardTest, PortPrefixFramesAreExactBinary) {
  start(Protocol::kWsPortForwardV4, {8080, 443}, "nope");
  const std::string expected =
      std::string("\x82\x03\x00\x90\x1f", 5) + std::string("\x82\x03\x01\x90\x1f", 5) +
      std::string("\x82\x03\x02\xbb\x01", 5) + std::string("\x82\x03\x03\xbb\x01", 5);
  EXPECT_EQ(client_->readRawUntil(expected), expected);
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->channelData(1),
            "error forwarding port 8080 to pod nope, uid : pod sandbox \"nope\" not found");
  EXPECT_EQ(client_->channelData(3),
            "error forwarding port 443 to pod nope, uid : pod sandbox \"nope\" not found");
  EXPECT_EQ(client_->channelData(0), "");
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  EXPECT_TRUE(sessionDone());
}

TEST_F(WsPortForwardTest, PortPrefixFramesAreExactBase64) {
  start(Protocol::kWsPortForwardV4Base64, {8080, 443}, "nope");
  // '0'+channel, then base64 of the two bytes, in text frames.
  const std::string expected = std::string("\x81\x05") + "0kB8=" + std::string("\x81\x05") +
                               "1kB8=" + std::string("\x81\x05") +
                               "2uwE=" + std::string("\x81\x05") + "3uwE=";
  EXPECT_EQ(client_->readRawUntil(expected), expected);
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->channelData(1),
            "error forwarding port 8080 to pod nope, uid : pod sandbox \"nope\" not found");
  for (const Event& e : client_->events()) {
    if (e.kind == Event::Kind::kMessage) {
      EXPECT_EQ(e.type, MessageType::kText);
    }
  }
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
}

TEST_F(WsPortForwardTest, EchoCarries4MiBByteExact) {
  TestPortServer echo(Mode::kEcho);
  session::SessionMetrics& sm = session::SessionMetrics::get();
  stats::Counter& sessions =
      sm.sessions_total.counter({"portforward", "ws/portforward/v4.channel.k8s.io"});
  stats::Gauge& active =
      sm.sessions_active.gauge({"portforward", "ws/portforward/v4.channel.k8s.io"});
  const uint64_t sessions_before = sessions.value();
  const uint64_t ok_before = session::PortForwardMetrics::get().ok.value();
  start(Protocol::kWsPortForwardV4, {echo.port()});
  EXPECT_EQ(sessions.value(), sessions_before + 1);
  EXPECT_EQ(active.value(), 1);
  const std::string data = randomBytes(4 << 20, 3);
  for (size_t off = 0; off < data.size(); off += kChunk) {
    ASSERT_TRUE(client_->sendChannel(0, std::string_view(data).substr(off, kChunk)))
        << client_->error();
  }
  const std::string prefix = portPrefix(echo.port());
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->channelData(0).size() >= prefix.size() + data.size(); },
      std::chrono::seconds(20)))
      << client_->channelData(0).size();
  const std::string got = client_->channelData(0);
  EXPECT_EQ(got.substr(0, 2), prefix);
  ASSERT_EQ(got.size(), prefix.size() + data.size());
  EXPECT_TRUE(got.substr(2) == data);
  EXPECT_EQ(client_->channelData(1), prefix);  // nothing but the prefix on the error channel
  // Every message we sent stayed within the configured size.
  for (const Event& e : client_->events()) {
    if (e.kind == Event::Kind::kMessage) {
      EXPECT_EQ(e.type, MessageType::kBinary);
      EXPECT_LE(e.data.size(), testConfig().max_output_message_bytes);
    }
  }
  EXPECT_EQ(session::PortForwardMetrics::get().ok.value(), ok_before + 1);
  // The echo server only ends with the client: the socket stays up until then.
  EXPECT_TRUE(connectionOpen());
  client_->close();
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_TRUE(sessionDone());
  EXPECT_EQ(active.value(), 0);
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
}

TEST_F(WsPortForwardTest, EchoOverBase64IsByteExact) {
  TestPortServer echo(Mode::kEcho);
  start(Protocol::kWsPortForwardV4Base64, {echo.port()});
  const std::string data = randomBytes(1 << 20, 4);
  for (size_t off = 0; off < data.size(); off += kChunk) {
    ASSERT_TRUE(client_->sendChannel(0, std::string_view(data).substr(off, kChunk)));
  }
  ASSERT_TRUE(client_->waitFor([&] { return client_->channelData(0).size() >= 2 + data.size(); },
                               std::chrono::seconds(20)));
  EXPECT_TRUE(client_->channelData(0).substr(2) == data);
  for (const Event& e : client_->events()) {
    if (e.kind == Event::Kind::kMessage) {
      EXPECT_EQ(e.type, MessageType::kText);
    }
  }
}

TEST_F(WsPortForwardTest, NoSubprotocolUsesBinaryFraming) {
  TestPortServer echo(Mode::kEcho);
  start(Protocol::kWsPortForwardBinary, {echo.port()});
  client_->sendChannel(0, "plain");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->channelData(0) == portPrefix(echo.port()) + "plain"; }));
}

TEST_F(WsPortForwardTest, RefusedPortGetsTheSpdyPathsTextAndTheSocketCloses) {
  const uint16_t port = closedPort();
  const uint64_t refused_before = session::PortForwardMetrics::get().refused.value();
  start(Protocol::kWsPortForwardV4, {port});
  client_->sendChannel(0, "lost");
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->channelData(1), portPrefix(port) + refusedText(port));
  EXPECT_EQ(client_->channelData(0), portPrefix(port));
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  // The text is the last message before the close.
  const auto last =
      client_->findLast([](const Event& e) { return e.kind == Event::Kind::kMessage; });
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(client_->events()[*last].channel, 1);
  EXPECT_EQ(session::PortForwardMetrics::get().refused.value(), refused_before + 1);
  EXPECT_TRUE(sessionDone());
}

TEST_F(WsPortForwardTest, TwoPortsOnOneSocket) {
  TestPortServer echo(Mode::kEcho);
  TestPortServer http(Mode::kHttp);
  start(Protocol::kWsPortForwardV4, {echo.port(), http.port()});
  ASSERT_TRUE(prefixesArrived(2));
  EXPECT_EQ(client_->channelData(0), portPrefix(echo.port()));
  EXPECT_EQ(client_->channelData(1), portPrefix(echo.port()));
  EXPECT_EQ(client_->channelData(2), portPrefix(http.port()));
  EXPECT_EQ(client_->channelData(3), portPrefix(http.port()));
  client_->sendChannel(0, "hello");
  client_->sendChannel(2, "GET / HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(client_->waitFor([&] {
    return client_->channelData(0) == portPrefix(echo.port()) + "hello" &&
           client_->channelData(2).find("hello from port " + std::to_string(http.port())) !=
               std::string::npos;
  }));
  EXPECT_EQ(client_->channelData(2).substr(2, 17), "HTTP/1.0 200 OK\r\n");
  // The HTTP server closed: that port's forward ended, the other goes on.
  ASSERT_TRUE(loop_.waitUntil([&] { return session_->activePorts() == 1; }));
  EXPECT_TRUE(connectionOpen());
  client_->sendChannel(0, " again");
  client_->sendChannel(2, "dropped: the forward is over");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->channelData(0) == portPrefix(echo.port()) + "hello again"; }));
  EXPECT_FALSE(client_->closeReceived());
  EXPECT_EQ(client_->channelData(1), portPrefix(echo.port()));
  EXPECT_EQ(client_->channelData(3), portPrefix(http.port()));
  EXPECT_EQ(http.accepted(), 1u);
  EXPECT_EQ(echo.accepted(), 1u);
  client_->close();
  EXPECT_TRUE(sessionDone());
}

// Streaming case B02 over the WebSocket protocol: an application that resets
// its connection ends that port's forward without text (text is for connect
// failures), and the other port goes on.
TEST_F(WsPortForwardTest, ApplicationResetEndsOnlyItsPort) {
  TestPortServer reset(Mode::kReset);
  TestPortServer echo(Mode::kEcho);
  start(Protocol::kWsPortForwardV4, {reset.port(), echo.port()});
  ASSERT_TRUE(prefixesArrived(2));
  client_->sendChannel(0, "hello");
  ASSERT_TRUE(loop_.waitUntil([&] { return session_->activePorts() == 1; }));
  EXPECT_EQ(reset.accepted(), 1u);
  client_->sendChannel(2, "still here");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->channelData(2) == portPrefix(echo.port()) + "still here"; }));
  EXPECT_EQ(client_->channelData(1), portPrefix(reset.port()));
  EXPECT_FALSE(client_->closeReceived());
  EXPECT_TRUE(connectionOpen());
}

TEST_F(WsPortForwardTest, SocketClosesOnceEveryForwardEnded) {
  TestPortServer http(Mode::kHttp);
  start(Protocol::kWsPortForwardV4, {http.port(), http.port()});
  ASSERT_TRUE(prefixesArrived(2));
  client_->sendChannel(0, "GET /a HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(loop_.waitUntil([&] { return session_->activePorts() == 1; }));
  EXPECT_TRUE(connectionOpen());
  client_->sendChannel(2, "GET /b HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  for (int ch : {0, 2}) {
    EXPECT_NE(client_->channelData(ch).find("hello from port"), std::string::npos) << ch;
  }
  // The close follows every byte of both answers.
  const auto close = client_->find([](const Event& e) { return e.kind == Event::Kind::kClose; });
  const auto last =
      client_->findLast([](const Event& e) { return e.kind == Event::Kind::kMessage; });
  ASSERT_TRUE(close.has_value() && last.has_value());
  EXPECT_LT(*last, *close);
  EXPECT_TRUE(sessionDone());
  EXPECT_TRUE(http.waitUntil([&] { return http.open() == 0; }));
}

// An application that sends and then closes ends its port's forward: every
// byte it sent arrives, then (the only port) the WebSocket closes normally.
TEST_F(WsPortForwardTest, PodEofEndsTheForwardAfterEveryByte) {
  constexpr uint64_t kBytes = 1 << 20;
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  start(Protocol::kWsPortForwardV4, {source.port()});
  ASSERT_TRUE(client_->waitForEof(std::chrono::seconds(10)));
  const std::string got = client_->channelData(0);
  ASSERT_EQ(got.size(), 2 + kBytes);
  for (size_t i = 0; i < kBytes; i += 997) {
    ASSERT_EQ(got[2 + i], patternByte(i)) << i;
  }
  EXPECT_EQ(client_->channelData(1), portPrefix(source.port()));
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  EXPECT_TRUE(sessionDone());
}

TEST_F(WsPortForwardTest, SlowClientPausesThePod) {
  constexpr uint64_t kBytes = 16 << 20;
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  start(Protocol::kWsPortForwardV4, {source.port()});
  // Not reading: the WebSocket's queue passes its high watermark and the pod
  // connection is paused instead of buffering 16 MiB.
  ASSERT_TRUE(loop_.waitUntil([&] { return probe_->pauses.load() > 0; }));
  const size_t queued = loop_.run([&] { return session_->connection().queuedOutputBytes(); });
  EXPECT_LT(queued, size_t{4} << 20);
  ASSERT_TRUE(client_->waitForEof(std::chrono::seconds(30)));
  const std::string got = client_->channelData(0);
  ASSERT_EQ(got.size(), 2 + kBytes);
  for (size_t i = 0; i < kBytes; i += 65537) {
    ASSERT_EQ(got[2 + i], patternByte(i)) << i;
  }
  EXPECT_GT(probe_->resumes.load(), 0);
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
}

TEST_F(WsPortForwardTest, SlowPodPausesTheClient) {
  TestPortServer hold(Mode::kHold);
  start(Protocol::kWsPortForwardV4, {hold.port()});
  std::thread releaser([&] {
    hold.waitUntil(
        [&] { return probe_->max_queued.load() > session::PortConnection::kWriteHighWatermark; });
    hold.release();
  });
  const std::string data = randomBytes(16 << 20, 5);
  bool sent = true;
  for (size_t off = 0; off < data.size() && sent; off += kChunk) {
    sent = client_->sendChannel(0, std::string_view(data).substr(off, kChunk));
  }
  releaser.join();
  ASSERT_TRUE(sent) << client_->error();
  ASSERT_TRUE(client_->waitFor([&] { return client_->channelData(0).size() >= 2 + data.size(); },
                               std::chrono::seconds(20)));
  EXPECT_TRUE(client_->channelData(0).substr(2) == data);
  // Never far above the high watermark: reading stopped instead.
  EXPECT_LT(probe_->max_queued.load(), size_t{3} << 20);
}

TEST_F(WsPortForwardTest, ClientGoneClosesPodConnections) {
  TestPortServer echo(Mode::kEcho);
  TestPortServer echo2(Mode::kEcho);
  start(Protocol::kWsPortForwardV4, {echo.port(), echo2.port()});
  client_->sendChannel(0, "ping");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->channelData(0) == portPrefix(echo.port()) + "ping"; }));
  EXPECT_TRUE(echo2.waitUntil([&] { return echo2.open() == 1; }));
  EXPECT_EQ(echo.open(), 1u);
  client_->closeSocket();
  ASSERT_TRUE(sessionDone());
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0 && echo2.open() == 0; }));
}

TEST_F(WsPortForwardTest, RequestWithoutPortsIsClosedWithAReason) {
  start(Protocol::kWsPortForwardV4, {});
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->closeCode(), websocket::kCloseInternalError);
  EXPECT_EQ(client_->closeReason(), "ws.portforward.no_ports");
  EXPECT_EQ(client_->count(Event::Kind::kMessage), 0u);
  EXPECT_EQ(probe_->connects.load(), 0);
  EXPECT_TRUE(sessionDone());
}

TEST_F(WsPortForwardTest, TooManyPortsAreRefused) {
  start(Protocol::kWsPortForwardV4,
        std::vector<uint16_t>(websocket::kMaxPortForwardPorts + 1, uint16_t{80}));
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->closeCode(), websocket::kCloseInternalError);
  EXPECT_EQ(client_->closeReason(), "ws.portforward.too_many_ports");
  EXPECT_EQ(probe_->connects.load(), 0);
}

TEST_F(WsPortForwardTest, ErrorChannelsUnknownChannelsAndBadMessagesAreIgnored) {
  TestPortServer echo(Mode::kEcho);
  start(Protocol::kWsPortForwardV4Base64, {echo.port()});
  ASSERT_TRUE(prefixesArrived(1));
  client_->sendChannel(1, "to the error channel");
  client_->sendChannel(7, "past the last port");
  client_->send(MessageType::kText, "");
  client_->send(MessageType::kText, "0!!not base64!!");
  client_->sendChannel(0, "kept");
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->channelData(0) == portPrefix(echo.port()) + "kept"; }));
  EXPECT_EQ(client_->channelData(1), portPrefix(echo.port()));
  EXPECT_TRUE(connectionOpen());
  EXPECT_EQ(echo.bytesRead(), 4u);
}

TEST_F(WsPortForwardTest, CloseEndsTheSessionWithGoingAway) {
  TestPortServer echo(Mode::kEcho);
  start(Protocol::kWsPortForwardV4, {echo.port()});
  ASSERT_TRUE(prefixesArrived(1));
  loop_.run([&] {
    session_->close();
    return 0;
  });
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->closeCode(), websocket::kCloseGoingAway);
  EXPECT_TRUE(sessionDone());
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
}

TEST_F(WsPortForwardTest, CreateRefusesOtherProtocolsAndRequests) {
  struct Case {
    Protocol protocol;
    session::StreamRequest request;
  };
  const std::vector<Case> cases = {
      {Protocol::kWsSpdyTunnelPortForward, {session::PortForwardSpec{"demo", {80}}}},
      {Protocol::kWsV4Channel, {session::PortForwardSpec{"demo", {80}}}},
      {Protocol::kWsPortForwardV4, {session::ExecSpec{}}},
  };
  for (const Case& c : cases) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    WsTestClient client(fds[0]);
    const bool refused = loop_.run([&] {
      UpgradedConnection up;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fds[1], "client");
      up.protocol = c.protocol;
      up.stream_request = c.request;
      auto created =
          WsPortForward::create(loop_.dispatcher(), *probe_, std::move(up), testConfig(), nullptr);
      return !created.ok() && absl::IsInvalidArgument(created.status());
    });
    EXPECT_TRUE(refused) << protocolName(c.protocol);
    EXPECT_TRUE(client.waitForEof());
  }
}

TEST_F(WsPortForwardTest, HandlerServesChannelProtocolsAndTheTunnel) {
  TestPortServer echo(Mode::kEcho);
  WsPortForwardHandler handler(*probe_, testConfig());
  for (Protocol p : {Protocol::kWsPortForwardBinary, Protocol::kWsPortForwardV4,
                     Protocol::kWsPortForwardV4Base64, Protocol::kWsSpdyTunnelPortForward}) {
    EXPECT_TRUE(handler.serves(p)) << protocolName(p);
  }
  for (Protocol p : {Protocol::kWsV4Channel, Protocol::kWsV5Channel, Protocol::kSpdyPortForward,
                     Protocol::kSpdyRemoteCommandV4}) {
    EXPECT_FALSE(handler.serves(p)) << protocolName(p);
  }
  // The WebSocket front handler serves port-forward only through it.
  WsUpgradeHandler with(*probe_, WsRemoteCommandConfig{}, &handler);
  WsUpgradeHandler without(*probe_, WsRemoteCommandConfig{});
  EXPECT_TRUE(with.serves(Protocol::kWsSpdyTunnelPortForward));
  EXPECT_TRUE(with.serves(Protocol::kWsPortForwardV4Base64));
  EXPECT_FALSE(without.serves(Protocol::kWsSpdyTunnelPortForward));
  EXPECT_FALSE(without.serves(Protocol::kWsPortForwardBinary));
  EXPECT_TRUE(without.serves(Protocol::kWsV5Channel));
  EXPECT_FALSE(with.serves(Protocol::kSpdyPortForward));

  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  WsTestClient client(fds[0]);
  int tunnel_fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, tunnel_fds), 0);
  WsTestClient tunnel_client(tunnel_fds[0]);
  loop_.run([&] {
    UpgradedConnection up;
    up.connection_id = 7;
    up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fds[1], "client");
    up.protocol = Protocol::kWsPortForwardV4;
    up.stream_request.spec = session::PortForwardSpec{"demo", {echo.port()}};
    with.onUpgrade(loop_.dispatcher(), std::move(up));
    UpgradedConnection tunnel;
    tunnel.connection_id = 8;
    tunnel.transport =
        std::make_unique<RawSocketTransport>(loop_.dispatcher(), tunnel_fds[1], "client");
    tunnel.protocol = Protocol::kWsSpdyTunnelPortForward;
    tunnel.stream_request.spec = session::PortForwardSpec{"demo", {}};
    with.onUpgrade(loop_.dispatcher(), std::move(tunnel));
    return 0;
  });
  EXPECT_EQ(loop_.run([&] { return handler.activeSessions(loop_.dispatcher()); }), 2u);
  client.sendChannel(0, "via handler");
  ASSERT_TRUE(client.waitFor(
      [&] { return client.channelData(0) == portPrefix(echo.port()) + "via handler"; }));
  loop_.run([&] {
    handler.closeAll(loop_.dispatcher());
    return 0;
  });
  ASSERT_TRUE(client.waitForEof());
  EXPECT_EQ(client.closeCode(), websocket::kCloseGoingAway);
  // The tunnel's SPDY session says GOAWAY inside a binary message, then the
  // WebSocket closes normally.
  ASSERT_TRUE(tunnel_client.waitForEof());
  EXPECT_EQ(tunnel_client.closeCode(), websocket::kCloseNormal);
  ASSERT_EQ(tunnel_client.count(Event::Kind::kMessage), 1u);
  const Event& goaway = tunnel_client.events()[0];
  EXPECT_EQ(goaway.type, MessageType::kBinary);
  // Binary framing took the first byte as a channel: a SPDY control frame
  // starts with 0x80 0x03 (version 3), then type 7.
  EXPECT_EQ(goaway.channel, 0x80);
  EXPECT_EQ(goaway.data.substr(0, 3), std::string("\x03\x00\x07", 3));
  ASSERT_TRUE(loop_.waitUntil([&] { return handler.activeSessions(loop_.dispatcher()) == 0; }));
  loop_.stop();
}

}  // namespace
}  // namespace crisp::stream
