#include "source/stream/listener.h"

#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "source/admin/metrics.h"

#include "test/stream/http1_test_util.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;

TEST(ListenerTest, ParsesNumericAddresses) {
  auto v4 = parseListenAddress("127.0.0.1:10010");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(v4->ss_family, AF_INET);
  EXPECT_EQ(formatSocketAddress(reinterpret_cast<const sockaddr*>(&*v4)), "127.0.0.1:10010");
  auto v6 = parseListenAddress("[::1]:0");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->ss_family, AF_INET6);
  EXPECT_EQ(formatSocketAddress(reinterpret_cast<const sockaddr*>(&*v6)), "[::1]:0");
  EXPECT_TRUE(parseListenAddress("0.0.0.0:65535").ok());
  EXPECT_TRUE(parseListenAddress("[::]:80").ok());
}

TEST(ListenerTest, RejectsBadAddressesWithAClearError) {
  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:http",
        "::1:80", "[::1]80", "[::1]", "[::1:80", "localhost:80", "1.2.3:80", "[127.0.0.1:80"}) {
    auto parsed = parseListenAddress(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(parsed.status().message().find("listen address"), std::string::npos);
  }
  auto socket = ListenSocket::bind("not-an-ip:1");
  EXPECT_EQ(socket.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ListenerTest, PortZeroReportsTheBoundPort) {
  for (const char* address : {"127.0.0.1:0", "[::1]:0"}) {
    auto socket = ListenSocket::bind(address);
    ASSERT_TRUE(socket.ok()) << socket.status();
    EXPECT_NE((*socket)->port(), 0);
    const std::string expected_prefix = address[0] == '[' ? "[::1]:" : "127.0.0.1:";
    EXPECT_EQ((*socket)->address(), expected_prefix + std::to_string((*socket)->port()));
  }
}

TEST(ListenerTest, BindingATakenPortIsUnavailable) {
  auto first = ListenSocket::bind("127.0.0.1:0");
  ASSERT_TRUE(first.ok());
  auto second = ListenSocket::bind((*first)->address());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("bind"), std::string::npos);
}

TEST(ListenerTest, AcceptedSocketsAreNonBlockingCloseOnExecAndNoDelay) {
  auto socket = ListenSocket::bind("[::1]:0");
  ASSERT_TRUE(socket.ok()) << socket.status();
  test::LoopThread loop;
  std::mutex mutex;
  std::condition_variable cv;
  int flags = -1;
  int fd_flags = -1;
  int nodelay = -1;
  std::string peer;
  std::unique_ptr<Listener> listener;
  loop.runSync([&] {
    listener = std::make_unique<Listener>(loop.dispatcher(), **socket, [&](int fd, std::string p) {
      std::lock_guard<std::mutex> lock(mutex);
      flags = ::fcntl(fd, F_GETFL);
      fd_flags = ::fcntl(fd, F_GETFD);
      socklen_t len = sizeof(nodelay);
      ::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
      peer = std::move(p);
      ::close(fd);
      cv.notify_all();
    });
  });
  const int client = test::connectTo((*socket)->address());
  ASSERT_GE(client, 0);
  {
    std::unique_lock<std::mutex> lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, test::kClientTimeout, [&] { return flags != -1; }));
  }
  EXPECT_NE(flags & O_NONBLOCK, 0);
  EXPECT_NE(fd_flags & FD_CLOEXEC, 0);
  EXPECT_EQ(nodelay, 1);
  EXPECT_EQ(peer.rfind("[::1]:", 0), 0u) << peer;
  loop.runSync([&] { listener.reset(); });
  ::close(client);
}

// Runs in a child process whose descriptor table is full: the listener must
// pause on EMFILE instead of spinning, and accept once a slot frees up.
// Returns 0 on success, else the number of the failed check.
int emfileChild() {
  ::alarm(10);  // a hang kills the child, and the parent reports it
  stats::Registry registry;
  event::Dispatcher dispatcher;
  auto socket = ListenSocket::bind("127.0.0.1:0");
  if (!socket.ok()) {
    return 1;
  }
  int accepted = -1;
  ListenerOptions options;
  options.name = "emfile";
  options.accept_pause = milliseconds(20);
  options.registry = &registry;
  Listener listener(
      dispatcher, **socket,
      [&](int fd, std::string) {
        accepted = fd;
        dispatcher.exit();
      },
      options);
  const int client = test::connectTo((*socket)->address());
  if (client < 0) {
    return 2;
  }
  // Take every free descriptor below a low limit.
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = 64;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return 3;
  }
  std::vector<int> filler;
  for (int fd = ::dup(client); fd >= 0; fd = ::dup(client)) {
    filler.push_back(fd);
  }
  if (errno != EMFILE || filler.empty()) {
    return 4;
  }
  constexpr milliseconds kFullFor{200};
  event::Timer release(dispatcher, [&] {
    ::close(filler.back());
    filler.pop_back();
  });
  release.enable(kFullFor);
  dispatcher.run();
  const uint64_t pauses =
      registry.family("crisp_listener_accept_pauses_total", "", stats::Kind::kCounter, {"listener"})
          .counter({"emfile"})
          .value();
  if (accepted < 0) {
    return 5;
  }
  // 200 ms full at one try per 20 ms: about 10 pauses. A spinning listener
  // would try thousands of times; a stuck one would never accept.
  if (pauses < 2 || pauses > 15) {
    return 6;
  }
  // (The listener may well be paused again now: with the table full once
  // more, the next accept() fails with EMFILE even with nothing pending.)
  if (::fcntl(accepted, F_GETFD) < 0) {
    return 7;
  }
  return 0;
}

TEST(ListenerTest, PausesOnEmfileAndRecovers) {
#ifdef __SANITIZE_ADDRESS__
  // The sanitizers (asan config: address and undefined) open pipes to check
  // memory and vtables; with the table full they report errors of their own.
  GTEST_SKIP() << "needs free descriptors under the sanitizers";
#endif
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::_exit(emfileChild());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "check " << WEXITSTATUS(status) << " failed";
}

}  // namespace
}  // namespace crisp::stream
