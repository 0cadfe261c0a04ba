#include "source/admin/admin_server.h"

#include <string>

#include <gtest/gtest.h>

#include "test/stream/http1_test_util.h"

namespace crisp::admin {
namespace {

class AdminServerTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    AdminServerOptions options;
    options.listen = GetParam();
    options.registry = &registry_;
    loop_.runSync([&] {
      auto server = AdminServer::create(loop_.dispatcher(), options);
      ASSERT_TRUE(server.ok()) << server.status();
      server_ = std::move(*server);
    });
    ASSERT_NE(server_, nullptr);
  }

  void TearDown() override {
    loop_.runSync([&] { server_.reset(); });
  }

  std::string get(const std::string& path, const std::string& method = "GET") {
    return test::roundTrip(server_->address(),
                           method + " " + path + " HTTP/1.1\r\nHost: admin\r\n\r\n")
        .value_or("<no answer>");
  }

  stats::Registry registry_;
  test::LoopThread loop_;
  std::unique_ptr<AdminServer> server_;
};

INSTANTIATE_TEST_SUITE_P(IpVersions, AdminServerTest, ::testing::Values("127.0.0.1:0", "[::1]:0"));

TEST_P(AdminServerTest, HealthzAnswersOk) {
  EXPECT_EQ(get("/healthz"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\nok");
}

TEST_P(AdminServerTest, ReadyzFlipsToDrainingAndBack) {
  EXPECT_EQ(get("/readyz"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\nok");
  server_->setReady(false);
  EXPECT_EQ(get("/readyz"),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 8\r\nConnection: close\r\n\r\ndraining");
  // Health is about the process, not readiness.
  EXPECT_EQ(get("/healthz").rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  server_->setReady(true);
  EXPECT_EQ(get("/readyz").rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
}

TEST_P(AdminServerTest, MetricsRendersTheRegistry) {
  auto& probe = registry_.family("crisp_test_probe_total", "A counter the test increments.",
                                 stats::Kind::kCounter, {"kind"});
  probe.counter({"a"}).inc(3);
  const std::string reply = get("/metrics");
  const std::string body = registry_.renderPrometheus();
  EXPECT_EQ(reply,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
            "Content-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  EXPECT_NE(
      reply.find("\n# TYPE crisp_test_probe_total counter\ncrisp_test_probe_total{kind=\"a\"} "
                 "3\n"),
      std::string::npos)
      << reply;
  probe.counter({"a"}).inc();
  EXPECT_NE(get("/metrics").find("crisp_test_probe_total{kind=\"a\"} 4\n"), std::string::npos);
  // The query string does not matter.
  EXPECT_NE(get("/metrics?x=1").find("crisp_test_probe_total{kind=\"a\"} 4\n"), std::string::npos);
}

TEST_P(AdminServerTest, HeadHasNoBody) {
  EXPECT_EQ(get("/healthz", "HEAD"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: 2\r\nConnection: close\r\n\r\n");
}

TEST_P(AdminServerTest, UnknownPathsAre404AndOtherMethods405) {
  const std::string not_found =
      "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "X-Content-Type-Options: nosniff\r\nContent-Length: 19\r\nConnection: close\r\n\r\n"
      "404 page not found\n";
  EXPECT_EQ(get("/"), not_found);
  EXPECT_EQ(get("/healthz/"), not_found);
  EXPECT_EQ(get("/metrics/../healthz"), not_found);
  EXPECT_EQ(get("/exec/abc"), not_found);
  const std::string post = get("/readyz", "POST");
  EXPECT_EQ(post.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << post;
  EXPECT_NE(post.find("\r\nAllow: GET, HEAD\r\n"), std::string::npos);
}

TEST_P(AdminServerTest, OversizedAndMalformedHeadsAreRefused) {
  const auto big =
      test::roundTrip(server_->address(),
                      "GET /metrics HTTP/1.1\r\nX-Pad: " + std::string(20000, 'p') + "\r\n\r\n");
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u);
  const auto junk = test::roundTrip(server_->address(), "\x16\x03\x01 hello\r\n\r\n");
  ASSERT_TRUE(junk.has_value());
  EXPECT_EQ(junk->rfind("HTTP/1.1 400 Bad Request\r\n", 0), 0u);
}

TEST(AdminServerCreateTest, BadListenAddressIsAnError) {
  test::LoopThread loop;
  loop.runSync([&] {
    AdminServerOptions options;
    options.listen = "localhost:9090";
    auto server = AdminServer::create(loop.dispatcher(), options);
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  });
}

}  // namespace
}  // namespace crisp::admin
