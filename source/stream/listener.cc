#include "source/stream/listener.h"


#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "source/admin/metrics.h"
#include "source/common/logger.h"
#include "source/stream/stream_metrics.h"

namespace crisp::stream {
namespace {

stats::Registry& registryOr(stats::Registry* r) { return r != nullptr ? *r : stats::registry(); }

// Every metric of the listener.
stats::Counter& acceptPausesCounter(stats::Registry& registry, const std::string& listener) {
  return acceptPausesFamily(registry).counter({listener});
}

std::string errnoText(const char* what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

// accept() errors that mean "no resources right now": retrying at once would
// fail the same way while the pending connection keeps the socket readable.
bool isResourceExhaustion(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

}  // namespace

absl::StatusOr<sockaddr_storage> parseListenAddress(std::string_view address_view) {
  const std::string address(address_view);
  std::string host;
  std::string port;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address '", address, "': expected [ipv6]:port"));
    }
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address '", address, "': expected ip:port"));
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address '", address, "': put an IPv6 address in brackets"));
    }
  }
  uint32_t port_number = 0;
  if (port.empty() || !absl::SimpleAtoi(port, &port_number) || port_number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", address, "': port must be a number from 0 to 65535"));
  }
  sockaddr_storage out{};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port_number));
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port_number));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address '", address, "': host must be a numeric IPv4 or IPv6 address"));
  }
  return out;
}

std::string formatSocketAddress(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
    return absl::StrCat(text, ":", ntohs(v4->sin_port));
  }
  if (address->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
    inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
    return absl::StrCat("[", text, "]:", ntohs(v6->sin6_port));
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<ListenSocket>> ListenSocket::bind(
    std::string_view address, const ListenSocketOptions& options) {
  auto parsed = parseListenAddress(address);
  if (!parsed.ok()) {
    return parsed.status();
  }
  const sockaddr_storage& addr = *parsed;
  const socklen_t addr_len = addr.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  const int fd = ::socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(errnoText("socket"));
  }
  const int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
    const auto status = absl::UnavailableError(errnoText("setsockopt(SO_REUSEADDR)"));
    ::close(fd);
    return status;
  }
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0) {
    const auto status = absl::UnavailableError(
        absl::StrCat("bind ", std::string(address), ": ", std::strerror(errno)));
    ::close(fd);
    return status;
  }
  if (::listen(fd, options.backlog) != 0) {
    const auto status = absl::UnavailableError(errnoText("listen"));
    ::close(fd);
    return status;
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof(bound);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0) {
    const auto status = absl::UnavailableError(errnoText("getsockname"));
    ::close(fd);
    return status;
  }
  const uint16_t port = bound.ss_family == AF_INET
                            ? ntohs(reinterpret_cast<const sockaddr_in*>(&bound)->sin_port)
                            : ntohs(reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port);
  return std::unique_ptr<ListenSocket>(
      new ListenSocket(fd, formatSocketAddress(reinterpret_cast<const sockaddr*>(&bound)), port));
}

ListenSocket::~ListenSocket() { ::close(fd_); }

Listener::Listener(event::Dispatcher& dispatcher, const ListenSocket& socket,
                   AcceptCallback on_accept, ListenerOptions options)
    : socket_(socket),
      on_accept_(std::move(on_accept)),
      options_(std::move(options)),
      pauses_(acceptPausesCounter(registryOr(options_.registry), options_.name)),
      watcher_(dispatcher, socket.fd(), [this](short) { onReadable(); }),
      resume_timer_(dispatcher, [this] { resume(); }) {
  watcher_.setEnabled(event::FdWatcher::kRead);
}

Listener::~Listener() = default;

void Listener::onReadable() {
  for (int i = 0; i < options_.max_accepts_per_wakeup; ++i) {
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof(peer);
    const int fd = ::accept4(socket_.fd(), reinterpret_cast<sockaddr*>(&peer), &peer_len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        return;
      }
      if (isResourceExhaustion(err)) {
        CRISP_LOG(kStream, warn, "{} listener on {}: accept: {}; pausing for {} ms", options_.name,
                  socket_.address(), std::strerror(err), options_.accept_pause.count());
        pause();
        return;
      }
      // ECONNABORTED, EINTR, EPROTO, EPERM (firewall) and the like concern one
      // connection only: skip it and go on.
      CRISP_LOG(kStream, debug, "{} listener: accept: {}", options_.name, std::strerror(err));
      continue;
    }
    const int one = 1;
    // Small frames (SPDY replies, pings) must not wait for Nagle's algorithm.
    // Failure only costs latency.
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    on_accept_(fd, formatSocketAddress(reinterpret_cast<const sockaddr*>(&peer)));
  }
}

void Listener::pause() {
  pauses_.inc();
  paused_ = true;
  watcher_.setEnabled(0);
  resume_timer_.enable(options_.accept_pause);
}

void Listener::resume() {
  paused_ = false;
  watcher_.setEnabled(event::FdWatcher::kRead);
}

}  // namespace crisp::stream
