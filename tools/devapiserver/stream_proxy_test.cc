#include "tools/devapiserver/stream_proxy.h"

#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "tools/devapiserver/socket_util.h"
#include "tools/devapiserver/test_upstream.h"

namespace crisp::devapi {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::readExactly;
using testing::readHead;
using testing::readToEof;
using ::testing::StartsWith;
using testing::TestUpstream;

constexpr char kSwitching[] =
    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";

HttpRequest spdyRequest() {
  HttpRequest r;
  r.method = "POST";
  r.target = "/api/v1/namespaces/default/pods/demo/exec?command=sh&stdout=true";
  r.path = "/api/v1/namespaces/default/pods/demo/exec";
  r.query = "command=sh&stdout=true";
  r.headers = {{"Host", "127.0.0.1:6443"},
               {"User-Agent", "kubectl/v1.27.16"},
               {"X-Stream-Protocol-Version", "v4.channel.k8s.io"},
               {"X-Stream-Protocol-Version", "v3.channel.k8s.io"},
               {"connection", "Upgrade"},
               {"Upgrade", "SPDY/3.1"}};
  r.upgrade = true;
  return r;
}

// The client side of the proxy: one end of a socketpair, the proxy runs on
// the other end in a thread that is joined by the destructor.
class ProxyRun {
 public:
  ProxyRun(const HttpRequest& request, std::string leftover, const std::string& url,
           ProxyOptions options = {}) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    client_.reset(fds[0]);
    const int proxy_fd = fds[1];
    thread_ = std::thread([=, leftover = std::move(leftover)] {
      proxyStream(proxy_fd, request, leftover, url, 1, options);
    });
  }
  ~ProxyRun() { join(); }
  void join() {
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  int fd() const { return client_.get(); }

 private:
  UniqueFd client_;
  std::thread thread_;
};

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) {
    c = static_cast<char>(rng() & 0xff);
  }
  return out;
}

TEST(ParseUrlTest, SplitsHostPortAndPath) {
  absl::StatusOr<ParsedUrl> u = parseUrl("http://127.0.0.1:43127/exec/AbCd-_12");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "43127");
  EXPECT_EQ(u->path_query, "/exec/AbCd-_12");
  EXPECT_EQ(u->host_header, "127.0.0.1:43127");

  u = parseUrl("HTTP://[::1]:8080/base/portforward/x?a=b#frag");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, "8080");
  EXPECT_EQ(u->path_query, "/base/portforward/x?a=b");
  EXPECT_EQ(u->host_header, "[::1]:8080");

  u = parseUrl("http://localhost");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, "80");
  EXPECT_EQ(u->path_query, "/");
  u = parseUrl("https://127.0.0.1?x=1");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->path_query, "/?x=1");

  for (const char* bad :
       {"", "/exec/x", "http://", "http://[::1/exec", "http://h:8x/", "http://[::1]x/", "://h/"}) {
    EXPECT_FALSE(parseUrl(bad).ok()) << bad;
  }
}

TEST(UpstreamRequestHeadTest, KeepsHeadersAndRewritesTargetAndHost) {
  absl::StatusOr<ParsedUrl> u = parseUrl("http://127.0.0.1:5555/exec/tok");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(upstreamRequestHead(spdyRequest(), *u),
            "POST /exec/tok HTTP/1.1\r\n"
            "Host: 127.0.0.1:5555\r\n"
            "User-Agent: kubectl/v1.27.16\r\n"
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
            "X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
            "connection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\n"
            "\r\n");
}

TEST(ProxyStreamTest, UpgradedStreamCopiesBothWaysAndPassesHalfClose) {
  std::string upstream_head;
  TestUpstream upstream([&](int fd) {
    std::string rest;
    upstream_head = readHead(fd, &rest);
    ASSERT_TRUE(sendAll(fd, absl::StrCat(kSwitching, "early")).ok());
    // Echo until the client's half-close arrives, then answer once more and close.
    std::string echoed = rest;
    ASSERT_TRUE(sendAll(fd, rest).ok());
    for (;;) {
      absl::StatusOr<std::string> chunk = recvSome(fd, 64 * 1024, std::chrono::seconds(5));
      ASSERT_TRUE(chunk.ok());
      if (chunk->empty()) {
        break;
      }
      ASSERT_TRUE(sendAll(fd, *chunk).ok());
    }
    ASSERT_TRUE(sendAll(fd, "bye").ok());
  });

  const std::string payload = randomBytes(4 << 20, 7);
  ProxyRun run(spdyRequest(), "LEFT", upstream.url("/exec/tok"));
  std::thread writer([&] {
    EXPECT_TRUE(sendAll(run.fd(), payload).ok());
    ::shutdown(run.fd(), SHUT_WR);
  });
  std::string body;
  const std::string head = readHead(run.fd(), &body);
  EXPECT_THAT(head, StartsWith("HTTP/1.1 101 Switching Protocols\r\n"));
  EXPECT_THAT(head, HasSubstr("X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"));
  body += readToEof(run.fd());
  writer.join();
  run.join();

  ASSERT_EQ(body.size(), 5 + 4 + payload.size() + 3);
  EXPECT_EQ(body.substr(0, 9), "earlyLEFT");
  EXPECT_TRUE(body.compare(9, payload.size(), payload) == 0);
  EXPECT_EQ(body.substr(body.size() - 3), "bye");
  EXPECT_THAT(upstream_head, StartsWith(absl::StrCat("POST /exec/tok HTTP/1.1\r\nHost: 127.0.0.1:",
                                                     upstream.port(), "\r\n")));
  EXPECT_THAT(upstream_head, HasSubstr("Upgrade: SPDY/3.1\r\n"));
  EXPECT_THAT(upstream_head, Not(HasSubstr("6443")));
}

TEST(ProxyStreamTest, RuntimeHalfCloseKeepsTheClientDirectionOpen) {
  // The runtime finishes sending first; the client may still send afterwards.
  TestUpstream upstream([](int fd) {
    readHead(fd);
    ASSERT_TRUE(sendAll(fd, absl::StrCat(kSwitching, "done")).ok());
    ::shutdown(fd, SHUT_WR);
    const std::string late = readToEof(fd);
    EXPECT_EQ(late, "late words");
  });
  ProxyRun run(spdyRequest(), "", upstream.url("/exec/tok"));
  std::string rest;
  readHead(run.fd(), &rest);
  EXPECT_EQ(rest + readToEof(run.fd()), "done");
  ASSERT_TRUE(sendAll(run.fd(), "late words").ok());
  ::shutdown(run.fd(), SHUT_WR);
  run.join();
}

TEST(ProxyStreamTest, RefusedUpgradeIsRelayedAndTheConnectionCloses) {
  // As golang.org/x/net/websocket refuses an unknown subprotocol: a bare 403, then close.
  TestUpstream upstream([](int fd) {
    readHead(fd);
    ASSERT_TRUE(sendAll(fd, "HTTP/1.1 403 Forbidden\r\n\r\n").ok());
  });
  HttpRequest ws = spdyRequest();
  ws.method = "GET";
  ws.headers = {{"Connection", "Upgrade"},
                {"Upgrade", "websocket"},
                {"Sec-WebSocket-Protocol", "v5.channel.k8s.io"}};
  ProxyRun run(ws, "", upstream.url("/exec/tok"));
  EXPECT_EQ(readToEof(run.fd()), "HTTP/1.1 403 Forbidden\r\n\r\n");
}

TEST(ProxyStreamTest, RefusalWithABodyEndsAfterTheBodyEvenIfTheRuntimeKeepsTheConnection) {
  const std::string response =
      "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Content-Length: 19\r\n\r\n404 page not found\n";
  TestUpstream upstream([&](int fd) {
    readHead(fd);
    ASSERT_TRUE(sendAll(fd, response).ok());
    readToEof(fd);  // returns once the proxy closed its side
  });
  ProxyRun run(spdyRequest(), "", upstream.url("/exec/tok"));
  EXPECT_EQ(readToEof(run.fd()), response);
}

TEST(ProxyStreamTest, UnreachableRuntimeIsA502Status) {
  int port = 0;
  {
    std::string bound;
    absl::StatusOr<UniqueFd> fd = listenLoopback("127.0.0.1:0", &bound);
    ASSERT_TRUE(fd.ok());
    port = std::stoi(bound.substr(bound.rfind(':') + 1));
  }  // closed: nothing listens there any more
  ProxyRun run(spdyRequest(), "", absl::StrCat("http://127.0.0.1:", port, "/exec/x"));
  const std::string reply = readToEof(run.fd());
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 502 Bad Gateway\r\n"));
  EXPECT_THAT(reply, HasSubstr(R"("kind":"Status")"));
  EXPECT_THAT(reply, HasSubstr("error dialing the stream server"));
}

TEST(ProxyStreamTest, UnknownSchemesHttpsWithoutTlsAndMalformedUrlsAreRefused) {
  {
    ProxyRun run(spdyRequest(), "", "https://127.0.0.1:1/exec/x");
    EXPECT_THAT(readToEof(run.fd()), HasSubstr("no TLS settings are configured"));
  }
  {
    ProxyRun run(spdyRequest(), "", "ftp://127.0.0.1:1/exec/x");
    EXPECT_THAT(readToEof(run.fd()), HasSubstr("only http and https are supported"));
  }
  {
    ProxyRun run(spdyRequest(), "", "not a url");
    EXPECT_THAT(readToEof(run.fd()), StartsWith("HTTP/1.1 502 "));
  }
}

TEST(ProxyStreamTest, RuntimeClosingWithoutAnswerIsA502) {
  TestUpstream upstream([](int fd) { readHead(fd); });
  ProxyRun run(spdyRequest(), "", upstream.url("/exec/tok"));
  const std::string reply = readToEof(run.fd());
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 502 "));
  EXPECT_THAT(reply, HasSubstr("without a response"));
}

TEST(ProxyStreamTest, GarbageFromTheRuntimeIsA502) {
  TestUpstream upstream([](int fd) {
    readHead(fd);
    ASSERT_TRUE(sendAll(fd, "SSH-2.0-OpenSSH\r\n\r\n").ok());
    readToEof(fd);
  });
  ProxyRun run(spdyRequest(), "", upstream.url("/exec/tok"));
  EXPECT_THAT(readToEof(run.fd()), StartsWith("HTTP/1.1 502 "));
}

TEST(ProxyStreamTest, SilentRuntimeTimesOutWith504) {
  TestUpstream upstream([](int fd) {
    readHead(fd);
    readToEof(fd);
  });
  ProxyOptions options;
  options.upstream_timeout = std::chrono::milliseconds(200);
  ProxyRun run(spdyRequest(), "", upstream.url("/exec/tok"), options);
  const std::string reply = readToEof(run.fd());
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 504 "));
}

TEST(ProxyStreamTest, ClientGoingAwayEndsTheProxy) {
  TestUpstream upstream([](int fd) {
    readHead(fd);
    ASSERT_TRUE(sendAll(fd, kSwitching).ok());
    // Keep talking until the proxy stops taking bytes.
    const std::string chunk(64 * 1024, 'x');
    while (sendAll(fd, chunk).ok()) {
    }
  });
  auto run = std::make_unique<ProxyRun>(spdyRequest(), "", upstream.url("/exec/tok"));
  readHead(run->fd());
  readExactly(run->fd(), 1024);
  // The client stops reading and writing; the proxy must notice and end.
  ::shutdown(run->fd(), SHUT_RDWR);
  run->join();
}

}  // namespace
}  // namespace crisp::devapi
