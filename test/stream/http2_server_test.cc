// The stream server over HTTP/2: crisp assembled as in production (embedded
// runtime, CRI front, stream server) and driven by an nghttp2 client through
// the URLs its CRI replies hand out. Exec, attach and port-forward run as
// WebSocket over extended CONNECT (RFC 8441), under TLS with ALPN h2 and over
// plain TCP with prior knowledge; requests that cannot be served get the
// answers RFC 9113 and RFC 8441 call for.

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/stream/stream_limits.h"

#include "test/stream/h2_test_client.h"
#include "test/stream/inprocess_crisp.h"
#include "test/stream/tls_test_util.h"

namespace crisp::stream {
namespace {

using testing::H2ClientOptions;
using testing::H2Fields;
using testing::H2TestClient;
using ::testing::HasSubstr;

constexpr char kV5[] = "v5.channel.k8s.io";
constexpr uint8_t kStdin = 0;
constexpr uint8_t kStdout = 1;
constexpr uint8_t kStderr = 2;
constexpr uint8_t kError = 3;

using Url = testing::StreamUrl;

Url parseUrl(const absl::StatusOr<std::string>& url) {
  EXPECT_TRUE(url.ok()) << url.status();
  return testing::parseStreamUrl(url.value_or(""));
}

// crisp in this process, stopped at the end of the test.
class Crisp : public testing::InProcessCrisp {
 public:
  explicit Crisp(const std::string& listen, bool tls = false, uint32_t max_streams = 250,
                 std::chrono::milliseconds header_timeout = std::chrono::seconds(10))
      : InProcessCrisp(options(listen, tls, max_streams, header_timeout)) {
    EXPECT_TRUE(status().ok()) << status();
  }
  bool ok() const { return status().ok(); }

 private:
  static testing::InProcessCrispOptions options(const std::string& listen, bool tls,
                                                uint32_t max_streams,
                                                std::chrono::milliseconds header_timeout) {
    testing::InProcessCrispOptions o;
    o.listen = listen;
    o.tls = tls;
    o.max_concurrent_streams = max_streams;
    o.header_timeout = header_timeout;
    return o;
  }
};

std::unique_ptr<H2TestClient> connectTo(const Url& url, H2ClientOptions options = {}) {
  options.tls = url.scheme == "https";
  std::string error;
  auto client = H2TestClient::connect(url.host, url.port, options, &error);
  EXPECT_NE(client, nullptr) << error;
  return client;
}

std::string fieldValue(const H2Fields& fields, const std::string& name) {
  for (const auto& [n, v] : fields) {
    if (n == name) {
      return v;
    }
  }
  return "";
}

// Waits until the session's stream ends (the server closed the WebSocket
// and ended the stream).
bool waitForEnd(H2TestClient& client, int32_t id,
                std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  return client.waitFor([&] { return client.stream(id).end || client.stream(id).closed; }, timeout);
}

// An exec with output on stdout and stderr and a failing exit code, on
// `client`'s connection.
void runExec(Crisp& crisp, H2TestClient& client) {
  const Url url = parseUrl(crisp.exec({"sh", "-c", "echo out; echo err >&2; exit 3"}));
  const int32_t id = client.openWebSocket(url.path, {"v4.channel.k8s.io", kV5});
  ASSERT_EQ(client.waitForStatus(id), 200);
  EXPECT_EQ(fieldValue(client.stream(id).headers, "sec-websocket-protocol"), "v4.channel.k8s.io");
  EXPECT_EQ(fieldValue(client.stream(id).headers, "sec-websocket-accept"), "");
  ASSERT_TRUE(waitForEnd(client, id));
  const H2TestClient::Stream& s = client.stream(id);
  EXPECT_EQ(s.channelData(kStdout), "out\n");
  EXPECT_EQ(s.channelData(kStderr), "err\n");
  EXPECT_THAT(s.channelData(kError), HasSubstr("\"reason\":\"NonZeroExitCode\""));
  EXPECT_THAT(s.channelData(kError), HasSubstr("\"message\":\"3\""));
  EXPECT_EQ(s.close_code, websocket::kCloseNormal);
}

TEST(Http2ServerTest, ExecOverPriorKnowledge) {
  Crisp crisp("127.0.0.1:0");
  ASSERT_TRUE(crisp.ok());
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);
  runExec(crisp, *client);
  // The server advertised extended CONNECT and its limits.
  EXPECT_EQ(client->serverSettings()[NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL], 1u);
  EXPECT_EQ(client->serverSettings()[NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS], 250u);
  EXPECT_EQ(client->serverSettings()[NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE], 4096u);
  // A second session on the same connection.
  runExec(crisp, *client);
}

TEST(Http2ServerTest, ExecWithStdinOverTlsAlpn) {
  Crisp crisp("127.0.0.1:0", /*tls=*/true);
  ASSERT_TRUE(crisp.ok());
  ASSERT_EQ(crisp.baseUrl().rfind("https://", 0), 0u);
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->alpn(), "h2");
  runExec(crisp, *client);

  // stdin through to `tr`, closed with the v5 CLOSE signal.
  const Url url = parseUrl(crisp.exec({"tr", "a-z", "A-Z"}, /*stdin=*/true));
  const int32_t id = client->openWebSocket(url.path, {kV5});
  ASSERT_EQ(client->waitForStatus(id), 200);
  EXPECT_EQ(fieldValue(client->stream(id).headers, "sec-websocket-protocol"), kV5);
  ASSERT_TRUE(client->sendChannel(id, kStdin, "hello over h2\n"));
  ASSERT_TRUE(client->sendMessage(id, websocket::MessageType::kBinary, std::string("\xff\x00", 2)));
  ASSERT_TRUE(waitForEnd(*client, id));
  EXPECT_EQ(client->stream(id).channelData(kStdout), "HELLO OVER H2\n");
  EXPECT_EQ(client->stream(id).channelData(kError), R"({"metadata":{},"status":"Success"})");
}

TEST(Http2ServerTest, TlsClientsWithoutH2KeepHttp11) {
  Crisp crisp("127.0.0.1:0", /*tls=*/true);
  ASSERT_TRUE(crisp.ok());
  const Url url = parseUrl(crisp.baseUrl() + "x");
  for (const std::vector<std::string>& alpn :
       {std::vector<std::string>{"http/1.1"}, std::vector<std::string>{}}) {
    testing::TlsClientOptions options;
    options.alpn = alpn;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(url.port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    testing::TlsTestClient tls(fd, options);
    ASSERT_EQ(tls.handshake(), "");
    EXPECT_EQ(tls.alpn(), alpn.empty() ? "" : "http/1.1");
    ASSERT_TRUE(tls.write("GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"));
    const std::string response = tls.readToCloseNotify().value_or("");
    EXPECT_THAT(response, HasSubstr("HTTP/1.1 404 Not Found"));
    EXPECT_THAT(response, HasSubstr("404 page not found"));
  }
}

TEST(Http2ServerTest, AttachOverH2) {
  Crisp crisp("127.0.0.1:0");
  ASSERT_TRUE(crisp.ok());
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);
  const int32_t id = client->openWebSocket(parseUrl(crisp.attach()).path, {kV5});
  ASSERT_EQ(client->waitForStatus(id), 200);
  ASSERT_TRUE(client->sendChannel(id, kStdin, "ping through the main process\n"));
  EXPECT_TRUE(client->waitFor([&] {
    return client->stream(id).channelData(kStdout) == "ping through the main process\n";
  }));
  // Detaching leaves the container running: a second attach still echoes.
  ASSERT_TRUE(client->sendClose(id));
  ASSERT_TRUE(waitForEnd(*client, id));
  const int32_t again = client->openWebSocket(parseUrl(crisp.attach()).path, {kV5});
  ASSERT_EQ(client->waitForStatus(again), 200);
  ASSERT_TRUE(client->sendChannel(again, kStdin, "again\n"));
  EXPECT_TRUE(
      client->waitFor([&] { return client->stream(again).channelData(kStdout) == "again\n"; }));
}

// A TCP server on 127.0.0.1 that answers every connection with what it reads,
// upper-cased, until EOF.
class UpperServer {
 public:
  UpperServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 16);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) {
        return;
      }
      char buf[4096];
      ssize_t n;
      while ((n = ::read(c, buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; ++i) {
          buf[i] = static_cast<char>(toupper(static_cast<unsigned char>(buf[i])));
        }
        if (::write(c, buf, static_cast<size_t>(n)) != n) {
          break;
        }
      }
      ::close(c);
    });
  }
  ~UpperServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  int fd_;
  uint16_t port_ = 0;
  std::thread thread_;
};

TEST(Http2ServerTest, PortForwardOverH2) {
  Crisp crisp("127.0.0.1:0", /*tls=*/true);
  ASSERT_TRUE(crisp.ok());
  UpperServer upper;
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);
  const int32_t id =
      client->openWebSocket(parseUrl(crisp.portForward(upper.port())).path, {"v4.channel.k8s.io"});
  ASSERT_EQ(client->waitForStatus(id), 200);
  EXPECT_EQ(fieldValue(client->stream(id).headers, "sec-websocket-protocol"), "v4.channel.k8s.io");
  // The port, little-endian, first on the data channel, then on the error channel.
  const std::string port_le{static_cast<char>(upper.port() & 0xff),
                            static_cast<char>(upper.port() >> 8)};
  ASSERT_TRUE(client->waitFor([&] { return client->stream(id).messages.size() >= 2; }));
  EXPECT_EQ(client->stream(id).channelData(0), port_le);
  EXPECT_EQ(client->stream(id).channelData(1), port_le);
  ASSERT_TRUE(client->sendChannel(id, 0, "forwarded bytes"));
  EXPECT_TRUE(client->waitFor(
      [&] { return client->stream(id).channelData(0) == port_le + "FORWARDED BYTES"; }));
  EXPECT_EQ(client->stream(id).channelData(1), port_le);
}

// 100 exec sessions on one connection. One client stream does not read: its
// window closes and its process is paused; the other 99 run to the end all
// the same. Then the stalled one is read and completes too.
TEST(Http2ServerTest, HundredSessionsOneStalled) {
  Crisp crisp("127.0.0.1:0");
  ASSERT_TRUE(crisp.ok());
  H2ClientOptions options;
  options.stream_window = 64 * 1024;
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"), options);
  ASSERT_NE(client, nullptr);
  constexpr size_t kStalledBytes = 8 << 20;
  constexpr size_t kEachBytes = 300000;
  const int32_t stalled = client->openWebSocket(
      parseUrl(crisp.exec({"head", "-c", std::to_string(kStalledBytes), "/dev/zero"})).path, {kV5});
  client->pauseReading(stalled, true);
  std::vector<int32_t> others;
  for (int i = 0; i < 99; ++i) {
    others.push_back(client->openWebSocket(
        parseUrl(crisp.exec({"head", "-c", std::to_string(kEachBytes), "/dev/zero"})).path, {kV5}));
  }
  const bool all_done = client->waitFor(
      [&] {
        for (int32_t id : others) {
          if (!client->stream(id).end) {
            return false;
          }
        }
        return true;
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(all_done);
  for (int32_t id : others) {
    EXPECT_EQ(client->stream(id).channelData(kStdout).size(), kEachBytes) << "stream " << id;
    EXPECT_EQ(client->stream(id).channelData(kError), R"({"metadata":{},"status":"Success"})");
  }
  // The stalled stream got no more than its window.
  EXPECT_FALSE(client->stream(stalled).end);
  EXPECT_LE(client->stream(stalled).received, options.stream_window);
  client->pauseReading(stalled, false);
  ASSERT_TRUE(waitForEnd(*client, stalled, std::chrono::seconds(60)));
  EXPECT_EQ(client->stream(stalled).channelData(kStdout).size(), kStalledBytes);
}

TEST(Http2ServerTest, PlainRequestsGetAnswers) {
  Crisp crisp("127.0.0.1:0");
  ASSERT_TRUE(crisp.ok());
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);
  auto get = [&](const std::string& method, const std::string& path, H2Fields extra = {}) {
    H2Fields fields = {
        {":method", method}, {":scheme", "http"}, {":path", path}, {":authority", "crisp.test"}};
    fields.insert(fields.end(), extra.begin(), extra.end());
    return client->request(fields, true);
  };
  const int32_t root = get("GET", "/");
  EXPECT_EQ(client->waitForStatus(root), 404);
  ASSERT_TRUE(waitForEnd(*client, root));
  EXPECT_EQ(client->stream(root).body, "404 page not found\n");

  // A SPDY upgrade attempt: not over HTTP/2; the token stays valid.
  const Url exec = parseUrl(crisp.exec({"echo", "still valid"}));
  const int32_t spdy = get("POST", exec.path, {{"x-stream-protocol-version", "v4.channel.k8s.io"}});
  EXPECT_EQ(client->waitForStatus(spdy), 405);
  ASSERT_TRUE(waitForEnd(*client, spdy));
  EXPECT_EQ(fieldValue(client->stream(spdy).headers, "allow"), "CONNECT");
  EXPECT_THAT(client->stream(spdy).body, HasSubstr("SPDY needs an HTTP/1.1 upgrade"));
  const int32_t ws = client->openWebSocket(exec.path, {kV5});
  ASSERT_EQ(client->waitForStatus(ws), 200);
  ASSERT_TRUE(waitForEnd(*client, ws));
  EXPECT_EQ(client->stream(ws).channelData(kStdout), "still valid\n");

  // The token is used now.
  const int32_t reused = client->openWebSocket(exec.path, {kV5});
  EXPECT_EQ(client->waitForStatus(reused), 404);

  const int32_t unknown = get("GET", "/exec/AAAAAAAAAAAAAAAAAAAAAA");
  EXPECT_EQ(client->waitForStatus(unknown), 405);
  const int32_t other = get("PUT", "/metrics");
  EXPECT_EQ(client->waitForStatus(other), 404);
}

TEST(Http2ServerTest, MalformedHeadersAreStreamErrors) {
  Crisp crisp("127.0.0.1:0");
  ASSERT_TRUE(crisp.ok());
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);
  const std::vector<H2Fields> malformed = {
      // no :path
      {{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}},
      // an upper-case field name
      {{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {"X-Upper", "1"}},
      // a connection-specific field
      {{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {"connection", "keep-alive"}},
      // a pseudo-header after a regular field
      {{":method", "GET"}, {"x", "1"}, {":scheme", "http"}, {":path", "/"}},
      // :protocol without CONNECT
      {{":method", "GET"}, {":protocol", "websocket"}, {":scheme", "http"}, {":path", "/"}},
      // plain CONNECT with :path
      {{":method", "CONNECT"}, {":authority", "x:1"}, {":scheme", "http"}, {":path", "/"}},
  };
  for (const H2Fields& fields : malformed) {
    const int32_t id = client->request(fields, true);
    ASSERT_TRUE(client->waitFor([&] { return client->stream(id).closed; }));
    EXPECT_EQ(client->stream(id).status, 0) << fields[1].first;
    EXPECT_EQ(client->stream(id).reset, static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR))
        << fields[1].first;
  }
  // The connection is still good.
  const int32_t after = client->request(
      {{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "x"}}, true);
  EXPECT_EQ(client->waitForStatus(after), 404);
  EXPECT_FALSE(client->goaway().has_value());

  // An undecodable header block is a connection error (RFC 9113 4.3).
  const std::string bad_block("\x00\x00\x01\x01\x05\x00\x00\x00\x63\xff", 10);
  ASSERT_TRUE(client->writeRaw(bad_block));
  EXPECT_TRUE(client->waitFor([&] { return client->goaway().has_value(); }));
  EXPECT_EQ(client->goaway(), static_cast<uint32_t>(NGHTTP2_COMPRESSION_ERROR));
}

TEST(Http2ServerTest, ConnectWithoutOrWithWrongProtocol) {
  Crisp crisp("127.0.0.1:0");
  ASSERT_TRUE(crisp.ok());
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);

  const int32_t plain =
      client->request({{":method", "CONNECT"}, {":authority", "pod.example:80"}}, false);
  EXPECT_EQ(client->waitForStatus(plain), 400);
  ASSERT_TRUE(waitForEnd(*client, plain));
  EXPECT_THAT(client->stream(plain).body, HasSubstr(":protocol websocket"));

  // A :protocol crisp does not serve: 400, and the token is burnt as an
  // HTTP/1.1 upgrade to an unknown protocol burns it.
  const Url exec = parseUrl(crisp.exec({"true"}));
  const int32_t wrong = client->request({{":method", "CONNECT"},
                                         {":protocol", "connect-udp"},
                                         {":scheme", "http"},
                                         {":path", exec.path},
                                         {":authority", "x"},
                                         {"sec-websocket-version", "13"}},
                                        false);
  EXPECT_EQ(client->waitForStatus(wrong), 400);
  ASSERT_TRUE(waitForEnd(*client, wrong));
  EXPECT_THAT(client->stream(wrong).body, HasSubstr("\"connect-udp\" is not served"));
  const int32_t retry = client->openWebSocket(exec.path, {kV5});
  EXPECT_EQ(client->waitForStatus(retry), 404);

  // A wrong WebSocket version, and no subprotocol in common.
  const Url second = parseUrl(crisp.exec({"true"}));
  const int32_t version = client->request({{":method", "CONNECT"},
                                           {":protocol", "websocket"},
                                           {":scheme", "http"},
                                           {":path", second.path},
                                           {":authority", "x"},
                                           {"sec-websocket-version", "8"}},
                                          false);
  EXPECT_EQ(client->waitForStatus(version), 400);
  EXPECT_EQ(fieldValue(client->stream(version).headers, "sec-websocket-version"), "13");
  const Url third = parseUrl(crisp.exec({"true"}));
  const int32_t nothing = client->openWebSocket(third.path, {"SPDY/3.1+portforward.k8s.io"});
  EXPECT_EQ(client->waitForStatus(nothing), 403);
}

TEST(Http2ServerTest, LimitsAreCounted) {
  Crisp crisp("127.0.0.1:0", false, /*max_streams=*/2);
  ASSERT_TRUE(crisp.ok());
  stats::Counter& header_hits = limitHitCounter(StreamLimit::kHeaderBytes);
  stats::Counter& stream_hits = limitHitCounter(StreamLimit::kHttp2Streams);
  const uint64_t header_before = header_hits.value();
  const uint64_t streams_before = stream_hits.value();

  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);
  // A header list above stream.max_header_bytes (4096 here): 431, and the
  // connection goes on.
  const H2Fields get = {
      {":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "x"}};
  H2Fields big = get;
  big.emplace_back("x-big", std::string(5000, 'a'));
  const int32_t large = client->request(big, true);
  EXPECT_EQ(client->waitForStatus(large), 431);
  EXPECT_EQ(header_hits.value(), header_before + 1);

  // Two sessions fill the connection (stream.max_concurrent_streams = 2).
  const int32_t a = client->openWebSocket(parseUrl(crisp.exec({"cat"}, true)).path, {kV5});
  const int32_t b = client->openWebSocket(parseUrl(crisp.exec({"cat"}, true)).path, {kV5});
  ASSERT_EQ(client->waitForStatus(a), 200);
  ASSERT_EQ(client->waitForStatus(b), 200);
  // A third stream the client library would hold back, written by hand: a
  // HEADERS frame (END_STREAM | END_HEADERS) on stream 101 for GET / with
  // :authority x, after our SETTINGS were acknowledged: a connection error.
  const std::string third("\x00\x00\x06\x01\x05\x00\x00\x00\x65\x82\x86\x84\x01\x01x", 15);
  ASSERT_TRUE(client->writeRaw(third));
  EXPECT_TRUE(client->waitFor([&] { return client->goaway().has_value(); }));
  EXPECT_EQ(client->goaway(), static_cast<uint32_t>(NGHTTP2_PROTOCOL_ERROR));
  EXPECT_EQ(stream_hits.value(), streams_before + 1);
}

TEST(Http2ServerTest, IdleConnectionGetsGoaway) {
  Crisp crisp("127.0.0.1:0", false, 250, std::chrono::milliseconds(300));
  ASSERT_TRUE(crisp.ok());
  auto client = connectTo(parseUrl(crisp.baseUrl() + "x"));
  ASSERT_NE(client, nullptr);
  EXPECT_TRUE(client->waitFor([&] { return client->connectionClosed(); }, std::chrono::seconds(5)));
  EXPECT_EQ(client->goaway(), static_cast<uint32_t>(NGHTTP2_NO_ERROR));
}

TEST(Http2ServerTest, Ipv6ListenerAndUrls) {
  Crisp crisp("[::1]:0");
  ASSERT_TRUE(crisp.ok());
  EXPECT_EQ(crisp.baseUrl().rfind("http://[::1]:", 0), 0u) << crisp.baseUrl();
  const std::string url = crisp.exec({"echo", "over v6"}).value_or("");
  EXPECT_EQ(url.rfind("http://[::1]:", 0), 0u) << url;
  auto client = connectTo(parseUrl(url));
  ASSERT_NE(client, nullptr);
  const int32_t id = client->openWebSocket(parseUrl(url).path, {kV5});
  ASSERT_EQ(client->waitForStatus(id), 200);
  ASSERT_TRUE(waitForEnd(*client, id));
  EXPECT_EQ(client->stream(id).channelData(kStdout), "over v6\n");
}

TEST(Http2ServerTest, WildcardIpv6ListenerHandsOutLoopback) {
  Crisp crisp("[::]:0", /*tls=*/true);
  ASSERT_TRUE(crisp.ok());
  const std::string url = crisp.exec({"echo", "via ::"}).value_or("");
  EXPECT_EQ(url.rfind("https://[::1]:", 0), 0u) << url;
  auto client = connectTo(parseUrl(url));
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->alpn(), "h2");
  const int32_t id = client->openWebSocket(parseUrl(url).path, {kV5});
  ASSERT_EQ(client->waitForStatus(id), 200);
  ASSERT_TRUE(waitForEnd(*client, id));
  EXPECT_EQ(client->stream(id).channelData(kStdout), "via ::\n");
}

}  // namespace
}  // namespace crisp::stream
