#include "source/runtime/streamserver/streamserver_runtime.h"

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"

#include "source/runtime/streamserver/upstream_exec.h"
#include "source/runtime/streamserver/upstream_portforward.h"

namespace crisp::streamserver {

StreamServerRuntime::StreamServerRuntime(StreamServerOptions options)
    : options_(std::move(options)) {
  options_.connection.role = spdy::Codec::Role::kClient;
}

absl::StatusOr<session::ContainerInfo> StreamServerRuntime::container(const std::string& id) const {
  return absl::NotFoundError(
      absl::StrCat("container \"", id, "\" is the runtime's; crisp does not track it"));
}

absl::StatusOr<std::unique_ptr<session::ExecProcess>> StreamServerRuntime::startExec(
    event::Dispatcher& dispatcher, const session::ExecSpec& spec,
    std::optional<session::TerminalSize> initial, session::ExecCallbacks& callbacks) {
  absl::StatusOr<Url> url = parseUrl(spec.upstream_url);
  if (!url.ok()) {
    return url.status();
  }
  auto exec = std::make_unique<UpstreamExec>(dispatcher, options_, spec, initial, callbacks);
  exec->start(*url);
  return std::unique_ptr<session::ExecProcess>(std::move(exec));
}

absl::StatusOr<std::unique_ptr<session::PortConnection>> StreamServerRuntime::connectPort(
    event::Dispatcher& /*dispatcher*/, const std::string& pod_sandbox_id, uint16_t /*port*/,
    session::PortCallbacks& /*callbacks*/) {
  return absl::FailedPreconditionError(absl::StrCat(
      "port-forward to pod sandbox \"", pod_sandbox_id, "\" needs the runtime's stream URL"));
}

std::unique_ptr<session::PortForwardSession> StreamServerRuntime::openPortForward(
    event::Dispatcher& dispatcher, const session::PortForwardSpec& spec) {
  return std::make_unique<UpstreamPortForward>(dispatcher, options_, spec);
}

namespace internal {

std::unique_ptr<stream::SpdyConnection> startConnection(event::Dispatcher& dispatcher,
                                                        const StreamServerOptions& options,
                                                        stream::TransportPtr transport,
                                                        stream::SpdyConnectionCallbacks& callbacks) {
  stream::SpdyConnectionConfig config = options.connection;
  config.role = spdy::Codec::Role::kClient;
  auto connection = std::make_unique<stream::SpdyConnection>(dispatcher, std::move(transport),
                                                             log::nextId(), callbacks, config);
  StreamServerMetrics::get().connections_active.inc();
  connection->start();
  return connection;
}

void releaseConnection(std::unique_ptr<stream::SpdyConnection>& connection) {
  if (connection != nullptr) {
    StreamServerMetrics::get().connections_active.dec();
    connection.reset();
  }
}

}  // namespace internal

}  // namespace crisp::streamserver
