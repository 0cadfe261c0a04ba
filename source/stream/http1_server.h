#pragma once

// Http1Server: the HTTP/1.1 front of the stream server on one worker loop.
// For every accepted socket it reads the request head, routes
// "/{exec,attach,portforward}/{token}" (GET or POST), burns the token in the
// TokenCache, negotiates the protocol (negotiation.h) and hands the socket,
// the 101 response and the bytes read past the head to the UpgradeHandler of
// the protocol family. Everything else gets an error response and a close:
//
//   no route                        404 (Go's http.NotFound)
//   route, method not GET/POST      405, token left alone
//   unknown/expired/used token,
//   or a token of another kind      404 (Go's http.NotFound), token burnt
//   negotiation failure             400 or 403 (negotiation.h), token burnt
//   WebSocket upgrade               raw 403 (not served yet), token burnt
//   head larger than the limit      431
//   malformed head                  400
//   no complete head in time        close without a response
//
// One Http1Server per worker dispatcher; create, use and destroy it on that
// thread. Requests are counted in crisp_stream_requests_total{result}.

#include <array>
#include <cstddef>
#include <memory>
#include <string>

#include "source/cache/token_cache.h"
#include "source/common/dispatcher.h"
#include "source/stream/http1_connection.h"
#include "source/stream/upgrade.h"

namespace crisp::stats {
class Counter;
class Gauge;
class Registry;
}  // namespace crisp::stats

namespace crisp::stream {

struct Http1ServerOptions {
  Http1ConnectionOptions connection;
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

  // Routes upgrades of `family` to `handler` (borrowed; null removes it). An
  // upgrade without a handler is answered 500.
  void setUpgradeHandler(ProtocolFamily family, UpgradeHandler* handler);

  // Serves an accepted, non-blocking socket; takes ownership of `fd`. Fits
  // Listener::AcceptCallback.
  void onAccept(int fd, std::string peer);

  // Connections still reading their head or writing an error.
  size_t connectionCount() const { return connections_.size(); }

 private:
  struct Metrics;

  // Http1Connection::Callbacks
  void onRequestHead(Http1Connection& connection, HttpRequest&& request,
                     Buffer&& leftover) override;
  void onHeadError(Http1Connection& connection, Http1Connection::HeadError error) override;
  void onClosed(Http1Connection& connection) override;

  void respond(Http1Connection& connection, RequestResult result, std::string response);
  void handOver(Http1Connection& connection, UpgradedConnection&& upgraded);

  event::Dispatcher& dispatcher_;
  cache::TokenCache& tokens_;
  const Http1ServerOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::array<UpgradeHandler*, 2> handlers_{};
  Http1ConnectionSet connections_;
};

}  // namespace crisp::stream
