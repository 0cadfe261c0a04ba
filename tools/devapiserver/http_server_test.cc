#include "tools/devapiserver/http_server.h"

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
using testing::readHead;
using testing::readToEof;
using ::testing::StartsWith;
using testing::TestUpstream;

class OnePod : public PodSource {
 public:
  absl::StatusOr<std::vector<PodInfo>> listPods() override {
    PodInfo p;
    p.name = "demo";
    p.container_id = "cid";
    p.sandbox_id = "sid";
    p.state = ContainerState::kRunning;
    return std::vector<PodInfo>{p};
  }
  absl::StatusOr<std::string> exec(const std::string&, const StreamOptions&) override {
    return url;
  }
  absl::StatusOr<std::string> attach(const std::string&, const StreamOptions&) override {
    return url;
  }
  absl::StatusOr<std::string> portForward(const std::string&,
                                          const std::vector<int32_t>&) override {
    return url;
  }
  std::string url = "http://127.0.0.1:1/exec/x";
};

// serveConnection() on one end of a socketpair, in a thread joined at the end.
class Connection {
 public:
  Connection(ApiHandler& handler, ServerLimits limits = {}) : limits_(limits) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    client_.reset(fds[0]);
    const int server_fd = fds[1];
    thread_ = std::thread(
        [server_fd, &handler, this] { serveConnection(server_fd, handler, {}, limits_); });
  }
  ~Connection() {
    ::shutdown(client_.get(), SHUT_RDWR);
    thread_.join();
  }
  int fd() const { return client_.get(); }

  // Reads one response with a Content-Length body.
  std::string readResponse() {
    std::string rest = pending_;
    pending_.clear();
    std::string head;
    if (rest.find("\r\n\r\n") != std::string::npos) {
      const size_t end = rest.find("\r\n\r\n") + 4;
      head = rest.substr(0, end);
      rest = rest.substr(end);
    } else {
      std::string more;
      head = rest + readHead(fd(), &more);
      rest = more;
    }
    const size_t cl = head.find("Content-Length: ");
    if (cl == std::string::npos) {
      return head;
    }
    const size_t length = std::stoul(head.substr(cl + 16));
    while (rest.size() < length) {
      absl::StatusOr<std::string> chunk = recvSome(fd(), 65536, std::chrono::seconds(5));
      if (!chunk.ok() || chunk->empty()) {
        break;
      }
      rest += *chunk;
    }
    pending_ = rest.substr(std::min(length, rest.size()));
    return head + rest.substr(0, length);
  }

 private:
  ServerLimits limits_;
  UniqueFd client_;
  std::thread thread_;
  std::string pending_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  HttpServerTest() : handler_(pods_, ApiOptions{"127.0.0.1:1", "node", nullptr}) {}
  OnePod pods_;
  ApiHandler handler_;
};

TEST_F(HttpServerTest, PipelinedRequestsOnOneKeepAliveConnection) {
  Connection c(handler_);
  ASSERT_TRUE(sendAll(c.fd(),
                      "GET /api HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /api/v1/namespaces/default/pods/nosuch HTTP/1.1\r\nHost: x\r\n\r\n")
                  .ok());
  const std::string first = c.readResponse();
  EXPECT_THAT(first, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(first, HasSubstr(R"("kind":"APIVersions")"));
  EXPECT_THAT(first, Not(HasSubstr("Connection: close")));
  const std::string second = c.readResponse();
  EXPECT_THAT(second, StartsWith("HTTP/1.1 404 Not Found\r\n"));
  EXPECT_THAT(second, HasSubstr(R"(pods \"nosuch\" not found)"));

  // A request fed one byte at a time on the same connection.
  const std::string third = "GET /api/v1/namespaces/default/pods/demo HTTP/1.1\r\nHost: x\r\n\r\n";
  for (const char ch : third) {
    ASSERT_TRUE(sendAll(c.fd(), std::string(1, ch)).ok());
  }
  EXPECT_THAT(c.readResponse(), HasSubstr(R"("name":"demo")"));
}

TEST_F(HttpServerTest, RequestsInRandomChunksWithBodies) {
  Connection c(handler_);
  std::string all;
  for (int i = 0; i < 5; ++i) {
    absl::StrAppend(&all, "POST /version HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                    "GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  std::mt19937 rng(42);
  std::thread writer([&] {
    size_t pos = 0;
    while (pos < all.size()) {
      const size_t n = std::min<size_t>(1 + rng() % 17, all.size() - pos);
      ASSERT_TRUE(sendAll(c.fd(), all.substr(pos, n)).ok());
      pos += n;
    }
  });
  for (int i = 0; i < 5; ++i) {
    EXPECT_THAT(c.readResponse(), StartsWith("HTTP/1.1 405 "));
    EXPECT_THAT(c.readResponse(), HasSubstr(R"("gitVersion")"));
  }
  writer.join();
}

TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  Connection c(handler_);
  ASSERT_TRUE(sendAll(c.fd(), "GET /apis HTTP/1.1\r\nConnection: close\r\n\r\n").ok());
  const std::string reply = readToEof(c.fd());
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(reply, HasSubstr("Connection: close\r\n"));
}

TEST_F(HttpServerTest, HeadGetsNoBody) {
  Connection c(handler_);
  ASSERT_TRUE(sendAll(c.fd(), "HEAD /apis HTTP/1.1\r\nConnection: close\r\n\r\n").ok());
  const std::string reply = readToEof(c.fd());
  EXPECT_THAT(reply, HasSubstr("Content-Length: 53\r\n"));
  EXPECT_EQ(reply.substr(reply.size() - 4), "\r\n\r\n");
}

TEST_F(HttpServerTest, MalformedRequestGets400AndClose) {
  for (const char* bad : {"GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
                          "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"}) {
    Connection c(handler_);
    ASSERT_TRUE(sendAll(c.fd(), bad).ok());
    EXPECT_THAT(readToEof(c.fd()), StartsWith("HTTP/1.1 400 Bad Request\r\n")) << bad;
  }
}

TEST_F(HttpServerTest, OversizedHeadAndBodyAreRefused) {
  ServerLimits limits;
  limits.max_head_bytes = 1024;
  limits.max_body_bytes = 100;
  {
    Connection c(handler_, limits);
    ASSERT_TRUE(sendAll(c.fd(), absl::StrCat("GET /api HTTP/1.1\r\nX: ", std::string(1100, 'a'),
                                             "\r\n\r\n"))
                    .ok());
    EXPECT_THAT(readToEof(c.fd()), StartsWith("HTTP/1.1 431 "));
  }
  {
    // Just under the limit still works.
    Connection c(handler_, limits);
    ASSERT_TRUE(
        sendAll(c.fd(), absl::StrCat("GET /api HTTP/1.1\r\nX: ", std::string(900, 'a'), "\r\n\r\n"))
            .ok());
    EXPECT_THAT(c.readResponse(), StartsWith("HTTP/1.1 200 "));
  }
  {
    Connection c(handler_, limits);
    ASSERT_TRUE(sendAll(c.fd(), absl::StrCat("POST /api HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
                                             std::string(101, 'b')))
                    .ok());
    EXPECT_THAT(readToEof(c.fd()), StartsWith("HTTP/1.1 413 "));
  }
}

TEST_F(HttpServerTest, PeerClosingMidRequestEndsTheConnection) {
  Connection c(handler_);
  ASSERT_TRUE(sendAll(c.fd(), "GET /api HTTP/1.1\r\nHo").ok());
  ::shutdown(c.fd(), SHUT_WR);
  EXPECT_THAT(readToEof(c.fd()), StartsWith("HTTP/1.1 400 "));
}

TEST_F(HttpServerTest, UpgradeRequestIsProxiedWithBytesThatFollowedIt) {
  std::string upstream_head;
  std::string upstream_rest;
  TestUpstream upstream([&](int fd) {
    upstream_head = readHead(fd, &upstream_rest);
    ASSERT_TRUE(sendAll(fd,
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                        "Upgrade: SPDY/3.1\r\n\r\n")
                    .ok());
    upstream_rest += readToEof(fd);
    ASSERT_TRUE(sendAll(fd, "done").ok());
  });
  pods_.url = upstream.url("/exec/tok");
  Connection c(handler_);
  ASSERT_TRUE(sendAll(c.fd(),
                      "POST /api/v1/namespaces/default/pods/demo/exec?command=ls&stdout=true "
                      "HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: Upgrade\r\n"
                      "Upgrade: SPDY/3.1\r\n\r\nSPDYBYTES")
                  .ok());
  ::shutdown(c.fd(), SHUT_WR);
  std::string rest;
  EXPECT_THAT(readHead(c.fd(), &rest), StartsWith("HTTP/1.1 101 "));
  EXPECT_EQ(rest + readToEof(c.fd()), "done");
  EXPECT_THAT(upstream_head, StartsWith("POST /exec/tok HTTP/1.1\r\n"));
  EXPECT_EQ(upstream_rest, "SPDYBYTES");
}

TEST(HttpServerLimitTest, ConnectionsAboveTheLimitGet503) {
  // serve() never returns, so the server, its handler and its thread live
  // until the test process exits.
  static OnePod* pods = new OnePod();
  static ApiHandler* handler = new ApiHandler(*pods, ApiOptions{"127.0.0.1:1", "node", nullptr});
  ServerLimits limits;
  limits.max_connections = 1;
  static HttpServer* server = new HttpServer(ProxyOptions{}, limits);
  absl::StatusOr<std::string> bound = server->listen("127.0.0.1:0");
  ASSERT_TRUE(bound.ok());
  std::thread([] { (void)server->serve(*handler); }).detach();
  const std::string port = bound->substr(bound->rfind(':') + 1);

  absl::StatusOr<UniqueFd> first = connectTcp("127.0.0.1", port, std::chrono::seconds(5));
  ASSERT_TRUE(first.ok());
  // HEAD: no body to leave behind between the two reads of this connection.
  ASSERT_TRUE(sendAll(first->get(), "HEAD /version HTTP/1.1\r\nHost: x\r\n\r\n").ok());
  EXPECT_THAT(readHead(first->get()), StartsWith("HTTP/1.1 200 "));

  absl::StatusOr<UniqueFd> second = connectTcp("127.0.0.1", port, std::chrono::seconds(5));
  ASSERT_TRUE(second.ok());
  EXPECT_THAT(readToEof(second->get()), StartsWith("HTTP/1.1 503 "));

  // The first connection is still served.
  ASSERT_TRUE(sendAll(first->get(), "HEAD /apis HTTP/1.1\r\nHost: x\r\n\r\n").ok());
  EXPECT_THAT(readHead(first->get()), StartsWith("HTTP/1.1 200 "));
}

TEST(ListenTest, OnlyLoopbackAddresses) {
  std::string bound;
  for (const char* bad : {"0.0.0.0:0", "10.1.2.3:0", "[::]:0", "localhost:0", "127.0.0.1",
                          "127.0.0.1:99999", "[::1:0"}) {
    EXPECT_FALSE(listenLoopback(bad, &bound).ok()) << bad;
  }
  absl::StatusOr<UniqueFd> fd = listenLoopback("127.0.0.1:0", &bound);
  ASSERT_TRUE(fd.ok());
  EXPECT_THAT(bound, StartsWith("127.0.0.1:"));
  EXPECT_NE(bound, "127.0.0.1:0");
  fd = listenLoopback("127.0.0.2:0", &bound);
  EXPECT_TRUE(fd.ok());
}

TEST(ListenTest, Ipv6LoopbackWhenAvailable) {
  std::string bound;
  absl::StatusOr<UniqueFd> fd = listenLoopback("[::1]:0", &bound);
  if (!fd.ok()) {
    GTEST_SKIP() << "no IPv6 loopback here: " << fd.status().message();
  }
  EXPECT_THAT(bound, StartsWith("[::1]:"));
}

}  // namespace
}  // namespace crisp::devapi
