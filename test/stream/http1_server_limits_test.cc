// The limits the HTTP/1.1 front enforces before a session exists:
// stream.max_sessions (503 before the 101, shared by every worker),
// stream.max_header_bytes (431) and stream.header_timeout (close), each
// counted in crisp_stream_limit_hits_total{limit}.

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "source/admin/metrics.h"
#include "source/cache/token_cache.h"
#include "source/common/time.h"
#include "source/stream/http1_server.h"
#include "source/stream/listener.h"
#include "source/stream/stream_limits.h"

#include "test/stream/http1_test_util.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;

constexpr char kSwitchToV4[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    "\r\n";

constexpr char kNotFound[] =
    "HTTP/1.1 404 Not Found\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "X-Content-Type-Options: nosniff\r\n"
    "Content-Length: 19\r\n"
    "Connection: close\r\n"
    "\r\n"
    "404 page not found\n";

// What a full server answers, for a limit of `max`.
std::string tooManySessions(uint32_t max) {
  const std::string body = "too many streaming sessions (the limit is " + std::to_string(max) +
                           ", stream.max_sessions); try again later\n";
  return "HTTP/1.1 503 Service Unavailable\r\n"
         "Content-Type: text/plain; charset=utf-8\r\n"
         "X-Content-Type-Options: nosniff\r\n"
         "Retry-After: 1\r\n"
         "Content-Length: " +
         std::to_string(body.size()) +
         "\r\n"
         "Connection: close\r\n"
         "\r\n" +
         body;
}

std::string spdyHead(const std::string& target) {
  return "POST " + target +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
         "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
}

std::string webSocketHead(const std::string& target) {
  return "GET " + target +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
         "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n";
}

session::StreamRequest execRequest() {
  session::ExecSpec spec;
  spec.operation = session::Operation::kExec;
  spec.container_id = "ctr-1";
  spec.command = {"true"};
  spec.stdout = true;
  return session::StreamRequest{spec};
}

// Reads a response head (through the blank line); nullopt on close or timeout.
std::optional<std::string> readHead(int fd) {
  std::string head;
  while (head.size() < 4 || head.compare(head.size() - 4, 4, "\r\n\r\n") != 0) {
    const std::optional<std::string> c = test::readExactly(fd, 1);
    if (!c.has_value()) {
      return std::nullopt;
    }
    head += *c;
  }
  return head;
}

// Keeps every upgraded transport running (so the 101 goes out) until the
// test closes or frees it on the loop.
class KeepingHandler : public UpgradeHandler, private TransportCallbacks {
 public:
  void onUpgrade(event::Dispatcher&, UpgradedConnection&& connection) override {
    connection.transport->setCallbacks(*this);
    connection.transport->start();
    transports.push_back(std::move(connection.transport));
    ++upgrades;
  }

  std::vector<TransportPtr> transports;  // loop thread only
  std::atomic<int> upgrades{0};

 private:
  void onTransportData(Buffer& data) override { data.drain(data.length()); }
  void onTransportEof() override {}
  void onTransportDrained() override {}
  void onTransportError(const std::string&) override {}
};

// One worker: a loop, a listening socket, an Http1Server sharing the test's
// token cache and limiter.
struct Worker {
  Worker(cache::TokenCache& cache, const Http1ServerOptions& options) {
    auto bound = ListenSocket::bind("127.0.0.1:0");
    EXPECT_TRUE(bound.ok()) << bound.status();
    socket = std::move(*bound);
    loop.runSync([&] {
      server = std::make_unique<Http1Server>(loop.dispatcher(), cache, options);
      server->setUpgradeHandler(ProtocolFamily::kSpdy, &handler);
      server->setUpgradeHandler(ProtocolFamily::kWebSocket, &handler);
      listener = std::make_unique<Listener>(
          loop.dispatcher(), *socket,
          [this](int fd, std::string peer) { server->onAccept(fd, std::move(peer)); });
    });
  }
  ~Worker() {
    loop.runSync([&] {
      listener.reset();
      server.reset();
      handler.transports.clear();
    });
  }

  std::string address() const { return socket->address(); }

  test::LoopThread loop;
  KeepingHandler handler;
  std::unique_ptr<ListenSocket> socket;
  std::unique_ptr<Http1Server> server;
  std::unique_ptr<Listener> listener;
};

class Http1ServerLimitsTest : public ::testing::Test {
 protected:
  Http1ServerLimitsTest() {
    cache::TokenCacheOptions cache_options;
    cache_options.registry = &registry_;
    cache_ = std::make_unique<cache::TokenCache>(cache_options, time_, random_);
  }

  Http1ServerOptions options(SessionLimiter* limiter) {
    Http1ServerOptions o;
    o.registry = &registry_;
    o.session_limiter = limiter;
    return o;
  }

  std::string token() {
    auto t = cache_->insert(execRequest());
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : "";
  }

  // Sends `request` and reads the response head; the socket stays open (the
  // caller closes it). The head goes to `reply`.
  int send(const Worker& worker, const std::string& request, std::string& reply) {
    const int fd = test::connectTo(worker.address());
    EXPECT_GE(fd, 0);
    EXPECT_TRUE(test::sendAll(fd, request));
    reply = readHead(fd).value_or("<nothing>");
    return fd;
  }

  // The whole answer to `request` on a new connection.
  std::string roundTrip(const Worker& worker, const std::string& request) {
    return test::roundTrip(worker.address(), request).value_or("<nothing>");
  }

  uint64_t limitHits(StreamLimit limit) { return limitHitCounter(limit, &registry_).value(); }
  uint64_t requests(const char* result) {
    return registry_.family("crisp_stream_requests_total", "", stats::Kind::kCounter, {"result"})
        .counter({result})
        .value();
  }

  stats::Registry registry_;
  RealTimeSource time_;
  SystemRandomSource random_;
  std::unique_ptr<cache::TokenCache> cache_;
};

TEST_F(Http1ServerLimitsTest, UpgradeBeyondMaxSessionsGets503AndBurnsTheToken) {
  SessionLimiter limiter(2);
  Worker worker(*cache_, options(&limiter));
  std::string reply;
  const int first = send(worker, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(reply, kSwitchToV4);
  const int second = send(worker, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(reply, kSwitchToV4);
  EXPECT_EQ(limiter.active(), 2u);
  EXPECT_EQ(limitHits(StreamLimit::kMaxSessions), 0u);

  const std::string third = token();
  EXPECT_EQ(roundTrip(worker, spdyHead("/exec/" + third)), tooManySessions(2));
  EXPECT_EQ(worker.handler.upgrades.load(), 2);
  EXPECT_EQ(limiter.active(), 2u);
  EXPECT_EQ(limitHits(StreamLimit::kMaxSessions), 1u);
  EXPECT_EQ(requests("too_many_sessions"), 1u);
  EXPECT_EQ(requests("upgraded"), 2u);
  // The refused request's token is gone, as after any answer to it.
  EXPECT_EQ(roundTrip(worker, spdyHead("/exec/" + third)), kNotFound);
  ::close(first);
  ::close(second);
}

TEST_F(Http1ServerLimitsTest, EndedSessionsGiveTheirSlotBack) {
  SessionLimiter limiter(2);
  Worker worker(*cache_, options(&limiter));
  std::string reply;
  const int a = send(worker, spdyHead("/exec/" + token()), reply);
  const int b = send(worker, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(roundTrip(worker, spdyHead("/exec/" + token())), tooManySessions(2));

  // A session that closes its connection (its owner frees it later).
  worker.loop.runSync([&] { worker.handler.transports[0]->close(); });
  EXPECT_EQ(test::readUntilClose(a), "");
  EXPECT_EQ(limiter.active(), 1u);
  const int c = send(worker, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(reply, kSwitchToV4);
  EXPECT_EQ(roundTrip(worker, spdyHead("/exec/" + token())), tooManySessions(2));

  // A session whose transport is destroyed outright.
  worker.loop.runSync([&] { worker.handler.transports[1].reset(); });
  EXPECT_EQ(limiter.active(), 1u);
  const int d = send(worker, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(reply, kSwitchToV4);
  EXPECT_EQ(limitHits(StreamLimit::kMaxSessions), 2u);
  for (int fd : {a, b, c, d}) {
    ::close(fd);
  }
}

TEST_F(Http1ServerLimitsTest, WebSocketUpgradesShareTheLimitAndGetThe503Too) {
  SessionLimiter limiter(2);
  Worker worker(*cache_, options(&limiter));
  std::string reply;
  const int spdy = send(worker, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(reply, kSwitchToV4);
  const int ws = send(worker, webSocketHead("/exec/" + token()), reply);
  EXPECT_EQ(reply.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << reply;
  EXPECT_EQ(roundTrip(worker, webSocketHead("/exec/" + token())), tooManySessions(2));
  EXPECT_EQ(roundTrip(worker, spdyHead("/exec/" + token())), tooManySessions(2));
  EXPECT_EQ(limitHits(StreamLimit::kMaxSessions), 2u);
  ::close(spdy);
  ::close(ws);
}

// Two workers, each with its own loop and server, count against one limit.
TEST_F(Http1ServerLimitsTest, TheLimitCountsSessionsOfEveryWorker) {
  SessionLimiter limiter(2);
  Worker one(*cache_, options(&limiter));
  Worker two(*cache_, options(&limiter));
  std::string reply;
  const int a = send(one, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(reply, kSwitchToV4);
  const int b = send(two, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(reply, kSwitchToV4);
  EXPECT_EQ(roundTrip(one, spdyHead("/exec/" + token())), tooManySessions(2));
  EXPECT_EQ(roundTrip(two, spdyHead("/exec/" + token())), tooManySessions(2));
  // A slot freed on one worker is taken on the other.
  one.loop.runSync([&] { one.handler.transports.clear(); });
  const int c = send(two, spdyHead("/exec/" + token()), reply);
  EXPECT_EQ(reply, kSwitchToV4);
  EXPECT_EQ(limiter.active(), 2u);
  for (int fd : {a, b, c}) {
    ::close(fd);
  }
}

TEST_F(Http1ServerLimitsTest, WithoutALimiterEveryUpgradeIsServed) {
  Worker worker(*cache_, options(nullptr));
  std::vector<int> fds;
  for (int i = 0; i < 20; ++i) {
    std::string reply;
    fds.push_back(send(worker, spdyHead("/exec/" + token()), reply));
    EXPECT_EQ(reply, kSwitchToV4);
  }
  EXPECT_EQ(limitHits(StreamLimit::kMaxSessions), 0u);
  for (int fd : fds) {
    ::close(fd);
  }
}

TEST_F(Http1ServerLimitsTest, HeadOnePastMaxHeaderBytesIsCounted) {
  Http1ServerOptions o = options(nullptr);
  o.connection.max_header_bytes = 1024;
  Worker worker(*cache_, o);
  // A request head of exactly 1024 bytes, and one of 1025.
  const std::string start = "GET /exec/unknown HTTP/1.1\r\nHost: x\r\nX-Pad: ";
  const std::string end = "\r\n\r\n";
  const std::string at_limit = start + std::string(1024 - start.size() - end.size(), 'p') + end;
  ASSERT_EQ(at_limit.size(), 1024u);
  const std::string past_limit =
      start + std::string(1024 - start.size() - end.size() + 1, 'p') + end;

  EXPECT_EQ(roundTrip(worker, at_limit), kNotFound);
  EXPECT_EQ(limitHits(StreamLimit::kHeaderBytes), 0u);
  EXPECT_EQ(roundTrip(worker, past_limit).rfind("HTTP/1.1 431 ", 0), 0u);
  EXPECT_EQ(limitHits(StreamLimit::kHeaderBytes), 1u);
  EXPECT_EQ(requests("header_too_large"), 1u);
}

TEST_F(Http1ServerLimitsTest, HeaderTimeoutIsCounted) {
  Http1ServerOptions o = options(nullptr);
  o.connection.header_timeout = milliseconds(200);
  Worker worker(*cache_, o);
  // A head sent at once is not affected.
  EXPECT_EQ(roundTrip(worker, spdyHead("/exec/unknown")), kNotFound);
  EXPECT_EQ(limitHits(StreamLimit::kHeaderTimeout), 0u);
  // A client that sends part of a head and then nothing is closed, unanswered.
  const int fd = test::connectTo(worker.address());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(test::sendAll(fd, "GET /exec/x HTTP/1.1\r\n"));
  EXPECT_EQ(test::readUntilClose(fd), "");
  ::close(fd);
  EXPECT_EQ(limitHits(StreamLimit::kHeaderTimeout), 1u);
  EXPECT_EQ(requests("header_timeout"), 1u);
}

}  // namespace
}  // namespace crisp::stream
