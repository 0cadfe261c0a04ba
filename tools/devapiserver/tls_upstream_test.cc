// The stream proxy toward an https:// streaming URL: the upstream here is a
// blocking OpenSSL server using crisp's own server TLS context.

#include "tools/devapiserver/tls_upstream.h"

#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "source/stream/tls_context.h"

#include "test/stream/tls_test_util.h"
#include "tools/devapiserver/socket_util.h"
#include "tools/devapiserver/stream_proxy.h"
#include "tools/devapiserver/test_upstream.h"

namespace crisp::devapi {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
namespace certs = ::crisp::stream::testing;

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
               {"X-Stream-Protocol-Version", "v4.channel.k8s.io"},
               {"Connection", "Upgrade"},
               {"Upgrade", "SPDY/3.1"}};
  r.upgrade = true;
  return r;
}

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (char& c : out) {
    c = static_cast<char>(rng() & 0xff);
  }
  return out;
}

// The TLS server side of one accepted connection, blocking, every wait
// bounded by socket timeouts.
class UpstreamSession {
 public:
  UpstreamSession(int fd, SSL_CTX* ctx) : ssl_(SSL_new(ctx)) {
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    SSL_set_fd(ssl_, fd);
    ok_ = SSL_accept(ssl_) == 1;
    ERR_clear_error();
  }
  ~UpstreamSession() { SSL_free(ssl_); }
  bool ok() const { return ok_; }
  std::string peerSubject() const {
    X509* cert = SSL_get0_peer_certificate(ssl_);
    if (cert == nullptr) {
      return "";
    }
    char buf[256];
    X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
    return buf;
  }
  // Everything up to the end of a request head; what followed in `rest`.
  std::string readHead(std::string* rest) {
    std::string data;
    while (data.find("\r\n\r\n") == std::string::npos) {
      std::optional<std::string> chunk = read();
      if (!chunk || chunk->empty()) {
        return "";
      }
      data += *chunk;
    }
    const size_t end = data.find("\r\n\r\n") + 4;
    *rest = data.substr(end);
    return data.substr(0, end);
  }
  // Some bytes; "" at close_notify; nullopt on failure.
  std::optional<std::string> read() {
    char buf[65536];
    size_t n = 0;
    if (SSL_read_ex(ssl_, buf, sizeof(buf), &n) == 1) {
      return std::string(buf, n);
    }
    const bool closed = SSL_get_error(ssl_, 0) == SSL_ERROR_ZERO_RETURN;
    ERR_clear_error();
    return closed ? std::optional<std::string>("") : std::nullopt;
  }
  bool write(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      size_t n = 0;
      if (SSL_write_ex(ssl_, data.data() + done, data.size() - done, &n) != 1) {
        return false;
      }
      done += n;
    }
    return true;
  }
  void closeNotify() { SSL_shutdown(ssl_); }

 private:
  SSL* ssl_;
  bool ok_ = false;
};

// The client side of the proxy: a socketpair end; the proxy runs on the
// other end in a thread joined by the destructor.
class ProxyRun {
 public:
  ProxyRun(const std::string& url, ProxyOptions options) {
    int fds[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    client_.reset(fds[0]);
    const int proxy_fd = fds[1];
    thread_ = std::thread([=] { proxyStream(proxy_fd, spdyRequest(), "", url, 1, options); });
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

class TlsUpstreamTest : public ::testing::Test {
 protected:
  TlsUpstreamTest() : ca_("crisp test CA"), other_ca_("another CA") {
    certs::LeafSpec server;
    server.common_name = "crisp";
    server_ = ca_.issue(server);
    certs::LeafSpec client;
    client.common_name = "devapiserver";
    client.client = true;
    client.ip_addresses = {};
    client_ = ca_.issue(client);
  }

  // crisp's server context for the test certificate; clients verified
  // against the test CA when asked.
  stream::TlsContextPtr serverContext(bool verify_clients) {
    stream::TlsFiles files;
    files.cert_file = dir_.write("server.crt", server_.cert_pem);
    files.key_file = dir_.write("server.key", server_.key_pem);
    if (verify_clients) {
      files.client_ca_file = dir_.write("clients.crt", ca_.certPem());
    }
    auto ctx = stream::TlsContext::load(files);
    EXPECT_TRUE(ctx.ok()) << ctx.status();
    return *ctx;
  }

  ProxyOptions proxyOptions(const std::string& ca_pem, bool with_certificate) {
    TlsUpstreamFiles files;
    files.ca_file = dir_.write("stream-ca.crt", ca_pem);
    if (with_certificate) {
      files.cert_file = dir_.write("client.crt", client_.cert_pem);
      files.key_file = dir_.write("client.key", client_.key_pem);
    }
    auto ctx = TlsUpstreamContext::create(files);
    EXPECT_TRUE(ctx.ok()) << ctx.status();
    ProxyOptions options;
    options.upstream_timeout = std::chrono::milliseconds(5000);
    options.tls = ctx.ok() ? *ctx : nullptr;
    return options;
  }

  static std::string httpsUrl(const testing::TestUpstream& upstream, const std::string& path) {
    return absl::StrCat("https://127.0.0.1:", upstream.port(), path);
  }

  certs::TempDir dir_;
  certs::TestCa ca_;
  certs::TestCa other_ca_;
  certs::TestCertificate server_;
  certs::TestCertificate client_;
};

TEST_F(TlsUpstreamTest, UpgradedStreamCrossesTlsBothWaysWithHalfClose) {
  stream::TlsContextPtr ctx = serverContext(false);
  std::string head;
  testing::TestUpstream upstream([&](int fd) {
    UpstreamSession session(fd, ctx->raw());
    ASSERT_TRUE(session.ok());
    std::string rest;
    head = session.readHead(&rest);
    ASSERT_TRUE(session.write(absl::StrCat(kSwitching, "early")));
    // Echo until the client's close_notify, then answer once more and close.
    for (;;) {
      std::optional<std::string> chunk = session.read();
      ASSERT_TRUE(chunk.has_value());
      if (chunk->empty()) {
        break;
      }
      ASSERT_TRUE(session.write(*chunk));
    }
    ASSERT_TRUE(session.write("bye"));
    session.closeNotify();
  });
  ProxyRun run(httpsUrl(upstream, "/exec/tok"), proxyOptions(ca_.certPem(), false));
  const std::string payload = randomBytes(4 << 20, 9);
  std::thread writer([&] {
    EXPECT_TRUE(sendAll(run.fd(), payload).ok());
    ::shutdown(run.fd(), SHUT_WR);
  });
  std::string body;
  EXPECT_THAT(testing::readHead(run.fd(), &body),
              StartsWith("HTTP/1.1 101 Switching Protocols\r\n"));
  body += testing::readToEof(run.fd());
  writer.join();
  run.join();
  ASSERT_EQ(body.size(), 5 + payload.size() + 3);
  EXPECT_EQ(body.substr(0, 5), "early");
  EXPECT_TRUE(body.compare(5, payload.size(), payload) == 0);
  EXPECT_EQ(body.substr(body.size() - 3), "bye");
  EXPECT_THAT(head, StartsWith(absl::StrCat(
                        "POST /exec/tok HTTP/1.1\r\nHost: 127.0.0.1:", upstream.port(), "\r\n")));
}

TEST_F(TlsUpstreamTest, ServerFromAnotherCaIsA502) {
  stream::TlsContextPtr ctx = serverContext(false);
  testing::TestUpstream upstream([&](int fd) { UpstreamSession session(fd, ctx->raw()); });
  ProxyRun run(httpsUrl(upstream, "/exec/tok"), proxyOptions(other_ca_.certPem(), false));
  const std::string reply = testing::readToEof(run.fd());
  EXPECT_THAT(reply, StartsWith("HTTP/1.1 502 Bad Gateway\r\n"));
  EXPECT_THAT(reply, HasSubstr("error dialing the stream server: TLS handshake: certificate "
                               "verify failed (unable to get local issuer certificate)"));
}

TEST_F(TlsUpstreamTest, ClientCertificateIsShownWhenTheServerAsks) {
  stream::TlsContextPtr ctx = serverContext(true);
  {
    testing::TestUpstream upstream([&](int fd) {
      UpstreamSession session(fd, ctx->raw());
      EXPECT_FALSE(session.ok());
    });
    ProxyRun run(httpsUrl(upstream, "/exec/tok"), proxyOptions(ca_.certPem(), false));
    const std::string reply = testing::readToEof(run.fd());
    EXPECT_THAT(reply, StartsWith("HTTP/1.1 502 Bad Gateway\r\n"));
    EXPECT_THAT(reply, HasSubstr("certificate required"));
  }
  std::string subject;
  testing::TestUpstream upstream([&](int fd) {
    UpstreamSession session(fd, ctx->raw());
    ASSERT_TRUE(session.ok());
    subject = session.peerSubject();
    std::string rest;
    session.readHead(&rest);
    ASSERT_TRUE(session.write(kSwitching));
    session.closeNotify();
  });
  ProxyRun run(httpsUrl(upstream, "/exec/tok"), proxyOptions(ca_.certPem(), true));
  std::string body;
  EXPECT_THAT(testing::readHead(run.fd(), &body),
              StartsWith("HTTP/1.1 101 Switching Protocols\r\n"));
  ::shutdown(run.fd(), SHUT_WR);
  EXPECT_EQ(body + testing::readToEof(run.fd()), "");
  run.join();
  EXPECT_EQ(subject, "/CN=devapiserver");
}

TEST(TlsUpstreamContextTest, FilesAreCheckedAtCreation) {
  auto ctx = TlsUpstreamContext::create({"/nonexistent/ca.crt", "", ""});
  EXPECT_EQ(std::string(ctx.status().message()),
            "/nonexistent/ca.crt: cannot read: No such file or directory");
  ctx = TlsUpstreamContext::create({"", "/nonexistent/c.crt", ""});
  EXPECT_FALSE(ctx.ok());
  // No files at all: the system's CAs.
  EXPECT_TRUE(TlsUpstreamContext::create({}).ok());
}

}  // namespace
}  // namespace crisp::devapi
