// Port-forward bytes from the pod spliced into a SPDY or WebSocket client's
// TCP socket (session::PortCallbacks::onDataPipe): what the client gets must
// be exactly what the copying path gives, however little its socket takes at
// a time and however the pod's side ends, and a client that vanishes in the
// middle must leave no descriptor behind. Base64 channels, which rewrite the
// bytes, take the copying path and must be just as exact.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/runtime/embedded/embedded_runtime.h"
#include "source/session/portforward.h"
#include "source/stream/raw_socket_transport.h"
#include "source/stream/spdy_portforward.h"
#include "source/stream/ws_portforward.h"

#include "test/runtime/embedded/port_servers.h"
#include "test/runtime/embedded/test_util.h"
#include "test/stream/port_probe.h"
#include "test/stream/spdy_test_client.h"
#include "test/stream/tls_test_util.h"
#include "test/stream/ws_test_client.h"

namespace crisp::stream {
namespace {

using runtime::testing::openFdCount;
using runtime::testing::patternByte;
using runtime::testing::TestPortServer;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::LoopThread;
using testing::PortProbeRuntime;
using testing::SpdyTestClient;
using testing::WsTestClient;
using Mode = TestPortServer::Mode;

constexpr uint64_t kBytes = 48 << 20;

// The index of the first byte of `got` that is not the source pattern
// (starting at pattern offset 0), or got.size().
size_t firstPatternMismatch(std::string_view got) {
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != patternByte(i)) {
      return i;
    }
  }
  return got.size();
}

uint64_t splicedBytes() { return session::PortForwardMetrics::get().spliced_bytes.value(); }

// One pod-side connection that sends `bytes` of the source pattern and then,
// once released, resets the connection (SO_LINGER 0): an application that
// dies after it wrote.
class ResetAfterServer {
 public:
  explicit ResetAfterServer(uint64_t bytes) : bytes_(bytes) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(listen_fd_, 4), 0);
    socklen_t len = sizeof(a);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { run(); });
  }
  ~ResetAfterServer() {
    release();
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }
  void release() { released_ = true; }
  bool reset() const { return reset_; }

 private:
  void run() {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      return;
    }
    std::string chunk(64 * 1024, '\0');
    for (uint64_t sent = 0; sent < bytes_;) {
      const size_t n = std::min<uint64_t>(chunk.size(), bytes_ - sent);
      for (size_t i = 0; i < n; ++i) {
        chunk[i] = patternByte(sent + i);
      }
      const ssize_t w = ::send(fd, chunk.data(), n, MSG_NOSIGNAL);
      if (w <= 0) {
        break;
      }
      sent += static_cast<uint64_t>(w);
    }
    while (!released_) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    const linger hard{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
    ::close(fd);
    reset_ = true;
  }

  const uint64_t bytes_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> released_{false};
  std::atomic<bool> reset_{false};
  std::thread thread_;
};

class PortForwardSpliceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    embedded_ = testing::startDemoRuntime();
    ASSERT_NE(embedded_, nullptr);
    probe_ = std::make_unique<PortProbeRuntime>(*embedded_);
  }

  void TearDown() override {
    loop_.run([&] {
      spdy_.reset();
      ws_.reset();
      return 0;
    });
    loop_.stop();
    if (embedded_ != nullptr) {
      embedded_->stop();
    }
  }

  // A loopback TCP connection {client, server} whose server side takes
  // little at a time (see ExecSpliceTest::narrowConnection()), so that
  // spliced frames go out in pieces.
  static std::pair<int, int> narrowConnection() {
    return testing::loopbackPair(/*client_receive_buffer=*/32 * 1024,
                                 /*server_send_buffer=*/16 * 1024);
  }

  // A SPDY session on a TCP connection with one pair for `port`, its data
  // stream FIN'd at once (the client sends nothing).
  void startSpdy(uint16_t port) {
    auto [client_fd, server_fd] = narrowConnection();
    spdy_client_ = std::make_unique<SpdyTestClient>(client_fd);
    loop_.run([&, fd = server_fd] {
      UpgradedConnection up;
      up.connection_id = 1;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fd, "client");
      up.protocol = Protocol::kSpdyPortForward;
      up.stream_request.spec = session::PortForwardSpec{"demo", {}};
      SpdyPortForwardConfig config;
      config.connection.linger_timeout = milliseconds(200);
      spdy_ = std::make_unique<SpdyPortForward>(loop_.dispatcher(), *probe_, std::move(up), config,
                                                [this](SpdyPortForward&) { done_ = true; });
      spdy_->start();
      return 0;
    });
    const spdy::HeaderList error_headers{
        {"streamtype", "error"}, {"port", std::to_string(port)}, {"requestid", "0"}};
    const spdy::HeaderList data_headers{
        {"streamtype", "data"}, {"port", std::to_string(port)}, {"requestid", "0"}};
    error_id_ = spdy_client_->openStreamWithHeaders(error_headers, spdy::kFlagFin);
    data_id_ = spdy_client_->openStreamWithHeaders(data_headers, spdy::kFlagFin);
  }

  void startWs(Protocol protocol, uint16_t port) {
    auto [client_fd, server_fd] = narrowConnection();
    ws_client_ =
        std::make_unique<WsTestClient>(client_fd, protocol == Protocol::kWsPortForwardV4Base64
                                                      ? websocket::ChannelFraming::kBase64
                                                      : websocket::ChannelFraming::kBinary);
    const bool ok = loop_.run([&, fd = server_fd] {
      UpgradedConnection up;
      up.connection_id = 2;
      up.transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), fd, "client");
      up.protocol = protocol;
      up.stream_request.spec = session::PortForwardSpec{"demo", {port}};
      WsPortForwardConfig config;
      config.connection.close_timeout = milliseconds(500);
      config.connection.linger_timeout = milliseconds(200);
      auto created = WsPortForward::create(loop_.dispatcher(), *probe_, std::move(up), config,
                                           [this](WsPortForward&) { done_ = true; });
      if (!created.ok()) {
        return false;
      }
      ws_ = std::move(created).value();
      ws_->start();
      return true;
    });
    ASSERT_TRUE(ok);
  }

  bool sessionDone() {
    return loop_.waitUntil([&] { return done_; });
  }

  // What the client got on the data stream (SPDY) or channel 0 after the
  // port prefix (WebSocket).
  const std::string& spdyData() { return spdy_client_->stream(data_id_).data; }
  // The same count without joining the messages (cheap enough to poll).
  size_t wsBytes() const {
    size_t n = 0;
    for (const WsTestClient::Event& e : ws_client_->events()) {
      if (e.kind == WsTestClient::Event::Kind::kMessage && e.channel == 0) {
        n += e.data.size();
      }
    }
    return n >= 2 ? n - 2 : 0;
  }
  std::string wsData() {
    const std::string all = ws_client_->channelData(0);
    return all.size() >= 2 ? all.substr(2) : std::string();
  }

  // The client reads the whole download from a source of kBytes: every byte
  // in order, then the end of the stream.
  void expectWholeSpdyDownload() {
    ASSERT_TRUE(
        spdy_client_->waitFor([&] { return spdy_client_->stream(data_id_).fin; }, seconds(60)))
        << spdyData().size() << " " << spdy_client_->error();
    ASSERT_EQ(spdyData().size(), kBytes);
    EXPECT_EQ(firstPatternMismatch(spdyData()), kBytes);
    ASSERT_TRUE(spdy_client_->waitFor([&] { return spdy_client_->stream(error_id_).fin; }));
    EXPECT_EQ(spdy_client_->stream(error_id_).data, "");
    EXPECT_FALSE(spdy_client_->stream(data_id_).reset);
  }
  void expectWholeWsDownload() {
    ASSERT_TRUE(ws_client_->waitForEof(seconds(60))) << ws_client_->error();
    const std::string got = wsData();
    ASSERT_EQ(got.size(), kBytes);
    EXPECT_EQ(firstPatternMismatch(got), kBytes);
    EXPECT_EQ(ws_client_->closeCode(), websocket::kCloseNormal);
  }

  std::unique_ptr<runtime::EmbeddedRuntime> embedded_;
  std::unique_ptr<PortProbeRuntime> probe_;
  LoopThread loop_;
  std::unique_ptr<SpdyPortForward> spdy_;
  std::unique_ptr<WsPortForward> ws_;
  bool done_ = false;  // loop thread only
  std::unique_ptr<SpdyTestClient> spdy_client_;
  std::unique_ptr<WsTestClient> ws_client_;
  uint32_t error_id_ = 0;
  uint32_t data_id_ = 0;
};

TEST_F(PortForwardSpliceTest, SpdyDownloadOverTcpIsSplicedWholeAndInOrder) {
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  const uint64_t spliced_before = splicedBytes();
  startSpdy(source.port());
  expectWholeSpdyDownload();
  // Most of it went by splice(2); what came while bytes were queued was
  // copied.
  EXPECT_GT(splicedBytes() - spliced_before, kBytes / 4);
  EXPECT_TRUE(source.waitUntil([&] { return source.open() == 0; }));
}

TEST_F(PortForwardSpliceTest, WebSocketDownloadOverTcpIsSplicedWholeAndInOrder) {
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  const uint64_t spliced_before = splicedBytes();
  startWs(Protocol::kWsPortForwardV4, source.port());
  expectWholeWsDownload();
  EXPECT_GT(splicedBytes() - spliced_before, kBytes / 4);
  EXPECT_TRUE(sessionDone());
}

TEST_F(PortForwardSpliceTest, WebSocketBase64DownloadIsCopiedJustAsExactly) {
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  const uint64_t spliced_before = splicedBytes();
  startWs(Protocol::kWsPortForwardV4Base64, source.port());
  expectWholeWsDownload();
  EXPECT_EQ(splicedBytes(), spliced_before);
}

TEST_F(PortForwardSpliceTest, SlowSpdyClientPausesThePodWithFramesHalfWritten) {
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  const uint64_t spliced_before = splicedBytes();
  startSpdy(source.port());
  // The client reads nothing for now: a frame the socket took in part holds
  // the connection above its high watermark and the pod connection paused,
  // its bytes waiting in the pod's socket and pipe, not in crisp's memory.
  ASSERT_TRUE(loop_.waitUntil([&] { return probe_->pauses.load() > 0; }));
  std::this_thread::sleep_for(milliseconds(200));
  const size_t queued = loop_.run([&] { return spdy_->connection().queuedOutputBytes(); });
  EXPECT_LT(queued, size_t{4} << 20);
  EXPECT_GT(splicedBytes(), spliced_before);
  expectWholeSpdyDownload();
  EXPECT_GT(probe_->resumes.load(), 0);
}

TEST_F(PortForwardSpliceTest, SlowWebSocketClientPausesThePod) {
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", kBytes);
  startWs(Protocol::kWsPortForwardV4, source.port());
  ASSERT_TRUE(loop_.waitUntil([&] { return probe_->pauses.load() > 0; }));
  std::this_thread::sleep_for(milliseconds(200));
  const size_t queued = loop_.run([&] { return ws_->connection().queuedOutputBytes(); });
  EXPECT_LT(queued, size_t{4} << 20);
  expectWholeWsDownload();
  EXPECT_GT(probe_->resumes.load(), 0);
}

TEST_F(PortForwardSpliceTest, SpdyPodResetAfterItsBytesEndsThePairAfterTheLastByte) {
  constexpr uint64_t kSent = 8 << 20;
  ResetAfterServer pod(kSent);
  const uint64_t spliced_before = splicedBytes();
  startSpdy(pod.port());
  ASSERT_TRUE(spdy_client_->waitFor([&] { return spdyData().size() >= kSent; }, seconds(30)))
      << spdyData().size();
  pod.release();
  // The reset ends the pair like a close, after every byte and without text.
  ASSERT_TRUE(spdy_client_->waitFor([&] {
    return spdy_client_->stream(data_id_).fin && spdy_client_->stream(error_id_).fin;
  })) << spdy_client_->error();
  EXPECT_TRUE(loop_.waitUntil([&] { return pod.reset(); }));
  ASSERT_EQ(spdyData().size(), kSent);
  EXPECT_EQ(firstPatternMismatch(spdyData()), kSent);
  EXPECT_EQ(spdy_client_->stream(error_id_).data, "");
  EXPECT_GT(splicedBytes(), spliced_before);
  EXPECT_TRUE(loop_.waitUntil([&] { return spdy_->pairCount() == 0; }));
}

TEST_F(PortForwardSpliceTest, WebSocketPodResetAfterItsBytesEndsTheForwardAfterTheLastByte) {
  constexpr uint64_t kSent = 8 << 20;
  ResetAfterServer pod(kSent);
  startWs(Protocol::kWsPortForwardV4, pod.port());
  ASSERT_TRUE(ws_client_->waitFor([&] { return wsBytes() >= kSent; }, seconds(30))) << wsBytes();
  pod.release();
  ASSERT_TRUE(ws_client_->waitForEof(seconds(10))) << ws_client_->error();
  const std::string got = wsData();
  ASSERT_EQ(got.size(), kSent);
  EXPECT_EQ(firstPatternMismatch(got), kSent);
  // No text on the error channel: an application's reset is not a failure
  // to forward.
  EXPECT_EQ(ws_client_->channelData(1).size(), 2u);
  EXPECT_TRUE(sessionDone());
}

// The client goes away while a spliced frame is half written and the pod
// keeps sending: the session ends, the pod connection closes, and every
// descriptor (sockets, the pod connection's pipe, the transport's copy of
// it) is closed.
TEST_F(PortForwardSpliceTest, SpdyClientVanishingMidTransferLeavesNoDescriptors) {
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", uint64_t{1} << 40);
  const int fds_before = openFdCount();
  const uint64_t spliced_before = splicedBytes();
  startSpdy(source.port());
  ASSERT_TRUE(spdy_client_->waitFor([&] { return spdyData().size() >= (4u << 20); }, seconds(30)));
  ASSERT_TRUE(loop_.waitUntil([&] { return splicedBytes() > spliced_before; }));
  spdy_client_->closeSocket();
  ASSERT_TRUE(sessionDone());
  EXPECT_TRUE(source.waitUntil([&] { return source.open() == 0; }));
  loop_.run([&] {
    spdy_.reset();
    return 0;
  });
  EXPECT_TRUE(loop_.waitUntil([&] { return openFdCount() == fds_before; }))
      << openFdCount() << " descriptors open, " << fds_before << " before";
}

TEST_F(PortForwardSpliceTest, WebSocketClientVanishingMidTransferLeavesNoDescriptors) {
  TestPortServer source(Mode::kSource, TestPortServer::Family::kIpv4, "", uint64_t{1} << 40);
  const int fds_before = openFdCount();
  const uint64_t spliced_before = splicedBytes();
  startWs(Protocol::kWsPortForwardV4, source.port());
  ASSERT_TRUE(ws_client_->waitFor([&] { return wsBytes() >= (4u << 20); }, seconds(30)));
  ASSERT_TRUE(loop_.waitUntil([&] { return splicedBytes() > spliced_before; }));
  ws_client_->closeSocket();
  ASSERT_TRUE(sessionDone());
  EXPECT_TRUE(source.waitUntil([&] { return source.open() == 0; }));
  loop_.run([&] {
    ws_.reset();
    return 0;
  });
  EXPECT_TRUE(loop_.waitUntil([&] { return openFdCount() == fds_before; }))
      << openFdCount() << " descriptors open, " << fds_before << " before";
}

}  // namespace
}  // namespace crisp::stream
