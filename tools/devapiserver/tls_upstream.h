#pragma once

// TLS toward a stream server whose URL is https://: the client side of the
// stream proxy's hop, with OpenSSL.
//
//   auto ctx = TlsUpstreamContext::create({"/tmp/ca.crt", "", ""});   // at start-up
//   auto tls = (*ctx)->connect(fd, "127.0.0.1", timeout);           // per connection
//   tls.value()->sendAll(head, timeout);
//   tls.value()->recvSome(16384, timeout);
//   tls.value()->relay(client_fd, &to_runtime, &to_client);         // after the 101
//
// The server certificate must chain to the CA file (the system's trusted CAs
// when none is given) and name the URL's host (IP address or DNS name). ALPN
// offers http/1.1. With a client certificate and key, they are presented
// when the server asks. TLS 1.2 is the oldest version offered.
//
// Blocking code, like the rest of the proxy: a TlsUpstream belongs to the
// thread that runs the connection. SIGPIPE must be ignored in the process
// (the proxy does that).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace crisp::devapi {

struct TlsUpstreamFiles {
  std::string ca_file;    // PEM CAs the server must chain to; empty: the system's
  std::string cert_file;  // PEM client certificate; empty: none
  std::string key_file;   // its private key; with cert_file only
};

class TlsUpstream;

class TlsUpstreamContext {
 public:
  // Loads the files; errors name the file and OpenSSL's reason.
  static absl::StatusOr<std::shared_ptr<const TlsUpstreamContext>> create(
      const TlsUpstreamFiles& files);
  ~TlsUpstreamContext();
  TlsUpstreamContext(const TlsUpstreamContext&) = delete;
  TlsUpstreamContext& operator=(const TlsUpstreamContext&) = delete;

  // Runs the handshake over `fd` (connected; made non-blocking; not owned,
  // it must outlive the result) within `timeout`. Fails with Unavailable
  // ("TLS handshake: certificate verify failed (...)") or DeadlineExceeded.
  absl::StatusOr<std::unique_ptr<TlsUpstream>> connect(int fd, const std::string& host,
                                                       std::chrono::milliseconds timeout) const;

 private:
  TlsUpstreamContext() = default;
  SSL_CTX* ctx_ = nullptr;
};

class TlsUpstream {
 public:
  ~TlsUpstream();
  TlsUpstream(const TlsUpstream&) = delete;
  TlsUpstream& operator=(const TlsUpstream&) = delete;

  // Sends every byte, each wait at most `timeout`.
  absl::Status sendAll(absl::string_view data, std::chrono::milliseconds timeout);
  // What is there (at most `max` bytes), waiting at most `timeout` for it;
  // empty at the server's close_notify. A TCP close without close_notify, a
  // reset or an alert is Unavailable with OpenSSL's reason.
  absl::StatusOr<std::string> recvSome(size_t max, std::chrono::milliseconds timeout);
  // Copies bytes both ways between `client_fd` (a plain socket, made
  // non-blocking) and the server until both directions ended: the client's
  // end of input becomes close_notify, the server's close_notify a
  // shutdown(SHUT_WR) of the client. A failure on either side shuts both
  // down and is returned. Adds the bytes moved to the counters.
  absl::Status relay(int client_fd, uint64_t* to_server, uint64_t* to_client);

 private:
  friend class TlsUpstreamContext;
  TlsUpstream(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  // The failure of the SSL call that returned `ret`, prefixed by `what`.
  absl::Status failure(const char* what, int ret);

  int fd_;
  SSL* ssl_;
};

}  // namespace crisp::devapi
