#include "source/stream/http1_server.h"


#include <optional>

#include "absl/strings/str_cat.h"

#include "source/admin/metrics.h"
#include "source/common/logger.h"
#include "source/stream/http1_response.h"
#include "source/stream/http1_route.h"
#include "source/stream/negotiation.h"
#include "source/stream/raw_socket_transport.h"
#include "source/stream/stream_limits.h"
#include "source/stream/stream_metrics.h"

namespace crisp::stream {
namespace {

constexpr size_t kRequestResultCount = static_cast<size_t>(RequestResult::kTooManySessions) + 1;

// Retry-After of the 503 for a full server: a session may end any moment.
constexpr char kSessionLimitRetryAfterSeconds[] = "1";

stats::Registry& registryOr(stats::Registry* r) { return r != nullptr ? *r : stats::registry(); }

size_t familyIndex(ProtocolFamily family) { return static_cast<size_t>(family); }

RequestResult rejectionResult(int status) {
  switch (status) {
    case 403:
      return RequestResult::kForbidden;
    case 405:
      return RequestResult::kMethodNotAllowed;
    case 500:
      return RequestResult::kInternalError;
    default:
      return RequestResult::kBadRequest;
  }
}

}  // namespace

const char* requestResultName(RequestResult result) {
  switch (result) {
    case RequestResult::kUpgraded:
      return "upgraded";
    case RequestResult::kNotFound:
      return "not_found";
    case RequestResult::kBadRequest:
      return "bad_request";
    case RequestResult::kForbidden:
      return "forbidden";
    case RequestResult::kHeaderTooLarge:
      return "header_too_large";
    case RequestResult::kHeaderTimeout:
      return "header_timeout";
    case RequestResult::kMethodNotAllowed:
      return "method_not_allowed";
    case RequestResult::kInternalError:
      return "internal_error";
    case RequestResult::kTooManySessions:
      return "too_many_sessions";
  }
  return "unknown";
}

// Every metric of the stream server's HTTP/1.1 front.
struct Http1Server::Metrics {
  explicit Metrics(stats::Registry& registry)
      : connections_total(connectionsTotalFamily(registry).counter()),
        connections_active(connectionsActiveFamily(registry).gauge()),
        http2_connections_active(http2ConnectionsActiveFamily(registry).gauge()),
        session_limit_hits(limitHitCounter(StreamLimit::kMaxSessions, &registry)),
        header_bytes_hits(limitHitCounter(StreamLimit::kHeaderBytes, &registry)),
        header_timeout_hits(limitHitCounter(StreamLimit::kHeaderTimeout, &registry)) {
    auto& family = requestsFamily(registry);
    for (size_t i = 0; i < kRequestResultCount; ++i) {
      requests[i] = &family.counter({requestResultName(static_cast<RequestResult>(i))});
    }
  }

  stats::Counter& request(RequestResult result) { return *requests[static_cast<size_t>(result)]; }

  stats::Counter& connections_total;
  stats::Gauge& connections_active;
  stats::Gauge& http2_connections_active;
  stats::Counter& session_limit_hits;
  stats::Counter& header_bytes_hits;
  stats::Counter& header_timeout_hits;
  std::array<stats::Counter*, kRequestResultCount> requests{};
};

Http1Server::Http1Server(event::Dispatcher& dispatcher, cache::TokenCache& tokens,
                         Http1ServerOptions options)
    : dispatcher_(dispatcher),
      tokens_(tokens),
      options_(std::move(options)),
      metrics_(std::make_unique<Metrics>(registryOr(options_.registry))),
      connections_(dispatcher) {}

Http1Server::~Http1Server() {
  metrics_->connections_active.dec(static_cast<int64_t>(connections_.size() + sniffers_.size()));
  metrics_->http2_connections_active.dec(static_cast<int64_t>(http2_connections_.size()));
}

void Http1Server::setUpgradeHandler(ProtocolFamily family, UpgradeHandler* handler) {
  handlers_[familyIndex(family)] = handler;
}

void Http1Server::onAccept(int fd, std::string peer) {
  onAcceptTransport(std::make_unique<RawSocketTransport>(dispatcher_, fd, std::move(peer)));
}

void Http1Server::onAcceptTransport(TransportPtr transport) {
  const uint64_t id = log::nextId();
  metrics_->connections_total.inc();
  metrics_->connections_active.inc();
  CRISP_CONN_LOG(kStream, debug, id, "accepted from {}", transport->peerAddress());
  auto sniffer = std::make_unique<HttpVersionSniffer>(
      dispatcher_, std::move(transport), options_.connection.header_timeout,
      [this, id](HttpVersionSniffer& s, HttpVersionSniffer::Result result) {
        onSniffed(s, result, id);
      });
  HttpVersionSniffer* key = sniffer.get();
  sniffers_.emplace(key, std::move(sniffer));
}

void Http1Server::onSniffed(HttpVersionSniffer& sniffer, HttpVersionSniffer::Result result,
                            uint64_t id) {
  auto it = sniffers_.find(&sniffer);
  if (it == sniffers_.end()) {
    return;
  }
  std::unique_ptr<HttpVersionSniffer> owned = std::move(it->second);
  sniffers_.erase(it);
  TransportPtr transport = owned->releaseTransport();
  dispatcher_.deferredDelete(std::move(owned));
  switch (result) {
    case HttpVersionSniffer::Result::kHttp1:
      connections_.add(std::make_unique<Http1Connection>(dispatcher_, std::move(transport), id,
                                                         options_.connection, *this));
      return;
    case HttpVersionSniffer::Result::kHttp2: {
      CRISP_CONN_LOG(kStream, debug, id, "speaks HTTP/2{}",
                     transport->alpnProtocol().empty() ? " (prior knowledge)" : " (ALPN)");
      metrics_->connections_active.dec();
      metrics_->http2_connections_active.inc();
      Http2ConnectionOptions http2 = options_.http2;
      http2.registry = options_.registry;
      auto connection =
          std::make_unique<Http2Connection>(dispatcher_, std::move(transport), id, http2, *this);
      Http2Connection* key = connection.get();
      http2_connections_.emplace(key, std::move(connection));
      return;
    }
    case HttpVersionSniffer::Result::kTimeout:
      CRISP_CONN_LOG(kStream, info, id, "no request within {} ms",
                     options_.connection.header_timeout.count());
      metrics_->request(RequestResult::kHeaderTimeout).inc();
      metrics_->header_timeout_hits.inc();
      break;
    case HttpVersionSniffer::Result::kClosed:
      CRISP_CONN_LOG(kStream, debug, id, "closed by the client before a request");
      break;
  }
  metrics_->connections_active.dec();
  if (transport != nullptr) {
    dispatcher_.deferredDelete(std::move(transport));
  }
}

void Http1Server::onRequestHead(Http1Connection& connection, HttpRequest&& request) {
  const std::optional<StreamRoute> route = matchStreamRoute(request.path);
  if (!route.has_value()) {
    // The path is not logged: it may hold a token under a wrong prefix.
    CRISP_CONN_LOG(kStream, debug, connection.id(), "{}: no such route", request.method);
    respond(connection, RequestResult::kNotFound, goNotFound().serialize());
    return;
  }
  const char* operation = session::operationName(route->operation);
  if (request.method != "GET" && request.method != "POST") {
    // Like the kubelet's router: the method is checked before the handler
    // runs, so the token stays valid.
    CRISP_CONN_LOG(kStream, debug, connection.id(), "{} /{}: method not allowed", request.method,
                   operation);
    HttpResponse response = goHttpError(405, "405: Method Not Allowed");
    response.headers.emplace_back("Allow", "GET, POST");
    respond(connection, RequestResult::kMethodNotAllowed, response.serialize());
    return;
  }

  const std::string fingerprint = log::tokenFingerprint(route->token);
  std::optional<session::StreamRequest> stream_request = tokens_.consume(route->token);
  if (!stream_request.has_value() || stream_request->operation() != route->operation) {
    // consume() has burnt the token either way: a token presented on the
    // wrong route is gone too.
    CRISP_CONN_LOG(kStream, info, connection.id(),
                   "{} /{}/{}: token unknown, expired, used or for another operation",
                   request.method, operation, fingerprint);
    respond(connection, RequestResult::kNotFound, goNotFound().serialize());
    return;
  }

  // Only WebSocket subprotocols that a handler serves are offered: anything
  // else (every one of them without a WebSocket handler) gets the bare 403 of
  // "no subprotocol matched", so kubectl 1.30+ falls back to SPDY instead of
  // seeing a 101 and then a close. The token is burnt either way; kubectl's
  // fallback goes back through the API server for a new one.
  const UpgradeHandler* websocket = handlers_[familyIndex(ProtocolFamily::kWebSocket)];
  Negotiation negotiation = negotiate(request, route->operation, [websocket](Protocol p) {
    return protocolFamily(p) != ProtocolFamily::kWebSocket ||
           (websocket != nullptr && websocket->serves(p));
  });
  if (negotiation.outcome == Negotiation::Outcome::kRejected) {
    CRISP_CONN_LOG(kStream, info, connection.id(), "{} /{}/{}: upgrade refused with {}{}{}",
                   request.method, operation, fingerprint, negotiation.status,
                   negotiation.reason.empty() ? "" : " ", negotiation.reason);
    respond(connection, rejectionResult(negotiation.status), std::move(negotiation.response));
    return;
  }

  // With TLS client verification, the certificate's subject names the client.
  const std::string identity = connection.transport()->peerIdentity();
  CRISP_CONN_LOG(kStream, debug, connection.id(), "{} /{}/{}: upgrading to {}{}{}{}",
                 request.method, operation, fingerprint, protocolName(negotiation.protocol),
                 identity.empty() ? "" : " for client \"", identity, identity.empty() ? "" : "\"");
  UpgradedConnection upgraded;
  upgraded.connection_id = connection.id();
  upgraded.request = std::move(request);
  upgraded.protocol = negotiation.protocol;
  upgraded.stream_request = std::move(*stream_request);
  handOver(connection, std::move(upgraded), negotiation.response);
}

void Http1Server::handOver(Http1Connection& connection, UpgradedConnection&& upgraded,
                           const std::string& response) {
  UpgradeHandler* handler = handlers_[familyIndex(protocolFamily(upgraded.protocol))];
  if (handler == nullptr) {
    CRISP_CONN_LOG(kStream, error, connection.id(), "no handler for {}",
                   protocolName(upgraded.protocol));
    respond(connection, RequestResult::kInternalError,
            goHttpError(500, "unable to upgrade: protocol not served").serialize());
    return;
  }
  // The slot is taken before the 101: a full server refuses with an answer
  // kubectl prints ("unable to upgrade connection: <body>"), never with a
  // close after the switch. The token is already burnt.
  std::optional<SessionPermit> permit = acquireSession(connection.id(), upgraded.protocol);
  if (!permit.has_value()) {
    respond(connection, RequestResult::kTooManySessions, tooManySessions().serialize());
    return;
  }
  Buffer head;
  head.add(response);
  connection.transport()->write(head);
  upgraded.transport = connection.releaseTransport();
  if (*permit) {
    upgraded.transport = holdSessionPermit(std::move(upgraded.transport), std::move(*permit));
  }
  connections_.remove(connection);
  metrics_->connections_active.dec();
  metrics_->request(RequestResult::kUpgraded).inc();
  handler->onUpgrade(dispatcher_, std::move(upgraded));
}

void Http1Server::onHeadError(Http1Connection& connection, Http1Connection::HeadError error) {
  switch (error) {
    case Http1Connection::HeadError::kTooLarge: {
      CRISP_CONN_LOG(kStream, info, connection.id(), "request head larger than {} bytes",
                     options_.connection.max_header_bytes);
      metrics_->header_bytes_hits.inc();
      respond(connection, RequestResult::kHeaderTooLarge, goHeadError(431).serialize());
      return;
    }
    case Http1Connection::HeadError::kMalformed:
      CRISP_CONN_LOG(kStream, info, connection.id(), "malformed request head");
      respond(connection, RequestResult::kBadRequest, goHeadError(400).serialize());
      return;
    case Http1Connection::HeadError::kTimeout:
      CRISP_CONN_LOG(kStream, info, connection.id(), "no complete request head within {} ms",
                     options_.connection.header_timeout.count());
      metrics_->request(RequestResult::kHeaderTimeout).inc();
      metrics_->header_timeout_hits.inc();
      connection.close();
      return;
    case Http1Connection::HeadError::kPeerClosed:
      CRISP_CONN_LOG(kStream, debug, connection.id(), "closed by the client before a request");
      connection.close();
      return;
  }
}

void Http1Server::onClosed(Http1Connection& connection) {
  CRISP_CONN_LOG(kStream, debug, connection.id(), "closed");
  if (connections_.remove(connection)) {
    metrics_->connections_active.dec();
  }
}

void Http1Server::respond(Http1Connection& connection, RequestResult result, std::string response) {
  metrics_->request(result).inc();
  connection.respond(std::move(response));
}

std::optional<SessionPermit> Http1Server::acquireSession(uint64_t connection_id,
                                                         Protocol protocol) {
  if (options_.session_limiter == nullptr) {
    return SessionPermit();
  }
  SessionPermit permit = options_.session_limiter->tryAcquire();
  if (!permit) {
    CRISP_CONN_LOG(kStream, info, connection_id, "{} refused: {} sessions live (the limit)",
                   protocolName(protocol), options_.session_limiter->max());
    metrics_->session_limit_hits.inc();
    return std::nullopt;
  }
  return permit;
}

HttpResponse Http1Server::tooManySessions() const {
  // No ": " in the text: client-go first tries to read an error body as a
  // YAML or JSON Status, and "a: b" would parse as an empty one ("Error from
  // server:" with nothing after it).
  const uint32_t max = options_.session_limiter != nullptr ? options_.session_limiter->max() : 0;
  HttpResponse refusal =
      goHttpError(503, absl::StrCat("too many streaming sessions (the limit is ", max,
                                    ", stream.max_sessions); try again later"));
  refusal.headers.emplace_back("Retry-After", kSessionLimitRetryAfterSeconds);
  return refusal;
}

// HTTP/2

void Http1Server::onStreamRequest(Http2Connection& connection, int32_t stream_id,
                                  Http2Request&& h2request) {
  HttpRequest& request = h2request.request;
  const bool connect = request.method == "CONNECT";
  if (connect && h2request.protocol.empty()) {
    CRISP_SESSION_LOG(kStream, debug, connection.id(), stream_id, "CONNECT without :protocol");
    respond(connection, stream_id, RequestResult::kBadRequest,
            goHttpError(400, "CONNECT needs :protocol websocket (RFC 8441); crisp is no proxy"));
    return;
  }
  const std::optional<StreamRoute> route = matchStreamRoute(request.path);
  if (!route.has_value()) {
    CRISP_SESSION_LOG(kStream, debug, connection.id(), stream_id, "{}: no such route",
                      request.method);
    respond(connection, stream_id, RequestResult::kNotFound, goNotFound());
    return;
  }
  const char* operation = session::operationName(route->operation);
  if (!connect) {
    // SPDY has no HTTP/2 mapping and WebSocket needs an extended CONNECT;
    // as for a wrong method over HTTP/1.1, the token stays valid.
    CRISP_SESSION_LOG(kStream, debug, connection.id(), stream_id, "{} /{}: not an extended CONNECT",
                      request.method, operation);
    HttpResponse response = goHttpError(
        405, absl::StrCat("unable to upgrade: ", request.method,
                          " over HTTP/2 cannot switch protocols; SPDY needs an HTTP/1.1 "
                          "upgrade, WebSocket an extended CONNECT with :protocol websocket"));
    response.headers.emplace_back("Allow", "CONNECT");
    respond(connection, stream_id, RequestResult::kMethodNotAllowed, response);
    return;
  }

  const std::string fingerprint = log::tokenFingerprint(route->token);
  std::optional<session::StreamRequest> stream_request = tokens_.consume(route->token);
  if (!stream_request.has_value() || stream_request->operation() != route->operation) {
    CRISP_SESSION_LOG(kStream, info, connection.id(), stream_id,
                      "CONNECT /{}/{}: token unknown, expired, used or for another operation",
                      operation, fingerprint);
    respond(connection, stream_id, RequestResult::kNotFound, goNotFound());
    return;
  }

  const UpgradeHandler* websocket = handlers_[familyIndex(ProtocolFamily::kWebSocket)];
  ExtendedConnectNegotiation negotiation = negotiateExtendedConnect(
      h2request.protocol, request, route->operation,
      [websocket](Protocol p) { return websocket != nullptr && websocket->serves(p); });
  if (!negotiation.accepted) {
    CRISP_SESSION_LOG(kStream, info, connection.id(), stream_id,
                      "CONNECT /{}/{}: refused with {} {}", operation, fingerprint,
                      negotiation.status, negotiation.reason);
    HttpResponse response;
    response.status = negotiation.status;
    response.headers = std::move(negotiation.headers);
    response.headers.emplace_back("content-type", "text/plain; charset=utf-8");
    response.body = std::move(negotiation.body);
    respond(connection, stream_id, rejectionResult(negotiation.status), response);
    return;
  }

  const uint64_t session_id = log::nextId();
  std::optional<SessionPermit> permit = acquireSession(session_id, negotiation.protocol);
  if (!permit.has_value()) {
    respond(connection, stream_id, RequestResult::kTooManySessions, tooManySessions());
    return;
  }
  std::vector<std::pair<std::string, std::string>> fields;
  if (!negotiation.subprotocol.empty()) {
    fields.emplace_back("sec-websocket-protocol", negotiation.subprotocol);
  }
  TransportPtr transport = connection.accept(stream_id, fields);
  if (transport == nullptr) {
    return;
  }
  const std::string identity = transport->peerIdentity();
  CRISP_SESSION_LOG(
      kStream, debug, connection.id(), stream_id, "CONNECT /{}/{}: {} as connection {}{}{}{}",
      operation, fingerprint, protocolName(negotiation.protocol), session_id,
      identity.empty() ? "" : " for client \"", identity, identity.empty() ? "" : "\"");
  if (*permit) {
    transport = holdSessionPermit(std::move(transport), std::move(*permit));
  }
  UpgradedConnection upgraded;
  upgraded.connection_id = session_id;
  upgraded.transport = std::move(transport);
  upgraded.request = std::move(request);
  upgraded.protocol = negotiation.protocol;
  upgraded.stream_request = std::move(*stream_request);
  metrics_->request(RequestResult::kUpgraded).inc();
  handlers_[familyIndex(ProtocolFamily::kWebSocket)]->onUpgrade(dispatcher_, std::move(upgraded));
}

void Http1Server::onStreamRefused(Http2Connection&, const char* reason) {
  metrics_
      ->request(std::string_view(reason) == "header_too_large" ? RequestResult::kHeaderTooLarge
                                                               : RequestResult::kBadRequest)
      .inc();
}

void Http1Server::onClosed(Http2Connection& connection) {
  auto it = http2_connections_.find(&connection);
  if (it == http2_connections_.end()) {
    return;
  }
  metrics_->http2_connections_active.dec();
  dispatcher_.deferredDelete(std::move(it->second));
  http2_connections_.erase(it);
}

void Http1Server::respond(Http2Connection& connection, int32_t stream_id, RequestResult result,
                          const HttpResponse& response) {
  metrics_->request(result).inc();
  connection.respond(stream_id, response);
}

}  // namespace crisp::stream
