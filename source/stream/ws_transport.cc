#include "source/stream/ws_transport.h"

#include <algorithm>
#include <utility>

#include "source/common/logger.h"

namespace crisp::stream {

absl::StatusOr<std::unique_ptr<WsTransport>> WsTransport::create(event::Dispatcher& dispatcher,
                                                                 TransportPtr upgraded,
                                                                 uint64_t connection_id,
                                                                 const WsTransportConfig& config) {
  std::unique_ptr<WsTransport> transport(new WsTransport(dispatcher, connection_id, config));
  transport->peer_address_ = upgraded != nullptr ? upgraded->peerAddress() : std::string();
  absl::StatusOr<std::unique_ptr<WsConnection>> connection =
      WsConnection::create(dispatcher, std::move(upgraded), connection_id,
                           static_cast<WsConnectionCallbacks&>(*transport), config.connection);
  if (!connection.ok()) {
    // The failed connection closed `upgraded` and frees it later.
    return connection.status();
  }
  transport->connection_ = std::move(connection).value();
  return transport;
}

WsTransport::WsTransport(event::Dispatcher& dispatcher, uint64_t connection_id,
                         const WsTransportConfig& config)
    : dispatcher_(dispatcher), id_(connection_id), config_(config) {
  scheduled_ = std::make_unique<event::Timer>(dispatcher_, [this] { onScheduled(); });
}

WsTransport::~WsTransport() {
  scheduled_.reset();
  // Closes the socket at once, without callbacks; the socket object itself is
  // freed later by the dispatcher.
  connection_.reset();
}

void WsTransport::start() {
  if (closed_) {
    return;
  }
  if (started_) {
    // A new owner after a hand-over.
    pauseReading(false);
    schedule();
    return;
  }
  started_ = true;
  connection_->start();
  if (paused_) {
    connection_->pauseReading(true);
  }
  handOn();
  schedule();
}

void WsTransport::write(Buffer& data) {
  if (closed_ || write_shut_ || peer_ended_ || ws_ending_) {
    data.drain(data.length());
    return;
  }
  held_output_.move(data);
  handOn();
}

void WsTransport::pauseReading(bool paused) {
  if (closed_ || paused_ == paused) {
    return;
  }
  paused_ = paused;
  if (!started_) {
    return;
  }
  connection_->pauseReading(paused);
  if (!paused) {
    schedule();
  }
}

void WsTransport::unreadInput(Buffer& data) {
  if (closed_) {
    data.drain(data.length());
    return;
  }
  Buffer joined;
  joined.move(data);
  joined.move(input_);
  input_ = std::move(joined);
  if (started_ && !paused_) {
    schedule();
  }
}

void WsTransport::shutdownWrite() {
  if (closed_ || write_shut_) {
    return;
  }
  write_shut_ = true;
  handOn();
}

void WsTransport::close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  scheduled_->disable();
  input_.drain(input_.length());
  held_output_.drain(held_output_.length());
  if (connection_->open() && !close_started_) {
    close_started_ = true;
    // Called from inside the WebSocket's own callbacks too, so the WebSocket
    // is not destroyed here: it closes with a close frame, and at once when
    // this transport is destroyed.
    connection_->close(write_shut_ ? websocket::kCloseNormal : websocket::kCloseGoingAway);
  }
}

void WsTransport::handOn() {
  if (!started_ || closed_) {
    return;
  }
  const size_t before = held_output_.length();
  const size_t limit = std::max<size_t>(config_.max_message_bytes, 1);
  while (!held_output_.empty() && connection_->open() && !connection_->aboveHighWatermark()) {
    // Messages end where the owner's writes' segments end (a SPDY frame's
    // header, its payload), so that nothing is copied into them.
    Buffer message;
    message.move(held_output_, held_output_.wholeSegmentsLength(limit));
    connection_->sendMessage(websocket::MessageType::kBinary, message);
  }
  if (held_output_.length() < before) {
    // Like a socket that wrote: the owner hears of the progress from the loop
    // (a SPDY connection that is closing waits for it to see its queue empty).
    drained_pending_ = true;
    schedule();
  }
  if (write_shut_ && held_output_.empty() && !close_started_ && connection_->open()) {
    close_started_ = true;
    CRISP_CONN_LOG(kStream, debug, id_, "tunnel: our side ended; closing the WebSocket");
    connection_->close(websocket::kCloseNormal);
  }
}

void WsTransport::schedule() {
  if (!closed_ && !scheduled_->enabled()) {
    scheduled_->enable(std::chrono::milliseconds(0));
  }
}

void WsTransport::onScheduled() {
  if (closed_ || callbacks_ == nullptr) {
    return;
  }
  if (drained_pending_) {
    drained_pending_ = false;
    callbacks_->onTransportDrained();
  }
  deliver();
}

void WsTransport::deliver() {
  // Every condition is checked again after each callback: the owner may
  // pause, close or hand the transport over from inside it.
  while (!closed_ && started_ && !paused_ && callbacks_ != nullptr && !input_.empty()) {
    Buffer chunk;
    chunk.move(input_);
    callbacks_->onTransportData(chunk);
    chunk.drain(chunk.length());
  }
  if (!closed_ && started_ && !paused_ && callbacks_ != nullptr && input_.empty() && peer_ended_ &&
      !eof_delivered_) {
    eof_delivered_ = true;
    callbacks_->onTransportEof();
  }
}

// WsConnectionCallbacks

void WsTransport::onMessage(websocket::MessageType type, Buffer& payload) {
  if (closed_) {
    payload.drain(payload.length());
    return;
  }
  if (ws_ending_) {
    payload.drain(payload.length());
    return;
  }
  if (type != websocket::MessageType::kBinary) {
    payload.drain(payload.length());
    CRISP_CONN_LOG(kStream, info, id_, "tunnel: a text message is not SPDY; closing");
    close_started_ = true;
    wsEnding("ws.tunnel.text_message: the SPDY tunnel carries binary messages only");
    input_.drain(input_.length());
    connection_->close(websocket::kCloseUnsupportedData, "ws.tunnel.text_message");
    return;
  }
  input_.move(payload);
  deliver();
}

void WsTransport::onOutputBelowLowWatermark() { handOn(); }

void WsTransport::onConnectionClosing(WsCloseReason reason, const std::string& detail) {
  if (closed_) {
    return;
  }
  CRISP_CONN_LOG(kStream, debug, id_, "tunnel: the WebSocket ends ({}): {}",
                 closeReasonName(reason), detail);
  switch (reason) {
    case WsCloseReason::kPeerClose:
    case WsCloseReason::kPeerEof:
      wsEnding(std::nullopt);
      return;
    case WsCloseReason::kLocal:
    case WsCloseReason::kTransportError:
    case WsCloseReason::kProtocolError:
    case WsCloseReason::kIdleTimeout:
      wsEnding(std::string(closeReasonName(reason)) + ": " + detail);
      return;
  }
}

void WsTransport::onConnectionClosed() {
  if (closed_) {
    return;
  }
  // Only now is the owner told: had it closed (and freed) the transport at
  // once, the close frame the WebSocket still had to send would be lost.
  if (end_error_.has_value()) {
    fail(*end_error_);
    return;
  }
  peerEnded();
}

void WsTransport::wsEnding(std::optional<std::string> error) {
  if (ws_ending_) {
    return;
  }
  ws_ending_ = true;
  end_error_ = std::move(error);
  if (!held_output_.empty()) {
    // A closing WebSocket sends no more messages.
    CRISP_CONN_LOG(kStream, debug, id_, "tunnel: dropping {} bytes the client will not read",
                   held_output_.length());
    held_output_.drain(held_output_.length());
    drained_pending_ = true;
    schedule();
  }
}

void WsTransport::peerEnded() {
  if (peer_ended_) {
    return;
  }
  peer_ended_ = true;
  if (!held_output_.empty()) {
    CRISP_CONN_LOG(kStream, debug, id_, "tunnel: dropping {} bytes the client will not read",
                   held_output_.length());
    held_output_.drain(held_output_.length());
    drained_pending_ = true;
  }
  // From a WebSocket callback, which never runs inside a call of the owner.
  if (drained_pending_ && callbacks_ != nullptr && started_) {
    drained_pending_ = false;
    callbacks_->onTransportDrained();
  }
  deliver();
}

void WsTransport::fail(const std::string& detail) {
  if (closed_) {
    return;
  }
  closed_ = true;
  scheduled_->disable();
  input_.drain(input_.length());
  held_output_.drain(held_output_.length());
  if (callbacks_ != nullptr) {
    callbacks_->onTransportError(detail);
  }
}

}  // namespace crisp::stream
