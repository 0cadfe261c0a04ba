#include "source/stream/spdy_connection.h"

#include <algorithm>

#include "source/common/logger.h"
#include "source/stream/stream_limits.h"

namespace crisp::stream {
namespace {

// The header every SPDY frame starts with.
constexpr size_t kFrameHeaderBytes = 8;
// DATA payloads shorter than this are copied even where they could be
// spliced: splicing one costs a read of its header alone and at least one
// splice(2), more calls than the copy saves.
constexpr uint32_t kMinSplicedPayloadBytes = 16 * 1024;

}  // namespace

const char* closeReasonName(SpdyCloseReason reason) {
  switch (reason) {
    case SpdyCloseReason::kLocal:
      return "local";
    case SpdyCloseReason::kPeerClosed:
      return "spdy.peer_closed";
    case SpdyCloseReason::kSocketError:
      return "spdy.socket_error";
    case SpdyCloseReason::kProtocolError:
      return "spdy.protocol_error";
    case SpdyCloseReason::kIdleTimeout:
      return "spdy.idle_timeout";
  }
  return "unknown";
}

SpdyConnection::SpdyConnection(event::Dispatcher& dispatcher, TransportPtr transport,
                               uint64_t connection_id, SpdyConnectionCallbacks& callbacks,
                               const SpdyConnectionConfig& config)
    : dispatcher_(dispatcher),
      transport_(std::move(transport)),
      id_(connection_id),
      callbacks_(callbacks),
      config_(config),
      codec_(config.role, *this, config.codec_limits) {
  idle_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { onIdleTimeout(); });
  drain_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] {
    CRISP_CONN_LOG(kSpdy, info, id_,
                   "{} stopped reading while the connection closed; dropping {} bytes",
                   peerName(), queuedOutputBytes());
    closeTransport();
  });
  linger_ = std::make_unique<CloseLinger>(
      dispatcher_, config_.linger_timeout, config_.drain_timeout, config_.linger_limit,
      [this](size_t unacknowledged) {
        if (unacknowledged > 0) {
          CRISP_CONN_LOG(kSpdy, info, id_,
                         "{} stopped reading while the connection closed; {} bytes it did not "
                         "receive are dropped",
                         peerName(), unacknowledged);
        } else {
          CRISP_CONN_LOG(kSpdy, debug, id_, "{} did not close its side; closing", peerName());
        }
        closeTransport();
      });
}

SpdyConnection::~SpdyConnection() {
  // Destroying the transport closes it without callbacks.
  transport_.reset();
}

void SpdyConnection::attachTransport() {
  state_ = State::kOpen;
  transport_->setCallbacks(*this);
  if (config_.role == spdy::Codec::Role::kServer) {
    // The client's close ends the connection whatever input is left unread.
    // (A runtime's close, as our peer in client role, follows its last output,
    // which must still be read.)
    transport_->failOnPeerCloseWhilePaused();
  }
  transport_->start();
  if (read_paused_) {
    transport_->pauseReading(true);
  }
}

void SpdyConnection::updateReadPause() {
  if (state_ == State::kLingering) {
    // Nothing is answered any more; reading only looks for signs of life and
    // the peer's close.
    transport_->pauseReading(false);
    return;
  }
  if (state_ != State::kOpen && state_ != State::kClosing) {
    return;
  }
  // The DATA in the transport is at most transport_queue_bytes plus one
  // frame, so this grows past the limit only with replies the peer makes us
  // queue and does not read.
  const size_t unread = transport_->queuedBytes() + control_.length();
  if (!backlog_paused_ && unread > config_.max_unread_output_bytes) {
    backlog_paused_ = true;
    CRISP_CONN_LOG(kSpdy, debug, id_, "client leaves {} bytes unread; pausing reading", unread);
  } else if (backlog_paused_ && unread <= config_.max_unread_output_bytes / 2) {
    backlog_paused_ = false;
  }
  // While closing, the owner's pause no longer matters: the peer's PINGs and
  // its close must still be seen.
  transport_->pauseReading((state_ == State::kOpen && read_paused_) || backlog_paused_);
}

void SpdyConnection::start() {
  if (state_ != State::kIdle) {
    return;
  }
  attachTransport();
  touchIdle();
}

size_t SpdyConnection::queuedOutputBytes() const {
  const size_t in_transport =
      state_ != State::kClosed && transport_ != nullptr ? transport_->queuedBytes() : 0;
  return control_.length() + data_.length() + in_transport;
}

uint64_t SpdyConnection::bytesWritten() const {
  if (state_ == State::kClosed || transport_ == nullptr) {
    return bytes_written_;
  }
  return bytes_handed_ - transport_->queuedBytes();
}

bool SpdyConnection::sendData(uint32_t stream_id, std::string_view data, bool fin) {
  Buffer buffer;
  buffer.add(data);
  return sendData(stream_id, buffer, fin);
}

bool SpdyConnection::sendDataAhead(uint32_t stream_id, std::string_view data, bool fin) {
  auto it = streams_.find(stream_id);
  if (state_ != State::kOpen || it == streams_.end() || it->second.local_fin ||
      data.size() > config_.max_data_frame_bytes) {
    return false;
  }
  Buffer payload;
  payload.add(data);
  Buffer frame;
  spdy::Codec::encodeData(frame, stream_id, payload, fin);
  queueControl(frame);
  if (fin) {
    it->second.local_fin = true;
    removeIfDone(it);
  }
  pumpOutput();
  checkWatermarks();
  return true;
}

bool SpdyConnection::sendData(uint32_t stream_id, Buffer& data, bool fin) {
  auto it = streams_.find(stream_id);
  if (state_ != State::kOpen || it == streams_.end() || it->second.local_fin) {
    data.drain(data.length());
    return false;
  }
  Buffer frame;
  if (data.empty()) {
    if (!fin) {
      return true;
    }
    spdy::Codec::encodeData(frame, stream_id, data, true);
    queueDataFrame(frame);
  }
  while (!data.empty()) {
    Buffer chunk;
    // Whole segments of `data` move into the frame by reference.
    chunk.move(data, data.wholeSegmentsLength(config_.max_data_frame_bytes));
    spdy::Codec::encodeData(frame, stream_id, chunk, fin && data.empty());
    queueDataFrame(frame);
  }
  if (fin) {
    it->second.local_fin = true;
    removeIfDone(it);
  }
  pumpOutput();
  checkWatermarks();
  return true;
}

bool SpdyConnection::canSendFromPipe() const {
  return state_ == State::kOpen && control_.empty() && data_.empty() &&
         transport_->canWriteFromPipe() && transport_->queuedBytes() == 0;
}

size_t SpdyConnection::sendDataFromPipe(uint32_t stream_id, int pipe_fd, size_t limit) {
  auto it = streams_.find(stream_id);
  if (!canSendFromPipe() || it == streams_.end() || it->second.local_fin) {
    return 0;
  }
  size_t header_bytes = 0;
  const PipeFrames taken = writeFramesFromPipe(
      *transport_, pipe_fd, limit, config_.max_data_frame_bytes,
      [&](size_t length, Buffer& header) {
        spdy::Codec::encodeDataHeader(header, stream_id, static_cast<uint32_t>(length), false);
        header_bytes = header.length();
        return true;
      });
  if (taken.frames > 0) {
    bytes_handed_ += taken.bytes + taken.frames * header_bytes;
    touchIdle();
    checkWatermarks();
  }
  return taken.bytes;
}

const char* SpdyConnection::peerName() const {
  return config_.role == spdy::Codec::Role::kServer ? "client" : "server";
}

uint32_t SpdyConnection::openStream(const spdy::HeaderList& headers, bool fin) {
  if (state_ != State::kOpen || config_.role != spdy::Codec::Role::kClient ||
      last_local_stream_id_ >= 0x7FFFFFFD || peer_went_away_) {
    return 0;
  }
  const uint32_t stream_id = last_local_stream_id_ == 0 ? 1 : last_local_stream_id_ + 2;
  last_local_stream_id_ = stream_id;
  Buffer frame;
  codec_.encodeSynStream(frame, stream_id, 0, 0, fin ? spdy::kFlagFin : 0, headers);
  // Behind the DATA already queued, so that streams and their data keep the
  // order in which they were opened and written.
  queueDataFrame(frame);
  streams_.emplace(stream_id, Stream{fin, false});
  pumpOutput();
  return stream_id;
}

bool SpdyConnection::resetStream(uint32_t stream_id, spdy::RstStatus status) {
  auto it = streams_.find(stream_id);
  if (state_ != State::kOpen || it == streams_.end()) {
    return false;
  }
  streams_.erase(it);
  if (codec_.streamedDataStream() == stream_id) {
    cancelInputSplice();
  }
  Buffer frame;
  spdy::Codec::encodeRstStream(frame, stream_id, status);
  queueControl(frame);
  pumpOutput();
  return true;
}

void SpdyConnection::close() {
  if (state_ == State::kIdle) {
    // Never started: nothing was said on the wire by us yet.
    attachTransport();
  }
  if (state_ != State::kOpen) {
    return;
  }
  CRISP_CONN_LOG(kSpdy, debug, id_, "closing: {} streams open", streams_.size());
  beginClose(spdy::GoAwayStatus::kOk);
}

void SpdyConnection::pauseReading(bool paused) {
  if (read_paused_ == paused) {
    return;
  }
  read_paused_ = paused;
  CRISP_CONN_LOG(kSpdy, trace, id_, "{} reading", paused ? "pausing" : "resuming");
  // While closing the transport is read regardless, to see the peer go away.
  updateReadPause();
}

// TransportCallbacks

void SpdyConnection::onTransportData(Buffer& data) {
  bytes_read_ += data.length();
  switch (state_) {
    case State::kOpen:
      touchIdle();
      break;
    case State::kClosing:
    case State::kLingering:
      // The peer is alive and may still be reading what we sent. Its frames
      // are still decoded: a PING is counted and, until our write side is
      // shut, answered ahead of the DATA left to send; the rest is dropped.
      linger_->noteProgress();
      if (closing_input_failed_) {
        data.drain(data.length());
        return;
      }
      break;
    case State::kIdle:
    case State::kClosed:
      data.drain(data.length());
      return;
  }
  input_.move(data);
  decodeInput();
  maybeSpliceInput();
  updateReadPause();
}

void SpdyConnection::onTransportEof() {
  switch (state_) {
    case State::kOpen:
      abort(SpdyCloseReason::kPeerClosed, std::string(peerName()) + " closed the connection");
      return;
    case State::kClosing:
      // The client will send nothing more; finish writing what it may still
      // read, then close without lingering.
      peer_eof_ = true;
      return;
    case State::kLingering:
      closeTransport();
      return;
    case State::kIdle:
    case State::kClosed:
      return;
  }
}

void SpdyConnection::onTransportDrained() {
  if (state_ == State::kOpen) {
    touchIdle();
  } else if (state_ == State::kClosing) {
    drain_timer_->enable(config_.drain_timeout);
    noteCloseProgress();
  }
  pumpOutput();
  checkWatermarks();
  updateReadPause();
  if (state_ == State::kClosing && queuedOutputBytes() == 0) {
    finishFlush();
  }
}

void SpdyConnection::onTransportError(const std::string& detail) {
  abort(SpdyCloseReason::kSocketError, detail);
}

void SpdyConnection::onTransportPipeInput(size_t bytes, const std::string& pipe_error) {
  if (state_ == State::kClosed) {
    return;
  }
  const uint32_t stream_id = codec_.streamedDataStream();
  if (bytes > 0) {
    bytes_read_ += bytes;
    bytes_spliced_in_ += bytes;
    if (state_ == State::kOpen) {
      touchIdle();
      if (streams_.count(stream_id) != 0) {
        callbacks_.onStreamDataPiped(stream_id, bytes);
      }
    }
    // Ends the payload (and delivers its FIN) once the last byte is in.
    codec_.skipDataPayload(bytes);
  }
  if (!pipe_error.empty()) {
    splicing_input_ = false;
    // The pipe stays broken; asking its owner again would only fail again.
    pipe_failed_stream_ = stream_id;
    // The reader of the pipe is gone; the rest of the payload is decoded and
    // goes to onStreamData(), whose owner knows what to do with it.
    CRISP_CONN_LOG(kSpdy, debug, id_, "splicing stream {} input ended: {}", stream_id,
                   pipe_error);
  }
  maybeSpliceInput();
}

int SpdyConnection::inputPipeFor(uint32_t stream_id) {
  if (state_ != State::kOpen || read_paused_ || backlog_paused_ ||
      !transport_->canReadIntoPipe()) {
    return -1;
  }
  const auto it = streams_.find(stream_id);
  if (it == streams_.end() || it->second.remote_fin || stream_id == pipe_failed_stream_) {
    return -1;
  }
  return callbacks_.onStreamDataPipe(stream_id);
}

bool SpdyConnection::onDataStreamed(uint32_t stream_id, uint32_t length) {
  splicing_input_ = length >= kMinSplicedPayloadBytes && inputPipeFor(stream_id) >= 0;
  return splicing_input_;
}

void SpdyConnection::maybeSpliceInput() {
  if (state_ != State::kOpen || !input_.empty() || transport_ == nullptr ||
      transport_->pipeInputPending() > 0) {
    return;
  }
  const size_t remaining = codec_.streamedDataRemaining();
  if (remaining == 0) {
    // Between frames, after a payload that went into a pipe: the next
    // frame's header is read alone, so that a payload behind it is spliced
    // whole rather than begun with bytes read ahead (which would have to be
    // copied in first).
    if (splicing_input_) {
      transport_->limitNextRead(kFrameHeaderBytes);
    }
    return;
  }
  const int pipe_fd = inputPipeFor(codec_.streamedDataStream());
  if (pipe_fd >= 0) {
    transport_->readIntoPipe(pipe_fd, remaining);
  }
}

void SpdyConnection::cancelInputSplice() {
  if (transport_ != nullptr && transport_->pipeInputPending() > 0) {
    transport_->cancelReadIntoPipe();
  }
}

void SpdyConnection::decodeInput() {
  const absl::Status status = codec_.dispatch(input_);
  if (!status.ok() && state_ != State::kOpen) {
    // While closing there is nothing left to refuse; stop decoding.
    closing_input_failed_ = true;
    input_.drain(input_.length());
    return;
  }
  if (!status.ok() && state_ == State::kOpen) {
    CRISP_CONN_LOG(kSpdy, info, id_, "closing on a SPDY framing error: {}",
                   std::string(status.message()));
    if (const auto limit = limitOfCodecError(status)) {
      countLimitHit(*limit);
    }
    countProtocolError(status);
    input_.drain(input_.length());
    closing_input_failed_ = true;
    beginClose(spdy::GoAwayStatus::kProtocolError);
    callbacks_.onConnectionClosing(SpdyCloseReason::kProtocolError, std::string(status.message()));
  }
  if (state_ == State::kClosed) {
    input_.drain(input_.length());
  }
}

void SpdyConnection::pumpOutput() {
  if (state_ != State::kOpen && state_ != State::kClosing) {
    return;
  }
  Buffer batch;
  size_t queued = transport_->queuedBytes();
  // Control frames are small and go whole, ahead of every DATA frame not yet
  // handed over.
  queued += control_.length();
  batch.move(control_);
  while (!data_frame_lengths_.empty()) {
    const size_t next = data_frame_lengths_.front();
    if (queued > 0 && queued + next > config_.transport_queue_bytes) {
      break;
    }
    batch.move(data_, next);
    queued += next;
    data_frame_lengths_.pop_front();
  }
  if (!batch.empty()) {
    bytes_handed_ += batch.length();
    transport_->write(batch);
  }
}

void SpdyConnection::checkWatermarks() {
  if (state_ != State::kOpen) {
    return;
  }
  const size_t queued = queuedOutputBytes();
  // A spliced payload the socket did not take whole is still in the owner's
  // pipe, which must not be read until the socket took it.
  const bool pipe_pending = transport_->pipeBytesPending() > 0;
  if (!above_high_watermark_ && (queued > config_.output_high_watermark || pipe_pending)) {
    above_high_watermark_ = true;
    CRISP_CONN_LOG(kSpdy, trace, id_, "output above high watermark: {} bytes queued", queued);
    callbacks_.onOutputAboveHighWatermark();
  } else if (above_high_watermark_ && queued <= config_.output_low_watermark && !pipe_pending) {
    above_high_watermark_ = false;
    CRISP_CONN_LOG(kSpdy, trace, id_, "output below low watermark: {} bytes queued", queued);
    callbacks_.onOutputBelowLowWatermark();
  }
}

void SpdyConnection::touchIdle() { idle_timer_->enable(config_.idle_timeout); }

void SpdyConnection::onIdleTimeout() {
  if (state_ != State::kOpen) {
    return;
  }
  CRISP_CONN_LOG(kSpdy, info, id_, "closing: no frame for {} ms", config_.idle_timeout.count());
  if (callbacks_.onIdleTimeout()) {
    return;
  }
  beginClose(spdy::GoAwayStatus::kOk);
  callbacks_.onConnectionClosing(SpdyCloseReason::kIdleTimeout, "idle timeout");
}

void SpdyConnection::queueControl(Buffer& frame) { control_.move(frame); }

void SpdyConnection::queueDataFrame(Buffer& frame) {
  data_frame_lengths_.push_back(frame.length());
  data_.move(frame);
}

void SpdyConnection::removeIfDone(std::map<uint32_t, Stream>::iterator it) {
  if (it->second.local_fin && it->second.remote_fin) {
    streams_.erase(it);
  }
}

void SpdyConnection::beginClose(spdy::GoAwayStatus status) {
  if (state_ != State::kOpen) {
    return;
  }
  state_ = State::kClosing;
  // The rest of a payload in flight is read and dropped with the peer's
  // other frames: the owner takes nothing more.
  cancelInputSplice();
  // Behind the DATA already queued, so that nothing the owner sent is lost or
  // overtaken by the reset of its stream.
  Buffer frame;
  for (const auto& [stream_id, stream] : streams_) {
    if (!stream.local_fin) {
      spdy::Codec::encodeRstStream(frame, stream_id, spdy::RstStatus::kCancel);
      queueDataFrame(frame);
    }
  }
  streams_.clear();
  spdy::Codec::encodeGoAway(frame, last_peer_stream_id_, status);
  queueDataFrame(frame);
  idle_timer_->disable();
  drain_timer_->enable(config_.drain_timeout);
  // Keep reading to answer PINGs and to see the peer go away.
  updateReadPause();
  pumpOutput();
}

void SpdyConnection::abort(SpdyCloseReason reason, const std::string& detail) {
  if (state_ == State::kClosed) {
    return;
  }
  const bool was_open = state_ == State::kOpen;
  CRISP_CONN_LOG(kSpdy, debug, id_, "connection ended ({}): {}", closeReasonName(reason), detail);
  state_ = State::kClosing;
  streams_.clear();
  if (was_open) {
    callbacks_.onConnectionClosing(reason, detail);
  }
  closeTransport();
}

void SpdyConnection::finishFlush() {
  state_ = State::kLingering;
  drain_timer_->disable();
  if (peer_eof_) {
    closeTransport();
    return;
  }
  transport_->shutdownWrite();
  backlog_paused_ = false;
  updateReadPause();
  linger_->start(*transport_);
}

void SpdyConnection::closeTransport() {
  if (state_ == State::kClosed) {
    return;
  }
  const size_t dropped = queuedOutputBytes();
  bytes_written_ = bytesWritten();
  state_ = State::kClosed;
  idle_timer_->disable();
  drain_timer_->disable();
  linger_->cancel();
  transport_->close();
  control_.drain(control_.length());
  data_.drain(data_.length());
  data_frame_lengths_.clear();
  input_.drain(input_.length());
  streams_.clear();
  CRISP_CONN_LOG(kSpdy, debug, id_, "transport closed ({} bytes read, {} written, {} dropped)",
                 bytes_read_, bytes_written_, dropped);
  callbacks_.onConnectionClosed();
}

// spdy::CodecCallbacks

void SpdyConnection::onSynStream(uint32_t stream_id, uint32_t /*associated_id*/,
                                 uint8_t /*priority*/, uint8_t flags, spdy::HeaderList&& headers) {
  if (state_ != State::kOpen) {
    return;
  }
  Buffer frame;
  if (!spdy::isPeerInitiated(config_.role, stream_id) || stream_id <= last_peer_stream_id_) {
    CRISP_CONN_LOG(kSpdy, debug, id_, "refusing stream {}: ids must be {} and increasing",
                   stream_id, config_.role == spdy::Codec::Role::kServer ? "odd" : "even");
    countProtocolError("spdy.bad_stream_id");
    spdy::Codec::encodeRstStream(frame, stream_id, spdy::RstStatus::kProtocolError);
    queueControl(frame);
    pumpOutput();
    // A second SYN_STREAM for a live stream is an error on that stream too.
    if (streams_.erase(stream_id) != 0) {
      callbacks_.onStreamReset(stream_id, spdy::RstStatus::kProtocolError);
    }
    return;
  }
  last_peer_stream_id_ = stream_id;
  if (peer_went_away_ || config_.role == spdy::Codec::Role::kClient) {
    // Kubernetes stream servers open no streams; a client has none to accept.
    spdy::Codec::encodeRstStream(frame, stream_id, spdy::RstStatus::kRefusedStream);
    queueControl(frame);
    pumpOutput();
    return;
  }
  streams_.emplace(stream_id, Stream{});
  const bool accepted = callbacks_.onStreamOpen(stream_id, headers);
  if (state_ != State::kOpen) {
    return;
  }
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    return;  // the owner reset it already
  }
  if (!accepted) {
    streams_.erase(it);
    spdy::Codec::encodeRstStream(frame, stream_id, spdy::RstStatus::kCancel);
    queueControl(frame);
    pumpOutput();
    return;
  }
  codec_.encodeSynReply(frame, stream_id, 0, spdy::HeaderList{});
  queueControl(frame);
  pumpOutput();
  if ((flags & spdy::kFlagFin) != 0) {
    markRemoteFin(it);
  }
}

void SpdyConnection::markRemoteFin(std::map<uint32_t, Stream>::iterator it) {
  const uint32_t stream_id = it->first;
  it->second.remote_fin = true;
  callbacks_.onStreamRemoteFin(stream_id);
  if (state_ != State::kOpen) {
    return;
  }
  it = streams_.find(stream_id);
  if (it != streams_.end()) {
    removeIfDone(it);
  }
}

void SpdyConnection::onSynReply(uint32_t stream_id, uint8_t flags,
                                spdy::HeaderList&& /*headers*/) {
  if (state_ != State::kOpen) {
    return;
  }
  auto it = streams_.find(stream_id);
  if (config_.role != spdy::Codec::Role::kClient || it == streams_.end()) {
    // A server opens no streams, and a stream we reset may still be answered.
    CRISP_CONN_LOG(kSpdy, debug, id_, "ignoring SYN_REPLY for stream {}", stream_id);
    return;
  }
  callbacks_.onStreamReply(stream_id);
  if ((flags & spdy::kFlagFin) == 0 || state_ != State::kOpen) {
    return;
  }
  it = streams_.find(stream_id);
  if (it != streams_.end() && !it->second.remote_fin) {
    markRemoteFin(it);
  }
}

void SpdyConnection::onHeaders(uint32_t stream_id, uint8_t /*flags*/,
                               spdy::HeaderList&& /*headers*/) {
  CRISP_CONN_LOG(kSpdy, trace, id_, "ignoring HEADERS for stream {}", stream_id);
}

void SpdyConnection::onData(uint32_t stream_id, Buffer& data, bool fin) {
  if (state_ != State::kOpen) {
    data.drain(data.length());
    return;
  }
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    data.drain(data.length());
    const bool never_opened = spdy::isPeerInitiated(config_.role, stream_id)
                                  ? stream_id > last_peer_stream_id_
                                  : stream_id > last_local_stream_id_;
    if (never_opened) {
      CRISP_CONN_LOG(kSpdy, debug, id_, "DATA for stream {} that was never opened", stream_id);
      Buffer frame;
      spdy::Codec::encodeRstStream(frame, stream_id, spdy::RstStatus::kInvalidStream);
      queueControl(frame);
      pumpOutput();
    }
    // Otherwise the stream was closed or reset a moment ago; late data is dropped.
    return;
  }
  if (it->second.remote_fin) {
    data.drain(data.length());
    CRISP_CONN_LOG(kSpdy, debug, id_, "DATA after FIN on stream {}", stream_id);
    resetStream(stream_id, spdy::RstStatus::kStreamAlreadyClosed);
    callbacks_.onStreamReset(stream_id, spdy::RstStatus::kStreamAlreadyClosed);
    return;
  }
  if (!data.empty()) {
    callbacks_.onStreamData(stream_id, data);
    data.drain(data.length());
  }
  if (!fin || state_ != State::kOpen) {
    return;
  }
  it = streams_.find(stream_id);
  if (it != streams_.end()) {
    markRemoteFin(it);
  }
}

void SpdyConnection::onRstStream(uint32_t stream_id, spdy::RstStatus status) {
  if (state_ != State::kOpen) {
    return;
  }
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    return;
  }
  streams_.erase(it);
  callbacks_.onStreamReset(stream_id, status);
}

void SpdyConnection::onSettings(uint8_t /*flags*/,
                                const std::vector<spdy::SettingsEntry>& /*entries*/) {
  // Kubernetes peers have no flow control; nothing in SETTINGS changes what we do.
}

void SpdyConnection::onPing(uint32_t ping_id) {
  if (state_ == State::kIdle || state_ == State::kClosed) {
    return;
  }
  ++pings_received_;
  if (!spdy::isPeerInitiated(config_.role, ping_id)) {
    return;  // a reply to a ping of ours; we send none
  }
  clientPingCounter("spdy").inc();
  if (state_ == State::kLingering) {
    return;  // our write side is shut
  }
  Buffer frame;
  spdy::Codec::encodePing(frame, ping_id);
  queueControl(frame);
  pumpOutput();
}

void SpdyConnection::onGoAway(uint32_t last_good_stream_id, spdy::GoAwayStatus status) {
  if (state_ != State::kOpen) {
    return;
  }
  // The client opens no more streams; the ones it has keep flowing, so every
  // DATA frame it sent before the GOAWAY is still delivered.
  peer_went_away_ = true;
  CRISP_CONN_LOG(kSpdy, debug, id_, "{} sent GOAWAY (last stream {}, status {})", peerName(),
                 last_good_stream_id, static_cast<uint32_t>(status));
  callbacks_.onPeerGoAway();
}

void SpdyConnection::onWindowUpdate(uint32_t /*stream_id*/, uint32_t /*delta*/) {}

}  // namespace crisp::stream
