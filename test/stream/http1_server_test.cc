#include "source/stream/http1_server.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/admin/metrics.h"
#include "source/cache/token_cache.h"
#include "source/stream/listener.h"

#include "test/stream/http1_test_util.h"

namespace crisp::stream {
namespace {

using session::Operation;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr char kNotFound[] =
    "HTTP/1.1 404 Not Found\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Content-Length: 19\r\n"
    "Connection: close\r\n"
    "\r\n"
    "404 page not found\n";

constexpr char kSwitchToV4[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    "\r\n";

class FakeTimeSource : public TimeSource {
 public:
  MonotonicTime monotonicTime() const override {
    return MonotonicTime(milliseconds(now_ms_.load()));
  }
  void advance(milliseconds d) { now_ms_ += d.count(); }

 private:
  std::atomic<int64_t> now_ms_{1000};
};

// What a protocol handler received. The transport itself is kept by the
// handler's sink, which reads it as a protocol handler would.
struct Upgrade {
  UpgradedConnection connection;  // everything but the transport
  bool had_transport = false;
  bool on_loop_thread = false;
};

// Records every upgrade and reads each upgraded transport on the loop (the
// 101 queued in it goes out); keeps the connections open until clear(),
// which must run on the loop.
class RecordingHandler : public UpgradeHandler {
 public:
  ~RecordingHandler() override { EXPECT_TRUE(sinks_.empty()) << "clear() on the loop first"; }

  void onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) override {
    Upgrade u;
    u.on_loop_thread = dispatcher.isThreadSafe();
    u.had_transport = connection.transport != nullptr;
    auto sink = std::make_unique<Sink>(*this, std::move(connection.transport));
    u.connection = std::move(connection);
    // Recorded before the loop can write the 101 the client waits for.
    std::lock_guard<std::mutex> lock(mutex_);
    upgrades_.push_back(std::move(u));
    sinks_.push_back(std::move(sink));
    cv_.notify_all();
  }

  // The n-th upgrade (0-based), waiting for it a bounded time.
  const Upgrade* waitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!cv_.wait_for(lock, test::kClientTimeout, [&] { return upgrades_.size() > n; })) {
      return nullptr;
    }
    return &upgrades_[n];
  }

  // What the n-th upgraded transport delivered once it holds `bytes` bytes
  // (or the wait ran out).
  std::string receivedBy(size_t n, size_t bytes) {
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait_for(lock, test::kClientTimeout,
                 [&] { return sinks_.size() > n && sinks_[n]->received.size() >= bytes; });
    return sinks_.size() > n ? sinks_[n]->received : "";
  }

  size_t count() {
    std::lock_guard<std::mutex> lock(mutex_);
    return upgrades_.size();
  }

  bool serves(Protocol protocol) const override { return !served || served(protocol); }

  // What serves() answers; everything when empty. Set before the server starts.
  std::function<bool(Protocol)> served;

  // Closes the upgraded transports. On the loop thread.
  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    sinks_.clear();
  }

 private:
  class Sink : public TransportCallbacks {
   public:
    Sink(RecordingHandler& handler, TransportPtr transport)
        : handler_(handler), transport_(std::move(transport)) {
      if (transport_ != nullptr) {
        transport_->setCallbacks(*this);
        transport_->start();
      }
    }
    void onTransportData(Buffer& data) override {
      std::lock_guard<std::mutex> lock(handler_.mutex_);
      received += data.toString();
      handler_.cv_.notify_all();
    }
    void onTransportEof() override {
      std::lock_guard<std::mutex> lock(handler_.mutex_);
      received += "<eof>";
      handler_.cv_.notify_all();
    }
    void onTransportDrained() override {}
    void onTransportError(const std::string&) override {
      std::lock_guard<std::mutex> lock(handler_.mutex_);
      received += "<error>";
      handler_.cv_.notify_all();
    }

    std::string received;  // under the handler's mutex; "<eof>" marks the end

   private:
    RecordingHandler& handler_;
    TransportPtr transport_;
  };

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Upgrade> upgrades_;
  std::vector<std::unique_ptr<Sink>> sinks_;
};

std::string head(const std::string& method, const std::string& target,
                 const std::vector<std::string>& lines) {
  std::string out = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& line : lines) {
    out += line + "\r\n";
  }
  return out + "\r\n";
}

// What kubectl (client-go 1.27/1.28) sends for exec and attach.
std::string spdyHead(const std::string& target, const std::string& method = "POST") {
  return head(
      method, target,
      {"Connection: Upgrade", "Upgrade: SPDY/3.1", "X-Stream-Protocol-Version: v4.channel.k8s.io",
       "X-Stream-Protocol-Version: v3.channel.k8s.io",
       "X-Stream-Protocol-Version: v2.channel.k8s.io",
       "X-Stream-Protocol-Version: channel.k8s.io"});
}

session::StreamRequest execRequest(Operation op = Operation::kExec) {
  session::ExecSpec spec;
  spec.operation = op;
  spec.container_id = "ctr-1";
  if (op == Operation::kExec) {
    spec.command = {"sh", "-c", "true"};
  }
  spec.stdout = true;
  return session::StreamRequest{spec};
}

session::StreamRequest portForwardRequest() {
  session::PortForwardSpec spec;
  spec.pod_sandbox_id = "pod-1";
  spec.ports = {8080};
  return session::StreamRequest{spec};
}

class Http1ServerTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    cache::TokenCacheOptions cache_options;
    cache_options.registry = &registry_;
    cache_ = std::make_unique<cache::TokenCache>(cache_options, time_, random_);
    auto socket = ListenSocket::bind(GetParam());
    ASSERT_TRUE(socket.ok()) << socket.status();
    socket_ = std::move(*socket);
    start(defaultOptions(), &handler_);
  }

  void TearDown() override {
    stop();
    TearDownHandlers();
  }

  Http1ServerOptions defaultOptions() {
    Http1ServerOptions options;
    options.registry = &registry_;
    return options;
  }

  void start(const Http1ServerOptions& options, UpgradeHandler* handler,
             UpgradeHandler* websocket_handler = nullptr) {
    loop_.runSync([&] {
      server_ = std::make_unique<Http1Server>(loop_.dispatcher(), *cache_, options);
      server_->setUpgradeHandler(ProtocolFamily::kSpdy, handler);
      server_->setUpgradeHandler(ProtocolFamily::kWebSocket, websocket_handler);
      ListenerOptions listener_options;
      listener_options.registry = &registry_;
      listener_ = std::make_unique<Listener>(
          loop_.dispatcher(), *socket_,
          [this](int fd, std::string peer) { server_->onAccept(fd, std::move(peer)); },
          listener_options);
    });
  }

  void stop() {
    loop_.runSync([&] {
      listener_.reset();
      server_.reset();
    });
  }

  void TearDownHandlers() {
    loop_.runSync([&] {
      handler_.clear();
      ws_handler_.clear();
    });
  }

  std::string insert(session::StreamRequest request) {
    auto token = cache_->insert(std::move(request));
    EXPECT_TRUE(token.ok()) << token.status();
    return token.ok() ? *token : "";
  }

  std::optional<std::string> roundTrip(const std::string& request) {
    return test::roundTrip(socket_->address(), request);
  }

  // Connects, sends `request` and reads the 101; the handler keeps the socket.
  // Returns the client end (closed by the caller) or -1.
  int upgrade(const std::string& request, size_t expected_reply_size = sizeof(kSwitchToV4) - 1) {
    const int fd = test::connectTo(socket_->address());
    if (fd < 0) {
      return -1;
    }
    EXPECT_TRUE(test::sendAll(fd, request));
    const auto reply = test::readExactly(fd, expected_reply_size);
    EXPECT_TRUE(reply.has_value());
    last_reply_ = reply.value_or("");
    return fd;
  }

  uint64_t requests(const char* result) {
    return registry_.family("crisp_stream_requests_total", "", stats::Kind::kCounter, {"result"})
        .counter({result})
        .value();
  }
  int64_t activeConnections() {
    return registry_.family("crisp_stream_connections_active", "", stats::Kind::kGauge)
        .gauge()
        .value();
  }

  // Checks `done` on the loop thread until it holds or the client timeout passes.
  bool waitOnLoop(const std::function<bool()>& done) {
    const auto deadline = Clock::now() + test::kClientTimeout;
    while (Clock::now() < deadline) {
      bool ok = false;
      loop_.runSync([&] { ok = done(); });
      if (ok) {
        return true;
      }
      std::this_thread::yield();
    }
    return false;
  }

  stats::Registry registry_;
  FakeTimeSource time_;
  SystemRandomSource random_;
  std::unique_ptr<cache::TokenCache> cache_;
  std::unique_ptr<ListenSocket> socket_;
  RecordingHandler handler_;
  RecordingHandler ws_handler_;
  test::LoopThread loop_;
  std::unique_ptr<Http1Server> server_;
  std::unique_ptr<Listener> listener_;
  std::string last_reply_;
};

INSTANTIATE_TEST_SUITE_P(IpVersions, Http1ServerTest, ::testing::Values("127.0.0.1:0", "[::1]:0"));

// B10 A: the version list folded into one comma-joined line.
TEST_P(Http1ServerTest, CommaJoinedVersionLineUpgradesToV4) {
  const std::string token = insert(execRequest());
  const int fd = upgrade(head("POST", "/exec/" + token + "?command=true",
                              {"Connection: Upgrade", "Upgrade: SPDY/3.1",
                               "X-Stream-Protocol-Version: v4.channel.k8s.io, v3.channel.k8s.io, "
                               "v2.channel.k8s.io, channel.k8s.io"}));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, kSwitchToV4);
  const Upgrade* u = handler_.waitFor(0);
  ASSERT_NE(u, nullptr);
  EXPECT_TRUE(u->on_loop_thread);
  EXPECT_EQ(u->connection.protocol, Protocol::kSpdyRemoteCommandV4);
  EXPECT_TRUE(u->had_transport);
  EXPECT_EQ(u->connection.request.method, "POST");
  EXPECT_EQ(u->connection.request.path, "/exec/" + token);
  EXPECT_EQ(u->connection.request.query, "command=true");
  EXPECT_FALSE(u->connection.request.peer.empty());
  EXPECT_NE(u->connection.connection_id, 0u);
  // Nothing follows the head; what the client sends now reaches the handler.
  ASSERT_TRUE(test::sendAll(fd, "after"));
  EXPECT_EQ(handler_.receivedBy(0, 5), "after");
  const auto* spec = std::get_if<session::ExecSpec>(&u->connection.stream_request.spec);
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->container_id, "ctr-1");
  EXPECT_EQ(spec->command, (std::vector<std::string>{"sh", "-c", "true"}));
  EXPECT_EQ(requests("upgraded"), 1u);
  ::close(fd);
}

// B10 B: one line per version, as client-go sends them.
TEST_P(Http1ServerTest, SeparateVersionLinesUpgradeToV4) {
  const std::string token = insert(execRequest(Operation::kAttach));
  const int fd = upgrade(spdyHead("/attach/" + token));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, kSwitchToV4);
  const Upgrade* u = handler_.waitFor(0);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->connection.protocol, Protocol::kSpdyRemoteCommandV4);
  EXPECT_EQ(u->connection.stream_request.operation(), Operation::kAttach);
  ::close(fd);
}

// B10 C: lower-case header names and upgrade token.
TEST_P(Http1ServerTest, LowerCaseNamesAndSpdyTokenUpgradeToV4) {
  const std::string token = insert(execRequest());
  const int fd = upgrade(head(
      "POST", "/exec/" + token,
      {"connection: upgrade", "upgrade: spdy/3.1", "x-stream-protocol-version: v4.channel.k8s.io",
       "x-stream-protocol-version: v3.channel.k8s.io"}));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, kSwitchToV4);
  ASSERT_NE(handler_.waitFor(0), nullptr);
  ::close(fd);
}

// B10 D: no version in common: 403 naming both lists, and the token is gone.
TEST_P(Http1ServerTest, UnknownVersionIs403AndBurnsTheToken) {
  const std::string token = insert(execRequest());
  const auto reply = roundTrip(head("POST", "/exec/" + token,
                                    {"Connection: Upgrade", "Upgrade: SPDY/3.1",
                                     "X-Stream-Protocol-Version: v9.channel.k8s.io"}));
  ASSERT_TRUE(reply.has_value());
  const std::string body =
      "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io], "
      "server accepts [v4.channel.k8s.io v3.channel.k8s.io v2.channel.k8s.io channel.k8s.io]\n";
  EXPECT_EQ(*reply,
            "HTTP/1.1 403 Forbidden\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io\r\n"
            "X-Accepted-Stream-Protocol-Versions: v3.channel.k8s.io\r\n"
            "X-Accepted-Stream-Protocol-Versions: v2.channel.k8s.io\r\n"
            "X-Accepted-Stream-Protocol-Versions: channel.k8s.io\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "Content-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);
  EXPECT_EQ(handler_.count(), 0u);
  EXPECT_EQ(requests("forbidden"), 1u);
  EXPECT_EQ(requests("not_found"), 1u);
}

// What client-go's WebSocket dialer sends, with the RFC 6455 sample key.
std::string webSocketHead(const std::string& target, const std::string& protocols,
                          const std::string& method = "GET", const std::string& version = "13") {
  std::vector<std::string> lines = {"Connection: Upgrade", "Upgrade: websocket",
                                    "Sec-WebSocket-Version: " + version,
                                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="};
  if (!protocols.empty()) {
    lines.push_back("Sec-WebSocket-Protocol: " + protocols);
  }
  return head(method, target, lines);
}

std::string webSocket101(const std::string& protocol) {
  std::string out =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
  if (!protocol.empty()) {
    out += "Sec-WebSocket-Protocol: " + protocol + "\r\n";
  }
  return out + "\r\n";
}

// B10 E: with a WebSocket handler, one comma-joined Sec-WebSocket-Protocol
// line gets a 101 echoing exactly one supported value, and the connection
// (with the bytes sent right behind the head) goes to the WebSocket handler.
TEST_P(Http1ServerTest, WebSocketCommaJoinedOfferUpgradesWithOneSupportedValue) {
  stop();
  start(defaultOptions(), &handler_, &ws_handler_);
  const std::string token = insert(execRequest());
  const std::string expected = webSocket101("base64.channel.k8s.io");
  const std::string first_frame("\x82\x81\x01\x02\x03\x04\x01", 7);
  const int fd = upgrade(
      webSocketHead("/exec/" + token, "base64.channel.k8s.io, v5.channel.k8s.io") + first_frame,
      expected.size());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, expected);
  const Upgrade* u = ws_handler_.waitFor(0);
  ASSERT_NE(u, nullptr);
  EXPECT_TRUE(u->on_loop_thread);
  EXPECT_TRUE(u->had_transport);
  EXPECT_EQ(u->connection.protocol, Protocol::kWsBase64Channel);
  EXPECT_EQ(u->connection.request.method, "GET");
  EXPECT_EQ(u->connection.stream_request.operation(), Operation::kExec);
  EXPECT_EQ(ws_handler_.receivedBy(0, first_frame.size()), first_frame);
  EXPECT_EQ(handler_.count(), 0u);
  EXPECT_EQ(requests("upgraded"), 1u);
  // The token was used.
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);
  ::close(fd);
}

// kubectl 1.30+ offers v5 alone; crisp serves it.
TEST_P(Http1ServerTest, WebSocketV5AndPortForwardTunnelAreServed) {
  stop();
  start(defaultOptions(), &handler_, &ws_handler_);
  std::string expected = webSocket101("v5.channel.k8s.io");
  int fd = upgrade(
      webSocketHead("/attach/" + insert(execRequest(Operation::kAttach)), "v5.channel.k8s.io"),
      expected.size());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, expected);
  ASSERT_NE(ws_handler_.waitFor(0), nullptr);
  EXPECT_EQ(ws_handler_.waitFor(0)->connection.protocol, Protocol::kWsV5Channel);
  ::close(fd);

  expected = webSocket101("SPDY/3.1+portforward.k8s.io");
  fd = upgrade(
      webSocketHead("/portforward/" + insert(portForwardRequest()), "SPDY/3.1+portforward.k8s.io"),
      expected.size());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, expected);
  ASSERT_NE(ws_handler_.waitFor(1), nullptr);
  EXPECT_EQ(ws_handler_.waitFor(1)->connection.protocol, Protocol::kWsSpdyTunnelPortForward);
  ::close(fd);

  // No offer on port-forward: binary framing, no Sec-WebSocket-Protocol.
  expected = webSocket101("");
  fd = upgrade(webSocketHead("/portforward/" + insert(portForwardRequest()), ""), expected.size());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, expected);
  ASSERT_NE(ws_handler_.waitFor(2), nullptr);
  EXPECT_EQ(ws_handler_.waitFor(2)->connection.protocol, Protocol::kWsPortForwardBinary);
  ::close(fd);
  EXPECT_EQ(requests("upgraded"), 3u);
}

// A handler that serves only some WebSocket protocols: an offer of nothing it
// serves gets the bare 403 (so kubectl falls back to SPDY), never a 101 and a
// close; a served offer later in the client's list is chosen.
TEST_P(Http1ServerTest, WebSocketOffersOnlyWhatTheHandlerServes) {
  stop();
  ws_handler_.served = [](Protocol p) {
    return protocolFamily(p) == ProtocolFamily::kWebSocket && p != Protocol::kWsPortForwardBinary &&
           p != Protocol::kWsPortForwardV4 && p != Protocol::kWsPortForwardV4Base64;
  };
  start(defaultOptions(), &handler_, &ws_handler_);
  std::string token = insert(portForwardRequest());
  EXPECT_EQ(roundTrip(webSocketHead("/portforward/" + token, "v4.channel.k8s.io")),
            "HTTP/1.1 403 Forbidden\r\n\r\n");
  EXPECT_EQ(roundTrip(spdyHead("/portforward/" + token)), kNotFound);
  token = insert(portForwardRequest());
  EXPECT_EQ(roundTrip(webSocketHead("/portforward/" + token, "")),
            "HTTP/1.1 403 Forbidden\r\n\r\n");
  EXPECT_EQ(ws_handler_.count(), 0u);
  EXPECT_EQ(requests("forbidden"), 2u);

  const std::string expected = webSocket101("SPDY/3.1+portforward.k8s.io");
  const int fd = upgrade(webSocketHead("/portforward/" + insert(portForwardRequest()),
                                       "v4.channel.k8s.io, SPDY/3.1+portforward.k8s.io"),
                         expected.size());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, expected);
  ASSERT_NE(ws_handler_.waitFor(0), nullptr);
  EXPECT_EQ(ws_handler_.waitFor(0)->connection.protocol, Protocol::kWsSpdyTunnelPortForward);
  ::close(fd);
}

// Handshake failures are answered as golang.org/x/net/websocket answers them,
// and burn the token.
TEST_P(Http1ServerTest, WebSocketHandshakeFailuresAnswerAsXNetAndBurnTheToken) {
  stop();
  start(defaultOptions(), &handler_, &ws_handler_);
  std::string token = insert(execRequest());
  EXPECT_EQ(roundTrip(webSocketHead("/exec/" + token, "v9.channel.k8s.io, portforward.k8s.io")),
            "HTTP/1.1 403 Forbidden\r\n\r\n");
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);

  token = insert(execRequest());
  EXPECT_EQ(roundTrip(webSocketHead("/exec/" + token, "v5.channel.k8s.io", "GET", "12")),
            "HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n"
            "missing or bad WebSocket Version");
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);

  token = insert(execRequest());
  EXPECT_EQ(roundTrip(webSocketHead("/exec/" + token, "v5.channel.k8s.io", "POST")),
            "HTTP/1.1 405 Method Not Allowed\r\n\r\nbad method");
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);

  EXPECT_EQ(ws_handler_.count(), 0u);
  EXPECT_EQ(handler_.count(), 0u);
  EXPECT_EQ(requests("forbidden"), 1u);
  EXPECT_EQ(requests("bad_request"), 1u);
  EXPECT_EQ(requests("method_not_allowed"), 1u);
  EXPECT_EQ(requests("not_found"), 3u);
}

// Without a WebSocket handler every WebSocket upgrade gets the bare 403 of "no
// subprotocol matched" (not a 500), so kubectl 1.30+ falls back to SPDY; the
// token is burnt, as the fallback fetches a new one.
TEST_P(Http1ServerTest, WebSocketWithoutAHandlerGetsBare403AndBurnsTheToken) {
  const std::string token = insert(execRequest());
  const auto reply =
      roundTrip(webSocketHead("/exec/" + token, "base64.channel.k8s.io, v5.channel.k8s.io"));
  EXPECT_EQ(reply, "HTTP/1.1 403 Forbidden\r\n\r\n");
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);
  EXPECT_EQ(handler_.count(), 0u);
  EXPECT_EQ(requests("forbidden"), 1u);
  EXPECT_EQ(requests("internal_error"), 0u);
}

TEST_P(Http1ServerTest, UnknownTokenIsGoNotFoundByteForByte) {
  EXPECT_EQ(roundTrip(spdyHead("/exec/AAAAAAAAAAAAAAAAAAAAAA")), kNotFound);
  EXPECT_EQ(roundTrip(spdyHead("/portforward/x")), kNotFound);
  EXPECT_EQ(requests("not_found"), 2u);
}

TEST_P(Http1ServerTest, ExpiredTokenIsNotFound) {
  const std::string token = insert(execRequest());
  time_.advance(std::chrono::minutes(1) + milliseconds(1));
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);
}

TEST_P(Http1ServerTest, UsedTokenIsNotFound) {
  const std::string token = insert(execRequest());
  const int fd = upgrade(spdyHead("/exec/" + token));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);
  ::close(fd);
}

TEST_P(Http1ServerTest, TokenOfAnotherKindIsNotFoundAndBurnt) {
  const std::string token = insert(execRequest(Operation::kExec));
  EXPECT_EQ(roundTrip(spdyHead("/attach/" + token)), kNotFound);
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);

  const std::string pf = insert(portForwardRequest());
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + pf)), kNotFound);
  EXPECT_EQ(roundTrip(spdyHead("/portforward/" + pf)), kNotFound);
  EXPECT_EQ(handler_.count(), 0u);
}

TEST_P(Http1ServerTest, OtherMethodsAre405AndLeaveTheTokenAlone) {
  const std::string token = insert(execRequest());
  for (const char* method : {"PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"}) {
    const auto reply = roundTrip(spdyHead("/exec/" + token, method));
    ASSERT_TRUE(reply.has_value()) << method;
    EXPECT_EQ(reply->rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << *reply;
    EXPECT_NE(reply->find("\r\nAllow: GET, POST\r\n"), std::string::npos);
  }
  EXPECT_EQ(requests("method_not_allowed"), 5u);
  const int fd = upgrade(spdyHead("/exec/" + token, "GET"));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, kSwitchToV4);
  ::close(fd);
}

TEST_P(Http1ServerTest, PathsOutsideTheRoutesAreNotFoundAndBurnNothing) {
  const std::string token = insert(execRequest());
  for (const std::string& target : {
           "/exec/../exec/" + token,
           "/attach/../exec/" + token,
           "/exec/./" + token,
           "//exec/" + token,
           "/exec//" + token,
           "/exec%2F" + token,
           "/exec%2f" + token,
           "/exec/" + token + "/",
           "/exec/" + token + "%2F",
           "/exec/" + token + "/x",
           "/x/exec/" + token,
           std::string("/"),
           std::string("/healthz"),
       }) {
    EXPECT_EQ(roundTrip(spdyHead(target)), kNotFound) << target;
  }
  const int fd = upgrade(spdyHead("/exec/" + token));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, kSwitchToV4);
  ::close(fd);
}

// Without the upgrade headers: the token is consumed first (as by the kubelet)
// and the answer is a 400.
TEST_P(Http1ServerTest, RequestWithoutUpgradeIs400AndBurnsTheToken) {
  std::string token = insert(execRequest());
  auto reply =
      roundTrip(head("GET", "/exec/" + token, {"X-Stream-Protocol-Version: v4.channel.k8s.io"}));
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u);
  EXPECT_NE(reply->find("\r\n\r\nunable to upgrade: missing upgrade headers in request: "
                        "http.Header{\"X-Stream-Protocol-Version\":[]string{\"v4.channel.k8s.io\"}}"
                        "\n"),
            std::string::npos)
      << *reply;
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);

  // A bare GET (a browser, curl): no version header at all.
  token = insert(execRequest());
  reply = roundTrip(head("GET", "/exec/" + token, {"User-Agent: curl/8.0", "Accept: */*"}));
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u);
  EXPECT_NE(reply->find("\r\n\r\nunable to upgrade: header X-Stream-Protocol-Version does not "
                        "exist in request with 2 headers\n"),
            std::string::npos)
      << *reply;
  EXPECT_EQ(roundTrip(spdyHead("/exec/" + token)), kNotFound);
  EXPECT_EQ(requests("bad_request"), 2u);
  EXPECT_EQ(handler_.count(), 0u);
}

TEST_P(Http1ServerTest, OversizedHeadIs431AndTheLimitItselfIsAccepted) {
  const std::string token = insert(execRequest());
  const std::string base = spdyHead("/exec/" + token);
  // Pad the head to exactly 16384 bytes, and to one byte more.
  const std::string pad_name = "X-Pad: ";
  const size_t pad = 16384 - base.size() - pad_name.size() - 2;
  const std::string at_limit =
      base.substr(0, base.size() - 2) + pad_name + std::string(pad, 'p') + "\r\n\r\n";
  ASSERT_EQ(at_limit.size(), 16384u);
  const std::string past_limit =
      base.substr(0, base.size() - 2) + pad_name + std::string(pad + 1, 'p') + "\r\n\r\n";

  const auto reply = roundTrip(past_limit);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(*reply,
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 35\r\n"
            "Connection: close\r\n"
            "\r\n"
            "431 Request Header Fields Too Large");
  EXPECT_EQ(requests("header_too_large"), 1u);
  // A much larger head, still being sent while the answer comes.
  const auto big = roundTrip(base.substr(0, base.size() - 2) +
                             "X-Pad: " + std::string(1 << 20, 'p') + "\r\n\r\n");
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->rfind("HTTP/1.1 431 ", 0), 0u);

  // The token was never read, so it still works, at exactly the limit.
  const int fd = upgrade(at_limit);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, kSwitchToV4);
  ::close(fd);
}

TEST_P(Http1ServerTest, MalformedHeadIs400) {
  const auto reply = roundTrip("GET /exec/tok HTTP/1.1\r\nNo colon here\r\n\r\n");
  EXPECT_EQ(reply,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 15\r\nConnection: close\r\n\r\n400 Bad Request");
  EXPECT_EQ(requests("bad_request"), 1u);
}

TEST_P(Http1ServerTest, HeaderTimeoutClosesSilentAndTricklingClients) {
  stop();
  Http1ServerOptions options = defaultOptions();
  options.connection.header_timeout = milliseconds(300);
  start(options, &handler_);
  const std::string token = insert(execRequest());

  // Silent after a partial head.
  const auto started = Clock::now();
  const int silent = test::connectTo(socket_->address());
  ASSERT_GE(silent, 0);
  ASSERT_TRUE(test::sendAll(silent, "POST /exec/" + token + " HTTP/1.1\r\nHost: x\r\n"));
  EXPECT_EQ(test::readUntilClose(silent), "");
  EXPECT_GE(Clock::now() - started, milliseconds(250));
  ::close(silent);

  // A slowloris: one byte every 20 ms keeps the connection busy but does not
  // extend the deadline. The full head would take several seconds.
  const std::string full = spdyHead("/exec/" + token);
  const int slow = test::connectTo(socket_->address());
  ASSERT_GE(slow, 0);
  const auto slow_started = Clock::now();
  bool closed = false;
  for (size_t i = 0; i < full.size() - 1 && !closed; ++i) {
    if (!test::sendAll(slow, full.substr(i, 1))) {
      closed = true;
      break;
    }
    pollfd p{slow, POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) {
      char c;
      closed = ::read(slow, &c, 1) <= 0;
      EXPECT_TRUE(closed) << "no response expected";
    }
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(Clock::now() - slow_started, milliseconds(2000));
  ::close(slow);
  EXPECT_EQ(requests("header_timeout"), 2u);
  // The token was never presented.
  const int fd = upgrade(full);
  ASSERT_GE(fd, 0);
  ::close(fd);
}

// The client sends its head and the first SPDY frames in one write: the bytes
// after the head reach the handler intact, in order, none lost or repeated.
TEST_P(Http1ServerTest, BytesAfterTheHeadReachTheHandlerIntact) {
  const std::string token = insert(execRequest());
  std::string spdy;
  for (int i = 0; i < 3000; ++i) {
    spdy += static_cast<char>(i * 7 + (i >> 8));
  }
  spdy += "\r\n\r\nGET / HTTP/1.1\r\n\r\n";
  spdy += std::string("\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01", 12);
  const int fd = upgrade(spdyHead("/exec/" + token) + spdy);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, kSwitchToV4);
  ASSERT_NE(handler_.waitFor(0), nullptr);
  // What the HTTP layer read past the head, then what it had not read yet,
  // all through the transport, in order.
  EXPECT_EQ(handler_.receivedBy(0, spdy.size()), spdy);
  ::close(fd);
}

// A client that sends its first frames and half-closes right behind the head:
// the handler gets the bytes, then the end, and the HTTP layer never sees it.
TEST_P(Http1ServerTest, BytesAndEndRightAfterTheHeadReachTheHandlerInOrder) {
  const std::string token = insert(execRequest());
  const int fd = test::connectTo(socket_->address());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(test::sendAll(fd, spdyHead("/exec/" + token) + "first frames"));
  ASSERT_EQ(::shutdown(fd, SHUT_WR), 0);
  EXPECT_EQ(test::readExactly(fd, sizeof(kSwitchToV4) - 1), kSwitchToV4);
  ASSERT_NE(handler_.waitFor(0), nullptr);
  EXPECT_EQ(handler_.receivedBy(0, 17), "first frames<eof>");
  EXPECT_EQ(requests("upgraded"), 1u);
  ::close(fd);
}

TEST_P(Http1ServerTest, PortForwardHandlerGetsProtocolAndRequest) {
  const std::string token = insert(portForwardRequest());
  const std::string expected_reply =
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n";
  const int fd = upgrade(
      head("POST", "/portforward/" + token + "?port=8080",
           {"Connection: Upgrade", "Upgrade: SPDY/3.1",
            "X-Stream-Protocol-Version: portforward.k8s.io", "User-Agent: kubectl/v1.27.3"}),
      expected_reply.size());
  ASSERT_GE(fd, 0);
  EXPECT_EQ(last_reply_, expected_reply);
  const Upgrade* u = handler_.waitFor(0);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(u->connection.protocol, Protocol::kSpdyPortForward);
  EXPECT_EQ(u->connection.request.query, "port=8080");
  EXPECT_EQ(u->connection.request.headerValues("user-agent"),
            (std::vector<std::string>{"kubectl/v1.27.3"}));
  const auto* spec = std::get_if<session::PortForwardSpec>(&u->connection.stream_request.spec);
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->pod_sandbox_id, "pod-1");
  ::close(fd);
}

TEST_P(Http1ServerTest, UpgradeWithoutHandlerIs500) {
  stop();
  start(defaultOptions(), nullptr);
  const std::string token = insert(execRequest());
  const auto reply = roundTrip(spdyHead("/exec/" + token));
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->rfind("HTTP/1.1 500 Internal Server Error\r\n", 0), 0u);
  EXPECT_EQ(requests("internal_error"), 1u);
}

TEST_P(Http1ServerTest, CountsConnectionsAndReturnsToNoneActive) {
  const std::string token = insert(execRequest());
  const int upgraded = upgrade(spdyHead("/exec/" + token));
  ASSERT_GE(upgraded, 0);
  EXPECT_EQ(roundTrip(spdyHead("/exec/nope")), kNotFound);
  // A client that connects and goes away without a word.
  const int quiet = test::connectTo(socket_->address());
  ASSERT_GE(quiet, 0);
  ::close(quiet);
  auto& total =
      registry_.family("crisp_stream_connections_total", "", stats::Kind::kCounter).counter();
  // The quiet one is still being sniffed for its first bytes (not yet an
  // HTTP/1.1 connection) until its EOF is read: wait for the gauge too.
  EXPECT_TRUE(waitOnLoop([&] {
    return total.value() == 3 && server_->connectionCount() == 0 && activeConnections() == 0;
  }));
  EXPECT_EQ(activeConnections(), 0);
  EXPECT_EQ(requests("upgraded"), 1u);
  EXPECT_EQ(requests("not_found"), 1u);
  ::close(upgraded);
}

TEST_P(Http1ServerTest, ConnectionsStillOpenAreClosedWithTheServer) {
  const int fd = test::connectTo(socket_->address());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(test::sendAll(fd, "GET /exec/"));
  ASSERT_TRUE(waitOnLoop([&] { return server_->connectionCount() == 1; }));
  stop();
  EXPECT_EQ(test::readUntilClose(fd), "");
  EXPECT_EQ(activeConnections(), 0);
  ::close(fd);
  start(defaultOptions(), &handler_);
}

// Several workers, each with its own loop, server and listener, share one
// listening socket; every connection is served by exactly one of them.
TEST_P(Http1ServerTest, WorkersShareOneListeningSocket) {
  RecordingHandler second_handler;
  test::LoopThread second_loop;
  std::unique_ptr<Http1Server> second_server;
  std::unique_ptr<Listener> second_listener;
  second_loop.runSync([&] {
    Http1ServerOptions options = defaultOptions();
    second_server = std::make_unique<Http1Server>(second_loop.dispatcher(), *cache_, options);
    second_server->setUpgradeHandler(ProtocolFamily::kSpdy, &second_handler);
    second_listener = std::make_unique<Listener>(
        second_loop.dispatcher(), *socket_,
        [&](int fd, std::string peer) { second_server->onAccept(fd, std::move(peer)); });
  });
  constexpr int kClients = 20;
  std::vector<int> fds;
  std::set<uint64_t> ids;
  for (int i = 0; i < kClients; ++i) {
    const int fd = upgrade(spdyHead("/exec/" + insert(execRequest())));
    ASSERT_GE(fd, 0);
    EXPECT_EQ(last_reply_, kSwitchToV4);
    fds.push_back(fd);
  }
  EXPECT_EQ(handler_.count() + second_handler.count(), static_cast<size_t>(kClients));
  for (size_t i = 0; i < handler_.count(); ++i) {
    ids.insert(handler_.waitFor(i)->connection.connection_id);
  }
  for (size_t i = 0; i < second_handler.count(); ++i) {
    ids.insert(second_handler.waitFor(i)->connection.connection_id);
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(kClients));
  second_loop.runSync([&] {
    second_listener.reset();
    second_server.reset();
    second_handler.clear();
  });
  for (int fd : fds) {
    ::close(fd);
  }
}

}  // namespace
}  // namespace crisp::stream
