#pragma once

// UpgradeClient: the client side of the HTTP/1.1 upgrade to a runtime's
// stream server (containerd's, CRI-O's, another crisp's), as kubelet's
// proxy and client-go do it:
//
//   1. the URL's host is resolved (c-ares, when it is not an address),
//   2. a TCP connection is made (the addresses in turn) within connect_timeout,
//      with TLS over it for https (the server's certificate checked against
//      the configured CAs and the URL's host),
//   3. the request head goes out (method, path and query of the URL, Host,
//      the caller's headers) and the response head is read within
//      upgrade_timeout;
//   4. 101 hands the transport over, the bytes after the head held in it;
//      anything else fails with the status and the server's text (a
//      metav1.Status body gives its message).
//
//   UpgradeClient client(dispatcher, options);
//   client.start(url, "POST", {{"Connection", "Upgrade"}, {"Upgrade", "SPDY/3.1"}, ...},
//                [](absl::StatusOr<UpgradeResponse> r) { ... });
//
// Failures are statuses whose messages name the server and what happened:
//   UNAVAILABLE        "runtime stream server 127.0.0.1:40000: connect: Connection refused"
//   DEADLINE_EXCEEDED  "runtime stream server 127.0.0.1:40000: no connection within 10000 ms"
//   DEADLINE_EXCEEDED  "runtime stream server 127.0.0.1:40000: no answer to the upgrade within
//                       10000 ms"
//   UNAVAILABLE        "runtime stream server 127.0.0.1:40000: closed the connection before
//                       answering the upgrade"
//   (by status code)   "runtime stream server 127.0.0.1:40000 refused the upgrade: 500 Internal
//                       Server Error: <its text>"
//
// Lives on one dispatcher. `done` is called once, from the loop (never inside
// start()), unless the client is destroyed first, which cancels everything
// and closes what was opened. `done` may destroy the client.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

#include "source/admin/metrics.h"
#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/tls_context.h"
#include "source/stream/transport.h"

namespace crisp::streamserver {

class Resolver;

// The backend's metrics, in /metrics:
//   crisp_runtime_stream_upgrades_total{result}  upgrades to the runtime's stream
//     server by outcome: ok, resolve_failed, connect_failed, connect_timeout,
//     upgrade_timeout, refused (a non-101 answer), closed (no answer before the
//     close), malformed (not HTTP/1.1, or a head over the limit), no_tls (an https
//     URL without a CA configured)
//   crisp_runtime_stream_connections_active  upgraded connections to it now open
struct StreamServerMetrics {
  stats::Family& upgrades;
  stats::Gauge& connections_active;

  static StreamServerMetrics& get();
};

// An http or https URL split for the request.
struct Url {
  bool tls = false;
  std::string host;  // without brackets
  uint16_t port = 0;
  std::string authority;  // the Host header: host[:port] as in the URL
  std::string target;     // path and query, "/" at least

  // "host:port" for messages.
  std::string hostPort() const;
};

// INVALID_ARGUMENT for anything but http(s)://host[:port][/path][?query].
absl::StatusOr<Url> parseUrl(std::string_view url);

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct UpgradeOptions {
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  // From the connection (TLS handshake included) to a complete response
  // head, and for a refusal's body.
  std::chrono::milliseconds upgrade_timeout{std::chrono::seconds(10)};
  size_t max_response_head_bytes = 16384;
  // Of a refusal's body, at most this much is kept for the message.
  size_t max_error_body_bytes = 4096;
  // The client context for https URLs; an https URL without one fails.
  stream::TlsContextPtr tls;
};

struct UpgradeResponse {
  // Reading paused; the bytes the server sent after the head are held in it.
  stream::TransportPtr transport;
  HttpHeaders headers;

  // The first value of `name` (case-insensitive), or nullptr.
  const std::string* header(std::string_view name) const;
};

class UpgradeClient : private stream::TransportCallbacks {
 public:
  using Done = std::function<void(absl::StatusOr<UpgradeResponse>)>;

  UpgradeClient(event::Dispatcher& dispatcher, UpgradeOptions options);
  ~UpgradeClient() override;
  UpgradeClient(const UpgradeClient&) = delete;
  UpgradeClient& operator=(const UpgradeClient&) = delete;

  // Starts the upgrade. Call once.
  void start(const Url& url, std::string method, HttpHeaders headers, Done done);

 private:
  class ResponseParser;

  void onResolved(absl::StatusOr<std::vector<std::string>> addresses);
  void connectNext();
  void onConnectReady();
  void onConnected(int fd, const std::string& peer);
  void finish(absl::StatusOr<UpgradeResponse> result);
  // A non-101 answer: its status and text (a Status body's message).
  void failRefused();
  // `result` is the metric label of the failure.
  void fail(const char* result, absl::StatusCode code, const std::string& what);
  void failSoon(const char* result, absl::StatusCode code, const std::string& what);

  // stream::TransportCallbacks
  void onTransportData(Buffer& data) override;
  void onTransportEof() override;
  void onTransportDrained() override {}
  void onTransportError(const std::string& detail) override;

  event::Dispatcher& dispatcher_;
  const UpgradeOptions options_;
  Url url_;
  std::string method_;
  HttpHeaders headers_;
  Done done_;

  std::unique_ptr<Resolver> resolver_;
  std::vector<std::string> addresses_;  // numeric, to try in order
  size_t next_address_ = 0;
  std::string last_connect_error_;
  int connecting_fd_ = -1;
  std::string connecting_peer_;
  event::FdWatcherPtr connect_watcher_;
  event::TimerPtr timer_;       // connect, then upgrade timeout
  event::TimerPtr fail_timer_;  // delivers failures found inside start()
  absl::Status pending_failure_;
  const char* pending_result_ = "";
  stream::TransportPtr transport_;
  std::unique_ptr<ResponseParser> parser_;
  bool done_called_ = false;
};

}  // namespace crisp::streamserver
