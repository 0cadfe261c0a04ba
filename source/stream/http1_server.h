#pragma once

// Http1Server: the HTTP/1.1 front of the stream server on one worker loop.
// For every accepted socket it wraps the socket in a RawSocketTransport,
// reads the request head, routes "/{exec,attach,portforward}/{token}" (GET or
// POST), burns the token in the TokenCache, negotiates the protocol
// (negotiation.h), queues the 101 and hands the transport (holding the bytes
// read past the head) to the UpgradeHandler of the protocol family.
// Everything else gets an error response and a close:
//
//   no route                        404 (Go's http.NotFound)
//   route, method not GET/POST      405, token left alone
//   unknown/expired/used token,
//   or a token of another kind      404 (Go's http.NotFound), token burnt
//   SPDY negotiation failure        400 or 403 (negotiation.h), token burnt
//   WebSocket handshake failure     400, 403 or 405 as x/net/websocket answers
//                                   (negotiation.h), token burnt
//   WebSocket upgrade, no handler
//   registered for WebSocket, or
//   none that serves the offer      raw 403 (kubectl falls back to SPDY), token burnt
//   SPDY upgrade, no SPDY handler   500, token burnt
//   head larger than the limit      431
//   stream.max_sessions sessions
//   live already (SessionLimiter)   503 + Retry-After, before the 101, token burnt
//   malformed head                  400
//   no complete head in time        close without a response
//
// One Http1Server per worker dispatcher; create, use and destroy it on that
// thread. Requests are counted in crisp_stream_requests_total{result}; the
// limits reached (max_sessions, header_bytes, header_timeout) also in
// crisp_stream_limit_hits_total{limit} (stream_limits.h).

#include <array>
#include <cstddef>
#include <memory>
#include <string>

#include "source/cache/token_cache.h"
#include "source/common/dispatcher.h"
#include "source/stream/http1_connection.h"
#include "source/stream/transport.h"
#include "source/stream/upgrade.h"

namespace crisp::stats {
class Counter;
class Gauge;
class Registry;
}  // namespace crisp::stats

namespace crisp::stream {

class SessionLimiter;

struct Http1ServerOptions {
  Http1ConnectionOptions connection;
  // Live sessions across every worker; an upgrade beyond its maximum is
  // refused with 503 before the 101. Borrowed, shared by the workers, must
  // outlive every upgraded transport; null = no limit.
  SessionLimiter* session_limiter = nullptr;
  // Where the metrics go; null = stats::registry(). Must outlive the server.
  stats::Registry* registry = nullptr;
};

// The outcome of one request: the `result` label of
// crisp_stream_requests_total.
enum class RequestResult {
  kUpgraded,
  kNotFound,
  kBadRequest,
  kForbidden,
  kHeaderTooLarge,
  kHeaderTimeout,
  kMethodNotAllowed,
  kInternalError,
  kTooManySessions,
};

const char* requestResultName(RequestResult result);

class Http1Server : public Http1Connection::Callbacks {
 public:
  // `tokens` is shared by every worker and must outlive the server.
  Http1Server(event::Dispatcher& dispatcher, cache::TokenCache& tokens, Http1ServerOptions options);
  // Closes every connection still in its HTTP/1.1 phase.
  ~Http1Server() override;
  Http1Server(const Http1Server&) = delete;
  Http1Server& operator=(const Http1Server&) = delete;

  // Routes upgrades of `family` to `handler` (borrowed; null removes it). A
  // SPDY upgrade without a handler is answered 500, a WebSocket one with the
  // bare 403 of "no subprotocol matched"; WebSocket clients are only offered
  // the subprotocols whose protocol the handler serves().
  void setUpgradeHandler(ProtocolFamily family, UpgradeHandler* handler);

  // Serves an accepted, non-blocking socket; takes ownership of `fd`. Fits
  // Listener::AcceptCallback.
  void onAccept(int fd, std::string peer);
  // Serves a connection that is already a Transport (not started), such as a
  // TLS session; takes ownership.
  void onAcceptTransport(TransportPtr transport);

  // Connections still reading their head or writing an error.
  size_t connectionCount() const { return connections_.size(); }

 private:
  struct Metrics;

  // Http1Connection::Callbacks
  void onRequestHead(Http1Connection& connection, HttpRequest&& request) override;
  void onHeadError(Http1Connection& connection, Http1Connection::HeadError error) override;
  void onClosed(Http1Connection& connection) override;

  void respond(Http1Connection& connection, RequestResult result, std::string response);
  // Queues `response` (the 101) and gives the transport to the handler of
  // the upgraded protocol's family.
  void handOver(Http1Connection& connection, UpgradedConnection&& upgraded,
                const std::string& response);

  event::Dispatcher& dispatcher_;
  cache::TokenCache& tokens_;
  const Http1ServerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::array<UpgradeHandler*, 2> handlers_{};
  Http1ConnectionSet connections_;
};

}  // namespace crisp::stream
