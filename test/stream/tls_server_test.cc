// The stream server's TLS as a whole: a listener whose connections get a
// TlsTransport with the holder's current context, reloads under running
// connections, the HTTP/1.1 front over TLS, and the openssl command-line
// client as an independent peer.

#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "source/admin/metrics.h"
#include "source/cache/token_cache.h"
#include "source/common/logger.h"
#include "source/common/time.h"
#include "source/stream/http1_server.h"
#include "source/stream/listener.h"
#include "source/stream/tls_context.h"
#include "source/stream/tls_transport.h"

#include "test/stream/spdy_test_client.h"
#include "test/stream/tls_test_util.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using testing::LoopThread;
using testing::TlsClientOptions;
using testing::TlsTestClient;

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (char& c : out) {
    c = static_cast<char>(gen() & 0xff);
  }
  return out;
}

// Collects what the stream logger writes while it lives, at debug level.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    log::get(log::Component::kStream).sinks().push_back(sink_);
    log::setLevel("debug");
  }
  ~LogCapture() {
    log::setLevel("info");
    auto& sinks = log::get(log::Component::kStream).sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::string text() const {
    sink_->flush();
    return out_.str();
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

// Sends back every byte it receives; answers close_notify with its own.
class Echo : public TransportCallbacks {
 public:
  explicit Echo(TransportPtr transport) : transport_(std::move(transport)) {
    transport_->setCallbacks(*this);
    transport_->start();
  }
  void onTransportData(Buffer& data) override { transport_->write(data); }
  void onTransportEof() override { transport_->shutdownWrite(); }
  void onTransportDrained() override {}
  void onTransportError(const std::string&) override {}

 private:
  TransportPtr transport_;
};

// Takes upgraded connections and keeps them, with the identity they carried.
class KeepingHandler : public UpgradeHandler {
 public:
  void onUpgrade(event::Dispatcher&, UpgradedConnection&& connection) override {
    identities.push_back(connection.transport->peerIdentity());
    connection.transport->setCallbacks(echo_sink_);
    connection.transport->start();
    kept.push_back(std::move(connection.transport));
  }
  std::vector<std::string> identities;  // on the loop
  std::vector<TransportPtr> kept;       // on the loop

 private:
  class Sink : public TransportCallbacks {
   public:
    void onTransportData(Buffer& data) override { data.drain(data.length()); }
    void onTransportEof() override {}
    void onTransportDrained() override {}
    void onTransportError(const std::string&) override {}
  };
  Sink echo_sink_;
};

class TlsServerTest : public ::testing::Test {
 protected:
  TlsServerTest() : ca_("crisp test CA") {
    testing::LeafSpec spec;
    spec.common_name = "crisp";
    spec.serial = 0xA1;
    first_ = ca_.issue(spec);
    spec.serial = 0xB2;
    second_ = ca_.issue(spec);
    testing::LeafSpec client;
    client.common_name = "kubelet";
    client.organization = "system:nodes";
    client.client = true;
    client.serial = 0xC3;
    client_ = ca_.issue(client);
  }

  ~TlsServerTest() override {
    loop_.run([&] {
      listener_.reset();
      echoes_.clear();
      http_.reset();
      handler_.kept.clear();
      return 0;
    });
  }

  TlsFiles writeFiles(const testing::TestCertificate& cert, bool verify_clients) {
    TlsFiles files;
    files.cert_file = dir_.write("tls.crt", cert.cert_pem);
    files.key_file = dir_.write("tls.key", cert.key_pem);
    if (verify_clients) {
      files.client_ca_file = dir_.write("ca.crt", ca_.certPem());
    }
    return files;
  }

  void createHolder(bool verify_clients) {
    auto holder = TlsContextHolder::create(writeFiles(first_, verify_clients));
    ASSERT_TRUE(holder.ok()) << holder.status();
    holder_ = std::move(holder).value();
  }

  // A TLS echo server on the loop, each connection with the context current
  // when it was accepted.
  void startEchoServer() {
    auto socket = ListenSocket::bind("127.0.0.1:0");
    ASSERT_TRUE(socket.ok()) << socket.status();
    socket_ = std::move(socket).value();
    loop_.run([&] {
      listener_ = std::make_unique<Listener>(
          loop_.dispatcher(), *socket_, [this](int fd, std::string peer) {
            echoes_.push_back(std::make_unique<Echo>(std::make_unique<TlsTransport>(
                loop_.dispatcher(), fd, std::move(peer), holder_->current())));
          });
      return 0;
    });
  }

  // The HTTP/1.1 front over TLS, as crisp wires it.
  void startHttpServer() {
    auto socket = ListenSocket::bind("127.0.0.1:0");
    ASSERT_TRUE(socket.ok()) << socket.status();
    socket_ = std::move(socket).value();
    cache_ = std::make_unique<cache::TokenCache>(cache::TokenCacheOptions{}, time_, random_);
    loop_.run([&] {
      Http1ServerOptions options;
      options.registry = &registry_;
      http_ = std::make_unique<Http1Server>(loop_.dispatcher(), *cache_, options);
      http_->setUpgradeHandler(ProtocolFamily::kSpdy, &handler_);
      ListenerOptions listener_options;
      listener_options.registry = &registry_;
      listener_ = std::make_unique<Listener>(
          loop_.dispatcher(), *socket_,
          [this](int fd, std::string peer) {
            http_->onAcceptTransport(std::make_unique<TlsTransport>(
                loop_.dispatcher(), fd, std::move(peer), holder_->current()));
          },
          listener_options);
      return 0;
    });
  }

  std::unique_ptr<TlsTestClient> client(bool with_certificate = false) {
    TlsClientOptions options;
    options.ca_pem = ca_.certPem();
    options.verify_ip = "127.0.0.1";
    if (with_certificate) {
      options.cert_pem = client_.cert_pem;
      options.key_pem = client_.key_pem;
    }
    const int fd = connectTo(socket_->address());
    return std::make_unique<TlsTestClient>(fd, options);
  }

  static int connectTo(const std::string& address) {
    const size_t colon = address.rfind(':');
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }

  // Runs the openssl command-line client against the server with `args`,
  // `input` on its stdin; returns its exit code and everything it printed.
  std::pair<int, std::string> sClient(const std::string& args, const std::string& input) {
    const std::string in = dir_.write("s_client.in", input);
    const std::string out = dir_.path() + "/s_client.out";
    const std::string command = "timeout 10 openssl s_client -connect " + socket_->address() + " " +
                                args + " < " + in + " > " + out + " 2>&1";
    const int status = std::system(command.c_str());
    std::ifstream file(out);
    std::stringstream text;
    text << file.rdbuf();
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text.str()};
  }

  testing::TempDir dir_;
  testing::TestCa ca_;
  testing::TestCertificate first_;
  testing::TestCertificate second_;
  testing::TestCertificate client_;
  std::unique_ptr<TlsContextHolder> holder_;
  std::unique_ptr<ListenSocket> socket_;
  stats::Registry registry_;
  RealTimeSource time_;
  SystemRandomSource random_;
  std::unique_ptr<cache::TokenCache> cache_;
  LoopThread loop_;
  // On the loop:
  std::unique_ptr<Listener> listener_;
  std::vector<std::unique_ptr<Echo>> echoes_;
  std::unique_ptr<Http1Server> http_;
  KeepingHandler handler_;
};

TEST_F(TlsServerTest, ReloadKeepsRunningConnectionsAndServesNewOnesTheNewCertificate) {
  createHolder(false);
  startEchoServer();
  auto before = client();
  ASSERT_EQ(before->handshake(), "");
  EXPECT_EQ(before->serverSerial(), "A1");
  ASSERT_TRUE(before->write("one"));
  EXPECT_EQ(before->readExactly(3).value_or("<" + before->error() + ">"), "one");

  writeFiles(second_, false);
  ASSERT_TRUE(holder_->reload().ok());

  // The running connection goes on, bulk included.
  const std::string bulk = randomBytes(1 << 20, 7);
  std::optional<std::string> echoed = before->exchange(bulk, bulk.size(), milliseconds(10000));
  ASSERT_TRUE(echoed.has_value()) << before->error();
  EXPECT_TRUE(*echoed == bulk);
  EXPECT_EQ(before->serverSerial(), "A1");

  auto after = client();
  ASSERT_EQ(after->handshake(), "");
  EXPECT_EQ(after->serverSerial(), "B2");
  ASSERT_TRUE(after->write("two"));
  EXPECT_EQ(after->readExactly(3).value_or("<" + after->error() + ">"), "two");

  // A broken key is refused; the certificate loaded last is still served.
  dir_.write("tls.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  const absl::Status refused = holder_->reload();
  EXPECT_THAT(std::string(refused.message()), HasSubstr(holder_->files().key_file));
  auto third = client();
  ASSERT_EQ(third->handshake(), "");
  EXPECT_EQ(third->serverSerial(), "B2");

  // Every connection still works and ends cleanly.
  for (TlsTestClient* c : {before.get(), after.get(), third.get()}) {
    ASSERT_TRUE(c->write("end"));
    EXPECT_EQ(c->readExactly(3).value_or("<" + c->error() + ">"), "end");
    ASSERT_TRUE(c->closeNotify());
    EXPECT_EQ(c->readToCloseNotify().value_or("<" + c->error() + ">"), "");
  }
}

TEST_F(TlsServerTest, HttpFrontAnswersOverTls) {
  createHolder(false);
  startHttpServer();
  auto c = client();
  ASSERT_EQ(c->handshake(), "");
  ASSERT_TRUE(c->write("GET /nosuch HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string response = c->readToCloseNotify().value_or("<" + c->error() + ">");
  EXPECT_THAT(response, ::testing::StartsWith("HTTP/1.1 404 Not Found\r\n"));
  EXPECT_THAT(response, HasSubstr("\r\n\r\n404 page not found\n"));
}

TEST_F(TlsServerTest, UpgradeLogLineNamesTheVerifiedClient) {
  createHolder(true);
  startHttpServer();
  session::ExecSpec spec;
  spec.container_id = "ctr-1";
  spec.command = {"true"};
  spec.stdout = true;
  absl::StatusOr<std::string> token = cache_->insert(session::StreamRequest{spec});
  ASSERT_TRUE(token.ok()) << token.status();

  LogCapture log;
  auto c = client(true);
  ASSERT_EQ(c->handshake(), "");
  ASSERT_TRUE(c->write("POST /exec/" + *token +
                       "?command=true HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                       "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
                       "Content-Length: 0\r\n\r\n"));
  const std::string expected =
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";
  EXPECT_EQ(c->readExactly(expected.size()).value_or("<" + c->error() + ">"), expected);
  ASSERT_TRUE(loop_.waitUntil([&] { return handler_.identities.size() == 1; }));
  EXPECT_EQ(loop_.run([&] { return handler_.identities[0]; }), "CN=kubelet,O=system:nodes");
  EXPECT_THAT(log.text(), HasSubstr("upgrading to spdy/v4.channel.k8s.io for client "
                                    "\"CN=kubelet,O=system:nodes\""));
}

TEST_F(TlsServerTest, OpensslClientVerifiesTheServerAndGetsAnAnswer) {
  createHolder(false);
  startHttpServer();
  const std::string ca = dir_.write("client-ca.crt", ca_.certPem());
  auto [code, out] = sClient("-CAfile " + ca + " -verify_return_error -verify_ip 127.0.0.1 " +
                                 "-alpn http/1.1 -ign_eof",
                             "GET /nosuch HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("Verify return code: 0 (ok)"));
  EXPECT_THAT(out, HasSubstr("ALPN protocol: http/1.1"));
  EXPECT_THAT(out, HasSubstr("New, TLSv1.3"));
  EXPECT_THAT(out, HasSubstr("404 page not found"));

  // TLS 1.1, offered with every legacy setting enabled, is refused.
  std::tie(code, out) = sClient("-tls1_1 -cipher DEFAULT@SECLEVEL=0", "");
  EXPECT_NE(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("alert protocol version"));
}

TEST_F(TlsServerTest, OpensslClientNeedsACertificateWhenClientsAreVerified) {
  createHolder(true);
  startHttpServer();
  const std::string ca = dir_.write("client-ca.crt", ca_.certPem());
  const std::string request = "GET /nosuch HTTP/1.1\r\nHost: x\r\n\r\n";
  auto [code, out] = sClient("-CAfile " + ca + " -verify_return_error -ign_eof", request);
  EXPECT_THAT(out, HasSubstr("alert certificate required"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("404 page not found")));

  const std::string cert = dir_.write("client.crt", client_.cert_pem);
  const std::string key = dir_.write("client.key", client_.key_pem);
  std::tie(code, out) = sClient(
      "-CAfile " + ca + " -verify_return_error -ign_eof -cert " + cert + " -key " + key, request);
  EXPECT_EQ(code, 0) << out;
  EXPECT_THAT(out, HasSubstr("404 page not found"));
}

}  // namespace
}  // namespace crisp::stream
