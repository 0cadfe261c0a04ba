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
// HTTP/2 on the same port (HttpVersionSniffer decides, http2_connection.h
// serves): ALPN "h2" under TLS, or the prior-knowledge preface on plain TCP.
// Each stream is one request, routed the same way:
//
//   unknown path                    404 (Go's http.NotFound)
//   CONNECT without :protocol       400 (crisp is no proxy)
//   token route, method not CONNECT 405 with "allow: CONNECT": SPDY needs an
//                                   HTTP/1.1 upgrade; token left alone
//   extended CONNECT                token burnt as above (404 when unknown),
//                                   then negotiateExtendedConnect(): 400 for a
//                                   :protocol other than websocket or a bad
//                                   version, 403 for no subprotocol in common,
//                                   503 at stream.max_sessions, else 200 and
//                                   the stream's transport goes to the
//                                   WebSocket handler
//
// One Http1Server per worker dispatcher; create, use and destroy it on that
// thread. Requests are counted in crisp_stream_requests_total{result}; the
// limits reached (max_sessions, header_bytes, header_timeout) also in
// crisp_stream_limit_hits_total{limit} (stream_limits.h).

#include <array>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "source/cache/token_cache.h"
#include "source/common/dispatcher.h"
#include "source/stream/http1_connection.h"
#include "source/stream/http2_connection.h"
#include "source/stream/http_version_sniffer.h"
#include "source/stream/stream_limits.h"
#include "source/stream/transport.h"
#include "source/stream/upgrade.h"

namespace crisp::stats {
class Counter;
class Gauge;
class Registry;
}  // namespace crisp::stats

namespace crisp::stream {

struct Http1ServerOptions {
  Http1ConnectionOptions connection;
  // HTTP/2 connections; their registry is `registry` below.
  Http2ConnectionOptions http2;
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

class Http1Server : public Http1Connection::Callbacks, public Http2Connection::Callbacks {
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
  // Open HTTP/2 connections.
  size_t http2ConnectionCount() const { return http2_connections_.size(); }

 private:
  struct Metrics;

  // Http1Connection::Callbacks
  void onRequestHead(Http1Connection& connection, HttpRequest&& request) override;
  void onHeadError(Http1Connection& connection, Http1Connection::HeadError error) override;
  void onClosed(Http1Connection& connection) override;

  // Http2Connection::Callbacks
  void onStreamRequest(Http2Connection& connection, int32_t stream_id,
                       Http2Request&& request) override;
  void onStreamRefused(Http2Connection& connection, const char* reason) override;
  void onClosed(Http2Connection& connection) override;

  void onSniffed(HttpVersionSniffer& sniffer, HttpVersionSniffer::Result result, uint64_t id);
  void respond(Http2Connection& connection, int32_t stream_id, RequestResult result,
               const HttpResponse& response);
  // A slot of the session limiter (an empty permit without a limiter), or
  // nullopt when the server is full (counted).
  std::optional<SessionPermit> acquireSession(uint64_t connection_id, Protocol protocol);
  // The 503 of a full server.
  HttpResponse tooManySessions() const;

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
  std::unordered_map<HttpVersionSniffer*, std::unique_ptr<HttpVersionSniffer>> sniffers_;
  std::unordered_map<Http2Connection*, std::unique_ptr<Http2Connection>> http2_connections_;
};

}  // namespace crisp::stream
