#include "source/stream/tls_transport.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/stream/tls_context.h"

#include "test/stream/spdy_test_client.h"
#include "test/stream/tls_test_util.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using testing::LoopThread;
using ::testing::StartsWith;
using testing::TlsClientOptions;
using testing::TlsTestClient;

// What a quiet period is allowed to show (nothing) before the test moves on.
constexpr milliseconds kQuiet{150};

// Records the callbacks of one transport. Lives on the loop. Flags any
// callback that arrives while the test is inside a method of the transport.
class Recorder : public TransportCallbacks {
 public:
  void onTransportData(Buffer& data) override {
    check();
    max_chunk = std::max(max_chunk, data.length());
    received += data.toString();
    events.push_back("data");
    if (on_data) {
      on_data(*this);
    }
  }
  void onTransportEof() override {
    check();
    events.push_back("eof");
  }
  void onTransportDrained() override {
    check();
    ++drained;
  }
  void onTransportError(const std::string& detail) override {
    check();
    events.push_back("error");
    error = detail;
  }
  void check() {
    if (in_call) {
      reentrant = true;
    }
  }
  size_t count(const std::string& e) const { return std::count(events.begin(), events.end(), e); }

  std::function<void(Recorder&)> on_data;
  std::vector<std::string> events;
  std::string received;
  size_t max_chunk = 0;
  size_t drained = 0;
  std::string error;
  bool in_call = false;
  bool reentrant = false;
};

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (char& c : out) {
    c = static_cast<char>(gen() & 0xff);
  }
  return out;
}

// The first flight of a TLS 1.3 client: a real ClientHello.
std::string clientHello() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);
  SSL_set_connect_state(ssl);
  SSL_do_handshake(ssl);  // wants to read the ServerHello; the hello is in wbio
  char* data = nullptr;
  const long len = BIO_get_mem_data(wbio, &data);
  std::string out(data, static_cast<size_t>(len));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return out;
}

class TlsTransportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ca_ = new testing::TestCa("crisp test CA");
    other_ca_ = new testing::TestCa("another CA");
    testing::LeafSpec server;
    server.common_name = "crisp";
    server.serial = 0x1001;
    server_ = new testing::TestCertificate(ca_->issue(server));
    testing::LeafSpec expired = server;
    expired.serial = 0x1002;
    expired.valid_from = -3 * 24 * 3600;
    expired.valid_until = -24 * 3600;
    expired_ = new testing::TestCertificate(ca_->issue(expired));
    testing::LeafSpec client;
    client.common_name = "kubelet";
    client.organization = "system:nodes";
    client.client = true;
    client.dns_names = {};
    client.ip_addresses = {};
    client.serial = 0x2001;
    client_ = new testing::TestCertificate(ca_->issue(client));
    foreign_client_ = new testing::TestCertificate(other_ca_->issue(client));
  }
  static void TearDownTestSuite() {
    delete foreign_client_;
    delete client_;
    delete expired_;
    delete server_;
    delete other_ca_;
    delete ca_;
  }

  void TearDown() override {
    loop_.run([&] {
      transport_.reset();
      return 0;
    });
  }

  // A context serving `cert`, verifying clients against the test CA when
  // `verify_clients`.
  TlsContextPtr context(bool verify_clients, const testing::TestCertificate* cert = nullptr) {
    cert = cert != nullptr ? cert : server_;
    TlsFiles files;
    files.cert_file = dir_.write("server.crt", cert->cert_pem);
    files.key_file = dir_.write("server.key", cert->key_pem);
    if (verify_clients) {
      files.client_ca_file = dir_.write("clients.crt", ca_->certPem());
    }
    absl::StatusOr<TlsContextPtr> ctx = TlsContext::load(files);
    EXPECT_TRUE(ctx.ok()) << ctx.status();
    return ctx.ok() ? *ctx : nullptr;
  }

  // A client that verifies the server against the test CA.
  static TlsClientOptions verifyingClient() {
    TlsClientOptions options;
    options.ca_pem = ca_->certPem();
    options.verify_ip = "127.0.0.1";
    return options;
  }

  // A loopback connection whose server side is a started TlsTransport on
  // the loop; returns the (not yet handshaken) client.
  std::unique_ptr<TlsTestClient> connect(TlsContextPtr ctx, const TlsClientOptions& options,
                                         const TlsTransportOptions& transport_options = {}) {
    auto [client_fd, server_fd] = testing::loopbackPair();
    loop_.run([&, server_fd = server_fd] {
      transport_ = std::make_unique<TlsTransport>(loop_.dispatcher(), server_fd, "127.0.0.1:1", ctx,
                                                  transport_options);
      transport_->setCallbacks(rec_);
      rec_.in_call = true;
      transport_->start();
      rec_.in_call = false;
      return 0;
    });
    return std::make_unique<TlsTestClient>(client_fd, options);
  }

  // Runs `fn` on the loop as a method call of the owner.
  void call(const std::function<void(TlsTransport&)>& fn) {
    loop_.run([&] {
      rec_.in_call = true;
      fn(*transport_);
      rec_.in_call = false;
      return 0;
    });
  }
  void serverWrite(const std::string& bytes) {
    call([&](TlsTransport& t) {
      Buffer b;
      b.add(bytes);
      t.write(b);
    });
  }
  bool waitForReceived(size_t n, milliseconds timeout = milliseconds(5000)) {
    return loop_.waitUntil([&] { return rec_.received.size() >= n; }, timeout);
  }
  // The server's error once there is one (bounded wait); empty if none came.
  std::string serverError() {
    loop_.waitUntil([&] { return !rec_.error.empty(); });
    return loop_.run([&] { return rec_.error; });
  }
  bool serverClosed() {
    return loop_.run([&] { return transport_->closed(); });
  }

  static testing::TestCa* ca_;
  static testing::TestCa* other_ca_;
  static testing::TestCertificate* server_;
  static testing::TestCertificate* expired_;
  static testing::TestCertificate* client_;
  static testing::TestCertificate* foreign_client_;

  testing::TempDir dir_;
  LoopThread loop_;
  std::unique_ptr<TlsTransport> transport_;
  Recorder rec_;
};

testing::TestCa* TlsTransportTest::ca_ = nullptr;
testing::TestCa* TlsTransportTest::other_ca_ = nullptr;
testing::TestCertificate* TlsTransportTest::server_ = nullptr;
testing::TestCertificate* TlsTransportTest::expired_ = nullptr;
testing::TestCertificate* TlsTransportTest::client_ = nullptr;
testing::TestCertificate* TlsTransportTest::foreign_client_ = nullptr;

TEST_F(TlsTransportTest, HandshakeWithoutClientCertificateCarriesBytesBothWays) {
  TlsClientOptions options = verifyingClient();
  options.alpn = {"spdy/3.1", "http/1.1"};
  auto client = connect(context(false), options);
  ASSERT_EQ(client->handshake(), "");
  EXPECT_EQ(client->version(), "TLSv1.3");
  EXPECT_EQ(client->alpn(), "http/1.1");
  EXPECT_EQ(client->serverSerial(), server_->serial);

  ASSERT_TRUE(client->write("hello"));
  ASSERT_TRUE(waitForReceived(5));
  serverWrite("world");
  EXPECT_EQ(client->readExactly(5).value_or("<failed>"), "world");
  loop_.run([&] {
    EXPECT_EQ(rec_.received, "hello");
    EXPECT_TRUE(transport_->handshakeComplete());
    EXPECT_EQ(transport_->alpnProtocol(), "http/1.1");
    EXPECT_EQ(transport_->protocolVersion(), "TLSv1.3");
    EXPECT_EQ(transport_->peerIdentity(), "");
    EXPECT_GE(rec_.drained, 1u);
    EXPECT_FALSE(rec_.reentrant);
    return 0;
  });
}

TEST_F(TlsTransportTest, ClientWithoutAlpnIsServed) {
  auto client = connect(context(false), verifyingClient());
  ASSERT_EQ(client->handshake(), "");
  EXPECT_EQ(client->alpn(), "");
  ASSERT_TRUE(client->write("x"));
  ASSERT_TRUE(waitForReceived(1));
  EXPECT_EQ(loop_.run([&] { return transport_->alpnProtocol(); }), "");
}

TEST_F(TlsTransportTest, AlpnOfferWithNothingServedIsRefused) {
  TlsClientOptions options = verifyingClient();
  options.alpn = {"h2c", "spdy/3.1"};
  auto client = connect(context(false), options);
  EXPECT_THAT(client->handshake(), HasSubstr("no application protocol"));
  EXPECT_THAT(serverError(), StartsWith("TLS handshake: "));
  EXPECT_TRUE(serverClosed());
}

TEST_F(TlsTransportTest, VerifiedClientCertificateSubjectIsThePeerIdentity) {
  TlsClientOptions options = verifyingClient();
  options.cert_pem = client_->cert_pem;
  options.key_pem = client_->key_pem;
  auto client = connect(context(true), options);
  ASSERT_EQ(client->handshake(), "");
  ASSERT_TRUE(client->write("ping"));
  ASSERT_TRUE(waitForReceived(4));
  EXPECT_EQ(loop_.run([&] { return transport_->peerIdentity(); }), "CN=kubelet,O=system:nodes");
  EXPECT_EQ(client_->subject, "CN=kubelet,O=system:nodes");
}

TEST_F(TlsTransportTest, ClientWithoutCertificateIsRefusedWhenVerifying) {
  auto client = connect(context(true), verifyingClient());
  // TLS 1.3: the client's side of the handshake ends before the server has
  // checked its (missing) certificate; the refusal is its first read.
  const std::string handshake = client->handshake();
  const std::string failure = handshake.empty() ? client->readFailure() : handshake;
  EXPECT_THAT(failure, HasSubstr("certificate required"));
  EXPECT_EQ(serverError(), "TLS handshake: peer did not return a certificate");
  EXPECT_TRUE(serverClosed());
  loop_.run([&] {
    EXPECT_EQ(rec_.received, "");
    EXPECT_EQ(rec_.count("error"), 1u);
    return 0;
  });
}

TEST_F(TlsTransportTest, ClientCertificateFromAnotherCaIsRefused) {
  TlsClientOptions options = verifyingClient();
  options.cert_pem = foreign_client_->cert_pem;
  options.key_pem = foreign_client_->key_pem;
  auto client = connect(context(true), options);
  const std::string handshake = client->handshake();
  const std::string failure = handshake.empty() ? client->readFailure() : handshake;
  EXPECT_THAT(failure, HasSubstr("unknown ca"));
  EXPECT_THAT(serverError(), HasSubstr("TLS handshake: certificate verify failed"));
  EXPECT_TRUE(serverClosed());
}

TEST_F(TlsTransportTest, ServerFromAnotherCaIsRefusedByAVerifyingClient) {
  TlsClientOptions options = verifyingClient();
  options.ca_pem = other_ca_->certPem();
  auto client = connect(context(false), options);
  EXPECT_THAT(client->handshake(), HasSubstr("certificate verify failed"));
  EXPECT_EQ(serverError(), "TLS handshake: tlsv1 alert unknown ca");
}

TEST_F(TlsTransportTest, ExpiredServerCertificateIsRefusedByAVerifyingClient) {
  auto client = connect(context(false, expired_), verifyingClient());
  EXPECT_EQ(client->handshake(), "certificate verify failed (certificate has expired)");
  EXPECT_EQ(serverError(), "TLS handshake: sslv3 alert certificate expired");
}

TEST_F(TlsTransportTest, Tls11IsRefused) {
  TlsClientOptions options = verifyingClient();
  options.allow_legacy = true;
  options.min_version = TLS1_VERSION;
  options.max_version = TLS1_1_VERSION;
  auto client = connect(context(false), options);
  EXPECT_THAT(client->handshake(), HasSubstr("protocol version"));
  EXPECT_EQ(serverError(), "TLS handshake: unsupported protocol");
  EXPECT_TRUE(serverClosed());
}

TEST_F(TlsTransportTest, Tls12NegotiatesEcdheWithAnAeadCipher) {
  TlsClientOptions options = verifyingClient();
  options.max_version = TLS1_2_VERSION;
  auto client = connect(context(false), options);
  ASSERT_EQ(client->handshake(), "");
  EXPECT_EQ(client->version(), "TLSv1.2");
  EXPECT_THAT(client->cipher(), StartsWith("ECDHE-ECDSA-"));
  const std::string cipher = client->cipher();
  EXPECT_TRUE(cipher.find("GCM") != std::string::npos ||
              cipher.find("CHACHA20") != std::string::npos)
      << cipher;
  ASSERT_TRUE(client->write("v12"));
  ASSERT_TRUE(waitForReceived(3));
  EXPECT_EQ(loop_.run([&] { return transport_->protocolVersion(); }), "TLSv1.2");
}

TEST_F(TlsTransportTest, Tls12CbcCipherIsRefused) {
  TlsClientOptions options = verifyingClient();
  options.max_version = TLS1_2_VERSION;
  options.ciphers = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384";
  auto client = connect(context(false), options);
  EXPECT_THAT(client->handshake(), HasSubstr("handshake failure"));
  EXPECT_EQ(serverError(), "TLS handshake: no shared cipher");
}

TEST_F(TlsTransportTest, FourMiBEachWayArriveByteExact) {
  TlsTransportOptions transport_options;
  // Small budgets: many wake-ups, each delivering at most one chunk at a time.
  transport_options.read_budget_bytes = 40 * 1024;
  transport_options.read_chunk_bytes = 8 * 1024;
  transport_options.write_budget_bytes = 100 * 1024;
  auto client = connect(context(false), verifyingClient(), transport_options);
  ASSERT_EQ(client->handshake(), "");
  const std::string up = randomBytes(4 << 20, 1);
  const std::string down = randomBytes(4 << 20, 2);
  serverWrite(down);
  std::optional<std::string> got = client->exchange(up, down.size(), milliseconds(20000));
  ASSERT_TRUE(got.has_value()) << client->error();
  EXPECT_TRUE(*got == down) << "server-to-client bytes differ";
  ASSERT_TRUE(waitForReceived(up.size(), milliseconds(20000)));
  loop_.run([&] {
    EXPECT_TRUE(rec_.received == up) << "client-to-server bytes differ";
    EXPECT_LE(rec_.max_chunk, 8u * 1024);
    EXPECT_EQ(transport_->queuedBytes(), 0u);
    EXPECT_EQ(transport_->bytesWritten(), down.size());
    EXPECT_EQ(transport_->bytesRead(), up.size());
    EXPECT_GT(rec_.drained, 1u);
    EXPECT_EQ(rec_.count("error"), 0u);
    EXPECT_FALSE(rec_.reentrant);
    return 0;
  });
}

TEST_F(TlsTransportTest, PausedReadingHoldsDataUntilResumed) {
  auto client = connect(context(false), verifyingClient());
  ASSERT_EQ(client->handshake(), "");
  ASSERT_TRUE(client->write("a"));
  ASSERT_TRUE(waitForReceived(1));
  call([](TlsTransport& t) { t.pauseReading(true); });
  const std::string more = randomBytes(100000, 3);
  ASSERT_TRUE(client->write(more));
  EXPECT_FALSE(loop_.waitUntil([&] { return rec_.received.size() > 1; }, kQuiet));
  call([](TlsTransport& t) { t.pauseReading(false); });
  ASSERT_TRUE(waitForReceived(1 + more.size()));
  EXPECT_TRUE(loop_.run([&] { return rec_.received; }) == "a" + more);
}

TEST_F(TlsTransportTest, UnreadInputIsDeliveredFirst) {
  auto client = connect(context(false), verifyingClient());
  ASSERT_EQ(client->handshake(), "");
  ASSERT_TRUE(client->write("head|"));
  ASSERT_TRUE(waitForReceived(5));
  call([](TlsTransport& t) {
    t.pauseReading(true);
    Buffer back;
    back.add("again|");
    t.unreadInput(back);
  });
  ASSERT_TRUE(client->write("tail"));
  EXPECT_FALSE(loop_.waitUntil([&] { return rec_.received.size() > 5; }, kQuiet));
  call([](TlsTransport& t) { t.start(); });  // a new owner resumes
  ASSERT_TRUE(waitForReceived(15));
  EXPECT_EQ(loop_.run([&] { return rec_.received; }), "head|again|tail");
}

TEST_F(TlsTransportTest, BytesQueuedBeforeTheHandshakeFollowIt) {
  auto client = connect(context(false), verifyingClient());
  serverWrite("early");
  call([](TlsTransport& t) { t.shutdownWrite(); });
  ASSERT_EQ(client->handshake(), "");
  EXPECT_EQ(client->readToCloseNotify().value_or("<failed: " + client->error() + ">"), "early");
}

TEST_F(TlsTransportTest, CloseNotifyEndsOneDirectionAtATime) {
  auto client = connect(context(false), verifyingClient());
  ASSERT_EQ(client->handshake(), "");
  serverWrite("bye");
  call([](TlsTransport& t) { t.shutdownWrite(); });
  EXPECT_EQ(client->readToCloseNotify().value_or("<failed: " + client->error() + ">"), "bye");
  // The server still reads after its close_notify.
  ASSERT_TRUE(client->write("still here"));
  ASSERT_TRUE(waitForReceived(10));
  ASSERT_TRUE(client->closeNotify());
  ASSERT_TRUE(loop_.waitUntil([&] { return rec_.count("eof") == 1; }));
  loop_.run([&] {
    EXPECT_EQ(rec_.received, "still here");
    EXPECT_EQ(rec_.events.back(), "eof");
    EXPECT_EQ(rec_.count("error"), 0u);
    // Written after shutdownWrite(): dropped.
    Buffer late;
    late.add("late");
    transport_->write(late);
    EXPECT_EQ(transport_->queuedBytes(), 0u);
    return 0;
  });
}

TEST_F(TlsTransportTest, TcpCloseWithoutCloseNotifyIsAnError) {
  auto client = connect(context(false), verifyingClient());
  ASSERT_EQ(client->handshake(), "");
  ASSERT_TRUE(client->write("cut"));
  ASSERT_TRUE(waitForReceived(3));
  client->abort(false);
  EXPECT_EQ(serverError(), "TLS read: unexpected eof while reading");
  EXPECT_TRUE(serverClosed());
  loop_.run([&] {
    EXPECT_EQ(rec_.count("eof"), 0u);
    return 0;
  });
}

TEST_F(TlsTransportTest, WritingToAVanishedPeerIsAnErrorNotASignal) {
  auto client = connect(context(false), verifyingClient());
  ASSERT_EQ(client->handshake(), "");
  ASSERT_TRUE(client->write("x"));
  ASSERT_TRUE(waitForReceived(1));
  // Only the write side can notice: reading is paused.
  call([](TlsTransport& t) { t.pauseReading(true); });
  client->abort(true);
  // SIGPIPE is not ignored in this process: a raised one would end the test.
  for (int i = 0; i < 20 && loop_.run([&] { return rec_.error.empty(); }); ++i) {
    serverWrite(randomBytes(256 * 1024, static_cast<uint32_t>(i)));
    loop_.waitUntil([&] { return !rec_.error.empty(); }, milliseconds(50));
  }
  EXPECT_THAT(serverError(), ::testing::AnyOf(StartsWith("TLS write: Connection reset by peer"),
                                              StartsWith("TLS write: Broken pipe")));
  EXPECT_TRUE(serverClosed());
}

TEST_F(TlsTransportTest, AskedToFailOnThePeersCloseAPausedTransportReportsAReset) {
  auto client = connect(context(false), verifyingClient());
  ASSERT_EQ(client->handshake(), "");
  ASSERT_TRUE(client->write("x"));
  ASSERT_TRUE(waitForReceived(1));
  call([](TlsTransport& t) {
    t.failOnPeerCloseWhilePaused();
    t.pauseReading(true);
  });
  ASSERT_TRUE(client->write(randomBytes(100000, 5)));
  EXPECT_FALSE(loop_.waitUntil([&] { return rec_.received.size() > 1 || !rec_.error.empty(); },
                               kQuiet));
  client->abort(true);
  EXPECT_EQ(serverError(), "the peer closed the connection while its input was held back");
  EXPECT_TRUE(serverClosed());
  EXPECT_EQ(loop_.run([&] { return rec_.received; }), "x");
}

TEST_F(TlsTransportTest, PeerVanishingMidHandshakeIsReportedAndClosed) {
  const std::string hello = clientHello();
  ASSERT_GT(hello.size(), 100u);
  for (const bool reset : {false, true}) {
    SCOPED_TRACE(reset ? "reset" : "close");
    rec_ = Recorder();
    auto [client_fd, server_fd] = testing::loopbackPair();
    loop_.run([&, server_fd = server_fd] {
      transport_ = std::make_unique<TlsTransport>(loop_.dispatcher(), server_fd, "127.0.0.1:2",
                                                  context(false));
      transport_->setCallbacks(rec_);
      transport_->start();
      return 0;
    });
    // Half a ClientHello, then gone.
    ASSERT_EQ(::send(client_fd, hello.data(), hello.size() / 2, MSG_NOSIGNAL),
              static_cast<ssize_t>(hello.size() / 2));
    EXPECT_FALSE(loop_.waitUntil([&] { return !rec_.events.empty(); }, kQuiet));
    if (reset) {
      linger l{1, 0};
      setsockopt(client_fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    ::close(client_fd);
    const std::string error = serverError();
    EXPECT_THAT(error, StartsWith("TLS handshake: "));
    EXPECT_THAT(error, HasSubstr(reset ? "Connection reset by peer" : "unexpected eof"));
    EXPECT_TRUE(serverClosed());
    loop_.run([&] {
      EXPECT_EQ(rec_.count("error"), 1u);
      EXPECT_FALSE(transport_->handshakeComplete());
      transport_.reset();
      return 0;
    });
  }
}

TEST_F(TlsTransportTest, HandshakeMustCompleteInTime) {
  TlsTransportOptions transport_options;
  transport_options.handshake_timeout = milliseconds(200);
  auto client = connect(context(false), verifyingClient(), transport_options);
  // The client says nothing.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(serverError(), "TLS handshake: not complete after 200 ms");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_TRUE(serverClosed());
  // The client sees the connection end.
  EXPECT_NE(client->handshake(), "");
}

TEST_F(TlsTransportTest, CloseDropsEverythingWithoutCallbacks) {
  auto client = connect(context(false), verifyingClient());
  ASSERT_EQ(client->handshake(), "");
  ASSERT_TRUE(client->write("x"));
  ASSERT_TRUE(waitForReceived(1));
  call([](TlsTransport& t) {
    Buffer b;
    b.add("never sent");
    t.write(b);
    t.close();
    EXPECT_TRUE(t.closed());
    EXPECT_EQ(t.queuedBytes(), 0u);
  });
  EXPECT_FALSE(loop_.waitUntil([&] { return rec_.events.size() > 1; }, kQuiet));
  // No close_notify: the client sees the TCP close as a truncation.
  EXPECT_EQ(client->readToCloseNotify(), std::nullopt);
}

}  // namespace
}  // namespace crisp::stream
