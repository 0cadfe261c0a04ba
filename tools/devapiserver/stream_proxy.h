#pragma once

// The kubelet's hop for exec, attach and port-forward: forwards the client's
// not-yet-upgraded request to the runtime's streaming URL and, once the
// runtime switched protocols, copies bytes both ways until both directions
// ended. An https:// URL is reached over TLS (ProxyOptions::tls). SPDY and
// WebSocket upgrades pass through unchanged; a refused upgrade (for example
// 403 to a WebSocket offer) is relayed to the client and the connection is
// closed, so the client can retry with a fresh request.
//
// Blocking code: proxyStream() runs on the connection's own thread and starts
// one more thread for the runtime-to-client direction. Both end when their
// direction ends.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "tools/devapiserver/http_message.h"
#include "tools/devapiserver/tls_upstream.h"

namespace crisp::devapi {

struct ProxyOptions {
  // Limit for connecting to the runtime and for each read of its response head.
  std::chrono::milliseconds upstream_timeout{30000};
  // For https:// streaming URLs (tls_upstream.h); null: they are refused.
  std::shared_ptr<const TlsUpstreamContext> tls;
};

// The parts of an absolute http URL.
struct ParsedUrl {
  std::string scheme;       // lower case
  std::string host;         // without brackets
  std::string port;         // decimal, defaulted from the scheme
  std::string path_query;   // "/path?query", "/" when empty
  std::string host_header;  // host[:port] as written in the URL
};

// Splits "http://host:port/path?query". Fails with InvalidArgument for
// anything else (no scheme, no host, an unterminated IPv6 literal, ...).
absl::StatusOr<ParsedUrl> parseUrl(absl::string_view url);

// The request head sent to the runtime: `request`'s method and headers in
// their order and case, the target replaced by `url`'s path and query, and
// Host rewritten to the URL's host.
std::string upstreamRequestHead(const HttpRequest& request, const ParsedUrl& url);

// Proxies one upgrade request. Takes ownership of `client_fd` (a blocking
// connected socket) and closes it before returning. `leftover` holds bytes the
// client sent after the request head; they are forwarded first. Failures
// before the runtime answered become a 502/504 Status response to the client.
// The first call sets SIGPIPE to be ignored for the whole process (splice()
// cannot suppress it per call).
void proxyStream(int client_fd, const HttpRequest& request, std::string leftover,
                 const std::string& url, uint64_t conn_id, const ProxyOptions& options);

}  // namespace crisp::devapi
