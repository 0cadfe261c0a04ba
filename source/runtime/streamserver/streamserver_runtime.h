#pragma once

// StreamServerRuntime: a session::Runtime whose sessions are served by a real
// runtime's stream server (containerd, CRI-O, another crisp). With cri.upstream
// set, crisp forwards Exec, Attach and PortForward to the runtime and keeps the
// URL it answers with (ExecSpec/PortForwardSpec::upstream_url, see
// source/cri/stream_redirect.h); when a client then connects to crisp, its
// adapter starts a session here, and this backend connects to that URL as a
// client does (UpgradeClient: TCP, TLS for https, HTTP/1.1 upgrade) and speaks
// SPDY/3.1 to it, offering v4.channel.k8s.io down to channel.k8s.io for
// exec/attach and portforward.k8s.io for port-forward, as kubelet's side of
// client-go does.
//
// Exec and attach: one upstream connection per session. The client's stdin,
// its half-close, resizes and output backpressure go up; stdout, stderr and
// the final status come back. The v4 Status on the error stream becomes the
// session's ExitStatus (status_json.h), so the client sees the runtime's exit
// code and text whatever protocol it speaks to crisp. Everything that goes
// wrong on the way (connect, upgrade, a connection lost before the status)
// ends the session with an ExitStatus error that names the runtime's stream
// server and what happened.
//
// Port-forward: one upstream connection per client session (opened with the
// first forwarded connection: the runtime's token is single-use), and a
// data/error stream pair per forwarded connection, numbered by requestid. The
// upstream's error-stream text reaches the client unchanged
// (PortError::kRuntimeReported); losing the upstream connection fails every
// forwarded connection of the session, and the ones asked for later.
//
// Threading: per session, everything lives on the dispatcher given to
// startExec()/openPortForward(); the runtime object itself is shared by every
// worker and holds only immutable options.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "source/runtime/streamserver/upgrade_client.h"
#include "source/session/runtime.h"
#include "source/stream/spdy_connection.h"

namespace crisp::streamserver {

struct StreamServerOptions {
  UpgradeOptions upgrade;
  // The SPDY connection to the runtime's stream server (its role is set to
  // client here).
  stream::SpdyConnectionConfig connection;
  // Most bytes of a v1-v4 error-stream message kept from the runtime.
  size_t max_error_bytes = 64 * 1024;
};

class StreamServerRuntime : public session::Runtime {
 public:
  explicit StreamServerRuntime(StreamServerOptions options);

  // The containers are the runtime's; crisp does not list them.
  std::vector<session::ContainerInfo> listContainers() const override { return {}; }
  absl::StatusOr<session::ContainerInfo> container(const std::string& id) const override;

  // Fails at once with INVALID_ARGUMENT when spec.upstream_url is not an
  // http(s) URL; everything else is reported through onExit().
  absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
      event::Dispatcher& dispatcher, const session::ExecSpec& spec,
      std::optional<session::TerminalSize> initial, session::ExecCallbacks& callbacks) override;

  // Without a session there is no URL to connect to.
  absl::StatusOr<std::unique_ptr<session::PortConnection>> connectPort(
      event::Dispatcher& dispatcher, const std::string& pod_sandbox_id, uint16_t port,
      session::PortCallbacks& callbacks) override;

  std::unique_ptr<session::PortForwardSession> openPortForward(
      event::Dispatcher& dispatcher, const session::PortForwardSpec& spec) override;

  const StreamServerOptions& options() const { return options_; }

 private:
  StreamServerOptions options_;
};

namespace internal {

// The SPDY connection (client role) over an upgraded transport, started and
// counted in crisp_runtime_stream_connections_active; releaseConnection()
// uncounts and destroys it.
std::unique_ptr<stream::SpdyConnection> startConnection(event::Dispatcher& dispatcher,
                                                        const StreamServerOptions& options,
                                                        stream::TransportPtr transport,
                                                        stream::SpdyConnectionCallbacks& callbacks);
void releaseConnection(std::unique_ptr<stream::SpdyConnection>& connection);

}  // namespace internal

}  // namespace crisp::streamserver
