#pragma once

// A small blocking HTTP/1.1 server: one detached thread per connection,
// requests parsed with http-parser, keep-alive honoured, each request routed
// through ApiHandler. A request the handler turns into a ProxyTarget hands its
// connection to proxyStream() for good.
//
// Usage:
//   HttpServer server(ProxyOptions{});
//   auto bound = server.listen("127.0.0.1:0");   // "127.0.0.1:43127"
//   ApiHandler handler(pods, ApiOptions{.server_address = *bound});
//   server.serve(handler);                       // returns only on a fatal accept error

#include <atomic>
#include <chrono>
#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

#include "tools/devapiserver/api_handler.h"
#include "tools/devapiserver/socket_util.h"
#include "tools/devapiserver/stream_proxy.h"

namespace crisp::devapi {

struct ServerLimits {
  // Request line plus headers; larger heads get 431.
  size_t max_head_bytes = 64 * 1024;
  // Request bodies are read and dropped; larger ones get 413.
  size_t max_body_bytes = 1024 * 1024;
  // A connection that sends no request for this long is closed.
  std::chrono::seconds idle_timeout{300};
  // Connections (and so threads) at once; more get 503 and are closed.
  size_t max_connections = 1024;
};

class HttpServer {
 public:
  explicit HttpServer(ProxyOptions proxy_options, ServerLimits limits = {});

  // Binds a loopback address (see listenLoopback()); returns the bound address.
  absl::StatusOr<std::string> listen(absl::string_view address);

  // Accepts connections until accept() fails for good; each connection runs
  // on its own detached thread. Returns the failure. `handler` must outlive
  // every connection thread, that is, live as long as the process.
  absl::Status serve(ApiHandler& handler);

 private:
  ProxyOptions proxy_options_;
  ServerLimits limits_;
  UniqueFd listener_;
  std::atomic<size_t> connections_{0};
};

// Serves one accepted connection until it closes; takes ownership of `fd`.
// Exposed for tests that drive a socketpair.
void serveConnection(int fd, ApiHandler& handler, const ProxyOptions& proxy_options,
                     const ServerLimits& limits);

}  // namespace crisp::devapi
