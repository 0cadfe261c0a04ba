#include "tools/devapiserver/socket_util.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crisp::devapi {
namespace {

absl::Status errnoStatus(absl::string_view what, int err) {
  return absl::UnavailableError(absl::StrCat(what, ": ", strerror(err)));
}

int pollOne(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  const int ms = timeout.count() < 0 ? -1 : static_cast<int>(timeout.count());
  for (;;) {
    const int r = poll(&p, 1, ms);
    if (r < 0 && errno == EINTR) {
      continue;
    }
    return r;
  }
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    reset(other.release());
  }
  return *this;
}

UniqueFd::~UniqueFd() { reset(); }

int UniqueFd::release() {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) {
    ::close(fd_);
  }
  fd_ = fd;
}

absl::Status sendAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errnoStatus("send", errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> recvSome(int fd, size_t max, std::chrono::milliseconds timeout) {
  const int ready = pollOne(fd, POLLIN, timeout);
  if (ready < 0) {
    return errnoStatus("poll", errno);
  }
  if (ready == 0) {
    return absl::DeadlineExceededError("timed out waiting for data");
  }
  std::string out(max, '\0');
  for (;;) {
    const ssize_t n = ::recv(fd, out.data(), max, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errnoStatus("recv", errno);
    }
    out.resize(static_cast<size_t>(n));
    return out;
  }
}

absl::StatusOr<UniqueFd> connectTcp(const std::string& host, const std::string& port,
                                    std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", host, ":", port, ": ", gai_strerror(rc)));
  }
  absl::Status last = absl::UnavailableError(absl::StrCat("no address for ", host));
  for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
    if (fd.get() < 0) {
      last = errnoStatus("socket", errno);
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
      last = errnoStatus(absl::StrCat("connect to ", host, ":", port), errno);
      continue;
    }
    const int ready = pollOne(fd.get(), POLLOUT, timeout);
    if (ready <= 0) {
      last =
          absl::DeadlineExceededError(absl::StrCat("connect to ", host, ":", port, ": timed out"));
      continue;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      last = errnoStatus(absl::StrCat("connect to ", host, ":", port), err);
      continue;
    }
    const int flags = fcntl(fd.get(), F_GETFL);
    fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    const int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    freeaddrinfo(result);
    return fd;
  }
  freeaddrinfo(result);
  return last;
}

absl::StatusOr<UniqueFd> listenLoopback(absl::string_view address, std::string* bound) {
  std::string host;
  absl::string_view port_text;
  if (!address.empty() && address.front() == '[') {
    const size_t close = address.find("]:");
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("bad listen address \"", address, "\""));
    }
    host = std::string(address.substr(1, close - 1));
    port_text = address.substr(close + 2);
  } else {
    const size_t colon = address.rfind(':');
    if (colon == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address \"", address, "\" needs host:port"));
    }
    host = std::string(address.substr(0, colon));
    port_text = address.substr(colon + 1);
  }
  int port = 0;
  if (!absl::SimpleAtoi(port_text, &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad port in \"", address, "\""));
  }

  sockaddr_storage storage{};
  socklen_t len = 0;
  int family = AF_INET;
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    if ((ntohl(v4.s_addr) >> 24) != 127) {
      return absl::InvalidArgumentError(
          absl::StrCat("refusing to listen on ", host, ": only loopback addresses are allowed"));
    }
    auto* sin = reinterpret_cast<sockaddr_in*>(&storage);
    sin->sin_family = AF_INET;
    sin->sin_addr = v4;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (!IN6_IS_ADDR_LOOPBACK(&v6)) {
      return absl::InvalidArgumentError(
          absl::StrCat("refusing to listen on ", host, ": only loopback addresses are allowed"));
    }
    family = AF_INET6;
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&storage);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_addr = v6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    len = sizeof(sockaddr_in6);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("listen host \"", host, "\" is not a numeric loopback address"));
  }

  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    return errnoStatus("socket", errno);
  }
  const int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), len) < 0) {
    return errnoStatus(absl::StrCat("bind ", address), errno);
  }
  if (::listen(fd.get(), 128) < 0) {
    return errnoStatus("listen", errno);
  }
  sockaddr_storage actual{};
  socklen_t actual_len = sizeof(actual);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&actual), &actual_len);
  const int bound_port = family == AF_INET
                             ? ntohs(reinterpret_cast<sockaddr_in*>(&actual)->sin_port)
                             : ntohs(reinterpret_cast<sockaddr_in6*>(&actual)->sin6_port);
  *bound = family == AF_INET ? absl::StrCat(host, ":", bound_port)
                             : absl::StrCat("[", host, "]:", bound_port);
  return fd;
}

}  // namespace crisp::devapi
