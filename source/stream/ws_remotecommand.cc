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

using session::ExecProcess;
using session::ExitStatus;
using websocket::MessageType;

const char* exitKindName(ExitStatus::Kind kind) {
  switch (kind) {
    case ExitStatus::Kind::kSuccess:
      return "success";
    case ExitStatus::Kind::kNonZeroExit:
      return "non-zero exit";
    case ExitStatus::Kind::kError:
      return "error";
  }
  return "unknown";
}


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
      runtime_(runtime),
      config_(config),
      on_done_(std::move(on_done)),
      connection_id_(setup.connection_id != 0 ? setup.connection_id : log::nextId()),
      session_id_(log::nextId()),
      subprotocol_(std::move(setup.subprotocol)),
      protocol_(websocket::ChannelProtocol{subprotocol_, protocol.framing, protocol.version,
                                           protocol.stream_close}),
      version_(channelRemoteCommandVersion(protocol)),
      protocol_name_(setup.protocol_name.empty() ? absl::StrCat("ws/", subprotocol_)
                                                 : std::move(setup.protocol_name)),
      spec_(std::move(setup.spec)),
      metrics_(session::SessionMetrics::get()),
      active_gauge_(metrics_.sessions_active.gauge(
          {session::operationName(spec_.operation), protocol_name_})) {
  start_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { startExec(); });
}

WsRemoteCommand::~WsRemoteCommand() {
  start_timer_.reset();
  process_.reset();
  connection_.reset();
  if (counted_active_) {
    active_gauge_.dec();
  }
}

void WsRemoteCommand::start() {
  if (state_ != State::kWaitingToStart || counted_active_) {
    return;
  }
  metrics_.sessions_total.counter({session::operationName(spec_.operation), protocol_name_}).inc();
  active_gauge_.inc();
  counted_active_ = true;
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "{} session over {} for container {} (stdin={} stdout={} stderr={} tty={})",
                    session::operationName(spec_.operation), protocol_name_, spec_.container_id,
                    spec_.stdin, spec_.stdout, spec_.stderr, spec_.tty);
  connection_->start();
  sendReadySignal();
  // From the loop: the bytes the transport already holds (a resize sent
  // right behind the request) are delivered first when it can.
  start_timer_->enable(std::chrono::milliseconds(0));
}

void WsRemoteCommand::close() {
  // A started command gets a status saying why it ended, which the client
  // shows, rather than a bare close. The close after it is a normal one:
  // kubectl reports any other close code instead of the status.
  if (state_ == State::kStarting || state_ == State::kRunning) {
    finish(ExitStatus::error(session::kServerStoppingMessage));
    return;
  }
  abandon("closed by the server", websocket::kCloseGoingAway);
}

void WsRemoteCommand::sendReadySignal() {
  // The kubelet writes an empty payload on the first stream it has, so the
  // client knows the session is there before any output.
  uint8_t channel = websocket::kChannelError;
  if (spec_.stdout) {
    channel = websocket::kChannelStdout;
  } else if (spec_.stderr && !spec_.tty) {
    channel = websocket::kChannelStderr;
  }
  Buffer empty;
  sendChannel(channel, empty);
}

// WsConnectionCallbacks

void WsRemoteCommand::onMessage(MessageType type, Buffer& payload) {
  if (state_ == State::kFinished || state_ == State::kDone) {
    return;
  }
  absl::StatusOr<websocket::InboundMessage> decoded =
      websocket::decodeInbound(protocol_, type, payload, websocket::kRemoteCommandChannels);
  if (!decoded.ok()) {
    const std::string reason(decoded.status().message());
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_, "bad channel message: {}",
                      reason);
    countProtocolError(reason);
    abandon(reason, websocket::kCloseProtocolError);
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
        closeStdin();
      }
      return;
    case websocket::InboundMessage::Kind::kData:
      break;
  }
  switch (message.channel) {
    case websocket::kChannelStdin:
      if (spec_.stdin) {
        deliverStdin(message.payload);
      }
      return;
    case websocket::kChannelResize:
      deliverResize(message.payload);
      return;
    default:
      // Clients send nothing on output and error channels; drop it.
      return;
  }
}

void WsRemoteCommand::deliverStdin(Buffer& data) {
  const size_t len = data.length();
  metrics_.bytes_in.inc(len);
  if (stdin_eof_) {
    data.drain(len);
    return;
  }
  switch (state_) {
    case State::kRunning:
      process_->writeStdin(data);
      if (!stdin_paused_ && process_ != nullptr &&
          process_->stdinQueuedBytes() > ExecProcess::kStdinHighWatermark) {
        stdin_paused_ = true;
        connection_->pauseReading(true);
      }
      return;
    case State::kWaitingToStart:
    case State::kStarting:
      early_stdin_.move(data);
      if (!stdin_paused_ && early_stdin_.length() > ExecProcess::kStdinHighWatermark) {
        stdin_paused_ = true;
        connection_->pauseReading(true);
      }
      return;
    default:
      data.drain(len);
      return;
  }
}

void WsRemoteCommand::closeStdin() {
  if (stdin_eof_) {
    return;
  }
  stdin_eof_ = true;
  if (state_ == State::kRunning && process_ != nullptr) {
    process_->closeStdin();
  }
  // Otherwise startExec() closes it after writing the early stdin.
}

void WsRemoteCommand::deliverResize(Buffer& data) {
  const size_t len = data.length();
  if (len == 0) {
    return;
  }
  const auto* bytes = reinterpret_cast<const char*>(data.linearize(len));
  const absl::Status status =
      resize_decoder_.feed(std::string_view(bytes, len), [this](session::TerminalSize size) {
        if (state_ == State::kRunning && process_ != nullptr) {
          process_->resize(size);
        } else if (state_ == State::kWaitingToStart || state_ == State::kStarting) {
          latest_size_ = size;
        }
      });
  data.drain(len);
  if (!status.ok()) {
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                      "ignoring the resize channel from now on: {}", status.ToString());
  }
}

void WsRemoteCommand::onOutputAboveHighWatermark() {
  output_paused_ = true;
  if (process_ != nullptr) {
    process_->pauseOutput(true);
  }
}

void WsRemoteCommand::onOutputBelowLowWatermark() {
  output_paused_ = false;
  if (process_ != nullptr) {
    process_->pauseOutput(false);
  }
}

void WsRemoteCommand::onConnectionClosing(WsCloseReason reason, const std::string& detail) {
  if (reason == WsCloseReason::kIdleTimeout) {
    metrics_.idle_timeouts.inc();
  }
  if (state_ == State::kFinished || state_ == State::kDone) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "connection ended ({}): {}; ending the {}", closeReasonName(reason), detail,
                    session::operationName(spec_.operation));
  state_ = State::kFinished;
  start_timer_->disable();
  releaseProcess();
}

void WsRemoteCommand::onConnectionClosed() {
  state_ = State::kDone;
  start_timer_->disable();
  releaseProcess();
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

// session::ExecCallbacks

void WsRemoteCommand::onStdout(Buffer& data) {
  if (!spec_.stdout) {
    data.drain(data.length());
    return;
  }
  sendOutput(websocket::kChannelStdout, data);
}

void WsRemoteCommand::onStderr(Buffer& data) {
  if (!spec_.stderr || spec_.tty) {
    data.drain(data.length());
    return;
  }
  sendOutput(websocket::kChannelStderr, data);
}

void WsRemoteCommand::sendOutput(uint8_t channel, Buffer& data) {
  if (state_ != State::kRunning && state_ != State::kStarting) {
    data.drain(data.length());
    return;
  }
  metrics_.bytes_out.inc(data.length());
  const size_t limit = std::max<size_t>(config_.max_output_message_bytes, 1);
  while (!data.empty()) {
    Buffer chunk;
    chunk.move(data, std::min(data.length(), limit));
    sendChannel(channel, chunk);
  }
}

void WsRemoteCommand::sendChannel(uint8_t channel, Buffer& payload) {
  Buffer message;
  const MessageType type =
      websocket::encodeChannelMessage(protocol_.framing, channel, payload, message);
  connection_->sendMessage(type, message);
}

void WsRemoteCommand::onExit(const ExitStatus& status) { finish(status); }

void WsRemoteCommand::onStdinDrained() {
  if (stdin_paused_) {
    stdin_paused_ = false;
    connection_->pauseReading(false);
  }
}

void WsRemoteCommand::startExec() {
  if (state_ != State::kWaitingToStart) {
    return;
  }
  if (!spec_.stdin && !spec_.stdout && !spec_.stderr) {
    finish(ExitStatus::error("one of stdin, stdout, or stderr must be set"));
    return;
  }
  state_ = State::kStarting;
  CRISP_SESSION_LOG(
      kSession, debug, connection_id_, session_id_, "starting (tty={}, initial size {})", spec_.tty,
      latest_size_.has_value()
          ? std::to_string(latest_size_->width) + "x" + std::to_string(latest_size_->height)
          : std::string("unknown"));
  absl::StatusOr<std::unique_ptr<ExecProcess>> started =
      runtime_.startExec(dispatcher_, spec_, latest_size_, *this);
  if (!started.ok()) {
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_, "start failed: {}",
                      started.status().ToString());
    finish(ExitStatus::error(std::string(started.status().message())));
    return;
  }
  std::unique_ptr<ExecProcess> process = std::move(started).value();
  if (state_ != State::kStarting || process == nullptr) {
    // It ended (or the client left) while starting.
    if (process != nullptr) {
      dispatcher_.deferredDelete(std::move(process));
    }
    if (state_ == State::kStarting) {
      finish(ExitStatus::error("the runtime returned no process"));
    }
    return;
  }
  process_ = std::move(process);
  state_ = State::kRunning;
  // Each call below may end the process synchronously (onExit), so check
  // after each one.
  if (output_paused_) {
    process_->pauseOutput(true);
  }
  if (process_ != nullptr && !early_stdin_.empty()) {
    process_->writeStdin(early_stdin_);
  }
  if (process_ != nullptr && stdin_eof_) {
    process_->closeStdin();
  }
  if (process_ != nullptr && stdin_paused_ &&
      process_->stdinQueuedBytes() <= ExecProcess::kStdinHighWatermark) {
    stdin_paused_ = false;
    connection_->pauseReading(false);
  }
}

void WsRemoteCommand::finish(const ExitStatus& status) {
  if (state_ != State::kWaitingToStart && state_ != State::kStarting && state_ != State::kRunning) {
    return;
  }
  state_ = State::kFinished;
  start_timer_->disable();
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "{} ended: {} {} {}",
                    session::operationName(spec_.operation), exitKindName(status.kind),
                    status.exit_code, status.message);
  // The output went out as it came, through the same connection, so the
  // status below follows every byte of it; the close follows the status.
  std::string payload = session::errorStreamPayload(version_, spec_, status);
  if (!payload.empty()) {
    Buffer body;
    body.add(payload);
    sendChannel(websocket::kChannelError, body);
  }
  releaseProcess();
  connection_->close(websocket::kCloseNormal);
}

void WsRemoteCommand::abandon(const std::string& why, uint16_t close_code) {
  if (state_ == State::kFinished || state_ == State::kDone) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "ending the session: {}", why);
  state_ = State::kFinished;
  start_timer_->disable();
  releaseProcess();
  // The reason is a stable dotted name (ws.channel.bad_close_signal: ...);
  // only the name goes on the wire.
  const std::string_view reason = std::string_view(why).substr(0, why.find(':'));
  connection_->close(close_code,
                     close_code == websocket::kCloseNormal ? std::string_view() : reason);
}

void WsRemoteCommand::releaseProcess() {
  if (process_ != nullptr) {
    // Deferred: this may run inside one of the process's own callbacks.
    dispatcher_.deferredDelete(std::move(process_));
  }
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

}  // namespace crisp::stream
