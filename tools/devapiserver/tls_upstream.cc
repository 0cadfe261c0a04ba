#include "tools/devapiserver/tls_upstream.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crisp::devapi {
namespace {

// Bytes held per direction while the other side is slow.
constexpr size_t kRelayBuffer = 256 * 1024;
constexpr size_t kRelayChunk = 64 * 1024;

std::string opensslErrors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    const std::string text = reason != nullptr ? reason : absl::StrCat("error ", e);
    if (out.find(text) == std::string::npos) {
      absl::StrAppend(&out, out.empty() ? "" : "; ", text);
    }
  }
  return out;
}

void beforeSslCall() {
  ERR_clear_error();
  errno = 0;
}

void setNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) {
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  }
}

// Waits until `fd` has `events`; DeadlineExceeded after `timeout`.
absl::Status waitFor(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n == 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("no answer from the stream server within ", timeout.count(), " ms"));
    }
    return absl::OkStatus();
  }
}

// The poll events an SSL call that wants to be repeated waits for; 0 when
// the call failed for good.
short wantedEvents(SSL* ssl, int ret) {
  switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
      return POLLIN;
    case SSL_ERROR_WANT_WRITE:
      return POLLOUT;
    default:
      return 0;
  }
}

absl::Status failureOf(SSL* ssl, const char* what, int ret, int saved_errno) {
  const int err = SSL_get_error(ssl, ret);
  std::string reason = opensslErrors();
  if (err == SSL_ERROR_ZERO_RETURN) {
    reason = "the stream server closed the TLS connection";
  } else if (reason.empty()) {
    reason = saved_errno != 0 ? std::strerror(saved_errno) : "connection closed by the peer";
  }
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    absl::StrAppend(&reason, " (", X509_verify_cert_error_string(verify), ")");
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", reason));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const TlsUpstreamContext>> TlsUpstreamContext::create(
    const TlsUpstreamFiles& files) {
  ERR_clear_error();
  std::shared_ptr<TlsUpstreamContext> out(new TlsUpstreamContext());
  out->ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX* ctx = out->ctx_;
  if (ctx == nullptr || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    return absl::InternalError(absl::StrCat("TLS setup: ", opensslErrors()));
  }
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
  for (const std::string* path : {&files.ca_file, &files.cert_file, &files.key_file}) {
    if (!path->empty() && ::access(path->c_str(), R_OK) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(*path, ": cannot read: ", std::strerror(errno)));
    }
  }
  if (!files.ca_file.empty()) {
    if (SSL_CTX_load_verify_file(ctx, files.ca_file.c_str()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.ca_file, ": no usable CA certificate (", opensslErrors(), ")"));
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    return absl::InternalError(absl::StrCat("system CA certificates: ", opensslErrors()));
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs its key, and a key its certificate");
  }
  if (!files.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, files.cert_file.c_str()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(files.cert_file, ": cannot use the certificate (", opensslErrors(), ")"));
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, files.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(files.key_file, ": cannot use the key with ",
                                                     files.cert_file, " (", opensslErrors(), ")"));
    }
  }
  static constexpr unsigned char kAlpn[] = "\x08http/1.1";
  if (SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn) - 1) != 0) {
    return absl::InternalError(absl::StrCat("TLS setup: ALPN: ", opensslErrors()));
  }
  return std::shared_ptr<const TlsUpstreamContext>(std::move(out));
}

TlsUpstreamContext::~TlsUpstreamContext() { SSL_CTX_free(ctx_); }

absl::StatusOr<std::unique_ptr<TlsUpstream>> TlsUpstreamContext::connect(
    int fd, const std::string& host, std::chrono::milliseconds timeout) const {
  setNonBlocking(fd);
  ERR_clear_error();
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return absl::InternalError(absl::StrCat("TLS setup: ", opensslErrors()));
  }
  std::unique_ptr<TlsUpstream> session(new TlsUpstream(fd, ssl));
  in6_addr ip;
  const bool is_ip =
      inet_pton(AF_INET, host.c_str(), &ip) == 1 || inet_pton(AF_INET6, host.c_str(), &ip) == 1;
  const bool named = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str()) == 1
                           : SSL_set_tlsext_host_name(ssl, host.c_str()) == 1 &&
                                 SSL_set1_host(ssl, host.c_str()) == 1;
  if (!named) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS setup: cannot check the name ", host, ": ", opensslErrors()));
  }
  SSL_set_connect_state(ssl);
  for (;;) {
    beforeSslCall();
    const int ret = SSL_connect(ssl);
    if (ret == 1) {
      return session;
    }
    const int saved_errno = errno;
    const short events = wantedEvents(ssl, ret);
    if (events == 0) {
      return failureOf(ssl, "TLS handshake", ret, saved_errno);
    }
    if (absl::Status s = waitFor(fd, events, timeout); !s.ok()) {
      return s;
    }
  }
}

TlsUpstream::~TlsUpstream() { SSL_free(ssl_); }

absl::Status TlsUpstream::failure(const char* what, int ret) {
  const int saved_errno = errno;
  const bool writing = std::string(what) == "TLS write";
  const absl::Status failed = failureOf(ssl_, what, ret, saved_errno);
  if (!writing) {
    return failed;
  }
  // A server that refuses the handshake after this side finished it (a
  // missing client certificate under TLS 1.3) sends an alert and closes; its
  // reset can fail a write before the alert was read. The alert says why.
  char byte;
  size_t n = 0;
  beforeSslCall();
  const int read = SSL_read_ex(ssl_, &byte, 1, &n);
  if (read != 1 && SSL_get_error(ssl_, read) == SSL_ERROR_SSL) {
    const std::string reason = opensslErrors();
    if (!reason.empty() && reason != "unexpected eof while reading") {
      return absl::UnavailableError(
          absl::StrCat(failed.message(), "; the stream server said: ", reason));
    }
  }
  ERR_clear_error();
  return failed;
}

absl::Status TlsUpstream::sendAll(absl::string_view data, std::chrono::milliseconds timeout) {
  size_t done = 0;
  while (done < data.size()) {
    beforeSslCall();
    size_t n = 0;
    const int ret = SSL_write_ex(ssl_, data.data() + done, data.size() - done, &n);
    if (ret == 1) {
      done += n;
      continue;
    }
    const short events = wantedEvents(ssl_, ret);
    if (events == 0) {
      return failure("TLS write", ret);
    }
    if (absl::Status s = waitFor(fd_, events, timeout); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> TlsUpstream::recvSome(size_t max, std::chrono::milliseconds timeout) {
  std::string out(max, '\0');
  for (;;) {
    beforeSslCall();
    size_t n = 0;
    const int ret = SSL_read_ex(ssl_, out.data(), max, &n);
    if (ret == 1) {
      out.resize(n);
      return out;
    }
    if (SSL_get_error(ssl_, ret) == SSL_ERROR_ZERO_RETURN) {
      return std::string();
    }
    const short events = wantedEvents(ssl_, ret);
    if (events == 0) {
      return failure("TLS read", ret);
    }
    if (absl::Status s = waitFor(fd_, events, timeout); !s.ok()) {
      return s;
    }
  }
}

absl::Status TlsUpstream::relay(int client_fd, uint64_t* to_server, uint64_t* to_client) {
  setNonBlocking(client_fd);
  std::string up;         // from the client, not yet taken by SSL_write
  std::string down;       // from the server, not yet sent to the client
  size_t repeat_len = 0;  // an SSL_write to repeat with the same bytes, 0 if none
  bool client_eof = false;
  bool server_eof = false;
  bool notify_sent = false;
  bool client_shut = false;
  absl::Status failed;
  char buf[kRelayChunk];
  while (failed.ok()) {
    if (client_eof && up.empty() && notify_sent && server_eof && down.empty() && client_shut) {
      return absl::OkStatus();
    }
    bool progress = false;
    short client_events = 0;
    short server_events = 0;

    if (!client_eof && up.size() < kRelayBuffer) {
      const ssize_t n = ::recv(client_fd, buf, std::min(sizeof(buf), kRelayBuffer - up.size()), 0);
      if (n > 0) {
        up.append(buf, static_cast<size_t>(n));
        progress = true;
      } else if (n == 0) {
        client_eof = true;
        progress = true;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        client_events |= POLLIN;
      } else if (errno != EINTR) {
        failed = absl::UnavailableError(absl::StrCat("client read: ", std::strerror(errno)));
        break;
      }
    }
    if (!up.empty()) {
      const size_t len = repeat_len != 0 ? repeat_len : std::min(up.size(), kRelayChunk);
      beforeSslCall();
      size_t n = 0;
      const int ret = SSL_write_ex(ssl_, up.data(), len, &n);
      if (ret == 1) {
        up.erase(0, n);
        *to_server += n;
        repeat_len = 0;
        progress = true;
      } else if (const short events = wantedEvents(ssl_, ret); events != 0) {
        repeat_len = len;
        server_events |= events;
      } else {
        failed = failure("TLS write", ret);
        break;
      }
    }
    if (client_eof && up.empty() && !notify_sent) {
      beforeSslCall();
      const int ret = SSL_shutdown(ssl_);
      const short events = ret < 0 ? wantedEvents(ssl_, ret) : 0;
      if (events != 0) {
        server_events |= events;
      } else {
        // Sent, or the server is gone (reading says so).
        ERR_clear_error();
        notify_sent = true;
        progress = true;
        ::shutdown(fd_, SHUT_WR);
      }
    }
    if (!server_eof && down.size() < kRelayBuffer) {
      beforeSslCall();
      size_t n = 0;
      const int ret = SSL_read_ex(ssl_, buf, std::min(sizeof(buf), kRelayBuffer - down.size()), &n);
      if (ret == 1) {
        down.append(buf, n);
        progress = true;
      } else if (SSL_get_error(ssl_, ret) == SSL_ERROR_ZERO_RETURN) {
        server_eof = true;
        progress = true;
      } else if (const short events = wantedEvents(ssl_, ret); events != 0) {
        server_events |= events;
      } else {
        failed = failure("TLS read", ret);
        break;
      }
    }
    if (!down.empty()) {
      const ssize_t n = ::send(client_fd, down.data(), down.size(), MSG_NOSIGNAL);
      if (n > 0) {
        down.erase(0, static_cast<size_t>(n));
        *to_client += static_cast<uint64_t>(n);
        progress = true;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        client_events |= POLLOUT;
      } else if (n < 0 && errno != EINTR) {
        failed = absl::UnavailableError(absl::StrCat("client write: ", std::strerror(errno)));
        break;
      }
    }
    if (server_eof && down.empty() && !client_shut) {
      ::shutdown(client_fd, SHUT_WR);
      client_shut = true;
      progress = true;
    }
    if (progress) {
      continue;
    }
    if (client_events == 0 && server_events == 0) {
      failed = absl::InternalError("relay: nothing left to wait for");
      break;
    }
    // A descriptor with nothing to wait for is left out: a closed peer's
    // POLLHUP would otherwise wake this loop for ever.
    pollfd fds[2] = {{client_events != 0 ? client_fd : -1, client_events, 0},
                     {server_events != 0 ? fd_ : -1, server_events, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
      failed = absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    }
  }
  ::shutdown(client_fd, SHUT_RDWR);
  ::shutdown(fd_, SHUT_RDWR);
  return failed;
}

}  // namespace crisp::devapi
