// stream_carrier_benchmark: what TLS and HTTP/2 cost a streaming session,
// measured in one run against crisp in this process (embedded runtime, the
// real stream server), with the same WebSocket protocol (v5.channel.k8s.io)
// over three carriers:
//
//   plain HTTP/1.1     the reference: TCP, Upgrade: websocket
//   HTTP/1.1 + TLS     TLS 1.3, ALPN http/1.1, Upgrade: websocket
//   HTTP/2 + TLS       TLS 1.3, ALPN h2, extended CONNECT (RFC 8441)
//   HTTP/2             prior knowledge on TCP, extended CONNECT (what HTTP/2
//                      costs without TLS)
//
// For each: throughput (the stdout of `head -c N /dev/zero`, MiB/s from the
// request to the end of the stream) and setup latency (a new connection,
// TLS, HTTP negotiation, to the first stdout byte of `echo`; the median of
// many). The CRI call that mints the URL is outside both timings. TLS and
// HTTP/2 figures are printed as ratios to plain HTTP/1.1.
//
//   bazel run -c opt //test/bench:stream_carrier_benchmark -- [--mib 256] [--runs 50]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/codec/websocket/ws_codec.h"
#include "source/common/buffer.h"
#include "source/common/logger.h"
#include "source/common/time.h"

#include "test/stream/h2_test_client.h"
#include "test/stream/inprocess_crisp.h"

namespace crisp::stream {
namespace {

using Clock = std::chrono::steady_clock;
using testing::StreamUrl;

constexpr uint8_t kStdout = 1;

// A blocking HTTP/1.1 WebSocket client over TCP or TLS, counting stdout
// bytes of v5 channel messages.
class Http1WsClient : private websocket::CodecCallbacks {
 public:
  ~Http1WsClient() override {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
    }
    if (ctx_ != nullptr) {
      SSL_CTX_free(ctx_);
    }
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

  // Connects, upgrades to v5.channel.k8s.io; false with `error` on failure.
  bool open(const StreamUrl& url, std::string& error) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(url.port);
    inet_pton(AF_INET, url.host.c_str(), &addr.sin_addr);
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      error = "connect failed";
      return false;
    }
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (url.scheme == "https") {
      ctx_ = SSL_CTX_new(TLS_client_method());
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
      static const unsigned char kAlpn[] = "\x08http/1.1";
      SSL_CTX_set_alpn_protos(ctx_, kAlpn, sizeof(kAlpn) - 1);
      ssl_ = SSL_new(ctx_);
      SSL_set_fd(ssl_, fd_);
      if (SSL_connect(ssl_) != 1) {
        error = "TLS handshake failed";
        return false;
      }
    }
    const std::string head = "GET " + url.path +
                             " HTTP/1.1\r\nHost: crisp.test\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n";
    if (!writeAll(head)) {
      error = "write failed";
      return false;
    }
    std::string response;
    char c;
    while (response.find("\r\n\r\n") == std::string::npos) {
      if (readSome(&c, 1) != 1) {
        error = "no response";
        return false;
      }
      response += c;
    }
    if (response.rfind("HTTP/1.1 101", 0) != 0) {
      error = "refused: " + response.substr(0, response.find('\r'));
      return false;
    }
    websocket::CodecOptions options;
    options.role = websocket::Role::kClient;
    options.random = &random_;
    options.max_message_bytes = uint64_t{1} << 32;
    codec_ = std::move(websocket::Codec::create(options, *this)).value();
    return true;
  }

  // Reads until the server closes the WebSocket, or `stop()` says so.
  template <class Stop>
  bool run(Stop stop) {
    char buf[256 * 1024];
    while (!codec_->closeReceived() && !stop()) {
      const long n = readSome(buf, sizeof(buf));
      if (n <= 0) {
        return codec_->closeReceived();
      }
      in_.add(buf, static_cast<size_t>(n));
      if (!codec_->dispatch(in_).ok()) {
        return false;
      }
      codec_->output().drain(codec_->output().length());
    }
    return true;
  }

  uint64_t stdoutBytes() const { return stdout_bytes_; }

 private:
  void onMessage(websocket::MessageType, Buffer& payload) override {
    uint8_t channel = 0xff;
    payload.copyOut(&channel, 1);
    if (channel == kStdout) {
      stdout_bytes_ += payload.length() - 1;
    }
  }
  void onClose(uint16_t, std::string_view) override {}

  long readSome(char* buf, size_t len) {
    if (ssl_ != nullptr) {
      return SSL_read(ssl_, buf, static_cast<int>(len));
    }
    return ::read(fd_, buf, len);
  }
  bool writeAll(const std::string& data) {
    if (ssl_ != nullptr) {
      return SSL_write(ssl_, data.data(), static_cast<int>(data.size())) ==
             static_cast<int>(data.size());
    }
    return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
  }

  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  SystemRandomSource random_;
  std::unique_ptr<websocket::Codec> codec_;
  Buffer in_;
  uint64_t stdout_bytes_ = 0;
};

enum class Carrier { kHttp1, kHttp1Tls, kHttp2Tls, kHttp2 };

const char* carrierName(Carrier c) {
  switch (c) {
    case Carrier::kHttp1:
      return "HTTP/1.1";
    case Carrier::kHttp1Tls:
      return "HTTP/1.1+TLS";
    case Carrier::kHttp2Tls:
      return "HTTP/2+TLS";
    case Carrier::kHttp2:
      return "HTTP/2";
  }
  return "?";
}

struct Figures {
  double mib_per_s = 0;
  double setup_median_us = 0;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "stream_carrier_benchmark: %s\n", what.c_str());
  std::exit(1);
}

// One exec of `cmd` over `carrier` until `stdout_target` stdout bytes
// arrived (0: the first byte); the seconds from connect to then.
double session(testing::InProcessCrisp& crisp, Carrier carrier, const std::vector<std::string>& cmd,
               uint64_t stdout_target) {
  absl::StatusOr<std::string> url_text = crisp.exec(cmd, false, false);
  if (!url_text.ok()) {
    die(url_text.status().ToString());
  }
  const StreamUrl url = testing::parseStreamUrl(*url_text);
  const uint64_t want = std::max<uint64_t>(stdout_target, 1);
  const Clock::time_point start = Clock::now();
  if (carrier == Carrier::kHttp2Tls || carrier == Carrier::kHttp2) {
    testing::H2ClientOptions options;
    options.tls = carrier == Carrier::kHttp2Tls;
    options.keep_messages = false;
    options.stream_window = 16 << 20;
    options.connection_window = 64 << 20;
    std::string error;
    auto client = testing::H2TestClient::connect(url.host, url.port, options, &error);
    if (client == nullptr) {
      die("h2 connect: " + error);
    }
    const int32_t id = client->openWebSocket(url.path, {"v5.channel.k8s.io"});
    const auto got = [&] {
      auto it = client->stream(id).channel_bytes.find(kStdout);
      return it != client->stream(id).channel_bytes.end() && it->second >= want;
    };
    if (!client->waitFor(got, std::chrono::minutes(5))) {
      die("h2 session did not complete");
    }
    return std::chrono::duration<double>(Clock::now() - start).count();
  }
  Http1WsClient client;
  std::string error;
  if (!client.open(url, error)) {
    die(std::string(carrierName(carrier)) + ": " + error);
  }
  if (!client.run([&] { return client.stdoutBytes() >= want; }) || client.stdoutBytes() < want) {
    die(std::string(carrierName(carrier)) + " session did not complete");
  }
  return std::chrono::duration<double>(Clock::now() - start).count();
}

Figures measure(testing::InProcessCrisp& crisp, Carrier carrier, uint64_t mib, int runs) {
  Figures f;
  const uint64_t bytes = mib << 20;
  const double seconds =
      session(crisp, carrier, {"head", "-c", std::to_string(bytes), "/dev/zero"}, bytes);
  f.mib_per_s = static_cast<double>(mib) / seconds;
  std::vector<double> setups;
  for (int i = 0; i < runs; ++i) {
    setups.push_back(session(crisp, carrier, {"echo", "x"}, 0) * 1e6);
  }
  std::sort(setups.begin(), setups.end());
  f.setup_median_us = setups[setups.size() / 2];
  return f;
}

int run(int argc, char** argv) {
  uint64_t mib = 256;
  int runs = 50;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--mib") == 0) {
      mib = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (std::strcmp(argv[i], "--runs") == 0) {
      runs = std::atoi(argv[i + 1]);
    }
  }
  signal(SIGPIPE, SIG_IGN);
  log::setLevel("warn");
  testing::InProcessCrispOptions plain_options;
  testing::InProcessCrisp plain(plain_options);
  testing::InProcessCrispOptions tls_options;
  tls_options.tls = true;
  testing::InProcessCrisp tls(tls_options);
  if (!plain.status().ok() || !tls.status().ok()) {
    die("crisp did not start: " + plain.status().ToString() + " " + tls.status().ToString());
  }
  // Warm up every path once (process start-up, TLS and allocator caches).
  const auto server = [&](Carrier c) -> testing::InProcessCrisp& {
    return c == Carrier::kHttp1 || c == Carrier::kHttp2 ? plain : tls;
  };
  for (Carrier c : {Carrier::kHttp1, Carrier::kHttp1Tls, Carrier::kHttp2Tls, Carrier::kHttp2}) {
    session(server(c), c, {"echo", "x"}, 0);
  }
  const Figures reference = measure(plain, Carrier::kHttp1, mib, runs);
  const Figures http1_tls = measure(tls, Carrier::kHttp1Tls, mib, runs);
  const Figures http2_tls = measure(tls, Carrier::kHttp2Tls, mib, runs);
  const Figures http2 = measure(server(Carrier::kHttp2), Carrier::kHttp2, mib, runs);

  std::printf(
      "exec stdout of %llu MiB; setup = connect + negotiate to first stdout byte, median "
      "of %d\n",
      static_cast<unsigned long long>(mib), runs);
  std::printf("%-14s %12s %10s %14s %10s\n", "carrier", "MiB/s", "ratio", "setup (us)", "ratio");
  for (const auto& [carrier, f] :
       {std::pair{Carrier::kHttp1, reference}, std::pair{Carrier::kHttp1Tls, http1_tls},
        std::pair{Carrier::kHttp2Tls, http2_tls}, std::pair{Carrier::kHttp2, http2}}) {
    std::printf("%-14s %12.1f %10.2f %14.0f %10.2f\n", carrierName(carrier), f.mib_per_s,
                f.mib_per_s / reference.mib_per_s, f.setup_median_us,
                f.setup_median_us / reference.setup_median_us);
  }
  return 0;
}

}  // namespace
}  // namespace crisp::stream

int main(int argc, char** argv) { return crisp::stream::run(argc, argv); }
