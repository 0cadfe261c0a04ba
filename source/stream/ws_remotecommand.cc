#include "source/stream/ws_remotecommand.h"

#include <algorithm>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"
#include "source/stream/stream_limits.h"

namespace crisp::stream {
namespace {

using session::StreamType;
using websocket::MessageType;

}  // namespace

session::RemoteCommandVersion channelRemoteCommandVersion(
    const websocket::ChannelProtocol& protocol) {
  if (protocol.version >= 5) {
    return session::RemoteCommandVersion::kV5;
  }
  if (protocol.version >= 4) {
    return session::RemoteCommandVersion::kV4;
  }
  return session::RemoteCommandVersion::kV1;
}

std::optional<std::string_view> remoteCommandSubprotocol(Protocol protocol) {
  switch (protocol) {
    case Protocol::kWsChannel:
      return websocket::kChannelV1;
    case Protocol::kWsBase64Channel:
      return websocket::kChannelV1Base64;
    case Protocol::kWsV4Channel:
      return websocket::kChannelV4;
    case Protocol::kWsV4Base64Channel:
      return websocket::kChannelV4Base64;
    case Protocol::kWsV5Channel:
      return websocket::kChannelV5;
    case Protocol::kSpdyRemoteCommandV1:
    case Protocol::kSpdyRemoteCommandV2:
    case Protocol::kSpdyRemoteCommandV3:
    case Protocol::kSpdyRemoteCommandV4:
    case Protocol::kSpdyPortForward:
    case Protocol::kWsPortForwardBinary:
    case Protocol::kWsPortForwardV4:
    case Protocol::kWsPortForwardV4Base64:
    case Protocol::kWsSpdyTunnelPortForward:
      return std::nullopt;
  }
  return std::nullopt;
}

absl::StatusOr<std::unique_ptr<WsRemoteCommand>> WsRemoteCommand::create(
    event::Dispatcher& dispatcher, session::Runtime& runtime, WsSessionSetup&& setup,
    const WsRemoteCommandConfig& config, DoneCallback on_done) {
  const std::optional<websocket::ChannelProtocol> protocol =
      websocket::channelProtocol(setup.subprotocol);
  if (!protocol.has_value() || setup.transport == nullptr) {
    discardUpgrade(dispatcher, std::move(setup.transport));
    return absl::InvalidArgumentError(absl::StrCat("ws.session.bad_protocol: \"", setup.subprotocol,
                                                   "\" is not a remotecommand channel protocol"));
  }
  setup.client_address = setup.transport->peerAddress();
  setup.client_subject = setup.transport->peerIdentity();
  std::unique_ptr<Transport> transport = std::move(setup.transport);
  std::unique_ptr<WsRemoteCommand> session(new WsRemoteCommand(
      dispatcher, runtime, std::move(setup), *protocol, config, std::move(on_done)));
  absl::StatusOr<std::unique_ptr<WsConnection>> connection =
      WsConnection::create(dispatcher, std::move(transport), session->connection_id_,
                           static_cast<WsConnectionCallbacks&>(*session), config.connection);
  if (!connection.ok()) {
    // The failed connection closed the transport.
    return connection.status();
  }
  session->connection_ = std::move(connection).value();
  return session;
}

WsRemoteCommand::WsRemoteCommand(event::Dispatcher& dispatcher, session::Runtime& runtime,
                                 WsSessionSetup&& setup, const websocket::ChannelProtocol& protocol,
                                 const WsRemoteCommandConfig& config, DoneCallback on_done)
    : dispatcher_(dispatcher),
      config_(config),
      on_done_(std::move(on_done)),
      connection_id_(setup.connection_id != 0 ? setup.connection_id : log::nextId()),
      session_id_(log::nextId()),
      subprotocol_(std::move(setup.subprotocol)),
      protocol_(websocket::ChannelProtocol{subprotocol_, protocol.framing, protocol.version,
                                           protocol.stream_close}),
      version_(channelRemoteCommandVersion(protocol)) {
  std::string protocol_name = setup.protocol_name.empty() ? absl::StrCat("ws/", subprotocol_)
                                                          : std::move(setup.protocol_name);
  core_ = std::make_unique<RemoteCommandSession>(
      dispatcher_, runtime, static_cast<RemoteCommandWire&>(*this),
      RemoteCommandSession::Identity{
          connection_id_, session_id_, version_, std::move(protocol_name),
          std::move(setup.client_address), std::move(setup.client_subject)},
      std::move(setup.spec));
}

WsRemoteCommand::~WsRemoteCommand() {
  // The exec ends before the transport closes.
  core_.reset();
  connection_.reset();
}

void WsRemoteCommand::start() {
  if (started_ || core_->ended()) {
    return;
  }
  started_ = true;
  core_->begin();
  const session::ExecSpec& spec = core_->spec();
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "{} session over {} for container {} (stdin={} stdout={} stderr={} tty={})",
                    session::operationName(spec.operation), core_->identity().protocol_name,
                    spec.container_id, spec.stdin, spec.stdout, spec.stderr, spec.tty);
  connection_->start();
  sendReadySignal();
  // From the loop: the bytes the transport already holds (a resize sent
  // right behind the request) are delivered first when it can; after the
  // client has had time to set up its streams (start_delay).
  core_->scheduleStart(config_.start_delay);
}

void WsRemoteCommand::close() { core_->endForStop(websocket::kCloseGoingAway); }

void WsRemoteCommand::endForShutdown() { core_->endForShutdown("crisp.shutdown"); }

void WsRemoteCommand::sendReadySignal() {
  // The kubelet writes an empty payload on the first stream it has, so the
  // client knows the session is there before any output.
  const session::ExecSpec& spec = core_->spec();
  uint8_t channel = websocket::kChannelError;
  if (spec.stdout) {
    channel = websocket::kChannelStdout;
  } else if (spec.stderr && !spec.tty) {
    channel = websocket::kChannelStderr;
  }
  Buffer empty;
  sendChannel(channel, empty);
}

// WsConnectionCallbacks

void WsRemoteCommand::onMessage(MessageType type, Buffer& payload) {
  if (core_->ended()) {
    return;
  }
  absl::StatusOr<websocket::InboundMessage> decoded =
      websocket::decodeInbound(protocol_, type, payload, websocket::kRemoteCommandChannels);
  if (!decoded.ok()) {
    const std::string reason(decoded.status().message());
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_, "bad channel message: {}",
                      reason);
    countProtocolError(reason);
    core_->abandon(reason, websocket::kCloseProtocolError);
    return;
  }
  websocket::InboundMessage& message = *decoded;
  switch (message.kind) {
    case websocket::InboundMessage::Kind::kEmpty:
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
    case websocket::InboundMessage::Kind::kStreamClose:
      if (message.channel == websocket::kChannelStdin) {
        CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "client closed stdin");
        core_->closeStdin();
      }
      return;
    case websocket::InboundMessage::Kind::kData:
      break;
  }
  switch (message.channel) {
    case websocket::kChannelStdin:
      if (core_->spec().stdin) {
        core_->deliverStdin(message.payload);
      }
      return;
    case websocket::kChannelResize:
      core_->deliverResize(message.payload, "channel");
      return;
    default:
      // Clients send nothing on output and error channels; drop it.
      return;
  }
}

void WsRemoteCommand::onOutputAboveHighWatermark() { core_->outputAboveHighWatermark(); }

void WsRemoteCommand::onOutputBelowLowWatermark() { core_->outputBelowLowWatermark(); }

void WsRemoteCommand::onConnectionClosing(WsCloseReason reason, const std::string& detail) {
  core_->connectionClosing(closeReasonName(reason), detail, reason == WsCloseReason::kIdleTimeout);
}

void WsRemoteCommand::onConnectionClosed() {
  core_->connectionClosed();
  if (on_done_) {
    DoneCallback done = std::move(on_done_);
    on_done_ = nullptr;
    done(*this);
  }
}

bool WsRemoteCommand::onIdleTimeout() {
  if (core_->ended()) {
    return false;
  }
  // The status goes on the error channel, then the close.
  core_->endIdle(config_.connection.idle_timeout, "ws.idle_timeout");
  return true;
}

// RemoteCommandWire

void WsRemoteCommand::pauseReading(bool paused) { connection_->pauseReading(paused); }

bool WsRemoteCommand::acceptsOutput(StreamType type) const {
  const session::ExecSpec& spec = core_->spec();
  if (type == StreamType::kStdout) {
    return spec.stdout;
  }
  return type == StreamType::kStderr && spec.stderr && !spec.tty;
}

void WsRemoteCommand::sendOutput(StreamType type, Buffer& data) {
  const uint8_t channel =
      type == StreamType::kStdout ? websocket::kChannelStdout : websocket::kChannelStderr;
  const size_t limit = std::max<size_t>(config_.max_output_message_bytes, 1);
  while (!data.empty()) {
    Buffer chunk;
    chunk.move(data, data.wholeSegmentsLength(limit));
    sendChannel(channel, chunk);
  }
}

size_t WsRemoteCommand::sendOutputFromPipe(StreamType type, int pipe_fd, size_t limit) {
  // Base64 channels rewrite the bytes; only binary ones carry them as they are.
  if (protocol_.framing != websocket::ChannelFraming::kBinary) {
    return 0;
  }
  const char channel = static_cast<char>(type == StreamType::kStdout ? websocket::kChannelStdout
                                                                     : websocket::kChannelStderr);
  return connection_->sendMessageFromPipe(MessageType::kBinary, std::string_view(&channel, 1),
                                          pipe_fd, limit,
                                          std::max<size_t>(config_.max_output_message_bytes, 1));
}

void WsRemoteCommand::sendChannel(uint8_t channel, Buffer& payload) {
  Buffer message;
  const MessageType type =
      websocket::encodeChannelMessage(protocol_.framing, channel, payload, message);
  connection_->sendMessage(type, message);
}

void WsRemoteCommand::endWithStatus(const std::string& payload, bool ahead_of_output) {
  // The output went out as it came, through the same connection, so the
  // status below follows every byte of it; the close follows the status. When
  // crisp ends the session the status overtakes the output still queued, so
  // that a slow reader gets it even if it is cut off before the rest. The
  // close is a normal one even when crisp ended the session: clients report
  // any other close code instead of the status.
  if (!payload.empty()) {
    Buffer body;
    body.add(payload);
    Buffer message;
    const MessageType type = websocket::encodeChannelMessage(
        protocol_.framing, websocket::kChannelError, body, message);
    if (ahead_of_output) {
      connection_->sendMessageAhead(type, message);
    } else {
      connection_->sendMessage(type, message);
    }
  }
  connection_->close(websocket::kCloseNormal);
}

void WsRemoteCommand::endWithoutStatus(const std::string& why, int close_code) {
  // The reason is a stable dotted name (ws.channel.bad_close_signal: ...);
  // only the name goes on the wire.
  const auto code = static_cast<uint16_t>(close_code);
  const std::string_view reason = std::string_view(why).substr(0, why.find(':'));
  connection_->close(code, code == websocket::kCloseNormal ? std::string_view() : reason);
}

// WsUpgradeHandler

WsUpgradeHandler::WsUpgradeHandler(session::Runtime& runtime, const WsRemoteCommandConfig& config,
                                   UpgradeHandler* port_forward)
    : runtime_(runtime), config_(config), port_forward_(port_forward) {}

WsUpgradeHandler::~WsUpgradeHandler() = default;

bool WsUpgradeHandler::serve(event::Dispatcher& dispatcher, WsSessionSetup&& setup) {
  const uint64_t connection_id = setup.connection_id;
  absl::StatusOr<std::unique_ptr<WsRemoteCommand>> session =
      WsRemoteCommand::create(dispatcher, runtime_, std::move(setup), config_,
                              sessions_.makeDoneCallback(dispatcher));
  if (!session.ok()) {
    CRISP_CONN_LOG(kStream, info, connection_id, "cannot serve the WebSocket: {}",
                   session.status().ToString());
    return false;
  }
  sessions_.add(dispatcher, std::move(session).value()).start();
  return true;
}

void WsUpgradeHandler::onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) {
  const std::optional<std::string_view> subprotocol = remoteCommandSubprotocol(connection.protocol);
  const auto* spec = std::get_if<session::ExecSpec>(&connection.stream_request.spec);
  if (!subprotocol.has_value() || spec == nullptr) {
    if (!subprotocol.has_value() && port_forward_ != nullptr &&
        protocolFamily(connection.protocol) == ProtocolFamily::kWebSocket &&
        std::holds_alternative<session::PortForwardSpec>(connection.stream_request.spec)) {
      port_forward_->onUpgrade(dispatcher, std::move(connection));
      return;
    }
    CRISP_CONN_LOG(kStream, info, connection.connection_id,
                   "no WebSocket handler for {} on a {} request; closing",
                   protocolName(connection.protocol),
                   session::operationName(connection.stream_request.operation()));
    discardUpgrade(dispatcher, std::move(connection.transport));
    return;
  }
  WsSessionSetup setup;
  setup.connection_id = connection.connection_id;
  setup.transport = std::move(connection.transport);
  setup.subprotocol = std::string(*subprotocol);
  setup.protocol_name = protocolName(connection.protocol);
  setup.spec = *spec;
  serve(dispatcher, std::move(setup));
}

bool WsUpgradeHandler::serves(Protocol protocol) const {
  if (remoteCommandSubprotocol(protocol).has_value()) {
    return true;
  }
  return protocolFamily(protocol) == ProtocolFamily::kWebSocket && port_forward_ != nullptr &&
         port_forward_->serves(protocol);
}

size_t WsUpgradeHandler::activeSessions(event::Dispatcher& dispatcher) {
  return sessions_.count(dispatcher);
}

void WsUpgradeHandler::closeAll(event::Dispatcher& dispatcher) { sessions_.closeAll(dispatcher); }

void WsUpgradeHandler::endAllForShutdown(event::Dispatcher& dispatcher) {
  sessions_.forEach(dispatcher, [](auto& session) { session.endForShutdown(); });
}

}  // namespace crisp::stream
