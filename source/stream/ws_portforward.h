#pragma once

// Port-forward over WebSocket, and the upgrade handler for every WebSocket
// port-forward protocol.
//
// WsPortForward is one session of the kubelet's WebSocket port-forward
// protocol (subprotocol "", v4.channel.k8s.io: binary messages;
// v4.base64.channel.k8s.io: text messages with base64 payloads; framing in
// websocket/channel.h) on one WsConnection:
// 1. Ports come from the CRI request (PortForwardSpec.ports), never from the
//    URL. Port i has channel 2i (data, both ways) and 2i+1 (error, server to
//    client). A request with no port (or more than
//    websocket::kMaxPortForwardPorts) cannot be served: the connection is
//    closed at once with 1011 and "ws.portforward.no_ports" (or
//    "ws.portforward.too_many_ports") as the reason, and a log line; the
//    kubelet, which has no channel to report it on either, just closes.
// 2. Right after the upgrade, for each port in order, the port as 2 bytes
//    little-endian on its data channel, then on its error channel.
// 3. One pod connection per port, made at once with Runtime::connectPort().
//    Client bytes on channel 2i go to port i's connection (queued while it
//    connects); the pod's bytes come back as channel 2i messages of at most
//    max_output_message_bytes. Messages on error channels, on channels past
//    the last port, empty ones and base64 that does not decode are ignored.
// 4. A connect that fails: the text of the SPDY path
//    (session::forwardingError(): "error forwarding port <p> to pod
//    <sandbox>, uid : <why>") on channel 2i+1, and port i's forward ends.
//    A connection the application resets after it was made ends without text
//    (session::writesErrorText()).
// 5. A port's forward ends when the pod side ended: after its EOF the
//    client's queued bytes are still written, then the connection closes.
//    Once every port's forward ended the WebSocket closes with 1000, behind
//    every message already queued. The client closing the WebSocket (or
//    going away) closes every pod connection at once.
// 6. Backpressure: every pod connection stops reading while the WebSocket's
//    output is above its high watermark; the WebSocket is not read while any
//    pod connection's queue is above PortConnection::kWriteHighWatermark.
//
// WsPortForwardHandler serves the three protocols above and the
// SPDY-over-WebSocket tunnel (`SPDY/3.1+portforward.k8s.io`): for the tunnel
// it puts a WsTransport on the connection and runs a SpdyPortForward on it,
// so the tunnel has exactly the SPDY port-forward semantics
// (spdy_portforward.h). Sessions are counted in crisp_sessions_* with the
// protocol label of the negotiated protocol ("ws/portforward",
// "ws/portforward/v4.channel.k8s.io", "ws/SPDY/3.1+portforward.k8s.io", ...).
//
// Threading: a session lives on the dispatcher it was created on. The handler
// may serve several dispatchers; each session is only touched on its own.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

#include "source/codec/websocket/channel.h"
#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/portforward.h"
#include "source/session/remotecommand.h"
#include "source/session/runtime.h"
#include "source/stream/session_registry.h"
#include "source/stream/spdy_portforward.h"
#include "source/stream/upgrade.h"
#include "source/stream/ws_connection.h"
#include "source/stream/ws_transport.h"

namespace crisp::stream {

struct WsPortForwardConfig {
  // Largest payload per data message we send, so that a ping reply or another
  // port never waits behind one huge message. Messages end at the segments of
  // the pod connection's reads below this size; at 128 KiB a segment of one
  // 64 KiB read always fits whole, so no payload byte is copied.
  size_t max_output_message_bytes = 128 * 1024;
  // The WebSocket of a channel-protocol session.
  WsConnectionConfig connection;
  // The tunnel: the SPDY port-forward session inside it, and the WebSocket
  // under that.
  SpdyPortForwardConfig tunnel;
  WsTransportConfig tunnel_transport;
};

// The subprotocol a negotiated WebSocket channel port-forward protocol stands
// for ("", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"); nullopt for
// every other protocol, the tunnel included.
std::optional<std::string_view> portForwardSubprotocol(Protocol protocol);

class WsPortForward : private WsConnectionCallbacks {
 public:
  // Called once, on the session's dispatcher, when the session is over and its
  // transport closed. The owner then destroys the session, deferred (the call
  // comes from inside the session).
  using DoneCallback = std::function<void(WsPortForward&)>;

  // `upgraded` must carry a PortForwardSpec and one of the channel
  // port-forward protocols; InvalidArgument otherwise, Internal when the
  // WebSocket cannot be made. On failure the transport is closed (and freed
  // later, so create() may run inside a transport callback). `runtime` must
  // outlive the session.
  static absl::StatusOr<std::unique_ptr<WsPortForward>> create(event::Dispatcher& dispatcher,
                                                               session::Runtime& runtime,
                                                               UpgradedConnection&& upgraded,
                                                               const WsPortForwardConfig& config,
                                                               DoneCallback on_done);
  // Closes every pod connection and the transport at once if still open.
  ~WsPortForward() override;
  WsPortForward(const WsPortForward&) = delete;
  WsPortForward& operator=(const WsPortForward&) = delete;

  // Starts serving: the port prefixes are queued and the pod connections
  // asked for (or, without ports, the connection is closed).
  void start();

  // Ends the session now (shutdown, drain): pod connections are closed and
  // the WebSocket closed with 1001; `on_done` follows once the transport
  // closed.
  void close();

  uint64_t connectionId() const { return connection_id_; }
  uint64_t sessionId() const { return session_id_; }
  const std::string& podSandboxId() const { return pod_sandbox_id_; }
  const std::vector<uint16_t>& ports() const { return ports_; }
  // Ports whose forward has not ended yet.
  size_t activePorts() const { return active_ports_; }
  const WsConnection& connection() const { return *connection_; }

 private:
  class Port;
  friend class Port;

  enum class State {
    kIdle,      // created, start() not called
    kRunning,   // forwarding
    kFinished,  // every forward ended, or the client left; WebSocket closing
    kDone,      // transport closed, on_done called
  };

  WsPortForward(event::Dispatcher& dispatcher, session::Runtime& runtime,
                UpgradedConnection& upgraded, const websocket::ChannelProtocol& protocol,
                std::string subprotocol, const WsPortForwardConfig& config, DoneCallback on_done);

  // WsConnectionCallbacks
  void onMessage(websocket::MessageType type, Buffer& payload) override;
  void onOutputAboveHighWatermark() override;
  void onOutputBelowLowWatermark() override;
  void onConnectionClosing(WsCloseReason reason, const std::string& detail) override;
  void onConnectionClosed() override;

  // Port events from the runtime (session::PortCallbacks of a Port).
  void onPortConnected(Port& port);
  void onPortData(Port& port, Buffer& data);
  // Zero-copy messages for the port (session::PortCallbacks::onDataPipe()).
  bool canTakePortPipe() const;
  size_t onPortDataPipe(Port& port, int pipe_fd, size_t limit);
  void onPortRemoteEof(Port& port);
  void onPortWriteDrained(Port& port);
  void onPortClosed(Port& port);
  void onPortError(Port& port, const session::PortError& error);

  void connect(Port& port);
  void deliverToPod(Port& port, Buffer& data);
  void setInputBlocked(Port& port, bool blocked);
  void sendChannel(uint8_t channel, Buffer& payload);
  void sendChannel(uint8_t channel, std::string_view payload);
  // Ends port's forward: its pod connection is closed (deferred).
  void endPort(Port& port);
  // Closes the WebSocket once every forward ended.
  void finishIfAllEnded();
  // Closes every pod connection (the client is gone, or the server shuts down).
  void abandonAll();
  // Refuses a request that cannot be served: close with 1011 and `reason`.
  void refuse(const std::string& reason);

  event::Dispatcher& dispatcher_;
  session::Runtime& runtime_;
  const WsPortForwardConfig config_;
  DoneCallback on_done_;
  const uint64_t connection_id_;
  const uint64_t session_id_;
  // Owns the text that protocol_.name points to.
  const std::string subprotocol_;
  const websocket::ChannelProtocol protocol_;
  const std::string protocol_name_;
  const std::string pod_sandbox_id_;
  const std::vector<uint16_t> ports_;
  // Outlives the ports' pod connections.
  std::unique_ptr<session::PortForwardSession> port_session_;

  std::unique_ptr<WsConnection> connection_;
  std::vector<std::unique_ptr<Port>> port_state_;
  State state_ = State::kIdle;
  size_t active_ports_ = 0;
  bool output_paused_ = false;
  // Ports whose pod queue is above its high watermark; the WebSocket is not
  // read while there is any.
  size_t input_blocked_ports_ = 0;

  session::SessionMetrics& session_metrics_;
  session::PortForwardMetrics& metrics_;
  stats::Gauge& active_gauge_;
  bool counted_active_ = false;
};

// Serves upgraded WebSocket port-forward connections (WsUpgradeHandler hands
// them over): the channel protocols become WsPortForward sessions, the tunnel
// a SpdyPortForward over a WsTransport. Sessions are owned here until they
// end; anything else handed over is closed.
//
// onUpgrade() runs on the connection's dispatcher; sessions of different
// dispatchers are kept apart (a short lock guards only the per-dispatcher
// lookup). Destroy the handler after its dispatchers stopped running.
class WsPortForwardHandler : public UpgradeHandler {
 public:
  WsPortForwardHandler(session::Runtime& runtime, const WsPortForwardConfig& config);
  ~WsPortForwardHandler() override;

  void onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) override;
  // The three channel port-forward protocols and the tunnel.
  bool serves(Protocol protocol) const override;

  // Sessions (of both kinds) alive on `dispatcher`. Call on that dispatcher's
  // thread.
  size_t activeSessions(event::Dispatcher& dispatcher);
  // Ends every session of `dispatcher` (shutdown). Call on its thread.
  void closeAll(event::Dispatcher& dispatcher);

 private:
  void serveTunnel(event::Dispatcher& dispatcher, UpgradedConnection&& connection);

  session::Runtime& runtime_;
  const WsPortForwardConfig config_;
  SessionRegistry<WsPortForward> sessions_;
  SessionRegistry<SpdyPortForward> tunnels_;
};

}  // namespace crisp::stream
