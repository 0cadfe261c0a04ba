#include "source/stream/ws_connection.h"

#include <utility>

#include "source/common/logger.h"
#include "source/stream/stream_limits.h"

namespace crisp::stream {
namespace {

using websocket::MessageType;

}  // namespace

const char* closeReasonName(WsCloseReason reason) {
  switch (reason) {
    case WsCloseReason::kLocal:
      return "local";
    case WsCloseReason::kPeerClose:
      return "ws.peer_close";
    case WsCloseReason::kPeerEof:
      return "ws.peer_eof";
    case WsCloseReason::kTransportError:
      return "ws.transport_error";
    case WsCloseReason::kProtocolError:
      return "ws.protocol_error";
    case WsCloseReason::kIdleTimeout:
      return "ws.idle_timeout";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<WsConnection>> WsConnection::create(
    event::Dispatcher& dispatcher, std::unique_ptr<Transport> transport, uint64_t connection_id,
    WsConnectionCallbacks& callbacks, const WsConnectionConfig& config) {
  std::unique_ptr<WsConnection> connection(
      new WsConnection(dispatcher, std::move(transport), connection_id, callbacks, config));
  websocket::CodecOptions options;
  options.role = websocket::Role::kServer;
  options.max_message_bytes = config.max_message_bytes;
  absl::StatusOr<std::unique_ptr<websocket::Codec>> codec =
      websocket::Codec::create(options, *connection);
  if (!codec.ok()) {
    return codec.status();
  }
  connection->codec_ = std::move(codec).value();
  return connection;
}

WsConnection::WsConnection(event::Dispatcher& dispatcher, std::unique_ptr<Transport> transport,
                           uint64_t connection_id, WsConnectionCallbacks& callbacks,
                           const WsConnectionConfig& config)
    : dispatcher_(dispatcher),
      transport_(std::move(transport)),
      id_(connection_id),
      callbacks_(callbacks),
      config_(config) {
  transport_->setCallbacks(*this);
  idle_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { onIdleTimeout(); });
  keepalive_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { onKeepalive(); });
  drain_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] {
    CRISP_CONN_LOG(kStream, info, id_,
                   "client stopped reading while the connection closed; dropping {} bytes",
                   queuedOutputBytes());
    closeNow();
  });
  close_wait_ = std::make_unique<CloseLinger>(
      dispatcher_, config_.close_timeout, config_.drain_timeout, config_.linger_limit,
      [this](size_t pending) {
        if (state_ != State::kClosing) {
          return;
        }
        if (pending > 0) {
          CRISP_CONN_LOG(kStream, info, id_,
                         "client stopped reading while the connection closed; dropping {} bytes",
                         queuedOutputBytes() + pending);
          closeNow();
          return;
        }
        CRISP_CONN_LOG(kStream, debug, id_, "no close frame from the client");
        beginFlush();
      });
  linger_ = std::make_unique<CloseLinger>(
      dispatcher_, config_.linger_timeout, config_.drain_timeout, config_.linger_limit,
      [this](size_t unacknowledged) {
        if (unacknowledged > 0) {
          CRISP_CONN_LOG(kStream, info, id_,
                         "client stopped reading while the connection closed; {} bytes it did "
                         "not receive are dropped",
                         unacknowledged);
        }
        closeNow();
      });
}

WsConnection::~WsConnection() {
  idle_timer_.reset();
  keepalive_timer_.reset();
  drain_timer_.reset();
  close_wait_.reset();
  linger_.reset();
  if (transport_ != nullptr) {
    if (state_ != State::kClosed) {
      transport_->close();
    }
    // Not destroyed here: this may run inside one of the transport's own
    // callbacks (a session refused while the HTTP layer's read is on the stack).
    dispatcher_.deferredDelete(std::move(transport_));
  }
}

void WsConnection::start() {
  if (state_ != State::kIdle) {
    return;
  }
  state_ = State::kOpen;
  // The client's close ends the connection whatever input is left unread.
  transport_->failOnPeerCloseWhilePaused();
  transport_->start();
  touchIdle();
  if (config_.keepalive_interval.count() > 0) {
    keepalive_timer_->enable(config_.keepalive_interval);
  }
}

void WsConnection::startIfIdle() {
  if (state_ == State::kIdle) {
    start();
  }
}

bool WsConnection::sendMessage(MessageType type, std::string_view payload) {
  Buffer buffer;
  buffer.add(payload);
  return sendMessage(type, buffer);
}

bool WsConnection::sendMessage(MessageType type, Buffer& payload) {
  return send(type, payload, false);
}

bool WsConnection::sendMessageAhead(MessageType type, Buffer& payload) {
  return send(type, payload, true);
}

bool WsConnection::send(MessageType type, Buffer& payload, bool ahead) {
  if (state_ != State::kOpen) {
    payload.drain(payload.length());
    return false;
  }
  // Whatever the codec holds belongs before this message.
  takeCodecOutput(false);
  const absl::Status status = codec_->sendMessage(type, payload);
  if (!status.ok()) {
    payload.drain(payload.length());
    CRISP_CONN_LOG(kStream, debug, id_, "message not sent: {}", std::string(status.message()));
    return false;
  }
  ++messages_sent_;
  touchIdle();
  takeCodecOutput(ahead);
  pumpOutput();
  checkWatermarks();
  updateReadPause();
  return true;
}

bool WsConnection::canSendFromPipe() const {
  return state_ == State::kOpen && control_.empty() && data_.empty() && codec_->output().empty() &&
         transport_->canWriteFromPipe() && transport_->queuedBytes() == 0;
}

size_t WsConnection::sendMessageFromPipe(MessageType type, std::string_view prefix, int pipe_fd,
                                         size_t limit, size_t max_payload) {
  if (!canSendFromPipe()) {
    return 0;
  }
  const PipeFrames taken = writeFramesFromPipe(
      *transport_, pipe_fd, limit, max_payload, [&](size_t length, Buffer& header) {
        if (!codec_->sendMessageHeader(type, prefix.size() + length).ok()) {
          return false;
        }
        header.move(codec_->output());
        header.add(prefix);
        return true;
      });
  if (taken.frames > 0) {
    messages_sent_ += taken.frames;
    touchIdle();
    checkWatermarks();
  }
  return taken.bytes;
}

size_t WsConnection::queuedOutputBytes() const {
  const size_t in_transport =
      state_ != State::kClosed && transport_ != nullptr ? transport_->queuedBytes() : 0;
  return control_.length() + data_.length() + in_transport;
}

void WsConnection::close(uint16_t code, std::string_view reason) {
  startIfIdle();
  if (state_ != State::kOpen) {
    return;
  }
  local_close_ = true;
  CRISP_CONN_LOG(kStream, debug, id_, "closing with {}", code);
  beginClose(code, reason);
}

void WsConnection::pauseReading(bool paused) {
  if (owner_paused_ == paused) {
    return;
  }
  owner_paused_ = paused;
  CRISP_CONN_LOG(kStream, trace, id_, "{} reading", paused ? "pausing" : "resuming");
  updateReadPause();
}

// TransportCallbacks

void WsConnection::onTransportData(Buffer& data) {
  if (state_ != State::kOpen && state_ != State::kClosing) {
    // Flushing: the handshake is over; only the client's EOF matters now,
    // and that it is still there.
    linger_->noteProgress();
    data.drain(data.length());
    return;
  }
  if (state_ == State::kClosing) {
    // A sign of life while we wait for the client's close frame: a slow
    // reader behind a proxy still pings.
    close_wait_->noteProgress();
  }
  input_.move(data);
  const absl::Status status = codec_->dispatch(input_);
  // The callbacks inside may have closed the connection; the codec's
  // replies (pongs, close) still go out in order.
  if (state_ == State::kClosed) {
    return;
  }
  writeOutput();
  if (!status.ok()) {
    input_.drain(input_.length());
    if (state_ == State::kFlushing) {
      return;
    }
    CRISP_CONN_LOG(kStream, info, id_, "closing on a WebSocket protocol error: {}",
                   std::string(status.message()));
    if (const auto limit = limitOfCodecError(status)) {
      countLimitHit(*limit);
    }
    countProtocolError(status);
    beginFlush();
    notifyClosing(WsCloseReason::kProtocolError, std::string(status.message()));
    return;
  }
  if (codec_->closeReceived() && (state_ == State::kOpen || state_ == State::kClosing)) {
    const uint16_t code = codec_->closeCodeReceived();
    CRISP_CONN_LOG(kStream, debug, id_, "client sent close {}", code);
    beginFlush();
    notifyClosing(WsCloseReason::kPeerClose, "client sent close " + std::to_string(code));
  }
}

void WsConnection::onTransportEof() {
  peer_eof_ = true;
  switch (state_) {
    case State::kOpen:
      // The client is gone without a close frame; nothing we send is read.
      state_ = State::kFlushing;
      notifyClosing(WsCloseReason::kPeerEof, "client closed the connection");
      closeNow();
      return;
    case State::kClosing:
      beginFlush();
      return;
    case State::kFlushing:
      if (outputEmpty()) {
        closeNow();
      }
      return;
    case State::kIdle:
    case State::kClosed:
      return;
  }
}

void WsConnection::onTransportDrained() {
  if (state_ == State::kClosed) {
    return;
  }
  pumpOutput();
  checkWatermarks();
  updateReadPause();
  if (state_ == State::kClosing) {
    close_wait_->noteProgress();
    return;
  }
  if (state_ != State::kFlushing) {
    return;
  }
  noteCloseProgress();
  if (outputEmpty()) {
    drain_timer_->disable();
    if (peer_eof_) {
      closeNow();
      return;
    }
    if (!linger_->active()) {
      linger_->start(*transport_);
    }
    return;
  }
  drain_timer_->enable(config_.drain_timeout);
}

void WsConnection::onTransportError(const std::string& detail) {
  if (state_ == State::kClosed) {
    return;
  }
  CRISP_CONN_LOG(kStream, debug, id_, "transport failed: {}", detail);
  if (state_ == State::kOpen) {
    state_ = State::kFlushing;
    notifyClosing(WsCloseReason::kTransportError, detail);
  }
  closeNow();
}

// websocket::CodecCallbacks

void WsConnection::onMessage(MessageType type, Buffer& payload) {
  if (state_ != State::kOpen) {
    // After our close frame nothing the client says matters any more.
    return;
  }
  ++messages_received_;
  touchIdle();
  callbacks_.onMessage(type, payload);
}

void WsConnection::onPing(std::string_view /*payload*/) {
  // The codec has just written the pong: it goes ahead of the queued
  // messages (everything written before it was taken already).
  takeCodecOutput(true);
  ++pings_received_;
  clientPingCounter("websocket").inc();
  if (state_ == State::kOpen) {
    touchIdle();
  }
}

void WsConnection::onPong(std::string_view /*payload*/) { ++pongs_received_; }

void WsConnection::onClose(uint16_t /*code*/, std::string_view /*reason*/) {
  // Handled after dispatch() returns, once the reply is in the output.
}

// Internals

void WsConnection::takeCodecOutput(bool ahead) {
  Buffer& out = codec_->output();
  if (out.empty()) {
    return;
  }
  if (ahead) {
    control_.move(out);
    return;
  }
  data_unit_lengths_.push_back(out.length());
  data_.move(out);
}

void WsConnection::pumpOutput() {
  if (state_ == State::kIdle || state_ == State::kClosed || write_shut_) {
    return;
  }
  Buffer batch;
  size_t queued = transport_->queuedBytes() + control_.length();
  // Pongs and pings are small and go whole, ahead of every message not yet
  // handed over.
  batch.move(control_);
  while (!data_unit_lengths_.empty()) {
    const size_t next = data_unit_lengths_.front();
    if (queued > 0 && queued + next > config_.transport_queue_bytes) {
      break;
    }
    batch.move(data_, next);
    queued += next;
    data_unit_lengths_.pop_front();
  }
  if (!batch.empty()) {
    transport_->write(batch);
  }
  if (state_ == State::kFlushing && data_unit_lengths_.empty() && control_.empty()) {
    // Every frame is with the transport, which writes them before the FIN.
    write_shut_ = true;
    transport_->shutdownWrite();
  }
}

bool WsConnection::outputEmpty() const {
  return write_shut_ && transport_->queuedBytes() == 0;
}

void WsConnection::writeOutput() {
  if (state_ == State::kClosed) {
    return;
  }
  takeCodecOutput(false);
  pumpOutput();
  checkWatermarks();
  updateReadPause();
}

void WsConnection::checkWatermarks() {
  if (state_ != State::kOpen) {
    return;
  }
  const size_t queued = queuedOutputBytes();
  // A spliced payload the socket did not take whole is still in the owner's
  // pipe, which must not be read until the socket took it.
  const bool pipe_pending = transport_->pipeBytesPending() > 0;
  if (!above_high_watermark_ && (queued > config_.output_high_watermark || pipe_pending)) {
    above_high_watermark_ = true;
    CRISP_CONN_LOG(kStream, trace, id_, "output above high watermark: {} bytes queued", queued);
    callbacks_.onOutputAboveHighWatermark();
  } else if (above_high_watermark_ && queued <= config_.output_low_watermark && !pipe_pending) {
    above_high_watermark_ = false;
    CRISP_CONN_LOG(kStream, trace, id_, "output below low watermark: {} bytes queued", queued);
    callbacks_.onOutputBelowLowWatermark();
  }
}

void WsConnection::updateReadPause() {
  if (state_ == State::kClosed) {
    return;
  }
  // The messages in the transport are at most transport_queue_bytes plus
  // one unit, so this grows past the limit only with pongs the client makes
  // us queue and does not read.
  const size_t queued = transport_->queuedBytes() + control_.length();
  if (!output_full_ && queued > config_.max_queued_output) {
    output_full_ = true;
    CRISP_CONN_LOG(kStream, debug, id_, "{} bytes queued for the client; reading stops", queued);
  } else if (output_full_ && queued <= config_.max_queued_output / 2) {
    output_full_ = false;
  }
  // While closing, the client's close frame and EOF must still be seen; a
  // pause of the owner no longer matters then.
  const bool paused = (state_ == State::kOpen && owner_paused_) ||
                      ((state_ == State::kOpen || state_ == State::kClosing) && output_full_);
  if (paused != transport_paused_) {
    transport_paused_ = paused;
    transport_->pauseReading(paused);
  }
}

void WsConnection::touchIdle() {
  if (state_ == State::kOpen) {
    idle_timer_->enable(config_.idle_timeout);
  }
}

void WsConnection::onIdleTimeout() {
  if (state_ != State::kOpen) {
    return;
  }
  CRISP_CONN_LOG(kStream, info, id_, "closing: no message for {} ms", config_.idle_timeout.count());
  if (callbacks_.onIdleTimeout()) {
    return;
  }
  beginClose(websocket::kCloseGoingAway, "ws.idle_timeout");
  notifyClosing(WsCloseReason::kIdleTimeout, "idle timeout");
}

void WsConnection::onKeepalive() {
  if (state_ != State::kOpen) {
    return;
  }
  takeCodecOutput(false);
  if (codec_->sendPing({}).ok()) {
    ++pings_sent_;
    takeCodecOutput(true);
    pumpOutput();
    updateReadPause();
  }
  if (state_ == State::kOpen) {
    keepalive_timer_->enable(config_.keepalive_interval);
  }
}

void WsConnection::beginClose(uint16_t code, std::string_view reason) {
  if (state_ != State::kOpen) {
    return;
  }
  if (!websocket::isSendableCloseCode(code)) {
    code = websocket::kCloseInternalError;
  }
  if (reason.size() > websocket::kMaxCloseReason) {
    reason = reason.substr(0, websocket::kMaxCloseReason);
  }
  state_ = State::kClosing;
  idle_timer_->disable();
  keepalive_timer_->disable();
  takeCodecOutput(false);
  const absl::Status status = codec_->sendClose(code, reason);
  writeOutput();
  if (!status.ok()) {
    // The codec failed earlier; there is no handshake to wait for.
    beginFlush();
    return;
  }
  close_wait_->start(*transport_);
}

void WsConnection::beginFlush() {
  if (state_ == State::kFlushing || state_ == State::kClosed) {
    return;
  }
  state_ = State::kFlushing;
  idle_timer_->disable();
  keepalive_timer_->disable();
  close_wait_->cancel();
  input_.drain(input_.length());
  takeCodecOutput(false);
  pumpOutput();
  updateReadPause();
  if (outputEmpty()) {
    if (peer_eof_) {
      closeNow();
      return;
    }
    linger_->start(*transport_);
    return;
  }
  drain_timer_->enable(config_.drain_timeout);
}

void WsConnection::notifyClosing(WsCloseReason reason, const std::string& detail) {
  if (local_close_ || notified_closing_) {
    return;
  }
  notified_closing_ = true;
  callbacks_.onConnectionClosing(reason, detail);
}

void WsConnection::closeNow() {
  if (state_ == State::kClosed) {
    return;
  }
  const size_t dropped = queuedOutputBytes();
  state_ = State::kClosed;
  idle_timer_->disable();
  keepalive_timer_->disable();
  drain_timer_->disable();
  close_wait_->cancel();
  linger_->cancel();
  transport_->close();
  input_.drain(input_.length());
  control_.drain(control_.length());
  data_.drain(data_.length());
  data_unit_lengths_.clear();
  CRISP_CONN_LOG(kStream, debug, id_,
                 "WebSocket closed ({} messages in, {} out, close sent {}, received {}, {} bytes "
                 "dropped)",
                 messages_received_, messages_sent_, codec_->closeCodeSent(),
                 codec_->closeCodeReceived(), dropped);
  callbacks_.onConnectionClosed();
}

}  // namespace crisp::stream
