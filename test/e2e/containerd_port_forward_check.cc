// connectSandboxPort against a real containerd: run by
// containerd_port_forward_test.py, which starts a private containerd and passes
//   CONTAINERD_SOCKET   containerd's gRPC socket
//   POD_SANDBOX_ID      a pod with a network namespace of its own (CNI), serving
//   POD_ECHO_PORT         an echo server (busybox nc, every address of the pod)
//   POD_HTTP_PORT         busybox httpd on the pod's 127.0.0.1 only, with the
//                         test image's /cgi-bin/zero and /cgi-bin/sha256
//   POD_NETNS           that pod's namespace as /proc/<pid>/ns/net of one of its
//                       processes (found by the test, not by crisp): this
//                       program adds a server of its own there for the burst
//                       of connections, which busybox nc (listen backlog 2)
//                       answers with resets
//   HOST_SANDBOX_ID     a pod on the host's network
//   CONTAINER_ID        a container of POD_SANDBOX_ID (not a sandbox)
//   STOPPED_SANDBOX_ID  a pod whose sandbox was stopped
// This program runs on the host, in the host's network namespace, like crisp.
// Figures (throughput, connect time) are printed as "figure:" lines.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/runtime/containerd/containerd_client.h"
#include "source/runtime/containerd/containerd_port_forward.h"
#include "source/runtime/embedded/port_forward.h"

#include "gtest/gtest.h"
#include "test/runtime/embedded/port_servers.h"

namespace crisp::containerd {
namespace {

using session::PortError;
using Clock = std::chrono::steady_clock;

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

uint16_t envPort(const char* name) { return static_cast<uint16_t>(std::atoi(env(name).c_str())); }

size_t openDescriptors() {
  size_t n = 0;
  DIR* dir = ::opendir("/proc/self/fd");
  while (dir != nullptr && ::readdir(dir) != nullptr) {
    ++n;
  }
  if (dir != nullptr) {
    ::closedir(dir);
  }
  return n;
}

ino_t inodeOf(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

std::string randomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) {
    c = static_cast<char>(rng());
  }
  return s;
}

std::string sha256Hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), len));
}

std::string failureText(uint16_t port, const std::string& sandbox, const std::string& detail) {
  return absl::StrCat("failed to connect to localhost:", port, " in the network of pod sandbox \"",
                      sandbox, "\": ", detail);
}

std::string refusedText(uint16_t port, const std::string& sandbox) {
  return failureText(port, sandbox,
                     absl::StrCat("127.0.0.1:", port, ": connection refused; [::1]:", port,
                                  ": connection refused"));
}

// Records what a connection reports.
class Recorder : public session::PortCallbacks {
 public:
  void onConnected() override {
    ++connected;
    connected_at = Clock::now();
  }
  void onData(Buffer& data) override { received += data.toString(); }
  void onRemoteEof() override { ++eofs; }
  void onWriteDrained() override { ++drained; }
  void onClosed() override { ++closed; }
  void onError(const PortError& e) override {
    ++errors;
    error = e;
  }
  bool ended() const { return closed + errors > 0; }
  std::string describe() const {
    return error ? error->message : absl::StrCat(received.size(), " bytes, not ended");
  }

  int connected = 0;
  int eofs = 0;
  int drained = 0;
  int closed = 0;
  int errors = 0;
  Clock::time_point connected_at;
  std::string received;
  std::optional<PortError> error;
};

// Takes up to 40000 bytes of each pipe offer itself, as an adapter splicing
// them to its client would; the backend delivers the rest with onData().
class PipeRecorder : public Recorder {
 public:
  bool canTakeDataPipe() const override { return true; }
  size_t onDataPipe(int pipe_fd, size_t limit) override {
    std::string bytes(std::min<size_t>(limit, 40000), '\0');
    const ssize_t n = ::read(pipe_fd, bytes.data(), bytes.size());
    if (n <= 0) {
      return 0;
    }
    received.append(bytes.data(), static_cast<size_t>(n));
    from_pipe += static_cast<size_t>(n);
    return static_cast<size_t>(n);
  }
  size_t from_pipe = 0;
};

// A listener on the host's 127.0.0.1, port chosen by the kernel, counting
// the connections it accepts.
class HostListener {
 public:
  HostListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::listen(fd_, 16), 0);
    socklen_t len = sizeof(a);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~HostListener() { ::close(fd_); }
  uint16_t port() const { return port_; }
  // Accepts (and closes) what is waiting; returns how many so far.
  int accepted() {
    for (int c; (c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) {
      ::close(c);
      ++accepted_;
    }
    return accepted_;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  int accepted_ = 0;
};

class SandboxPortCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    descriptors_ = openDescriptors();
    dispatcher_ = std::make_unique<event::Dispatcher>();
    client_ = std::make_unique<ContainerdClient>(*dispatcher_, env("CONTAINERD_SOCKET"));
    netns_ = std::make_unique<runtime::NetnsSocketFactory>();
  }

  // Everything made here is gone, and so is every descriptor it used.
  void TearDown() override {
    connections_.clear();
    settle();
    EXPECT_EQ(client_->activeCalls(), 0u);
    client_.reset();
    settle();
    netns_.reset();
    dispatcher_.reset();
    EXPECT_EQ(openDescriptors(), descriptors_) << "descriptors left open";
  }

  bool runUntil(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    bool expired = false;
    event::Timer watchdog(*dispatcher_, [&] { expired = true; });
    watchdog.enable(timeout);
    while (!done() && !expired) {
      event_base_loop(dispatcher_->base(), EVLOOP_ONCE);
    }
    return done();
  }

  void settle() {
    runUntil([] { return false; }, std::chrono::milliseconds(100));
  }

  session::PortConnection& connect(const std::string& sandbox, uint16_t port, Recorder& rec) {
    auto conn = connectSandboxPort(*dispatcher_, *client_, *netns_, sandbox, port, rec);
    EXPECT_TRUE(conn.ok()) << conn.status();
    connections_.push_back(std::move(conn).value());
    return *connections_.back();
  }

  void write(session::PortConnection& conn, const std::string& bytes) {
    Buffer b;
    b.add(bytes);
    conn.write(b);
  }

  // Sends `request`, half-closes, and returns what came back before the close.
  std::string exchange(const std::string& sandbox, uint16_t port, const std::string& request) {
    Recorder rec;
    auto& conn = connect(sandbox, port, rec);
    write(conn, request);
    conn.shutdownWrite();
    EXPECT_TRUE(runUntil([&] { return rec.ended(); })) << rec.describe();
    EXPECT_EQ(rec.errors, 0) << rec.describe();
    connections_.pop_back();
    return rec.received;
  }

  size_t descriptors_ = 0;
  std::unique_ptr<event::Dispatcher> dispatcher_;
  std::unique_ptr<ContainerdClient> client_;
  std::unique_ptr<runtime::NetnsSocketFactory> netns_;
  std::vector<std::unique_ptr<session::PortConnection>> connections_;
};

TEST_F(SandboxPortCheck, LookupGivesThePodsCniNamespaceOrTheHostsForHostNetwork) {
  std::optional<absl::StatusOr<SandboxNetwork>> pod, host;
  client_->sandboxNetwork(env("POD_SANDBOX_ID"), [&](auto r) { pod = std::move(r); });
  client_->sandboxNetwork(env("HOST_SANDBOX_ID"), [&](auto r) { host = std::move(r); });
  ASSERT_TRUE(runUntil([&] { return pod.has_value() && host.has_value(); }));
  ASSERT_TRUE(pod->ok()) << pod->status();
  ASSERT_TRUE(host->ok()) << host->status();
  EXPECT_NE((*pod)->namespace_path.find("/netns/cni-"), std::string::npos)
      << (*pod)->namespace_path;
  EXPECT_NE(inodeOf((*pod)->namespace_path), inodeOf("/proc/self/ns/net"));
  EXPECT_EQ(inodeOf((*pod)->namespace_path),
            inodeOf(absl::StrCat("/proc/", (*pod)->pid, "/ns/net")));
  EXPECT_EQ((*host)->namespace_path, absl::StrCat("/proc/", (*host)->pid, "/ns/net"));
  EXPECT_EQ(inodeOf((*host)->namespace_path), inodeOf("/proc/self/ns/net"));

  constexpr int kLookups = 20;
  const auto start = Clock::now();
  for (int i = 0; i < kLookups; ++i) {
    std::optional<absl::StatusOr<SandboxNetwork>> again;
    client_->sandboxNetwork(env("POD_SANDBOX_ID"), [&](auto r) { again = std::move(r); });
    ASSERT_TRUE(runUntil([&] { return again.has_value(); }));
    ASSERT_TRUE(again->ok()) << again->status();
    EXPECT_EQ((*again)->namespace_path, (*pod)->namespace_path);
  }
  std::printf("figure: sandbox lookup (Containers/Get, Tasks/Get): mean %.2f ms\n",
              std::chrono::duration<double, std::milli>(Clock::now() - start).count() / kLookups);
}

TEST_F(SandboxPortCheck, EchoIsByteExactBothWays) {
  const std::string data = randomBytes(4 << 20, 1);
  Recorder rec;
  const auto start = Clock::now();
  auto& conn = connect(env("POD_SANDBOX_ID"), envPort("POD_ECHO_PORT"), rec);
  write(conn, data);
  conn.shutdownWrite();
  ASSERT_TRUE(runUntil([&] { return rec.ended(); })) << rec.describe();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(rec.errors, 0) << rec.describe();
  EXPECT_EQ(rec.closed, 1);
  EXPECT_EQ(rec.received.size(), data.size());
  EXPECT_TRUE(rec.received == data) << "echo differs";
  std::printf("figure: echo of 4 MiB each way through the pod's namespace: %.1f MiB/s\n",
              4.0 / seconds);
}

// The pod's bytes offered through the connection's pipe (the zero-copy
// path of plain TCP clients), from a socket made in the pod's namespace.
TEST_F(SandboxPortCheck, EchoThroughThePipeOffersIsByteExact) {
  const std::string data = randomBytes(4 << 20, 2);
  PipeRecorder rec;
  auto& conn = connect(env("POD_SANDBOX_ID"), envPort("POD_ECHO_PORT"), rec);
  write(conn, data);
  conn.shutdownWrite();
  ASSERT_TRUE(runUntil([&] { return rec.ended(); })) << rec.describe();
  EXPECT_EQ(rec.errors, 0) << rec.describe();
  EXPECT_EQ(rec.closed, 1);
  EXPECT_EQ(rec.received.size(), data.size());
  EXPECT_TRUE(rec.received == data) << "echo differs";
  EXPECT_GT(rec.from_pipe, 0u);
}

TEST_F(SandboxPortCheck, ServerOnThePodsLoopbackOnlyIsReachable) {
  const std::string sandbox = env("POD_SANDBOX_ID");
  const uint16_t port = envPort("POD_HTTP_PORT");
  const std::string index =
      exchange(sandbox, port, "GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n");
  EXPECT_EQ(index.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << index;
  EXPECT_EQ(index.substr(index.find("\r\n\r\n") + 4), "crisp e2e\n");

  // Download: 5 MiB of zeros, counted exactly.
  constexpr size_t kDown = 5 << 20;
  const auto start = Clock::now();
  const std::string zeros = exchange(
      sandbox, port, absl::StrCat("GET /cgi-bin/zero?", kDown, " HTTP/1.0\r\nHost: l\r\n\r\n"));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const size_t head = zeros.find("\r\n\r\n");
  ASSERT_NE(head, std::string::npos) << zeros.substr(0, 200);
  EXPECT_EQ(zeros.size() - head - 4, kDown);
  EXPECT_EQ(zeros.find_first_not_of('\0', head + 4), std::string::npos);
  std::printf("figure: download of 5 MiB from the pod's loopback: %.1f MiB/s\n", 5.0 / seconds);

  // Upload: 3 MiB of random bytes; the pod answers their SHA-256.
  const std::string body = randomBytes(3 << 20, 2);
  const std::string sum = exchange(
      sandbox, port,
      absl::StrCat("POST /cgi-bin/sha256 HTTP/1.0\r\nHost: l\r\nContent-Length: ", body.size(),
                   "\r\n\r\n", body));
  EXPECT_EQ(sum.substr(sum.find("\r\n\r\n") + 4), sha256Hex(body) + "\n");
}

TEST_F(SandboxPortCheck, HostLoopbackIsNotReachableFromThePodButIsFromAHostNetworkPod) {
  HostListener host;
  Recorder pod;
  connect(env("POD_SANDBOX_ID"), host.port(), pod);
  ASSERT_TRUE(runUntil([&] { return pod.ended(); }));
  ASSERT_TRUE(pod.error.has_value());
  EXPECT_EQ(pod.error->kind, PortError::Kind::kRefused);
  EXPECT_EQ(pod.error->message, refusedText(host.port(), env("POD_SANDBOX_ID")));
  EXPECT_EQ(host.accepted(), 0);

  Recorder host_pod;
  connect(env("HOST_SANDBOX_ID"), host.port(), host_pod);
  ASSERT_TRUE(runUntil([&] { return host_pod.connected == 1 || host_pod.ended(); }))
      << host_pod.describe();
  EXPECT_EQ(host_pod.connected, 1) << host_pod.describe();
  EXPECT_TRUE(runUntil([&] { return host.accepted() == 1; }));
}

TEST_F(SandboxPortCheck, RefusedPortInThePod) {
  // Nothing listens on it in the pod's fresh namespace.
  const uint16_t port = envPort("POD_ECHO_PORT") + 100;
  Recorder rec;
  connect(env("POD_SANDBOX_ID"), port, rec);
  ASSERT_TRUE(runUntil([&] { return rec.ended(); }));
  ASSERT_TRUE(rec.error.has_value());
  EXPECT_EQ(rec.error->kind, PortError::Kind::kRefused);
  EXPECT_EQ(rec.error->message, refusedText(port, env("POD_SANDBOX_ID")));
}

TEST_F(SandboxPortCheck, ManyConnectionsEachByteExact) {
  using runtime::testing::TestPortServer;
  TestPortServer echo(TestPortServer::Mode::kEcho, TestPortServer::Family::kIpv4, env("POD_NETNS"));
  constexpr int kConnections = 64;
  constexpr size_t kBytes = 64 * 1024;
  std::vector<Recorder> recs(kConnections);
  std::vector<std::string> sent;
  for (int i = 0; i < kConnections; ++i) {
    sent.push_back(randomBytes(kBytes, 100 + i));
  }
  const auto start = Clock::now();
  for (int i = 0; i < kConnections; ++i) {
    auto& conn = connect(env("POD_SANDBOX_ID"), echo.port(), recs[i]);
    write(conn, sent[i]);
    conn.shutdownWrite();
  }
  ASSERT_TRUE(runUntil([&] {
    for (const auto& r : recs) {
      if (!r.ended()) {
        return false;
      }
    }
    return true;
  }));
  const double all_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  for (int i = 0; i < kConnections; ++i) {
    EXPECT_EQ(recs[i].closed, 1) << i << ": " << recs[i].describe();
    EXPECT_TRUE(recs[i].received == sent[i]) << i << ": " << recs[i].received.size() << " bytes";
  }
  std::printf(
      "figure: %d connections started at once, 64 KiB echoed on each: all done in %.1f ms\n",
      kConnections, all_ms);
  EXPECT_EQ(echo.accepted(), static_cast<uint64_t>(kConnections));
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));

  // One after another: the lookup and connect of a single connection.
  constexpr int kSerial = 50;
  std::vector<double> serial_ms;
  for (int i = 0; i < kSerial; ++i) {
    Recorder rec;
    const auto t0 = Clock::now();
    connect(env("POD_SANDBOX_ID"), echo.port(), rec);
    ASSERT_TRUE(runUntil([&] { return rec.connected == 1 || rec.ended(); })) << i;
    ASSERT_EQ(rec.connected, 1) << rec.describe();
    serial_ms.push_back(std::chrono::duration<double, std::milli>(rec.connected_at - t0).count());
    connections_.pop_back();
  }
  std::sort(serial_ms.begin(), serial_ms.end());
  std::printf("figure: one connection at a time, lookup and connect: median %.2f ms, max %.2f ms\n",
              serial_ms[kSerial / 2], serial_ms.back());
  // Each was accepted (maybe after crisp's side had closed it), and every one
  // is closed.
  EXPECT_TRUE(echo.waitUntil([&] { return echo.accepted() == kConnections + kSerial; }))
      << echo.accepted();
  EXPECT_TRUE(echo.waitUntil([&] { return echo.open() == 0; }));
}

TEST_F(SandboxPortCheck, WhatIsNotARunningSandboxSaysSo) {
  struct Case {
    std::string id;
    std::string detail;
  };
  const std::string container = env("CONTAINER_ID");
  const std::string stopped = env("STOPPED_SANDBOX_ID");
  const std::vector<Case> cases = {
      {"crisp-no-such-sandbox", "pod sandbox \"crisp-no-such-sandbox\" not found"},
      {container, absl::StrCat("pod sandbox \"", container, "\" not found (\"", container,
                               "\" is a container, not a pod sandbox)")},
      {stopped, absl::StrCat("pod sandbox \"", stopped, "\" is not running (it has no task)")},
  };
  for (const Case& c : cases) {
    Recorder rec;
    write(connect(c.id, 8080, rec), "dropped");
    ASSERT_TRUE(runUntil([&] { return rec.ended(); })) << c.id;
    ASSERT_TRUE(rec.error.has_value()) << c.id;
    EXPECT_EQ(rec.error->kind, PortError::Kind::kConnectFailed);
    EXPECT_EQ(rec.error->message, failureText(8080, c.id, c.detail));
  }
  EXPECT_EQ(netns_->served(), 0u);
}

TEST_F(SandboxPortCheck, DestroyedDuringTheLookupGetsNoCallback) {
  Recorder rec;
  write(connect(env("POD_SANDBOX_ID"), envPort("POD_ECHO_PORT"), rec), "never sent");
  connections_.clear();
  settle();
  EXPECT_EQ(rec.connected + rec.errors + rec.closed, 0);
  EXPECT_EQ(client_->activeCalls(), 0u);
  EXPECT_EQ(netns_->served(), 0u);
}

}  // namespace
}  // namespace crisp::containerd
