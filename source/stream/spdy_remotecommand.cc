#include "source/stream/spdy_remotecommand.h"

#include <utility>
#include <variant>
#include <vector>

#include "source/common/logger.h"
#include "source/stream/stream_limits.h"

namespace crisp::stream {
namespace {

using session::ExecProcess;
using session::ExitStatus;
using session::StreamType;

session::ExecSpec execSpecOf(const UpgradedConnection& upgraded) {
  if (const auto* spec = std::get_if<session::ExecSpec>(&upgraded.stream_request.spec)) {
    return *spec;
  }
  return session::ExecSpec{};
}

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
      runtime_(runtime),
      config_(config),
      on_done_(std::move(on_done)),
      connection_id_(upgraded.connection_id != 0 ? upgraded.connection_id : log::nextId()),
      session_id_(log::nextId()),
      version_(
          remoteCommandVersion(upgraded.protocol).value_or(session::RemoteCommandVersion::kV4)),
      protocol_name_(protocolName(upgraded.protocol)),
      spec_(execSpecOf(upgraded)),
      expected_(session::expectedStreams(version_, spec_)),
      metrics_(session::SessionMetrics::get()),
      active_gauge_(metrics_.sessions_active.gauge(
          {session::operationName(spec_.operation), protocol_name_})) {
  connection_ = std::make_unique<SpdyConnection>(
      dispatcher_, std::move(upgraded.transport), connection_id_,
      static_cast<SpdyConnectionCallbacks&>(*this), config_.connection);
  creation_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { onCreationTimeout(); });
  start_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { startExec(); });
}

SpdyRemoteCommand::~SpdyRemoteCommand() {
  creation_timer_.reset();
  start_timer_.reset();
  process_.reset();
  connection_.reset();
  if (counted_active_) {
    active_gauge_.dec();
  }
}

void SpdyRemoteCommand::start() {
  metrics_.sessions_total.counter({session::operationName(spec_.operation), protocol_name_}).inc();
  active_gauge_.inc();
  counted_active_ = true;
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "{} session over {} for container {}: waiting for streams {}",
                    session::operationName(spec_.operation), protocol_name_, spec_.container_id,
                    expected_.toString());
  creation_timer_->enable(config_.stream_creation_timeout);
  connection_->start();
}

void SpdyRemoteCommand::close() {
  // A started command gets a status saying why it ended: without one, a
  // client reads the closed streams as a clean exit (code 0).
  if (state_ == State::kStarting || state_ == State::kRunning) {
    finish(ExitStatus::error(session::kServerStoppingMessage));
    return;
  }
  abandon("closed by the server");
}

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
  if (state_ != State::kWaitingForStreams || !expected_.contains(*type) ||
      received_.contains(*type)) {
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "ignoring {} stream {}: {}",
                      session::streamTypeName(*type), stream_id,
                      state_ != State::kWaitingForStreams ? "the session has started"
                      : received_.contains(*type)         ? "duplicate"
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
    // Start once the bytes already read are handled, so that a resize sent
    // right behind the last stream reaches startExec() as the initial size.
    start_timer_->enable(std::chrono::milliseconds(0));
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
      deliverStdin(data);
      return;
    case StreamType::kResize: {
      const size_t len = data.length();
      const auto* bytes = reinterpret_cast<const char*>(data.linearize(len));
      const absl::Status status =
          resize_decoder_.feed(std::string_view(bytes, len), [this](session::TerminalSize size) {
            if (state_ == State::kRunning && process_ != nullptr) {
              process_->resize(size);
            } else if (state_ == State::kWaitingForStreams || state_ == State::kStarting) {
              latest_size_ = size;
            }
          });
      data.drain(len);
      if (!status.ok()) {
        CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                          "ignoring the resize stream from now on: {}", status.ToString());
      }
      return;
    }
    default:
      // Clients send nothing on error and output streams; drop it.
      data.drain(data.length());
      return;
  }
}

void SpdyRemoteCommand::deliverStdin(Buffer& data) {
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
    case State::kWaitingForStreams:
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

void SpdyRemoteCommand::closeStdin() {
  if (stdin_eof_) {
    return;
  }
  stdin_eof_ = true;
  if (state_ == State::kRunning && process_ != nullptr) {
    process_->closeStdin();
  }
  // Otherwise startExec() closes it after writing the early stdin.
}

void SpdyRemoteCommand::onStreamRemoteFin(uint32_t stream_id) {
  if (typeOf(stream_id) == StreamType::kStdin) {
    closeStdin();
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
      closeStdin();
      return;
    case StreamType::kResize:
      return;
    default:
      abandon(std::string("client reset the ") + session::streamTypeName(*type) + " stream");
      return;
  }
}

void SpdyRemoteCommand::onOutputAboveHighWatermark() {
  output_paused_ = true;
  if (process_ != nullptr) {
    process_->pauseOutput(true);
  }
}

void SpdyRemoteCommand::onOutputBelowLowWatermark() {
  output_paused_ = false;
  if (process_ != nullptr) {
    process_->pauseOutput(false);
  }
}

void SpdyRemoteCommand::onConnectionClosing(SpdyCloseReason reason, const std::string& detail) {
  if (reason == SpdyCloseReason::kIdleTimeout) {
    metrics_.idle_timeouts.inc();
  }
  if (state_ == State::kFinished || state_ == State::kDone) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "connection ended ({}): {}; ending the {}", closeReasonName(reason), detail,
                    session::operationName(spec_.operation));
  state_ = State::kFinished;
  creation_timer_->disable();
  start_timer_->disable();
  releaseProcess();
}

void SpdyRemoteCommand::onConnectionClosed() {
  state_ = State::kDone;
  creation_timer_->disable();
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

void SpdyRemoteCommand::onStdout(Buffer& data) { sendOutput(StreamType::kStdout, data); }

void SpdyRemoteCommand::onStderr(Buffer& data) { sendOutput(StreamType::kStderr, data); }

void SpdyRemoteCommand::sendOutput(StreamType type, Buffer& data) {
  const uint32_t stream_id = streamId(type);
  if ((state_ != State::kRunning && state_ != State::kStarting) || stream_id == 0) {
    data.drain(data.length());
    return;
  }
  metrics_.bytes_out.inc(data.length());
  connection_->sendData(stream_id, data, false);
}

void SpdyRemoteCommand::onExit(const ExitStatus& status) { finish(status); }

void SpdyRemoteCommand::onStdinDrained() {
  if (stdin_paused_) {
    stdin_paused_ = false;
    connection_->pauseReading(false);
  }
}

void SpdyRemoteCommand::startExec() {
  if (state_ != State::kWaitingForStreams) {
    return;
  }
  if (!spec_.stdin && !spec_.stdout && !spec_.stderr) {
    finish(ExitStatus::error("one of stdin, stdout, or stderr must be set"));
    return;
  }
  state_ = State::kStarting;
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "all streams open; starting (tty={}, initial size {})", spec_.tty,
                    latest_size_.has_value() ? std::to_string(latest_size_->width) + "x" +
                                                   std::to_string(latest_size_->height)
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

void SpdyRemoteCommand::onCreationTimeout() {
  if (state_ != State::kWaitingForStreams) {
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
  metrics_.creation_timeouts.inc();
  state_ = State::kFinished;
  connection_->close();
}

void SpdyRemoteCommand::finish(const ExitStatus& status) {
  if (state_ != State::kWaitingForStreams && state_ != State::kStarting &&
      state_ != State::kRunning) {
    return;
  }
  state_ = State::kFinished;
  creation_timer_->disable();
  start_timer_->disable();
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "{} ended: {} {} {}",
                    session::operationName(spec_.operation), exitKindName(status.kind),
                    status.exit_code, status.message);
  // Output first, then the status: a client returns once stdout, stderr and
  // the error stream all reached EOF, and reads the status last.
  Buffer empty;
  if (const uint32_t id = streamId(StreamType::kStdout); id != 0) {
    connection_->sendData(id, empty, true);
  }
  if (const uint32_t id = streamId(StreamType::kStderr); id != 0) {
    connection_->sendData(id, empty, true);
  }
  if (const uint32_t id = streamId(StreamType::kError); id != 0) {
    const std::string payload = session::errorStreamPayload(version_, spec_, status);
    connection_->sendData(id, payload, true);
  }
  releaseProcess();
  connection_->close();
}

void SpdyRemoteCommand::abandon(const std::string& why) {
  if (state_ == State::kFinished || state_ == State::kDone) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "ending the session: {}", why);
  state_ = State::kFinished;
  creation_timer_->disable();
  start_timer_->disable();
  releaseProcess();
  connection_->close();
}

void SpdyRemoteCommand::releaseProcess() {
  if (process_ != nullptr) {
    // Deferred: this may run inside one of the process's own callbacks.
    dispatcher_.deferredDelete(std::move(process_));
  }
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

}  // namespace crisp::stream
