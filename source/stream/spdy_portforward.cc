#include "source/stream/spdy_portforward.h"

#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"
#include "source/stream/stream_limits.h"

namespace crisp::stream {
namespace {

using session::PortError;
using session::PortStreamType;

session::PortForwardSpec portForwardSpecOf(const UpgradedConnection& upgraded) {
  if (const auto* spec = std::get_if<session::PortForwardSpec>(&upgraded.stream_request.spec)) {
    return *spec;
  }
  return {};
}

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

// One forwarded connection: its two streams and, once both exist, its pod
// connection. The pod connection's callbacks are forwarded to the session
// until the pair ended; after that (the pair waits for its deferred deletion)
// they are ignored.
class SpdyPortForward::Pair : public session::PortCallbacks {
 public:
  enum class State {
    kWaiting,     // one stream so far; creation timer armed
    kConnecting,  // connectPort() called, not connected yet
    kForwarding,  // connected
    kEnded,       // out of every table, waiting for deferred deletion
  };

  Pair(SpdyPortForward& session, std::string request_id)
      : session_(session), request_id(std::move(request_id)) {}

  // session::PortCallbacks
  void onConnected() override {
    if (state != State::kEnded) {
      session_.onPairConnected(*this);
    }
  }
  void onData(Buffer& data) override {
    if (state != State::kEnded) {
      session_.onPairData(*this, data);
    } else {
      data.drain(data.length());
    }
  }
  bool canTakeDataPipe() const override {
    return state != State::kEnded && session_.canTakePairPipe(*this);
  }
  size_t onDataPipe(int pipe_fd, size_t limit) override {
    // Declined after the end: the bytes are read and dropped by onData().
    return state != State::kEnded ? session_.onPairDataPipe(*this, pipe_fd, limit) : 0;
  }
  void onRemoteEof() override {
    if (state != State::kEnded) {
      session_.onPairRemoteEof(*this);
    }
  }
  void onWriteDrained() override {
    if (state != State::kEnded) {
      session_.onPairWriteDrained(*this);
    }
  }
  void onClosed() override {
    if (state != State::kEnded) {
      session_.onPairClosed(*this);
    }
  }
  void onError(const PortError& error) override {
    if (state != State::kEnded) {
      session_.onPairError(*this, error);
    }
  }

  SpdyPortForward& session_;
  const std::string request_id;
  State state = State::kWaiting;
  uint32_t error_id = 0;  // 0: not opened yet
  uint32_t data_id = 0;
  // The stream may still carry what we send: not reset by either side, and
  // (error stream) not FIN'd by us.
  bool error_open = false;
  bool data_open = false;
  uint16_t port = 0;  // the data stream's
  std::unique_ptr<event::Timer> creation_timer;
  std::unique_ptr<session::PortConnection> pod;
  // Client bytes on the data stream before the pair was complete.
  Buffer early_data;
  bool client_fin = false;     // the client FIN'd the data stream
  bool data_fin_sent = false;  // we FIN'd the data stream
  bool input_blocked = false;  // counted in input_blocked_pairs_
};

SpdyPortForward::SpdyPortForward(event::Dispatcher& dispatcher, session::Runtime& runtime,
                                 UpgradedConnection&& upgraded, const SpdyPortForwardConfig& config,
                                 DoneCallback on_done)
    : dispatcher_(dispatcher),
      runtime_(runtime),
      config_(config),
      on_done_(std::move(on_done)),
      connection_id_(upgraded.connection_id != 0 ? upgraded.connection_id : log::nextId()),
      session_id_(log::nextId()),
      protocol_name_(protocolName(upgraded.protocol)),
      pod_sandbox_id_(portForwardSpecOf(upgraded).pod_sandbox_id),
      session_metrics_(session::SessionMetrics::get()),
      metrics_(session::PortForwardMetrics::get()),
      active_gauge_(session_metrics_.sessions_active.gauge(
          {session::operationName(session::Operation::kPortForward), protocol_name_})) {
  port_session_ = runtime_.openPortForward(dispatcher_, portForwardSpecOf(upgraded));
  connection_ = std::make_unique<SpdyConnection>(
      dispatcher_, std::move(upgraded.transport), connection_id_,
      static_cast<SpdyConnectionCallbacks&>(*this), config_.connection);
}

SpdyPortForward::~SpdyPortForward() {
  // Pod connections first: their sockets close without callbacks.
  for (auto& [raw, pair] : pairs_) {
    pair->state = Pair::State::kEnded;
    pair->pod.reset();
    pair->creation_timer.reset();
  }
  if (!pairs_.empty()) {
    metrics_.active.dec(static_cast<int64_t>(pairs_.size()));
  }
  pairs_.clear();
  connection_.reset();
  if (counted_active_) {
    active_gauge_.dec();
  }
}

void SpdyPortForward::start() {
  session_metrics_.sessions_total
      .counter({session::operationName(session::Operation::kPortForward), protocol_name_})
      .inc();
  active_gauge_.inc();
  counted_active_ = true;
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "port-forward session over {} for pod sandbox {}", protocol_name_,
                    pod_sandbox_id_);
  connection_->start();
}

void SpdyPortForward::close() {
  if (state_ != State::kOpen) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "closing the session ({} pairs open)", pairs_.size());
  state_ = State::kClosing;
  abandonAll();
  connection_->close();
}

SpdyPortForward::Pair* SpdyPortForward::pairOf(uint32_t stream_id) const {
  auto it = by_stream_.find(stream_id);
  return it == by_stream_.end() ? nullptr : it->second;
}

bool SpdyPortForward::onStreamOpen(uint32_t stream_id, const spdy::HeaderList& headers) {
  if (state_ != State::kOpen) {
    return false;
  }
  // Admission: refused streams get RST_STREAM CANCEL and no SYN_REPLY; the
  // reason is only logged, as the kubelet does.
  const std::string* port_value = spdy::findHeader(headers, "port");
  absl::StatusOr<uint16_t> port =
      session::parsePort(port_value != nullptr ? std::string_view(*port_value) : "");
  if (!port.ok()) {
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "refusing stream {}: {}",
                      stream_id, std::string(port.status().message()));
    countProtocolError("spdy.portforward.bad_port");
    return false;
  }
  const std::string* type_value = spdy::findHeader(headers, "streamtype");
  const std::optional<PortStreamType> type =
      type_value != nullptr ? session::parsePortStreamType(*type_value) : std::nullopt;
  if (!type.has_value()) {
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "refusing stream {}: {}",
                      stream_id,
                      type_value == nullptr || type_value->empty()
                          ? std::string("\"streamType\" header is required")
                          : absl::StrCat("invalid stream type \"", *type_value, "\""));
    countProtocolError("spdy.portforward.bad_stream_type");
    return false;
  }
  const std::string* request_value = spdy::findHeader(headers, "requestid");
  std::string request_id;
  if (request_value != nullptr && !request_value->empty()) {
    request_id = *request_value;
  } else {
    // Clients that predate the header open error then data with consecutive
    // ids; pair them the way the kubelet does.
    request_id =
        std::to_string(*type == PortStreamType::kError ? static_cast<int64_t>(stream_id)
                                                       : static_cast<int64_t>(stream_id) - 2);
  }

  Pair* pair = nullptr;
  if (auto it = waiting_.find(request_id); it != waiting_.end()) {
    pair = it->second;
  } else {
    if (pairs_.size() >= config_.max_pairs) {
      CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                        "refusing stream {}: {} pairs open (the limit)", stream_id, pairs_.size());
      countLimitHit(StreamLimit::kPortForwardPairs);
      return false;
    }
    auto owned = std::make_unique<Pair>(*this, request_id);
    pair = owned.get();
    pair->creation_timer =
        std::make_unique<event::Timer>(dispatcher_, [this, pair] { onPairCreationTimeout(*pair); });
    pair->creation_timer->enable(config_.stream_creation_timeout);
    pairs_.emplace(pair, std::move(owned));
    waiting_.emplace(request_id, pair);
    metrics_.active.inc();
  }

  const bool is_error = *type == PortStreamType::kError;
  if ((is_error ? pair->error_id : pair->data_id) != 0) {
    const std::string text = session::duplicateStreamError(request_id, *type);
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "refusing stream {}: {}",
                      stream_id, text);
    countProtocolError("spdy.portforward.duplicate_stream");
    if (pair->error_open) {
      connection_->sendData(pair->error_id, text, false);
    }
    return false;
  }
  if (is_error) {
    pair->error_id = stream_id;
    pair->error_open = true;
    if (pair->port == 0) {
      pair->port = *port;
    }
  } else {
    pair->data_id = stream_id;
    pair->data_open = true;
    pair->port = *port;  // the data stream's port is the one forwarded
  }
  by_stream_.emplace(stream_id, pair);
  CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_,
                    "request {}: {} stream {} for port {}", request_id,
                    session::portStreamTypeName(*type), stream_id, *port);
  if (pair->error_id != 0 && pair->data_id != 0) {
    startPair(*pair);
  }
  return true;
}

void SpdyPortForward::startPair(Pair& pair) {
  waiting_.erase(pair.request_id);
  pair.creation_timer.reset();
  pair.state = Pair::State::kConnecting;
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "request {}: connecting to port {} of pod sandbox {}", pair.request_id,
                    pair.port, pod_sandbox_id_);
  absl::StatusOr<std::unique_ptr<session::PortConnection>> pod =
      port_session_->connectPort(pair.port, pair);
  if (!pod.ok()) {
    metrics_.result(session::PortConnectResult::kError).inc();
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                      "request {}: cannot forward port {}: {}", pair.request_id, pair.port,
                      pod.status().ToString());
    failPair(pair, session::forwardingError(pair.port, pod_sandbox_id_,
                                            std::string(pod.status().message())));
    return;
  }
  pair.pod = std::move(pod).value();
  if (output_paused_) {
    pair.pod->pauseReading(true);
  }
  if (!pair.early_data.empty()) {
    deliverToPod(pair, pair.early_data);
  }
  if (pair.client_fin) {
    pair.pod->shutdownWrite();
  }
}

void SpdyPortForward::onPairCreationTimeout(Pair& pair) {
  if (pair.state != Pair::State::kWaiting) {
    return;
  }
  const std::string text =
      session::streamTimeoutError(std::to_string(connection_id_), pair.request_id);
  CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_, "{}", text);
  session_metrics_.creation_timeouts.inc();
  if (pair.error_open) {
    connection_->sendData(pair.error_id, text, true);
    pair.error_open = false;
  }
  if (pair.data_open) {
    connection_->resetStream(pair.data_id, spdy::RstStatus::kCancel);
    pair.data_open = false;
  }
  endPair(pair, false);
}

void SpdyPortForward::onStreamData(uint32_t stream_id, Buffer& data) {
  Pair* pair = pairOf(stream_id);
  if (pair == nullptr || stream_id != pair->data_id || pair->client_fin) {
    // Clients send nothing on error streams; drop it.
    data.drain(data.length());
    return;
  }
  session_metrics_.bytes_in.inc(data.length());
  if (pair->state == Pair::State::kWaiting) {
    pair->early_data.move(data);
    if (pair->early_data.length() > config_.max_early_data_bytes) {
      CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                        "request {}: more than {} bytes before the error stream; resetting",
                        pair->request_id, config_.max_early_data_bytes);
      countLimitHit(StreamLimit::kPortForwardEarlyData);
      connection_->resetStream(pair->data_id, spdy::RstStatus::kFlowControlError);
      pair->data_open = false;
      endPair(*pair, true);
    }
    return;
  }
  deliverToPod(*pair, data);
}

void SpdyPortForward::deliverToPod(Pair& pair, Buffer& data) {
  if (pair.pod == nullptr) {
    data.drain(data.length());
    return;
  }
  pair.pod->write(data);
  if (pair.pod->queuedBytes() > session::PortConnection::kWriteHighWatermark) {
    setInputBlocked(pair, true);
  }
}

void SpdyPortForward::setInputBlocked(Pair& pair, bool blocked) {
  if (pair.input_blocked == blocked) {
    return;
  }
  pair.input_blocked = blocked;
  if (blocked) {
    if (input_blocked_pairs_++ == 0) {
      connection_->pauseReading(true);
    }
  } else if (--input_blocked_pairs_ == 0) {
    connection_->pauseReading(false);
  }
}

void SpdyPortForward::onStreamRemoteFin(uint32_t stream_id) {
  Pair* pair = pairOf(stream_id);
  if (pair == nullptr || stream_id != pair->data_id || pair->client_fin) {
    return;  // error streams are FIN'd by the client at once
  }
  pair->client_fin = true;
  if (pair->pod != nullptr) {
    pair->pod->shutdownWrite();
  }
}

void SpdyPortForward::onStreamReset(uint32_t stream_id, spdy::RstStatus status) {
  Pair* pair = pairOf(stream_id);
  if (pair == nullptr) {
    return;
  }
  if (stream_id == pair->error_id) {
    pair->error_open = false;
    CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                      "request {}: client reset the error stream (status {})", pair->request_id,
                      static_cast<uint32_t>(status));
    if (pair->state == Pair::State::kWaiting) {
      // The pair can never be completed now.
      if (pair->data_open) {
        connection_->resetStream(pair->data_id, spdy::RstStatus::kCancel);
        pair->data_open = false;
      }
      endPair(*pair, false);
    }
    // Otherwise nothing can be reported any more, and the bytes go on.
    return;
  }
  // The data stream: client-go resets it once it has read our FIN, or when
  // its local connection failed. Either way this forwarded connection is over.
  pair->data_open = false;
  CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_,
                    "request {}: client reset the data stream (status {})", pair->request_id,
                    static_cast<uint32_t>(status));
  endPair(*pair, true);
}

void SpdyPortForward::onOutputAboveHighWatermark() {
  output_paused_ = true;
  for (auto& [raw, pair] : pairs_) {
    if (pair->pod != nullptr) {
      pair->pod->pauseReading(true);
    }
  }
}

void SpdyPortForward::onOutputBelowLowWatermark() {
  output_paused_ = false;
  for (auto& [raw, pair] : pairs_) {
    if (pair->pod != nullptr) {
      pair->pod->pauseReading(false);
    }
  }
}

void SpdyPortForward::onConnectionClosing(SpdyCloseReason reason, const std::string& detail) {
  if (reason == SpdyCloseReason::kIdleTimeout) {
    session_metrics_.idle_timeouts.inc();
  }
  if (state_ != State::kOpen) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "connection ended ({}): {}; closing {} forwarded connections",
                    closeReasonName(reason), detail, pairs_.size());
  state_ = State::kClosing;
  abandonAll();
}

void SpdyPortForward::onConnectionClosed() {
  state_ = State::kDone;
  abandonAll();
  if (counted_active_) {
    active_gauge_.dec();
    counted_active_ = false;
  }
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_,
                    "session closed ({} connections forwarded)", pairs_finished_);
  if (on_done_) {
    DoneCallback done = std::move(on_done_);
    on_done_ = nullptr;
    done(*this);
  }
}

void SpdyPortForward::abandonAll() {
  std::vector<Pair*> all;
  all.reserve(pairs_.size());
  for (auto& [raw, owned] : pairs_) {
    all.push_back(raw);
  }
  for (Pair* pair : all) {
    // The connection is closing: its own close resets the streams.
    pair->error_open = false;
    pair->data_open = false;
    endPair(*pair, false);
  }
}

void SpdyPortForward::onPairConnected(Pair& pair) {
  pair.state = Pair::State::kForwarding;
  ++pairs_connected_;
  metrics_.result(session::PortConnectResult::kOk).inc();
  CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_, "request {}: connected",
                    pair.request_id);
}

void SpdyPortForward::onPairData(Pair& pair, Buffer& data) {
  if (!pair.data_open || pair.data_fin_sent) {
    data.drain(data.length());
    return;
  }
  session_metrics_.bytes_out.inc(data.length());
  connection_->sendData(pair.data_id, data, false);
}

bool SpdyPortForward::canTakePairPipe(const Pair& pair) const {
  return pair.data_open && !pair.data_fin_sent && connection_->canSendFromPipe();
}

size_t SpdyPortForward::onPairDataPipe(Pair& pair, int pipe_fd, size_t limit) {
  if (!pair.data_open || pair.data_fin_sent) {
    return 0;
  }
  // Frames behind nothing queued, so the order with onPairData() holds; a
  // frame the socket did not take whole puts the connection above its high
  // watermark, which pauses every pod connection (this one's pipe included)
  // until it is written.
  const size_t taken = connection_->sendDataFromPipe(pair.data_id, pipe_fd, limit);
  session_metrics_.bytes_out.inc(taken);
  metrics_.spliced_bytes.inc(taken);
  return taken;
}

void SpdyPortForward::onPairRemoteEof(Pair& pair) {
  if (pair.data_open && !pair.data_fin_sent) {
    pair.data_fin_sent = true;
    connection_->sendData(pair.data_id, std::string_view(), true);
  }
  // Nothing can fail from here on that would be reported (see
  // session::writesErrorText()), so the error stream ends with the pod's
  // side. kubectl up to 1.27 waits for the error stream's end before it closes
  // its local connection and FINs the data stream: holding the error stream
  // open until then would leave both sides waiting. Bytes from the client
  // still flow to the pod until it FINs or resets the data stream.
  if (pair.error_open) {
    pair.error_open = false;
    connection_->sendData(pair.error_id, std::string_view(), true);
  }
}

void SpdyPortForward::onPairWriteDrained(Pair& pair) { setInputBlocked(pair, false); }

void SpdyPortForward::onPairClosed(Pair& pair) {
  CRISP_SESSION_LOG(kSession, trace, connection_id_, session_id_, "request {}: closed",
                    pair.request_id);
  endPair(pair, true);
}

void SpdyPortForward::onPairError(Pair& pair, const PortError& error) {
  if (pair.state == Pair::State::kConnecting) {
    const bool made = error.kind == PortError::Kind::kConnectionLost;
    if (made) {
      ++pairs_connected_;
    }
    metrics_.result(made ? session::PortConnectResult::kOk : session::connectResultOf(error.kind))
        .inc();
  }
  if (session::writesErrorText(error.kind)) {
    CRISP_SESSION_LOG(kSession, info, connection_id_, session_id_,
                      "request {}: cannot forward port {} ({}): {}", pair.request_id, pair.port,
                      errorKindName(error.kind), error.message);
    failPair(pair, session::portErrorText(pair.port, pod_sandbox_id_, error));
    return;
  }
  // The application reset a connection that was made: end this forwarded
  // connection like a close, after what it sent before.
  CRISP_SESSION_LOG(kSession, debug, connection_id_, session_id_, "request {}: {}", pair.request_id,
                    error.message);
  onPairRemoteEof(pair);
  endPair(pair, true);
}

void SpdyPortForward::failPair(Pair& pair, const std::string& text) {
  if (pair.error_open) {
    // FIN right behind the text: a reset here would overtake the DATA.
    connection_->sendData(pair.error_id, text, true);
    pair.error_open = false;
  }
  if (pair.data_open) {
    connection_->resetStream(pair.data_id, spdy::RstStatus::kCancel);
    pair.data_open = false;
  }
  endPair(pair, false);
}

void SpdyPortForward::endPair(Pair& pair, bool fin_error) {
  if (pair.state == Pair::State::kEnded) {
    return;
  }
  const bool was_waiting = pair.state == Pair::State::kWaiting;
  pair.state = Pair::State::kEnded;
  setInputBlocked(pair, false);
  if (fin_error && pair.error_open) {
    connection_->sendData(pair.error_id, std::string_view(), true);
    pair.error_open = false;
  }
  for (uint32_t id : {pair.error_id, pair.data_id}) {
    auto it = by_stream_.find(id);
    if (id != 0 && it != by_stream_.end() && it->second == &pair) {
      by_stream_.erase(it);
    }
  }
  if (was_waiting) {
    auto it = waiting_.find(pair.request_id);
    if (it != waiting_.end() && it->second == &pair) {
      waiting_.erase(it);
    }
  }
  pair.creation_timer.reset();
  ++pairs_finished_;
  metrics_.active.dec();
  auto owned = pairs_.find(&pair);
  if (owned != pairs_.end()) {
    // Deferred: this may run inside one of the pod connection's callbacks.
    std::unique_ptr<Pair> doomed = std::move(owned->second);
    pairs_.erase(owned);
    if (doomed->pod != nullptr) {
      dispatcher_.deferredDelete(std::move(doomed->pod));
    }
    dispatcher_.deferredDelete(std::move(doomed));
  }
}

// SpdyPortForwardHandler

SpdyPortForwardHandler::SpdyPortForwardHandler(session::Runtime& runtime,
                                               const SpdyPortForwardConfig& config)
    : runtime_(runtime), config_(config) {}

SpdyPortForwardHandler::~SpdyPortForwardHandler() = default;

void SpdyPortForwardHandler::onUpgrade(event::Dispatcher& dispatcher,
                                       UpgradedConnection&& connection) {
  if (connection.protocol != Protocol::kSpdyPortForward ||
      !std::holds_alternative<session::PortForwardSpec>(connection.stream_request.spec)) {
    CRISP_CONN_LOG(kStream, info, connection.connection_id,
                   "{} is not a port-forward request; closing", protocolName(connection.protocol));
    discardUpgrade(dispatcher, std::move(connection.transport));
    return;
  }
  sessions_
      .add(dispatcher,
           std::make_unique<SpdyPortForward>(dispatcher, runtime_, std::move(connection), config_,
                                             sessions_.makeDoneCallback(dispatcher)))
      .start();
}

size_t SpdyPortForwardHandler::activeSessions(event::Dispatcher& dispatcher) {
  return sessions_.count(dispatcher);
}

void SpdyPortForwardHandler::closeAll(event::Dispatcher& dispatcher) {
  sessions_.closeAll(dispatcher);
}

}  // namespace crisp::stream
