// The stream-server backend as a client of crisp's own stream server: a real
// Http1Server with the SPDY handlers and the embedded runtime plays the
// runtime's stream server; StreamServerRuntime connects to the URLs its token
// cache hands out, on loopback.

#include "source/runtime/streamserver/streamserver_runtime.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "source/cache/token_cache.h"
#include "source/common/time.h"
#include "source/runtime/embedded/embedded_runtime.h"
#include "source/stream/http1_server.h"
#include "source/stream/listener.h"
#include "source/stream/spdy_portforward.h"
#include "source/stream/spdy_remotecommand.h"
#include "source/stream/tls_context.h"
#include "source/stream/tls_transport.h"

#include "test/runtime/embedded/port_servers.h"
#include "test/runtime/embedded/test_util.h"
#include "test/stream/http1_test_util.h"
#include "test/stream/tls_test_util.h"

namespace crisp::streamserver {
namespace {

using session::ExitStatus;
using std::chrono::milliseconds;
using std::chrono::seconds;

using runtime::testing::openFdCount;

// A socket listening on 127.0.0.1 port 0; `port` is set to its port.
int listenLoopback(uint16_t& port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::listen(fd, 4), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

// A loopback port nothing listens on (bound, then closed).
uint16_t closedPort() {
  uint16_t port = 0;
  ::close(listenLoopback(port));
  return port;
}

// A server that reads one request head and answers with `response` (then
// closes), on its own thread; for upgrades that go wrong.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::string response) : response_(std::move(response)) {
    fd_ = listenLoopback(port_);
    thread_ = std::thread([this] {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) {
        return;
      }
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::read(c, buf, sizeof(buf));
        if (n <= 0) {
          break;
        }
        head.append(buf, static_cast<size_t>(n));
      }
      request_ = head;
      test::sendAll(c, response_);
      ::close(c);
    });
  }
  ~ScriptedServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  uint16_t port() const { return port_; }
  const std::string& request() const { return request_; }

 private:
  const std::string response_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::string request_;
  std::thread thread_;
};

// Records what a session delivers; onExit fulfils the promise.
class ExecRecorder : public session::ExecCallbacks {
 public:
  void onStdout(Buffer& data) override { out += data.toString(); }
  void onStderr(Buffer& data) override { err += data.toString(); }
  void onExit(const ExitStatus& status) override { exited.set_value(status); }
  void onStdinDrained() override {}

  std::string out;
  std::string err;
  std::promise<ExitStatus> exited;
};

class PortRecorder : public session::PortCallbacks {
 public:
  void onConnected() override { connected = true; }
  void onData(Buffer& data) override { received += data.toString(); }
  void onRemoteEof() override { remote_eof = true; }
  void onWriteDrained() override {}
  void onClosed() override { ended.set_value(std::nullopt); }
  void onError(const session::PortError& error) override { ended.set_value(error); }

  bool connected = false;
  bool remote_eof = false;
  std::string received;
  std::promise<std::optional<session::PortError>> ended;
};

class StreamServerRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::EmbeddedContainerConfig c;
    c.id = "demo";
    c.command = {"/bin/sleep", "1000"};
    embedded_ = std::make_unique<runtime::EmbeddedRuntime>(
        std::vector<runtime::EmbeddedContainerConfig>{c});
    ASSERT_TRUE(embedded_->start().ok());
    cache_ = std::make_unique<cache::TokenCache>(cache::TokenCacheOptions{}, time_, random_);
    auto bound = stream::ListenSocket::bind("127.0.0.1:0");
    ASSERT_TRUE(bound.ok()) << bound.status();
    socket_ = std::move(*bound);
    upstream_.runSync([&] {
      port_forward_ = std::make_unique<stream::SpdyPortForwardHandler>(
          *embedded_, stream::SpdyPortForwardConfig{});
      spdy_ = std::make_unique<stream::SpdyUpgradeHandler>(
          *embedded_, stream::SpdyRemoteCommandConfig{}, port_forward_.get());
      server_ = std::make_unique<stream::Http1Server>(upstream_.dispatcher(), *cache_,
                                                      stream::Http1ServerOptions{});
      server_->setUpgradeHandler(stream::ProtocolFamily::kSpdy, spdy_.get());
      listener_ = std::make_unique<stream::Listener>(
          upstream_.dispatcher(), *socket_, [this](int fd, std::string peer) {
            if (upstream_tls_ != nullptr) {
              server_->onAcceptTransport(std::make_unique<stream::TlsTransport>(
                  upstream_.dispatcher(), fd, std::move(peer), upstream_tls_));
            } else {
              server_->onAccept(fd, std::move(peer));
            }
          });
    });
    runtime_ = makeRuntime(nullptr);
  }

  static std::unique_ptr<StreamServerRuntime> makeRuntime(stream::TlsContextPtr tls) {
    StreamServerOptions options;
    options.upgrade.connect_timeout = seconds(2);
    options.upgrade.upgrade_timeout = milliseconds(1500);
    options.upgrade.tls = std::move(tls);
    options.connection.linger_timeout = milliseconds(200);
    return std::make_unique<StreamServerRuntime>(options);
  }

  // Serves the upstream over TLS with a certificate for 127.0.0.1 from a new
  // CA; returns a client context trusting `trusted` (that CA when null).
  stream::TlsContextPtr serveTls(const stream::testing::TestCa* trusted = nullptr) {
    stream::testing::TestCa ca("upstream CA");
    const stream::testing::TestCertificate leaf = ca.issue(stream::testing::LeafSpec{});
    const std::string cert = tls_dir_.write("server.crt", leaf.cert_pem);
    const std::string key = tls_dir_.write("server.key", leaf.key_pem);
    auto server = stream::TlsContext::load(stream::TlsFiles{cert, key, ""});
    EXPECT_TRUE(server.ok()) << server.status();
    upstream_.runSync([&] { upstream_tls_ = *server; });
    const std::string ca_file =
        tls_dir_.write("ca.crt", trusted != nullptr ? trusted->certPem() : ca.certPem());
    auto client = stream::TlsContext::loadClient(ca_file);
    EXPECT_TRUE(client.ok()) << client.status();
    return *client;
  }

  void TearDown() override {
    front_.runSync([&] {
      processes_.clear();
      pf_connections_.clear();
      pf_sessions_.clear();
    });
    // The handlers own the upstream loop's sessions and are destroyed on that
    // loop, as crisp destroys them only after joining its workers: a session
    // that ends after this (its peer's close arriving late) would otherwise
    // erase itself from a registry the main thread is freeing.
    upstream_.runSync([&] {
      spdy_->closeAll(upstream_.dispatcher());
      port_forward_->closeAll(upstream_.dispatcher());
      listener_.reset();
      server_.reset();
      spdy_.reset();
      port_forward_.reset();
    });
    embedded_->stop();
  }

  // The URL the runtime would answer a CRI call with.
  std::string upstreamUrl(session::StreamRequest request) {
    const session::Operation op = request.operation();
    auto token = cache_->insert(std::move(request));
    EXPECT_TRUE(token.ok());
    return "http://" + socket_->address() + "/" + session::operationName(op) + "/" + *token;
  }

  static session::ExecSpec execSpec(std::vector<std::string> command, bool stdin = false) {
    session::ExecSpec spec;
    spec.container_id = "demo";
    spec.command = std::move(command);
    spec.stdin = stdin;
    spec.stdout = true;
    spec.stderr = true;
    return spec;
  }

  // Starts an exec against `url` on the front loop; returns its recorder.
  ExecRecorder& startExec(session::ExecSpec spec, const std::string& url) {
    recorders_.push_back(std::make_unique<ExecRecorder>());
    ExecRecorder& recorder = *recorders_.back();
    spec.upstream_url = url;
    front_.runSync([&] {
      auto process = runtime_->startExec(front_.dispatcher(), spec, std::nullopt, recorder);
      ASSERT_TRUE(process.ok()) << process.status();
      processes_.push_back(std::move(*process));
    });
    return recorder;
  }

  ExitStatus waitExit(ExecRecorder& recorder) {
    auto future = recorder.exited.get_future();
    EXPECT_EQ(future.wait_for(seconds(10)), std::future_status::ready);
    ExitStatus status = future.get();
    // Outputs are read on the front loop: look at them there.
    front_.runSync([] {});
    return status;
  }

  RealTimeSource time_;
  SystemRandomSource random_;
  std::unique_ptr<runtime::EmbeddedRuntime> embedded_;
  std::unique_ptr<cache::TokenCache> cache_;
  std::unique_ptr<stream::ListenSocket> socket_;
  test::LoopThread upstream_;
  std::unique_ptr<stream::SpdyPortForwardHandler> port_forward_;
  std::unique_ptr<stream::SpdyUpgradeHandler> spdy_;
  std::unique_ptr<stream::Http1Server> server_;
  std::unique_ptr<stream::Listener> listener_;

  stream::testing::TempDir tls_dir_;
  stream::TlsContextPtr upstream_tls_;  // set and read on the upstream loop

  test::LoopThread front_;
  std::unique_ptr<StreamServerRuntime> runtime_;
  std::vector<std::unique_ptr<ExecRecorder>> recorders_;
  std::vector<std::unique_ptr<session::ExecProcess>> processes_;
  std::vector<std::unique_ptr<session::PortForwardSession>> pf_sessions_;
  std::vector<std::unique_ptr<session::PortConnection>> pf_connections_;
};

TEST_F(StreamServerRuntimeTest, OutputAndExitCodeComeBack) {
  session::ExecSpec spec = execSpec({"sh", "-c", "echo out; echo err >&2; exit 7"});
  ExecRecorder& r = startExec(spec, upstreamUrl(session::StreamRequest{spec}));
  const ExitStatus status = waitExit(r);
  EXPECT_EQ(status.kind, ExitStatus::Kind::kNonZeroExit);
  EXPECT_EQ(status.exit_code, 7);
  EXPECT_EQ(status.message, "error executing command [sh -c echo out; echo err >&2; exit 7], "
                            "exit code 7");
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
}

TEST_F(StreamServerRuntimeTest, SuccessIsSuccess) {
  session::ExecSpec spec = execSpec({"true"});
  ExecRecorder& r = startExec(spec, upstreamUrl(session::StreamRequest{spec}));
  EXPECT_EQ(waitExit(r).kind, ExitStatus::Kind::kSuccess);
}

TEST_F(StreamServerRuntimeTest, StdinAndItsHalfCloseReachTheProcess) {
  session::ExecSpec spec = execSpec({"sh", "-c", "cat; exit 3"}, true);
  ExecRecorder& r = startExec(spec, upstreamUrl(session::StreamRequest{spec}));
  front_.runSync([&] {
    Buffer data;
    data.add("a\nb\n");
    processes_.back()->writeStdin(data);
    processes_.back()->closeStdin();
  });
  const ExitStatus status = waitExit(r);
  EXPECT_EQ(status.exit_code, 3);
  EXPECT_EQ(r.out, "a\nb\n");
}

TEST_F(StreamServerRuntimeTest, TerminalSizeReachesTheProcess) {
  session::ExecSpec spec = execSpec({"sh", "-c", "sleep 0.3; stty size"});
  spec.tty = true;
  spec.stderr = false;
  spec.upstream_url = upstreamUrl(session::StreamRequest{spec});
  recorders_.push_back(std::make_unique<ExecRecorder>());
  ExecRecorder& r = *recorders_.back();
  front_.runSync([&] {
    auto process = runtime_->startExec(front_.dispatcher(), spec,
                                       session::TerminalSize{91, 33}, r);
    ASSERT_TRUE(process.ok());
    processes_.push_back(std::move(*process));
  });
  EXPECT_EQ(waitExit(r).kind, ExitStatus::Kind::kSuccess);
  EXPECT_EQ(r.out, "33 91\r\n");
}

TEST_F(StreamServerRuntimeTest, UsedTokenIsTheRuntimesNotFound) {
  session::ExecSpec spec = execSpec({"true"});
  const std::string url = upstreamUrl(session::StreamRequest{spec});
  ExecRecorder& first = startExec(spec, url);
  EXPECT_EQ(waitExit(first).kind, ExitStatus::Kind::kSuccess);
  ExecRecorder& second = startExec(spec, url);
  const ExitStatus status = waitExit(second);
  EXPECT_EQ(status.kind, ExitStatus::Kind::kError);
  EXPECT_NE(status.message.find("refused the upgrade: 404 Not Found: 404 page not found"),
            std::string::npos)
      << status.message;
}

TEST_F(StreamServerRuntimeTest, RefusedConnectionIsAnErrorAndLeaksNothing) {
  const int fds = openFdCount();
  const uint16_t port = closedPort();
  ExecRecorder& r =
      startExec(execSpec({"true"}), "http://127.0.0.1:" + std::to_string(port) + "/exec/x");
  const ExitStatus status = waitExit(r);
  EXPECT_EQ(status.kind, ExitStatus::Kind::kError);
  EXPECT_NE(status.message.find("Connection refused"), std::string::npos) << status.message;
  EXPECT_NE(status.message.find("runtime stream server 127.0.0.1:" + std::to_string(port)),
            std::string::npos)
      << status.message;
  front_.runSync([&] { processes_.clear(); });
  front_.runSync([] {});
  EXPECT_EQ(openFdCount(), fds);
}

TEST_F(StreamServerRuntimeTest, RefusedUpgradeCarriesTheServersText) {
  const int fds = openFdCount();
  {
    ScriptedServer server(
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
        "Content-Length: 5\r\n\r\nboom\n");
    ExecRecorder& r =
        startExec(execSpec({"true"}), "http://127.0.0.1:" + std::to_string(server.port()) +
                                          "/exec/abc?x=1");
    const ExitStatus status = waitExit(r);
    EXPECT_EQ(status.kind, ExitStatus::Kind::kError);
    EXPECT_NE(status.message.find("refused the upgrade: 500 Internal Server Error: boom"),
              std::string::npos)
        << status.message;
    // The request as client-go sends it: POST, the URL's path and query, v4 first.
    EXPECT_EQ(server.request().rfind("POST /exec/abc?x=1 HTTP/1.1\r\n", 0), 0u)
        << server.request();
    EXPECT_NE(server.request().find("X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"),
              std::string::npos);
    EXPECT_NE(server.request().find("Upgrade: SPDY/3.1\r\n"), std::string::npos);
  }
  front_.runSync([&] { processes_.clear(); });
  front_.runSync([] {});
  EXPECT_EQ(openFdCount(), fds);
}

TEST_F(StreamServerRuntimeTest, StatusJsonInARefusalGivesItsMessage) {
  ScriptedServer server(
      "HTTP/1.1 403 Forbidden\r\nContent-Length: 62\r\n\r\n"
      "{\"kind\":\"Status\",\"status\":\"Failure\",\"message\":\"not allowed\"}");
  ExecRecorder& r = startExec(execSpec({"true"}),
                              "http://127.0.0.1:" + std::to_string(server.port()) + "/exec/a");
  const ExitStatus status = waitExit(r);
  EXPECT_NE(status.message.find("refused the upgrade: 403 Forbidden: not allowed"),
            std::string::npos)
      << status.message;
}

TEST_F(StreamServerRuntimeTest, ConnectionLostBeforeTheStatusIsAnError) {
  // A 101, then the server goes away without a word of SPDY.
  ScriptedServer server(
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
      "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n");
  ExecRecorder& r = startExec(execSpec({"true"}),
                              "http://127.0.0.1:" + std::to_string(server.port()) + "/exec/a");
  const ExitStatus status = waitExit(r);
  EXPECT_EQ(status.kind, ExitStatus::Kind::kError);
  EXPECT_NE(status.message.find("lost the connection before the status"), std::string::npos)
      << status.message;
}

TEST_F(StreamServerRuntimeTest, SilentServerTimesOut) {
  uint16_t port = 0;
  const int fd = listenLoopback(port);
  ExecRecorder& r =
      startExec(execSpec({"true"}), "http://127.0.0.1:" + std::to_string(port) + "/exec/a");
  const ExitStatus status = waitExit(r);
  EXPECT_NE(status.message.find("no answer to the upgrade within 1500 ms"), std::string::npos)
      << status.message;
  ::close(fd);
}

TEST_F(StreamServerRuntimeTest, NamesAreResolved) {
  session::ExecSpec spec = execSpec({"echo", "resolved"});
  std::string url = upstreamUrl(session::StreamRequest{spec});
  url.replace(url.find("127.0.0.1"), 9, "localhost");
  ExecRecorder& r = startExec(spec, url);
  EXPECT_EQ(waitExit(r).kind, ExitStatus::Kind::kSuccess);
  EXPECT_EQ(r.out, "resolved\n");
}

TEST_F(StreamServerRuntimeTest, HttpsWithTheRuntimesCa) {
  runtime_ = makeRuntime(serveTls());
  session::ExecSpec spec = execSpec({"sh", "-c", "echo secure; exit 2"});
  std::string url = upstreamUrl(session::StreamRequest{spec});
  url.replace(0, 4, "https");
  ExecRecorder& r = startExec(spec, url);
  const ExitStatus status = waitExit(r);
  EXPECT_EQ(status.exit_code, 2);
  EXPECT_EQ(r.out, "secure\n");
}

TEST_F(StreamServerRuntimeTest, HttpsWithAnotherCaFails) {
  stream::testing::TestCa other("another CA");
  runtime_ = makeRuntime(serveTls(&other));
  session::ExecSpec spec = execSpec({"true"});
  std::string url = upstreamUrl(session::StreamRequest{spec});
  url.replace(0, 4, "https");
  ExecRecorder& r = startExec(spec, url);
  const ExitStatus status = waitExit(r);
  EXPECT_EQ(status.kind, ExitStatus::Kind::kError);
  EXPECT_NE(status.message.find("certificate verify failed"), std::string::npos)
      << status.message;
}

TEST_F(StreamServerRuntimeTest, HttpsWithoutACaIsRefused) {
  ExecRecorder& r = startExec(execSpec({"true"}), "https://127.0.0.1:1/exec/x");
  const ExitStatus status = waitExit(r);
  EXPECT_NE(status.message.find("no CA is configured"), std::string::npos) << status.message;
}

TEST_F(StreamServerRuntimeTest, PortForwardCarriesConnectionsOverOneUpstreamConnection) {
  runtime::testing::TestPortServer echo(runtime::testing::TestPortServer::Mode::kEcho);
  session::PortForwardSpec spec;
  spec.pod_sandbox_id = "demo";
  spec.ports = {echo.port()};
  spec.upstream_url = upstreamUrl(session::StreamRequest{spec});
  PortRecorder first;
  PortRecorder second;
  front_.runSync([&] {
    pf_sessions_.push_back(runtime_->openPortForward(front_.dispatcher(), spec));
    for (PortRecorder* recorder : {&first, &second}) {
      auto c = pf_sessions_.back()->connectPort(echo.port(), *recorder);
      ASSERT_TRUE(c.ok()) << c.status();
      Buffer data;
      data.add(recorder == &first ? "one" : "two");
      (*c)->write(data);
      (*c)->shutdownWrite();
      pf_connections_.push_back(std::move(*c));
    }
  });
  for (PortRecorder* recorder : {&first, &second}) {
    auto future = recorder->ended.get_future();
    ASSERT_EQ(future.wait_for(seconds(10)), std::future_status::ready);
    EXPECT_EQ(future.get(), std::nullopt);
  }
  front_.runSync([] {});
  EXPECT_EQ(first.received, "one");
  EXPECT_EQ(second.received, "two");
  EXPECT_TRUE(first.connected && first.remote_eof);
  EXPECT_EQ(echo.accepted(), 2u);
}

TEST_F(StreamServerRuntimeTest, PortForwardRefusedPortGivesTheRuntimesText) {
  session::PortForwardSpec spec;
  spec.pod_sandbox_id = "demo";
  const uint16_t port = closedPort();
  spec.ports = {port};
  spec.upstream_url = upstreamUrl(session::StreamRequest{spec});
  PortRecorder recorder;
  front_.runSync([&] {
    pf_sessions_.push_back(runtime_->openPortForward(front_.dispatcher(), spec));
    auto c = pf_sessions_.back()->connectPort(port, recorder);
    ASSERT_TRUE(c.ok());
    pf_connections_.push_back(std::move(*c));
  });
  auto future = recorder.ended.get_future();
  ASSERT_EQ(future.wait_for(seconds(10)), std::future_status::ready);
  const auto error = future.get();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->kind, session::PortError::Kind::kRuntimeReported);
  EXPECT_EQ(error->message.rfind("error forwarding port " + std::to_string(port) +
                                     " to pod demo, uid : ",
                                 0),
            0u)
      << error->message;
  EXPECT_NE(error->message.find("connection refused"), std::string::npos) << error->message;
}

TEST_F(StreamServerRuntimeTest, PortForwardUpgradeFailureFailsEveryConnection) {
  session::PortForwardSpec spec;
  spec.pod_sandbox_id = "demo";
  spec.ports = {80};
  spec.upstream_url = "http://127.0.0.1:" + std::to_string(closedPort()) + "/portforward/x";
  PortRecorder a;
  PortRecorder b;
  front_.runSync([&] {
    pf_sessions_.push_back(runtime_->openPortForward(front_.dispatcher(), spec));
    for (PortRecorder* r : {&a, &b}) {
      auto c = pf_sessions_.back()->connectPort(80, *r);
      ASSERT_TRUE(c.ok());
      pf_connections_.push_back(std::move(*c));
    }
  });
  for (PortRecorder* r : {&a, &b}) {
    auto future = r->ended.get_future();
    ASSERT_EQ(future.wait_for(seconds(10)), std::future_status::ready);
    const auto error = future.get();
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->kind, session::PortError::Kind::kConnectFailed);
    EXPECT_NE(error->message.find("Connection refused"), std::string::npos) << error->message;
  }
}

}  // namespace
}  // namespace crisp::streamserver
