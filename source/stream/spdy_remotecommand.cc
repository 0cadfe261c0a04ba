#include "source/stream/spdy_remotecommand.h"

#include <utility>
#include <variant>
#include <vector>

#include "source/common/logger.h"
#include "source/stream/stream_limits.h"

namespace crisp::stream {
namespace {

using session::StreamType;

session::ExecSpec execSpecOf(const UpgradedConnection& upgraded) {
  if (const auto* spec = std::get_if<session::ExecSpec>(&upgraded.stream_request.spec)) {
    return *spec;
  }
  return session::ExecSpec{};
}

}  // namespace

std::optional<session::RemoteCommandVersion> remoteCommandVersion(Protocol protocol) {
  switch (protocol) {
    case Protocol::kSpdyRemoteCommandV1:
      return session::RemoteCommandVersion::kV1;
    case Protocol::kSpdyRemoteCommandV2:
      return session::RemoteCommandVersion::kV2;
    case Protocol::kSpdyRemoteCommandV3:
      return session::RemoteCommandVersion::kV3;
    case Protocol::kSpdyRemoteCommandV4:
      return session::RemoteCommandVersion::kV4;
    case Protocol::kSpdyPortForward:
    case Protocol::kWsChannel:
    case Protocol::kWsBase64Channel:
    case Protocol::kWsV4Channel:
    case Protocol::kWsV4Base64Channel:
    case Protocol::kWsV5Channel:
    case Protocol::kWsPortForwardBinary:
    case Protocol::kWsPortForwardV4:
    case Protocol::kWsPortForwardV4Base64:
    case Protocol::kWsSpdyTunnelPortForward:
      return std::nullopt;
  }
  return std::nullopt;
}

SpdyRemoteCommand::SpdyRemoteCommand(event::Dispatcher& dispatcher, session::Runtime& runtime,
                                     UpgradedConnection&& upgraded,
                                     const SpdyRemoteCommandConfig& config, DoneCallback on_done)
    : dispatcher_(dispatcher),
      config_(config),
      on_done_(std::move(on_done)),
      connection_id_(upgraded.connection_id != 0 ? upgraded.connection_id : log::nextId()),
      session_id_(log::nextId()),
      version_(
          remoteCommandVersion(upgraded.protocol).value_or(session::RemoteCommandVersion::kV4)),
      expected_(session::expectedStreams(version_, execSpecOf(upgraded))) {
  core_ = std::make_unique<RemoteCommandSession>(
      dispatcher_, runtime, static_cast<RemoteCommandWire&>(*this),
      RemoteCommandSession::Identity{
          connection_id_, session_id_, version_, protocolName(upgraded.protocol),
          upgraded.transport != nullptr ? upgraded.transport->peerAddress() : std::string(),
          upgraded.transport != nullptr ? upgraded.transport->peerIdentity() : std::string()},
      execSpecOf(upgraded));
  connection_ = std::make_unique<SpdyConnection>(
      dispatcher_, std::move(upgraded.transport), connection_id_,
      static_cast<SpdyConnectionCallbacks&>(*this), config_.connection);
  creation_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { onCreationTimeout(); });
}

SpdyRemoteCommand::~SpdyRemoteCommand() {
  creation_timer_.reset();
  // The exec ends before the socket closes.
  core_.reset();
  connection_.reset();
}

void SpdyRemoteCommand::start() {
  core_->begin();
  const session::ExecSpec& spec = core_->spec();
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "{} session over {} for container {}: waiting for streams {}",
                    session::operationName(spec.operation), core_->identity().protocol_name,
                    spec.container_id, expected_.toString());
  creation_timer_->enable(config_.stream_creation_timeout);
  connection_->start();
}

void SpdyRemoteCommand::close() { core_->endForStop(); }

void SpdyRemoteCommand::endForShutdown() { core_->endForShutdown("crisp.shutdown"); }

std::optional<StreamType> SpdyRemoteCommand::typeOf(uint32_t stream_id) const {
  for (size_t i = 0; i < stream_ids_.size(); ++i) {
    if (stream_ids_[i] == stream_id) {
      return static_cast<StreamType>(i);
    }
  }
  return std::nullopt;
}

bool SpdyRemoteCommand::onStreamOpen(uint32_t stream_id, const spdy::HeaderList& headers) {
  const std::string* value = spdy::findHeader(headers, "streamtype");
  const std::optional<StreamType> type =
      value != nullptr ? session::parseStreamType(*value) : std::nullopt;
  if (!type.has_value()) {
    // Accepted like the kubelet does, but never used or counted.
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                      "unexpected stream type \"{}\" on stream {}",
                      value != nullptr ? *value : std::string(), stream_id);
    countProtocolError("spdy.remotecommand.unknown_stream_type");
    return true;
  }
  const bool waiting = core_->waiting();
  if (!waiting || !expected_.contains(*type) || received_.contains(*type)) {
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "ignoring {} stream {}: {}",
                      session::streamTypeName(*type), stream_id,
                      !waiting                    ? "the session has started"
                      : received_.contains(*type) ? "duplicate"
                                                  : "not requested");
    countProtocolError("spdy.remotecommand.unexpected_stream");
    return true;
  }
  stream_ids_[static_cast<size_t>(*type)] = stream_id;
  received_.add(*type);
  CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_, "{} stream is {}",
                    session::streamTypeName(*type), stream_id);
  if (received_ == expected_) {
    creation_timer_->disable();
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "all streams open");
    // Start once the bytes already read are handled, so that a resize sent
    // right behind the last stream reaches startExec() as the initial size.
    core_->scheduleStart();
  }
  return true;
}

void SpdyRemoteCommand::onStreamData(uint32_t stream_id, Buffer& data) {
  const std::optional<StreamType> type = typeOf(stream_id);
  if (!type.has_value()) {
    data.drain(data.length());
    return;
  }
  switch (*type) {
    case StreamType::kStdin:
      core_->deliverStdin(data);
      return;
    case StreamType::kResize:
      core_->deliverResize(data, "stream");
      return;
    default:
      // Clients send nothing on error and output streams; drop it.
      data.drain(data.length());
      return;
  }
}

int SpdyRemoteCommand::onStreamDataPipe(uint32_t stream_id) {
  return typeOf(stream_id) == StreamType::kStdin ? core_->stdinPipe() : -1;
}

void SpdyRemoteCommand::onStreamDataPiped(uint32_t stream_id, size_t bytes) {
  if (typeOf(stream_id) == StreamType::kStdin) {
    core_->noteStdinPiped(bytes);
  }
}

void SpdyRemoteCommand::onStreamRemoteFin(uint32_t stream_id) {
  if (typeOf(stream_id) == StreamType::kStdin) {
    core_->closeStdin();
  }
}

void SpdyRemoteCommand::onStreamReset(uint32_t stream_id, spdy::RstStatus status) {
  const std::optional<StreamType> type = typeOf(stream_id);
  if (!type.has_value()) {
    return;
  }
  stream_ids_[static_cast<size_t>(*type)] = 0;
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "client reset the {} stream (status {})", session::streamTypeName(*type),
                    static_cast<uint32_t>(status));
  switch (*type) {
    case StreamType::kStdin:
      core_->closeStdin();
      return;
    case StreamType::kResize:
      return;
    default:
      core_->abandon(std::string("spdy.stream_reset: client reset the ") +
                     session::streamTypeName(*type) + " stream");
      return;
  }
}

void SpdyRemoteCommand::onOutputAboveHighWatermark() { core_->outputAboveHighWatermark(); }

void SpdyRemoteCommand::onOutputBelowLowWatermark() { core_->outputBelowLowWatermark(); }

void SpdyRemoteCommand::onConnectionClosing(SpdyCloseReason reason, const std::string& detail) {
  creation_timer_->disable();
  core_->connectionClosing(closeReasonName(reason), detail,
                           reason == SpdyCloseReason::kIdleTimeout);
}

void SpdyRemoteCommand::onConnectionClosed() {
  creation_timer_->disable();
  core_->connectionClosed();
  if (on_done_) {
    DoneCallback done = std::move(on_done_);
    on_done_ = nullptr;
    done(*this);
  }
}

bool SpdyRemoteCommand::onIdleTimeout() {
  if (core_->ended()) {
    return false;
  }
  // The client learns why on the error stream, then the connection closes as
  // after an exit (GOAWAY OK).
  core_->endIdle(config_.connection.idle_timeout, "spdy.idle_timeout");
  return true;
}

// RemoteCommandWire

void SpdyRemoteCommand::pauseReading(bool paused) { connection_->pauseReading(paused); }

bool SpdyRemoteCommand::acceptsOutput(StreamType type) const { return streamId(type) != 0; }

void SpdyRemoteCommand::sendOutput(StreamType type, Buffer& data) {
  connection_->sendData(streamId(type), data, false);
}

size_t SpdyRemoteCommand::sendOutputFromPipe(StreamType type, int pipe_fd, size_t limit) {
  return connection_->sendDataFromPipe(streamId(type), pipe_fd, limit);
}

void SpdyRemoteCommand::endWithStatus(const std::string& payload, bool ahead_of_output) {
  creation_timer_->disable();
  // A client returns once stdout, stderr and the error stream all reached
  // EOF, and reads the status last, whenever it arrived. Normally output goes
  // first, then the status. When crisp ends the session, the status overtakes
  // the output still queued, so that a slow reader cut off before the end
  // still learns why (over SPDY kubectl takes a lost connection for a clean
  // exit).
  if (const uint32_t id = streamId(StreamType::kError);
      ahead_of_output && id != 0 && connection_->sendDataAhead(id, payload, true)) {
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                      "status sent ahead of {} bytes of queued output",
                      connection_->queuedOutputBytes());
  }
  Buffer empty;
  if (const uint32_t id = streamId(StreamType::kStdout); id != 0) {
    connection_->sendData(id, empty, true);
  }
  if (const uint32_t id = streamId(StreamType::kStderr); id != 0) {
    connection_->sendData(id, empty, true);
  }
  if (const uint32_t id = streamId(StreamType::kError); id != 0) {
    connection_->sendData(id, payload, true);
  }
  connection_->close();
}

void SpdyRemoteCommand::endWithoutStatus(const std::string&, int) {
  creation_timer_->disable();
  connection_->close();
}

void SpdyRemoteCommand::onCreationTimeout() {
  if (!core_->waiting()) {
    return;
  }
  session::StreamSet missing = expected_;
  for (auto t : {StreamType::kError, StreamType::kStdin, StreamType::kStdout, StreamType::kStderr,
                 StreamType::kResize}) {
    if (received_.contains(t)) {
      missing.remove(t);
    }
  }
  CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                    "timed out waiting for client to create streams (missing {})",
                    missing.toString());
  core_->metrics().creation_timeouts.inc();
  core_->abandon("spdy.creation_timeout");
}

// SpdyUpgradeHandler

SpdyUpgradeHandler::SpdyUpgradeHandler(session::Runtime& runtime,
                                       const SpdyRemoteCommandConfig& config,
                                       UpgradeHandler* port_forward)
    : runtime_(runtime), config_(config), port_forward_(port_forward) {}

SpdyUpgradeHandler::~SpdyUpgradeHandler() = default;

void SpdyUpgradeHandler::onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) {
  if (!remoteCommandVersion(connection.protocol).has_value()) {
    if (port_forward_ != nullptr) {
      port_forward_->onUpgrade(dispatcher, std::move(connection));
      return;
    }
    CRISP_CONN_LOG(kStream, info, connection.connection_id,
                   "no handler for {}; closing the connection", protocolName(connection.protocol));
    discardUpgrade(dispatcher, std::move(connection.transport));
    return;
  }
  if (!std::holds_alternative<session::ExecSpec>(connection.stream_request.spec)) {
    CRISP_CONN_LOG(kStream, info, connection.connection_id,
                   "{} negotiated for a request that is not exec or attach; closing",
                   protocolName(connection.protocol));
    discardUpgrade(dispatcher, std::move(connection.transport));
    return;
  }
  sessions_
      .add(dispatcher, std::make_unique<SpdyRemoteCommand>(dispatcher, runtime_,
                                                           std::move(connection), config_,
                                                           sessions_.makeDoneCallback(dispatcher)))
      .start();
}

size_t SpdyUpgradeHandler::activeSessions(event::Dispatcher& dispatcher) {
  return sessions_.count(dispatcher);
}

void SpdyUpgradeHandler::closeAll(event::Dispatcher& dispatcher) { sessions_.closeAll(dispatcher); }

void SpdyUpgradeHandler::endAllForShutdown(event::Dispatcher& dispatcher) {
  sessions_.forEach(dispatcher, [](auto& session) { session.endForShutdown(); });
}

}  // namespace crisp::stream
