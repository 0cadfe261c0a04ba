#include "source/runtime/streamserver/upstream_portforward.h"

#include <vector>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"

namespace crisp::streamserver {

using session::PortError;

// One forwarded connection: a data/error stream pair on the session's
// upstream connection.
class UpstreamPortConnection : public session::PortConnection {
 public:
  UpstreamPortConnection(UpstreamPortForward& session, uint16_t port,
                         session::PortCallbacks& callbacks)
      : session_(&session),
        port_(port),
        callbacks_(callbacks),
        alive_(std::make_shared<bool>(true)) {}

  ~UpstreamPortConnection() override {
    *alive_ = false;
    if (session_ != nullptr) {
      if (!ended_) {
        // The client is gone: end both streams, as client-go does.
        resetStreams();
      }
      setPaused(false);
      session_->forget(*this);
    }
  }

  // session::PortConnection
  void write(Buffer& data) override {
    if (write_shut_ || ended_) {
      data.drain(data.length());
      return;
    }
    pending_.move(data);
    flush();
  }

  size_t queuedBytes() const override {
    const stream::SpdyConnection* c = connection();
    return pending_.length() + (c != nullptr ? c->queuedOutputBytes() : 0);
  }

  void shutdownWrite() override {
    write_shut_ = true;
    flush();
  }

  void pauseReading(bool paused) override { setPaused(paused); }

 private:
  friend class UpstreamPortForward;

  stream::SpdyConnection* connection() const {
    return session_ != nullptr ? session_->connection_.get() : nullptr;
  }

  void setPaused(bool paused) {
    if (paused == paused_ || session_ == nullptr) {
      return;
    }
    paused_ = paused;
    session_->paused_readers_ += paused ? 1 : static_cast<size_t>(-1);
    session_->updateReadPause();
  }

  // Sends what was written while the pair was not open yet, and the FIN.
  void flush() {
    stream::SpdyConnection* c = connection();
    if (c == nullptr || data_id_ == 0 || ended_) {
      return;
    }
    if (!pending_.empty()) {
      c->sendData(data_id_, pending_, false);
    }
    if (write_shut_ && !fin_sent_) {
      fin_sent_ = true;
      c->sendData(data_id_, std::string_view(), true);
      maybeClosed();
    }
    if (queuedBytes() > kWriteHighWatermark) {
      above_ = true;
    }
  }

  void resetStreams() {
    stream::SpdyConnection* c = connection();
    if (c == nullptr) {
      return;
    }
    for (uint32_t id : {error_id_, data_id_}) {
      if (id != 0) {
        c->resetStream(id, spdy::RstStatus::kCancel);
      }
    }
  }

  // Callbacks go out from the loop, never inside a call of the adapter.
  void post(std::function<void(session::PortCallbacks&)> fn) {
    session_->dispatcher_.post(
        [alive = std::weak_ptr<bool>(alive_), callbacks = &callbacks_, fn = std::move(fn)] {
          if (!alive.expired()) {
            fn(*callbacks);
          }
        });
  }

  void fail(PortError::Kind kind, std::string message) {
    if (ended_) {
      return;
    }
    ended_ = true;
    resetStreams();
    pending_.drain(pending_.length());
    PortError error{kind, std::move(message)};
    post([error](session::PortCallbacks& cb) { cb.onError(error); });
  }

  // The pod side's end reaches the client only once the error stream ended
  // without text: a runtime built on the kubelet's streaming library
  // (containerd) ends the data stream of a failed connection before it writes
  // why on the error stream, and the client must get that text, not a clean
  // close.
  void maybeDeliverEof() {
    if (ended_ || eof_delivered_ || !remote_eof_ || !error_ended_) {
      return;
    }
    eof_delivered_ = true;
    if (!connected_) {
      connected_ = true;
      callbacks_.onConnected();
    }
    callbacks_.onRemoteEof();
  }

  void maybeClosed() {
    if (!ended_ && eof_delivered_ && fin_sent_ && error_ended_) {
      ended_ = true;
      post([](session::PortCallbacks& cb) { cb.onClosed(); });
    }
  }

  void onReply(uint32_t stream_id) {
    if (stream_id == data_id_ && !connected_ && !ended_) {
      connected_ = true;
      callbacks_.onConnected();
    }
  }

  void onData(uint32_t stream_id, Buffer& data) {
    if (ended_) {
      return;
    }
    if (stream_id == data_id_) {
      if (!connected_) {
        connected_ = true;
        callbacks_.onConnected();
      }
      callbacks_.onData(data);
    } else if (stream_id == error_id_) {
      error_text_.append(data.toString());
    }
  }

  void onFin(uint32_t stream_id) {
    if (ended_) {
      return;
    }
    if (stream_id == data_id_) {
      remote_eof_ = true;
    } else if (stream_id == error_id_) {
      error_ended_ = true;
      if (!error_text_.empty()) {
        fail(PortError::Kind::kRuntimeReported, error_text_);
        return;
      }
    }
    maybeDeliverEof();
    maybeClosed();
  }

  void onReset(uint32_t stream_id) {
    if (stream_id == error_id_) {
      error_id_ = 0;
      error_ended_ = true;
    } else if (stream_id == data_id_) {
      data_id_ = 0;
      if (error_text_.empty() && !remote_eof_) {
        fail(PortError::Kind::kConnectionLost,
             absl::StrCat("the runtime's stream server reset the connection to port ", port_));
        return;
      }
      // A reset after the pod side ended finishes the connection.
      remote_eof_ = true;
      fin_sent_ = true;
      error_ended_ = true;
    }
    if (!error_text_.empty()) {
      fail(PortError::Kind::kRuntimeReported, error_text_);
      return;
    }
    maybeDeliverEof();
    maybeClosed();
  }

  void onDrained() {
    if (above_ && queuedBytes() <= kWriteLowWatermark) {
      above_ = false;
      callbacks_.onWriteDrained();
    }
  }

  UpstreamPortForward* session_;
  const uint16_t port_;
  session::PortCallbacks& callbacks_;
  std::shared_ptr<bool> alive_;
  uint32_t error_id_ = 0;
  uint32_t data_id_ = 0;
  Buffer pending_;
  std::string error_text_;
  bool connected_ = false;
  bool remote_eof_ = false;  // the runtime FIN'd the data stream
  bool eof_delivered_ = false;
  bool error_ended_ = false;
  bool write_shut_ = false;
  bool fin_sent_ = false;
  bool ended_ = false;
  bool paused_ = false;
  bool above_ = false;
};

UpstreamPortForward::UpstreamPortForward(event::Dispatcher& dispatcher,
                                         const StreamServerOptions& options,
                                         session::PortForwardSpec spec)
    : dispatcher_(dispatcher), options_(options), spec_(std::move(spec)) {}

UpstreamPortForward::~UpstreamPortForward() {
  for (auto& [connection, unused] : connections_) {
    connection->session_ = nullptr;
  }
  connections_.clear();
  upgrade_.reset();
  internal::releaseConnection(connection_);
}

absl::StatusOr<std::unique_ptr<session::PortConnection>> UpstreamPortForward::connectPort(
    uint16_t port, session::PortCallbacks& callbacks) {
  if (port == 0) {
    return absl::InvalidArgumentError("port 0 cannot be forwarded");
  }
  auto connection = std::make_unique<UpstreamPortConnection>(*this, port, callbacks);
  connections_[connection.get()] = true;
  switch (state_) {
    case State::kIdle: {
      absl::StatusOr<Url> url = parseUrl(spec_.upstream_url);
      if (!url.ok()) {
        connections_.erase(connection.get());
        connection->session_ = nullptr;
        return url.status();
      }
      server_ = url->hostPort();
      state_ = State::kUpgrading;
      upgrade_ = std::make_unique<UpgradeClient>(dispatcher_, options_.upgrade);
      upgrade_->start(*url, "POST",
                      {{"Connection", "Upgrade"},
                       {"Upgrade", "SPDY/3.1"},
                       {"X-Stream-Protocol-Version", "portforward.k8s.io"}},
                      [this](absl::StatusOr<UpgradeResponse> r) { onUpgraded(std::move(r)); });
      break;
    }
    case State::kUpgrading:
      break;
    case State::kOpen:
      openPair(*connection);
      break;
    case State::kFailed:
      connection->fail(PortError::Kind::kConnectFailed, failure_);
      break;
  }
  return std::unique_ptr<session::PortConnection>(std::move(connection));
}

void UpstreamPortForward::onUpgraded(absl::StatusOr<UpgradeResponse> response) {
  dispatcher_.deferredDelete(std::move(upgrade_));
  if (!response.ok()) {
    failAll(std::string(response.status().message()));
    return;
  }
  const std::string* chosen = response->header("X-Stream-Protocol-Version");
  if (chosen != nullptr && *chosen != "portforward.k8s.io") {
    failAll(absl::StrCat("runtime stream server ", server_,
                         ": chose a protocol crisp did not offer: ", *chosen));
    return;
  }
  connection_ = internal::startConnection(dispatcher_, options_, std::move(response->transport),
                                          *this);
  state_ = State::kOpen;
  updateReadPause();
  std::vector<UpstreamPortConnection*> waiting;
  for (auto& [connection, unused] : connections_) {
    waiting.push_back(connection);
  }
  for (UpstreamPortConnection* connection : waiting) {
    openPair(*connection);
  }
}

void UpstreamPortForward::openPair(UpstreamPortConnection& connection) {
  if (connection.ended_ || connection.data_id_ != 0) {
    return;
  }
  const std::string request_id = std::to_string(next_request_id_++);
  const std::string port = std::to_string(connection.port_);
  // In client-go's order: the error stream first, closed for writing at once
  // (the client never writes on it), then the data stream.
  const uint32_t error_id = connection_->openStream(
      {{"streamtype", "error"}, {"port", port}, {"requestid", request_id}});
  const uint32_t data_id = error_id == 0 ? 0
                                         : connection_->openStream({{"streamtype", "data"},
                                                                    {"port", port},
                                                                    {"requestid", request_id}});
  if (data_id == 0) {
    if (error_id != 0) {
      connection_->resetStream(error_id, spdy::RstStatus::kCancel);
    }
    connection.fail(PortError::Kind::kConnectFailed,
                    absl::StrCat("runtime stream server ", server_,
                                 ": the connection accepts no more streams"));
    return;
  }
  connection_->sendData(error_id, std::string_view(), true);
  connection.error_id_ = error_id;
  connection.data_id_ = data_id;
  streams_[error_id] = &connection;
  streams_[data_id] = &connection;
  connection.flush();
}

void UpstreamPortForward::failAll(const std::string& message) {
  if (state_ == State::kFailed) {
    return;
  }
  CRISP_LOG(kRuntime, info, "port-forward to pod sandbox {}: {}", spec_.pod_sandbox_id, message);
  state_ = State::kFailed;
  failure_ = message;
  streams_.clear();
  for (auto& [connection, unused] : connections_) {
    connection->error_id_ = 0;
    connection->data_id_ = 0;
    connection->fail(PortError::Kind::kConnectFailed, message);
  }
}

void UpstreamPortForward::forget(UpstreamPortConnection& connection) {
  connections_.erase(&connection);
  for (uint32_t id : {connection.error_id_, connection.data_id_}) {
    if (id != 0) {
      streams_.erase(id);
    }
  }
}

void UpstreamPortForward::updateReadPause() {
  if (connection_ != nullptr) {
    // SPDY has no per-stream flow control here: one slow reader holds them all.
    connection_->pauseReading(paused_readers_ > 0);
  }
}

bool UpstreamPortForward::onStreamOpen(uint32_t, const spdy::HeaderList&) { return false; }

void UpstreamPortForward::onStreamReply(uint32_t stream_id) {
  auto it = streams_.find(stream_id);
  if (it != streams_.end()) {
    it->second->onReply(stream_id);
  }
}

void UpstreamPortForward::onStreamData(uint32_t stream_id, Buffer& data) {
  auto it = streams_.find(stream_id);
  if (it != streams_.end()) {
    it->second->onData(stream_id, data);
  }
  data.drain(data.length());
}

void UpstreamPortForward::onStreamRemoteFin(uint32_t stream_id) {
  auto it = streams_.find(stream_id);
  if (it != streams_.end()) {
    it->second->onFin(stream_id);
  }
}

void UpstreamPortForward::onStreamReset(uint32_t stream_id, spdy::RstStatus /*status*/) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    return;
  }
  UpstreamPortConnection* connection = it->second;
  streams_.erase(it);
  connection->onReset(stream_id);
}

void UpstreamPortForward::onOutputBelowLowWatermark() {
  std::vector<UpstreamPortConnection*> all;
  for (auto& [connection, unused] : connections_) {
    all.push_back(connection);
  }
  for (UpstreamPortConnection* connection : all) {
    connection->onDrained();
  }
}

void UpstreamPortForward::onConnectionClosing(stream::SpdyCloseReason reason,
                                              const std::string& detail) {
  failAll(absl::StrCat("runtime stream server ", server_, ": lost the connection (",
                       stream::closeReasonName(reason), ": ", detail, ")"));
}

void UpstreamPortForward::onConnectionClosed() {
  failAll(absl::StrCat("runtime stream server ", server_, ": the connection closed"));
}

}  // namespace crisp::streamserver
