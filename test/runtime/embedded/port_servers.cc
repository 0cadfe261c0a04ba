#include "test/runtime/embedded/port_servers.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "source/common/buffer.h"

namespace crisp::runtime::testing {
namespace {

constexpr int kChunk = 64 * 1024;
constexpr size_t kEchoQueueLimit = 1024 * 1024;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "TestPortServer: %s: %s\n", what.c_str(), std::strerror(errno));
  std::abort();
}

int listenSocket(TestPortServer::Family family, uint16_t* port) {
  const bool v6 = family == TestPortServer::Family::kIpv6;
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    die("socket");
  }
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (v6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    len = sizeof(*a);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    len = sizeof(*a);
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 1024) != 0) {
    die("bind/listen");
  }
  len = sizeof(ss);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *port = ntohs(v6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                   : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

}  // namespace

class TestPortServer::Conn {
 public:
  Conn(TestPortServer& server, int fd) : server_(server), fd_(fd) {
    watcher_ = std::make_unique<event::FdWatcher>(server_.dispatcher_, fd_,
                                                  [this](short events) { onEvent(events); });
    if (server_.mode_ == Mode::kSource) {
      refill();
    }
    update();
  }
  ~Conn() {
    watcher_.reset();
    ::close(fd_);
  }

  void update() {
    short events = 0;
    const bool holding = server_.mode_ == Mode::kHold && !server_.released_;
    if (!holding && !peer_eof_ && !done_reading_ && out_.length() < kEchoQueueLimit) {
      events |= event::FdWatcher::kRead;
    }
    if (!holding && !out_.empty()) {
      events |= event::FdWatcher::kWrite;
    }
    watcher_->setEnabled(events);
  }

 private:
  void onEvent(short events) {
    if ((events & event::FdWatcher::kRead) != 0 && !onReadable()) {
      return;
    }
    if ((events & event::FdWatcher::kWrite) != 0 && !onWritable()) {
      return;
    }
    if (finishIfDone()) {
      return;
    }
    update();
  }

  // False when the connection was closed.
  bool onReadable() {
    for (int i = 0; i < 4; ++i) {
      Buffer in;
      const int n = in.readFrom(fd_, kChunk);
      if (n > 0) {
        server_.bytes_read_ += static_cast<uint64_t>(n);
        switch (server_.mode_) {
          case Mode::kEcho:
          case Mode::kHold:
            out_.move(in);
            if (out_.length() >= kEchoQueueLimit) {
              return true;
            }
            break;
          case Mode::kHttp:
            head_ += in.toString();
            if (!answered_ && head_.find("\r\n\r\n") != std::string::npos) {
              answered_ = true;
              done_reading_ = true;
              const std::string body = "hello from port " + std::to_string(server_.port_) + "\n";
              out_.add("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body);
              return true;
            }
            break;
          default:
            break;  // kSource discards input
        }
        continue;
      }
      if (n == 0) {
        peer_eof_ = true;
        return true;
      }
      if (errno == EAGAIN || errno == EINTR) {
        return true;
      }
      server_.closeConn(this);
      return false;
    }
    return true;
  }

  bool onWritable() {
    while (!out_.empty()) {
      const size_t n = std::min<size_t>(out_.length(), kChunk);
      const uint8_t* p = out_.linearize(n);
      const ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w > 0) {
        out_.drain(static_cast<size_t>(w));
        if (server_.mode_ == Mode::kSource) {
          refill();
        }
        continue;
      }
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
        return true;
      }
      server_.closeConn(this);
      return false;
    }
    return true;
  }

  void refill() {
    while (out_.length() < 256 * 1024 && produced_ < server_.source_bytes_) {
      const size_t n = std::min<uint64_t>(kChunk, server_.source_bytes_ - produced_);
      std::string chunk(n, '\0');
      for (size_t i = 0; i < n; ++i) {
        chunk[i] = patternByte(produced_ + i);
      }
      produced_ += n;
      out_.add(chunk);
    }
  }

  // Closes when this mode's work is over. True when closed.
  bool finishIfDone() {
    if (!out_.empty()) {
      return false;
    }
    bool done = false;
    switch (server_.mode_) {
      case Mode::kEcho:
      case Mode::kHold:
        done = peer_eof_;
        break;
      case Mode::kHttp:
        done = answered_ || peer_eof_;
        break;
      case Mode::kSource:
        if (produced_ == server_.source_bytes_ && !write_shut_) {
          ::shutdown(fd_, SHUT_WR);
          write_shut_ = true;
        }
        done = write_shut_ && peer_eof_;
        break;
      case Mode::kReset:
        done = true;
        break;
    }
    if (done) {
      ::shutdown(fd_, SHUT_WR);
      server_.closeConn(this);
    }
    return done;
  }

  TestPortServer& server_;
  const int fd_;
  std::unique_ptr<event::FdWatcher> watcher_;
  Buffer out_;
  std::string head_;
  uint64_t produced_ = 0;
  bool peer_eof_ = false;
  bool done_reading_ = false;
  bool answered_ = false;
  bool write_shut_ = false;
};

TestPortServer::TestPortServer(Mode mode, Family family, const std::string& netns_path,
                               uint64_t source_bytes)
    : mode_(mode), source_bytes_(source_bytes) {
  if (netns_path.empty()) {
    listen_fd_ = listenSocket(family, &port_);
  } else {
    // A socket keeps the namespace it was created in; create it on a thread
    // that entered the namespace and then ends.
    std::thread maker([&] {
      const int ns = ::open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
        die("enter " + netns_path);
      }
      ::close(ns);
      listen_fd_ = listenSocket(family, &port_);
    });
    maker.join();
  }
  accept_watcher_ =
      std::make_unique<event::FdWatcher>(dispatcher_, listen_fd_, [this](short) { onAccept(); });
  accept_watcher_->setEnabled(event::FdWatcher::kRead);
  thread_ = std::thread([this] { dispatcher_.run(); });
}

TestPortServer::~TestPortServer() {
  dispatcher_.exit();
  thread_.join();
  conns_.clear();
  accept_watcher_.reset();
  ::close(listen_fd_);
}

void TestPortServer::onAccept() {
  while (true) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      return;
    }
    ++accepted_;
    if (mode_ == Mode::kReset) {
      const linger hard{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
      ::close(fd);
      continue;
    }
    ++open_;
    auto conn = std::make_unique<Conn>(*this, fd);
    Conn* raw = conn.get();
    conns_.emplace(raw, std::move(conn));
  }
}

void TestPortServer::closeConn(Conn* conn) {
  auto it = conns_.find(conn);
  if (it == conns_.end()) {
    return;
  }
  // Deferred: this runs inside the connection's own callback.
  dispatcher_.deferredDelete(std::move(it->second));
  conns_.erase(it);
  --open_;
}

void TestPortServer::release() {
  dispatcher_.post([this] {
    released_ = true;
    for (auto& [raw, conn] : conns_) {
      conn->update();
    }
  });
}

bool TestPortServer::waitUntil(const std::function<bool()>& pred,
                               std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return pred();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

NamespaceThread::NamespaceThread() {
  thread_ = std::thread([this] {
    std::string error;
    if (::unshare(CLONE_NEWNET) != 0) {
      error = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
    } else {
      // A new namespace has only `lo`, and it is down.
      const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      ifreq ifr{};
      std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
      if (s < 0 || ::ioctl(s, SIOCGIFFLAGS, &ifr) != 0) {
        error = std::string("SIOCGIFFLAGS lo: ") + std::strerror(errno);
      } else {
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
        if (::ioctl(s, SIOCSIFFLAGS, &ifr) != 0) {
          error = std::string("SIOCSIFFLAGS lo: ") + std::strerror(errno);
        }
      }
      if (s >= 0) {
        ::close(s);
      }
    }
    std::unique_lock<std::mutex> lock(mutex_);
    ok_ = error.empty();
    error_ = error;
    path_ = "/proc/" + std::to_string(::getpid()) + "/task/" +
            std::to_string(static_cast<long>(::syscall(SYS_gettid))) + "/ns/net";
    ready_ = true;
    cv_.notify_all();
    cv_.wait(lock, [this] { return done_; });
  });
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return ready_; });
}

NamespaceThread::~NamespaceThread() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    cv_.notify_all();
  }
  thread_.join();
}

}  // namespace crisp::runtime::testing
