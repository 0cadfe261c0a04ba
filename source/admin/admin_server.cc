#include "source/admin/admin_server.h"

#include "source/common/logger.h"
#include "source/stream/http1_response.h"
#include "source/stream/raw_socket_transport.h"

namespace crisp::admin {
namespace {

constexpr std::string_view kPlainText = "text/plain; charset=utf-8";
constexpr std::string_view kPrometheusText = "text/plain; version=0.0.4";

stream::HttpResponse textResponse(int status, std::string_view content_type, std::string body) {
  stream::HttpResponse response;
  response.status = status;
  response.headers = {{"Content-Type", std::string(content_type)}};
  response.body = std::move(body);
  return response;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::create(event::Dispatcher& dispatcher,
                                                                 AdminServerOptions options) {
  auto socket = stream::ListenSocket::bind(options.listen);
  if (!socket.ok()) {
    return socket.status();
  }
  CRISP_LOG(kAdmin, info, "admin endpoint listening on {}", (*socket)->address());
  return std::unique_ptr<AdminServer>(
      new AdminServer(dispatcher, std::move(options), std::move(*socket)));
}

AdminServer::AdminServer(event::Dispatcher& dispatcher, AdminServerOptions options,
                         std::unique_ptr<stream::ListenSocket> socket)
    : dispatcher_(dispatcher),
      options_(std::move(options)),
      registry_(options_.registry != nullptr ? *options_.registry : stats::registry()),
      socket_(std::move(socket)),
      connections_(dispatcher) {
  stream::ListenerOptions listener_options;
  listener_options.name = "admin";
  listener_ = std::make_unique<stream::Listener>(
      dispatcher_, *socket_, [this](int fd, std::string peer) { onAccept(fd, std::move(peer)); },
      listener_options);
}

AdminServer::~AdminServer() = default;

void AdminServer::onAccept(int fd, std::string peer) {
  connections_.add(std::make_unique<stream::Http1Connection>(
      dispatcher_, std::make_unique<stream::RawSocketTransport>(dispatcher_, fd, std::move(peer)),
      log::nextId(), options_.connection, *this));
}

std::string AdminServer::answer(const stream::HttpRequest& request) const {
  const std::string& path = request.path;
  const bool known = path == "/healthz" || path == "/readyz" || path == "/metrics";
  if (!known) {
    return stream::goNotFound().serialize();
  }
  const bool head = request.method == "HEAD";
  if (request.method != "GET" && !head) {
    stream::HttpResponse response = stream::goHttpError(405, "405 method not allowed");
    response.headers.emplace_back("Allow", "GET, HEAD");
    return response.serialize();
  }
  stream::HttpResponse response;
  if (path == "/healthz") {
    response = textResponse(200, kPlainText, "ok");
  } else if (path == "/readyz") {
    response =
        ready() ? textResponse(200, kPlainText, "ok") : textResponse(503, kPlainText, "draining");
  } else {
    response = textResponse(200, kPrometheusText, registry_.renderPrometheus());
  }
  response.omit_body = head;
  return response.serialize();
}

void AdminServer::onRequestHead(stream::Http1Connection& connection,
                                stream::HttpRequest&& request) {
  connection.respond(answer(request));
}

void AdminServer::onHeadError(stream::Http1Connection& connection,
                              stream::Http1Connection::HeadError error) {
  switch (error) {
    case stream::Http1Connection::HeadError::kTooLarge:
      connection.respond(stream::goHeadError(431).serialize());
      return;
    case stream::Http1Connection::HeadError::kMalformed:
      connection.respond(stream::goHeadError(400).serialize());
      return;
    case stream::Http1Connection::HeadError::kTimeout:
    case stream::Http1Connection::HeadError::kPeerClosed:
      connection.close();
      return;
  }
}

void AdminServer::onClosed(stream::Http1Connection& connection) { connections_.remove(connection); }

}  // namespace crisp::admin
