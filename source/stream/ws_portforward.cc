#include "source/stream/ws_portforward.h"

#include <algorithm>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"
#include "source/stream/stream_limits.h"

namespace crisp::stream {
namespace {

using session::PortError;
using websocket::MessageType;

const char* errorKindName(PortError::Kind kind) {
  switch (kind) {
    case PortError::Kind::kRefused:
      return "refused";
    case PortError::Kind::kConnectFailed:
      return "connect failed";
    case PortError::Kind::kConnectionLost:
      return "connection lost";
    case PortError::Kind::kRuntimeReported:
      return "reported by the runtime";
  }
  return "unknown";
}

}  // namespace

std::optional<std::string_view> portForwardSubprotocol(Protocol protocol) {
  switch (protocol) {
    case Protocol::kWsPortForwardBinary:
      return std::string_view();
    case Protocol::kWsPortForwardV4:
      return websocket::kChannelV4;
    case Protocol::kWsPortForwardV4Base64:
      return websocket::kChannelV4Base64;
    case Protocol::kSpdyRemoteCommandV1:
    case Protocol::kSpdyRemoteCommandV2:
    case Protocol::kSpdyRemoteCommandV3:
    case Protocol::kSpdyRemoteCommandV4:
    case Protocol::kSpdyPortForward:
    case Protocol::kWsChannel:
    case Protocol::kWsBase64Channel:
    case Protocol::kWsV4Channel:
    case Protocol::kWsV4Base64Channel:
    case Protocol::kWsV5Channel:
    case Protocol::kWsSpdyTunnelPortForward:
      return std::nullopt;
  }
  return std::nullopt;
}

// One forwarded port: its pod connection and where its forward is. Lives as
// long as the session; the pod connection's callbacks are forwarded to the
// session until the forward ended, and ignored after.
class WsPortForward::Port : public session::PortCallbacks {
 public:
  enum class State {
    kConnecting,  // connectPort() called, not connected yet
    kForwarding,  // connected
    kEnded,       // the forward is over
  };

  Port(WsPortForward& session, size_t index, uint16_t port)
      : session_(session), index(index), port(port) {}

  // session::PortCallbacks
  void onConnected() override {
    if (state != State::kEnded) {
      session_.onPortConnected(*this);
    }
  }
  void onData(Buffer& data) override {
    if (state != State::kEnded) {
      session_.onPortData(*this, data);
    } else {
      data.drain(data.length());
    }
  }
  bool canTakeDataPipe() const override {
    return state != State::kEnded && session_.canTakePortPipe();
  }
  size_t onDataPipe(int pipe_fd, size_t limit) override {
    // Declined after the end: the bytes are read and dropped by onData().
    return state != State::kEnded ? session_.onPortDataPipe(*this, pipe_fd, limit) : 0;
  }
  void onRemoteEof() override {
    if (state != State::kEnded) {
      session_.onPortRemoteEof(*this);
    }
  }
  void onWriteDrained() override {
    if (state != State::kEnded) {
      session_.onPortWriteDrained(*this);
    }
  }
  void onClosed() override {
    if (state != State::kEnded) {
      session_.onPortClosed(*this);
    }
  }
  void onError(const PortError& error) override {
    if (state != State::kEnded) {
      session_.onPortError(*this, error);
    }
  }

  uint8_t dataChannel() const { return static_cast<uint8_t>(2 * index); }
  uint8_t errorChannel() const { return static_cast<uint8_t>(2 * index + 1); }

  WsPortForward& session_;
  const size_t index;
  const uint16_t port;
  State state = State::kConnecting;
  std::unique_ptr<session::PortConnection> pod;
  bool remote_eof = false;     // the pod side ended; its forward ends once our side is written
  bool input_blocked = false;  // counted in input_blocked_ports_
};

absl::StatusOr<std::unique_ptr<WsPortForward>> WsPortForward::create(
    event::Dispatcher& dispatcher, session::Runtime& runtime, UpgradedConnection&& upgraded,
    const WsPortForwardConfig& config, DoneCallback on_done) {
  const std::optional<std::string_view> subprotocol = portForwardSubprotocol(upgraded.protocol);
  const std::optional<websocket::ChannelProtocol> protocol =
      subprotocol.has_value() ? websocket::channelProtocol(*subprotocol) : std::nullopt;
  if (!protocol.has_value() || upgraded.transport == nullptr ||
      !std::holds_alternative<session::PortForwardSpec>(upgraded.stream_request.spec)) {
    discardUpgrade(dispatcher, std::move(upgraded.transport));
    return absl::InvalidArgumentError(
        absl::StrCat("ws.portforward.bad_protocol: ", protocolName(upgraded.protocol), " on a ",
                     session::operationName(upgraded.stream_request.operation()),
                     " request is not a WebSocket channel port-forward"));
  }
  std::unique_ptr<WsPortForward> session(new WsPortForward(dispatcher, runtime, upgraded, *protocol,
                                                           std::string(*subprotocol), config,
                                                           std::move(on_done)));
  absl::StatusOr<std::unique_ptr<WsConnection>> connection =
      WsConnection::create(dispatcher, std::move(upgraded.transport), session->connection_id_,
                           static_cast<WsConnectionCallbacks&>(*session), config.connection);
  if (!connection.ok()) {
    // The failed connection closed the transport.
    return connection.status();
  }
  session->connection_ = std::move(connection).value();
  return session;
}

WsPortForward::WsPortForward(event::Dispatcher& dispatcher, session::Runtime& runtime,
                             UpgradedConnection& upgraded,
                             const websocket::ChannelProtocol& protocol, std::string subprotocol,
                             const WsPortForwardConfig& config, DoneCallback on_done)
    : dispatcher_(dispatcher),
      runtime_(runtime),
      config_(config),
      on_done_(std::move(on_done)),
      connection_id_(upgraded.connection_id != 0 ? upgraded.connection_id : log::nextId()),
      session_id_(log::nextId()),
      subprotocol_(std::move(subprotocol)),
      protocol_(websocket::ChannelProtocol{subprotocol_, protocol.framing, protocol.version,
                                           protocol.stream_close}),
      protocol_name_(protocolName(upgraded.protocol)),
      pod_sandbox_id_(
          std::get<session::PortForwardSpec>(upgraded.stream_request.spec).pod_sandbox_id),
      ports_(std::get<session::PortForwardSpec>(upgraded.stream_request.spec).ports),
      port_session_(runtime_.openPortForward(
          dispatcher_, std::get<session::PortForwardSpec>(upgraded.stream_request.spec))),
      session_metrics_(session::SessionMetrics::get()),
      metrics_(session::PortForwardMetrics::get()),
      active_gauge_(session_metrics_.sessions_active.gauge(
          {session::operationName(session::Operation::kPortForward), protocol_name_})) {}

WsPortForward::~WsPortForward() {
  // Pod connections first: their sockets close without callbacks.
  for (auto& port : port_state_) {
    if (port->state != Port::State::kEnded) {
      port->state = Port::State::kEnded;
      metrics_.active.dec();
    }
    port->pod.reset();
  }
  connection_.reset();
  if (counted_active_) {
    active_gauge_.dec();
  }
}

void WsPortForward::start() {
  if (state_ != State::kIdle) {
    return;
  }
  state_ = State::kRunning;
  session_metrics_.sessions_total
      .counter({session::operationName(session::Operation::kPortForward), protocol_name_})
      .inc();
  active_gauge_.inc();
  counted_active_ = true;
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "port-forward session over {} for pod sandbox {}, {} ports", protocol_name_,
                    pod_sandbox_id_, ports_.size());
  connection_->start();
  if (ports_.empty()) {
    refuse("ws.portforward.no_ports: the port-forward request names no port");
    return;
  }
  absl::StatusOr<std::vector<std::string>> prefixes =
      websocket::portForwardPrefixMessages(protocol_.framing, ports_);
  if (!prefixes.ok()) {
    refuse("ws.portforward.too_many_ports: " +
           absl::StrCat(ports_.size(), " ports, at most ", websocket::kMaxPortForwardPorts));
    return;
  }
  // The kubelet's first messages: each port, little-endian, on both of its
  // channels, before any data.
  const MessageType type = websocket::channelMessageType(protocol_.framing);
  for (const std::string& prefix : *prefixes) {
    connection_->sendMessage(type, prefix);
  }
  port_state_.reserve(ports_.size());
  for (size_t i = 0; i < ports_.size(); ++i) {
    port_state_.push_back(std::make_unique<Port>(*this, i, ports_[i]));
  }
  active_ports_ = ports_.size();
  metrics_.active.inc(static_cast<int64_t>(ports_.size()));
  for (auto& port : port_state_) {
    if (state_ != State::kRunning) {
      break;
    }
    connect(*port);
  }
  finishIfAllEnded();
}

void WsPortForward::refuse(const std::string& reason) {
  CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                    "cannot serve the port-forward for pod sandbox {}: {}", pod_sandbox_id_,
                    reason);
  state_ = State::kFinished;
  // Only the stable name goes on the wire as the close reason.
  const std::string_view name = std::string_view(reason).substr(0, reason.find(':'));
  connection_->close(websocket::kCloseInternalError, name);
}

void WsPortForward::close() {
  if (state_ == State::kDone) {
    return;
  }
  const bool running = state_ == State::kRunning || state_ == State::kIdle;
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "closing the session ({} ports forwarding)", active_ports_);
  state_ = State::kFinished;
  abandonAll();
  if (running) {
    connection_->close(websocket::kCloseGoingAway, "closed by the server");
  }
}

void WsPortForward::connect(Port& port) {
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "connecting to port {} of pod sandbox {}", port.port, pod_sandbox_id_);
  absl::StatusOr<std::unique_ptr<session::PortConnection>> pod =
      port_session_->connectPort(port.port, port);
  if (!pod.ok()) {
    metrics_.result(session::PortConnectResult::kError).inc();
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_, "cannot forward port {}: {}",
                      port.port, pod.status().ToString());
    sendChannel(port.errorChannel(), session::forwardingError(port.port, pod_sandbox_id_,
                                                              std::string(pod.status().message())));
    endPort(port);
    return;
  }
  port.pod = std::move(pod).value();
  if (output_paused_) {
    port.pod->pauseReading(true);
  }
}

// WsConnectionCallbacks

void WsPortForward::onMessage(MessageType type, Buffer& payload) {
  if (state_ != State::kRunning) {
    payload.drain(payload.length());
    return;
  }
  absl::StatusOr<websocket::InboundMessage> decoded =
      websocket::decodeInbound(protocol_, type, payload, 2 * ports_.size());
  if (!decoded.ok()) {
    // Not reachable with these protocols (no CLOSE signal, any message type
    // read); handled like every bad channel message.
    const std::string reason(decoded.status().message());
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_, "bad channel message: {}",
                      reason);
    countProtocolError(reason);
    state_ = State::kFinished;
    abandonAll();
    connection_->close(websocket::kCloseProtocolError,
                       std::string_view(reason).substr(0, reason.find(':')));
    return;
  }
  websocket::InboundMessage& message = *decoded;
  switch (message.kind) {
    case websocket::InboundMessage::Kind::kEmpty:
    case websocket::InboundMessage::Kind::kStreamClose:
      return;
    case websocket::InboundMessage::Kind::kUnknownChannel:
      CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_,
                        "ignoring a message on unknown channel {}", message.channel);
      countProtocolError("ws.channel.unknown_channel");
      return;
    case websocket::InboundMessage::Kind::kMalformed:
      CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                        "dropping a message on channel {}: {}", message.channel, message.error);
      countProtocolError(message.error);
      return;
    case websocket::InboundMessage::Kind::kData:
      break;
  }
  if (message.channel % 2 != 0) {
    // Error channels are written by the server only.
    return;
  }
  Port& port = *port_state_[message.channel / 2];
  session_metrics_.bytes_in.inc(message.payload.length());
  deliverToPod(port, message.payload);
}

void WsPortForward::deliverToPod(Port& port, Buffer& data) {
  if (port.state == Port::State::kEnded || port.pod == nullptr || port.remote_eof) {
    // The forward is over (or ending): as on a closed TCP connection, the
    // bytes go nowhere.
    data.drain(data.length());
    return;
  }
  port.pod->write(data);
  if (port.pod->queuedBytes() > session::PortConnection::kWriteHighWatermark) {
    setInputBlocked(port, true);
  }
}

void WsPortForward::setInputBlocked(Port& port, bool blocked) {
  if (port.input_blocked == blocked) {
    return;
  }
  port.input_blocked = blocked;
  if (blocked) {
    if (input_blocked_ports_++ == 0) {
      connection_->pauseReading(true);
    }
  } else if (--input_blocked_ports_ == 0) {
    connection_->pauseReading(false);
  }
}

void WsPortForward::onOutputAboveHighWatermark() {
  output_paused_ = true;
  for (auto& port : port_state_) {
    if (port->pod != nullptr && port->state != Port::State::kEnded) {
      port->pod->pauseReading(true);
    }
  }
}

void WsPortForward::onOutputBelowLowWatermark() {
  output_paused_ = false;
  for (auto& port : port_state_) {
    if (port->pod != nullptr && port->state != Port::State::kEnded) {
      port->pod->pauseReading(false);
    }
  }
}

void WsPortForward::onConnectionClosing(WsCloseReason reason, const std::string& detail) {
  if (reason == WsCloseReason::kIdleTimeout) {
    session_metrics_.idle_timeouts.inc();
  }
  if (state_ != State::kRunning) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "connection ended ({}): {}; closing {} forwards", closeReasonName(reason),
                    detail, active_ports_);
  state_ = State::kFinished;
  abandonAll();
}

void WsPortForward::onConnectionClosed() {
  state_ = State::kDone;
  abandonAll();
  if (counted_active_) {
    active_gauge_.dec();
    counted_active_ = false;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "session closed");
  if (on_done_) {
    DoneCallback done = std::move(on_done_);
    on_done_ = nullptr;
    done(*this);
  }
}

// Port events

void WsPortForward::onPortConnected(Port& port) {
  port.state = Port::State::kForwarding;
  metrics_.result(session::PortConnectResult::kOk).inc();
  CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_, "port {}: connected", port.port);
}

void WsPortForward::onPortData(Port& port, Buffer& data) {
  if (state_ != State::kRunning) {
    data.drain(data.length());
    return;
  }
  session_metrics_.bytes_out.inc(data.length());
  const size_t limit = std::max<size_t>(config_.max_output_message_bytes, 1);
  while (!data.empty()) {
    // Messages end where the pod reads' segments end, so that the payload
    // moves into them by reference; a cut segment would be copied.
    Buffer chunk;
    chunk.move(data, data.wholeSegmentsLength(limit));
    sendChannel(port.dataChannel(), chunk);
  }
}

bool WsPortForward::canTakePortPipe() const {
  // Base64 channels rewrite the bytes; only binary ones carry them as they are.
  return state_ == State::kRunning && protocol_.framing == websocket::ChannelFraming::kBinary &&
         connection_->canSendFromPipe();
}

size_t WsPortForward::onPortDataPipe(Port& port, int pipe_fd, size_t limit) {
  if (!canTakePortPipe()) {
    return 0;
  }
  // Messages behind nothing queued, so the order with onPortData() holds; a
  // message the socket did not take whole puts the connection above its
  // high watermark, which pauses every pod connection (this one's pipe
  // included) until it is written.
  const char channel = static_cast<char>(port.dataChannel());
  const size_t taken = connection_->sendMessageFromPipe(
      MessageType::kBinary, std::string_view(&channel, 1), pipe_fd, limit,
      std::max<size_t>(config_.max_output_message_bytes, 1));
  session_metrics_.bytes_out.inc(taken);
  metrics_.spliced_bytes.inc(taken);
  return taken;
}

void WsPortForward::onPortRemoteEof(Port& port) {
  // The application ended its side: this port's forward ends, as the
  // runtime's copy loop does, once what the client sent before is written.
  CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_, "port {}: the pod side ended",
                    port.port);
  port.remote_eof = true;
  setInputBlocked(port, false);
  if (port.pod != nullptr) {
    port.pod->shutdownWrite();
  }
}

void WsPortForward::onPortWriteDrained(Port& port) { setInputBlocked(port, false); }

void WsPortForward::onPortClosed(Port& port) {
  CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_, "port {}: closed", port.port);
  endPort(port);
}

void WsPortForward::onPortError(Port& port, const PortError& error) {
  if (port.state == Port::State::kConnecting) {
    metrics_
        .result(error.kind == PortError::Kind::kConnectionLost
                    ? session::PortConnectResult::kOk
                    : session::connectResultOf(error.kind))
        .inc();
  }
  if (session::writesErrorText(error.kind)) {
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                      "cannot forward port {} ({}): {}", port.port, errorKindName(error.kind),
                      error.message);
    sendChannel(port.errorChannel(),
                session::portErrorText(port.port, pod_sandbox_id_, error));
  } else {
    // The application reset a connection that was made: the forward ends
    // like a close, after what it sent before.
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "port {}: {}", port.port,
                      error.message);
  }
  endPort(port);
}

void WsPortForward::sendChannel(uint8_t channel, std::string_view payload) {
  Buffer buffer;
  buffer.add(payload);
  sendChannel(channel, buffer);
}

void WsPortForward::sendChannel(uint8_t channel, Buffer& payload) {
  Buffer message;
  const MessageType type =
      websocket::encodeChannelMessage(protocol_.framing, channel, payload, message);
  connection_->sendMessage(type, message);
}

void WsPortForward::endPort(Port& port) {
  if (port.state == Port::State::kEnded) {
    return;
  }
  port.state = Port::State::kEnded;
  setInputBlocked(port, false);
  metrics_.active.dec();
  --active_ports_;
  if (port.pod != nullptr) {
    // Deferred: this may run inside one of the pod connection's callbacks.
    dispatcher_.deferredDelete(std::move(port.pod));
  }
  finishIfAllEnded();
}

void WsPortForward::finishIfAllEnded() {
  if (state_ != State::kRunning || active_ports_ != 0) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "every forward ended; closing the WebSocket");
  state_ = State::kFinished;
  // Behind every message already queued (data and error texts).
  connection_->close(websocket::kCloseNormal);
}

void WsPortForward::abandonAll() {
  for (auto& port : port_state_) {
    endPort(*port);
  }
}

// WsPortForwardHandler

WsPortForwardHandler::WsPortForwardHandler(session::Runtime& runtime,
                                           const WsPortForwardConfig& config)
    : runtime_(runtime), config_(config) {}

WsPortForwardHandler::~WsPortForwardHandler() = default;

bool WsPortForwardHandler::serves(Protocol protocol) const {
  return portForwardSubprotocol(protocol).has_value() ||
         protocol == Protocol::kWsSpdyTunnelPortForward;
}

void WsPortForwardHandler::onUpgrade(event::Dispatcher& dispatcher,
                                     UpgradedConnection&& connection) {
  if (connection.protocol == Protocol::kWsSpdyTunnelPortForward &&
      std::holds_alternative<session::PortForwardSpec>(connection.stream_request.spec)) {
    serveTunnel(dispatcher, std::move(connection));
    return;
  }
  const uint64_t connection_id = connection.connection_id;
  absl::StatusOr<std::unique_ptr<WsPortForward>> session = WsPortForward::create(
      dispatcher, runtime_, std::move(connection), config_, sessions_.makeDoneCallback(dispatcher));
  if (!session.ok()) {
    CRISP_CONN_LOG(kStream, info, connection_id, "cannot serve the WebSocket port-forward: {}",
                   session.status().ToString());
    return;
  }
  sessions_.add(dispatcher, std::move(session).value()).start();
}

void WsPortForwardHandler::serveTunnel(event::Dispatcher& dispatcher,
                                       UpgradedConnection&& connection) {
  absl::StatusOr<std::unique_ptr<WsTransport>> tunnel =
      WsTransport::create(dispatcher, std::move(connection.transport), connection.connection_id,
                          config_.tunnel_transport);
  if (!tunnel.ok()) {
    CRISP_CONN_LOG(kStream, info, connection.connection_id, "cannot serve the SPDY tunnel: {}",
                   tunnel.status().ToString());
    return;
  }
  connection.transport = std::move(tunnel).value();
  tunnels_
      .add(dispatcher,
           std::make_unique<SpdyPortForward>(dispatcher, runtime_, std::move(connection),
                                             config_.tunnel, tunnels_.makeDoneCallback(dispatcher)))
      .start();
}

size_t WsPortForwardHandler::activeSessions(event::Dispatcher& dispatcher) {
  return sessions_.count(dispatcher) + tunnels_.count(dispatcher);
}

void WsPortForwardHandler::closeAll(event::Dispatcher& dispatcher) {
  sessions_.closeAll(dispatcher);
  tunnels_.closeAll(dispatcher);
}

}  // namespace crisp::stream
