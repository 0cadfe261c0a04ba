#include "source/cri/grpc_client.h"

#include <cctype>
#include <cstring>
#include <map>

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "source/common/logger.h"
#include "source/cri/grpc_connection.h"

namespace crisp::cri {
namespace internal {

// One request stream, owned by its ClientConnection and linked both ways with
// the ClientCall (call == nullptr once the call is gone or done).
struct ClientStream {
  ClientStream(ClientConnection& c, size_t max_message_bytes)
      : connection(c), decoder(max_message_bytes) {}

  ClientConnection& connection;
  int32_t id = -1;
  std::string path;
  StreamSendState send;
  ReadGate gate;
  GrpcMessageDecoder decoder;
  int http_status = 0;
  std::string content_type;
  Metadata fields;  // Non-pseudo fields of the HEADERS block being received.
  std::optional<std::string> grpc_status;
  std::string grpc_message;
  bool headers_delivered = false;
  // onClose was delivered (or the caller cancelled): nothing more is delivered.
  bool done = false;
  bool local_ended = false;
  bool remote_ended = false;
  ClientCall* call = nullptr;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  event::TimerPtr deadline_timer;
};

namespace {

std::string lowerFirst(std::string s) {
  if (!s.empty()) {
    s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  }
  return s;
}

}  // namespace

class ClientConnection : public Http2Connection {
 public:
  ClientConnection(GrpcClient& client, int fd, bool connecting)
      : Http2Connection(client.dispatcher_, fd, connecting), client_(client) {}

  // `connect_errno` != 0: the connect already failed; every call fails with it.
  void init(int connect_errno) {
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_option* option = nullptr;
    if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&option) != 0) {
      std::abort();
    }
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &onHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &onFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &onDataChunkRecv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &onStreamClose);
    nghttp2_option_set_no_auto_window_update(option, 1);
    nghttp2_session* session = nullptr;
    const int rv = nghttp2_session_client_new2(&session, callbacks, this, option);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_option_del(option);
    if (rv != 0) {
      std::abort();
    }
    const std::vector<nghttp2_settings_entry> settings = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kWindowBytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(kMaxHeaderListBytes)},
    };
    start(session, settings);
    if (connect_errno != 0) {
      closeSoon(socketError("connect", connect_errno));
    }
  }

  bool goingAway() const { return going_away_; }
  size_t streamCount() const { return streams_.size(); }

  // Starts a stream for `call`; false when the session refuses (the caller
  // fails the call).
  bool startStream(ClientCall& call, const std::string& path, const Metadata& metadata,
                   std::optional<std::chrono::steady_clock::time_point> deadline);

  bool sendMessage(ClientStream& s, std::string_view message) {
    if (closed() || s.done || s.local_ended) {
      return false;
    }
    appendGrpcMessage(s.send.pending, message);
    queueSend(s.id, s.send);
    return true;
  }

  bool halfClose(ClientStream& s) {
    if (closed() || s.done || s.local_ended) {
      return false;
    }
    s.local_ended = true;
    s.send.end = true;
    queueSend(s.id, s.send);
    return true;
  }

  // The caller gave up: reset the stream, never call back.
  void cancel(ClientStream& s) {
    s.send.cancelDrainedNotice();
    if (s.call != nullptr) {
      s.call->stream_ = nullptr;
      s.call = nullptr;
    }
    if (s.done) {
      return;
    }
    s.done = true;
    if (s.deadline_timer != nullptr) {
      s.deadline_timer->disable();
    }
    if (!closed()) {
      nghttp2_submit_rst_stream(session(), NGHTTP2_FLAG_NONE, s.id, NGHTTP2_CANCEL);
      scheduleFlush();
    }
  }

 protected:
  StreamSendState* sendStateFor(int32_t stream_id) override {
    auto it = streams_.find(stream_id);
    return it == streams_.end() ? nullptr : &it->second->send;
  }

  absl::Status socketError(const std::string& what, int err) override {
    const std::string cause = lowerFirst(std::strerror(err));
    if (what == "connect") {
      return absl::UnavailableError(client_.options_.peer_name + ": " + cause);
    }
    return absl::UnavailableError(client_.options_.peer_name + ": connection lost (" + what + ": " +
                                  cause + ")");
  }

  void onClosed(const absl::Status& reason) override {
    const std::string& peer = client_.options_.peer_name;
    std::string message(reason.message().data(), reason.message().size());
    if (message.compare(0, peer.size(), peer) != 0) {
      message = peer + ": " + message;
    }
    const absl::Status status = absl::UnavailableError(message);
    std::map<int32_t, std::unique_ptr<ClientStream>> streams;
    streams.swap(streams_);
    for (auto& [id, stream] : streams) {
      closeStream(*stream, status, {});
    }
    streams.clear();
    client_.onConnectionClosed(this);
  }

 private:
  static ClientConnection* self(void* user_data) {
    return static_cast<ClientConnection*>(user_data);
  }
  ClientStream* findStream(int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  static int onHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user_data);
  static int onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static int onDataChunkRecv(nghttp2_session* session, uint8_t flags, int32_t stream_id,
                             const uint8_t* data, size_t len, void* user_data);
  static int onStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                           void* user_data);

  void onResponseHeaders(ClientStream& s, bool end_stream);
  void onTrailers(ClientStream& s);
  // Ends the call with `status` and resets the stream (errors found locally).
  void failStream(ClientStream& s, const absl::Status& status);
  // Delivers onClose once.
  void closeStream(ClientStream& s, const absl::Status& status, const Metadata& trailers);

  GrpcClient& client_;
  std::map<int32_t, std::unique_ptr<ClientStream>> streams_;
  bool going_away_ = false;
};

bool ClientConnection::startStream(ClientCall& call, const std::string& path,
                                   const Metadata& metadata,
                                   std::optional<std::chrono::steady_clock::time_point> deadline) {
  if (closed() || going_away_) {
    return false;
  }
  auto stream = std::make_unique<ClientStream>(*this, client_.options_.max_message_bytes);
  stream->path = path;
  Metadata headers = {{":method", "POST"},
                      {":scheme", "http"},
                      {":path", path},
                      {":authority", client_.options_.authority}};
  std::optional<std::chrono::nanoseconds> timeout;
  if (deadline.has_value()) {
    timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(
        *deadline - std::chrono::steady_clock::now());
    // Timeout goes right after the reserved headers (PROTOCOL-HTTP2.md).
    headers.emplace_back("grpc-timeout", formatGrpcTimeout(*timeout));
  }
  std::string content_type = "application/grpc";
  bool has_user_agent = false;
  for (const auto& [name, value] : metadata) {
    if (name == "content-type") {
      content_type = value;
    } else if (name == "user-agent") {
      has_user_agent = true;
    }
  }
  headers.emplace_back("content-type", content_type);
  headers.emplace_back("te", "trailers");
  if (!has_user_agent) {
    headers.emplace_back("user-agent", client_.options_.user_agent);
  }
  for (const auto& [name, value] : metadata) {
    if (name == "content-type" || name == "grpc-timeout" || isHopByHopHeader(name) ||
        !isValidHeaderField(name, value)) {
      continue;
    }
    headers.emplace_back(name, value);
  }
  const std::vector<nghttp2_nv> nv = toNv(headers);
  const nghttp2_data_provider provider = dataProvider(stream->send);
  const int32_t id =
      nghttp2_submit_request(session(), nullptr, nv.data(), nv.size(), &provider, nullptr);
  if (id < 0) {
    CRISP_CONN_LOG(kCri, debug, this->id(), "submit request {}: {}", path, nghttp2_strerror(id));
    return false;
  }
  stream->id = id;
  stream->call = &call;
  call.stream_ = stream.get();
  stream->deadline = deadline;
  if (timeout.has_value()) {
    ClientStream* sp = stream.get();
    stream->deadline_timer = std::make_unique<event::Timer>(dispatcher(), [this, sp] {
      failStream(*sp, absl::DeadlineExceededError("deadline exceeded"));
    });
    stream->deadline_timer->enable(std::chrono::ceil<std::chrono::milliseconds>(*timeout));
  }
  streams_[id] = std::move(stream);
  scheduleFlush();
  return true;
}

int ClientConnection::onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                               size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                               void* user_data) {
  if (frame->hd.type != NGHTTP2_HEADERS) {
    return 0;
  }
  ClientStream* s = self(user_data)->findStream(frame->hd.stream_id);
  if (s == nullptr || s->done) {
    return 0;
  }
  std::string n(reinterpret_cast<const char*>(name), namelen);
  std::string v(reinterpret_cast<const char*>(value), valuelen);
  if (n == ":status") {
    s->http_status = std::atoi(v.c_str());
  } else if (!n.empty() && n[0] == ':') {
    return 0;
  } else if (n == "grpc-status") {
    s->grpc_status = std::move(v);
  } else if (n == "grpc-message") {
    s->grpc_message = std::move(v);
  } else {
    if (n == "content-type") {
      s->content_type = v;
    }
    s->fields.emplace_back(std::move(n), std::move(v));
  }
  return 0;
}

int ClientConnection::onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  ClientConnection* c = self(user_data);
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    // Streams above last_stream_id are closed by nghttp2 with REFUSED_STREAM;
    // new calls go to a new connection.
    c->going_away_ = true;
    return 0;
  }
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
    return 0;
  }
  ClientStream* s = c->findStream(frame->hd.stream_id);
  if (s == nullptr || s->done) {
    return 0;
  }
  const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (end_stream) {
    s->remote_ended = true;
  }
  if (frame->hd.type == NGHTTP2_HEADERS) {
    if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
      c->onResponseHeaders(*s, end_stream);
    } else if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && end_stream) {
      c->onTrailers(*s);
    }
    return 0;
  }
  if (end_stream) {
    c->failStream(*s, absl::InternalError("server closed the stream without sending trailers"));
  }
  return 0;
}

void ClientConnection::onResponseHeaders(ClientStream& s, bool end_stream) {
  if (s.http_status >= 100 && s.http_status < 200 && !end_stream) {
    s.fields.clear();  // Informational response; the real one follows.
    return;
  }
  if (s.http_status != 200) {
    const int http_status = s.http_status;
    failStream(s, absl::Status(grpcCodeFromHttpStatus(http_status),
                               "unexpected HTTP status " + std::to_string(http_status) + " from " +
                                   client_.options_.peer_name));
    return;
  }
  if (end_stream) {
    // Trailers-Only.
    onTrailers(s);
    return;
  }
  if (s.content_type.compare(0, 16, "application/grpc") != 0) {
    failStream(s, absl::UnknownError("unexpected content-type \"" + s.content_type + "\" from " +
                                     client_.options_.peer_name));
    return;
  }
  s.headers_delivered = true;
  Metadata headers;
  headers.swap(s.fields);
  if (s.call != nullptr) {
    s.call->callbacks_.onHeaders(headers);
  }
}

void ClientConnection::onTrailers(ClientStream& s) {
  absl::Status status = s.decoder.finish();
  if (status.ok()) {
    if (!s.grpc_status.has_value()) {
      status = absl::InternalError("server closed the stream without a grpc-status");
    } else {
      int code = -1;
      const std::string& v = *s.grpc_status;
      if (!v.empty() && v.size() <= 3 && v.find_first_not_of("0123456789") == std::string::npos) {
        code = std::atoi(v.c_str());
      }
      status = absl::Status(grpcCodeFromNumber(code), percentDecodeGrpcMessage(s.grpc_message));
    }
  }
  Metadata trailers;
  for (auto& [name, value] : s.fields) {
    if (name != "content-type" || s.headers_delivered) {
      trailers.emplace_back(std::move(name), std::move(value));
    }
  }
  s.fields.clear();
  closeStream(s, status, trailers);
  if (!s.local_ended && !closed()) {
    // The response ended first: stop the request side (PROTOCOL-HTTP2.md,
    // "Early Server Closure").
    nghttp2_submit_rst_stream(session(), NGHTTP2_FLAG_NONE, s.id, NGHTTP2_NO_ERROR);
    scheduleFlush();
  }
}

int ClientConnection::onDataChunkRecv(nghttp2_session*, uint8_t, int32_t stream_id,
                                      const uint8_t* data, size_t len, void* user_data) {
  ClientConnection* c = self(user_data);
  ClientStream* s = c->findStream(stream_id);
  if (s == nullptr) {
    nghttp2_session_consume_connection(c->session(), len);
    return 0;
  }
  c->consumeReceived(stream_id, s->gate, len);
  if (s->done) {
    return 0;
  }
  std::vector<std::string> messages;
  const absl::Status status = s->decoder.decode(data, len, messages);
  for (auto& message : messages) {
    if (s->done || s->call == nullptr) {
      break;
    }
    s->call->callbacks_.onMessage(std::move(message));
  }
  if (!status.ok() && !s->done) {
    c->failStream(*s, status);
  }
  return 0;
}

int ClientConnection::onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                                    void* user_data) {
  ClientConnection* c = self(user_data);
  auto it = c->streams_.find(stream_id);
  if (it == c->streams_.end()) {
    return 0;
  }
  std::unique_ptr<ClientStream> stream = std::move(it->second);
  c->streams_.erase(it);
  if (!stream->done) {
    absl::Status status;
    if (error_code == NGHTTP2_NO_ERROR) {
      status =
          absl::InternalError(c->client_.options_.peer_name + ": stream closed without a status");
    } else if (error_code == NGHTTP2_REFUSED_STREAM) {
      status = absl::UnavailableError(c->client_.options_.peer_name +
                                      ": call refused before processing (stream refused)");
    } else if (error_code == NGHTTP2_CANCEL && stream->deadline.has_value() &&
               std::chrono::steady_clock::now() >= *stream->deadline) {
      // The server saw the deadline pass first (PROTOCOL-HTTP2.md, "Client
      // Cancellation"): report it as the deadline, not as a cancellation.
      status = absl::DeadlineExceededError("deadline exceeded");
    } else {
      status = absl::Status(grpcCodeFromHttp2Error(error_code),
                            c->client_.options_.peer_name + ": stream reset (" +
                                nghttp2_http2_strerror(error_code) + ")");
    }
    c->closeStream(*stream, status, {});
  } else if (stream->call != nullptr) {
    stream->call->stream_ = nullptr;
    stream->call = nullptr;
  }
  return 0;
}

void ClientConnection::failStream(ClientStream& s, const absl::Status& status) {
  if (s.done) {
    return;
  }
  if (!closed() && (!s.remote_ended || !s.local_ended)) {
    nghttp2_submit_rst_stream(session(), NGHTTP2_FLAG_NONE, s.id, NGHTTP2_CANCEL);
    scheduleFlush();
  }
  closeStream(s, status, {});
}

void ClientConnection::closeStream(ClientStream& s, const absl::Status& status,
                                   const Metadata& trailers) {
  if (s.done) {
    return;
  }
  s.done = true;
  if (s.deadline_timer != nullptr) {
    s.deadline_timer->disable();
  }
  s.send.cancelDrainedNotice();
  ClientCall* call = s.call;
  if (call == nullptr) {
    return;
  }
  s.call = nullptr;
  call->stream_ = nullptr;
  call->done_ = true;
  call->callbacks_.onClose(status, trailers);
}

}  // namespace internal

using internal::ClientConnection;
using internal::ClientStream;

ClientCall::ClientCall(event::Dispatcher& dispatcher, Callbacks& callbacks)
    : callbacks_(callbacks), failure_timer_(dispatcher, [this] {
        done_ = true;
        // A copy: the callback may destroy this call.
        const absl::Status status = pending_failure_;
        callbacks_.onClose(status, {});
      }) {}

ClientCall::~ClientCall() {
  if (stream_ != nullptr) {
    stream_->connection.cancel(*stream_);
  }
}

void ClientCall::failSoon(const absl::Status& status) {
  pending_failure_ = status;
  failure_timer_.enable(std::chrono::milliseconds(0));
}

bool ClientCall::sendMessage(std::string_view message) {
  return stream_ != nullptr && stream_->connection.sendMessage(*stream_, message);
}

bool ClientCall::halfClose() {
  return stream_ != nullptr && stream_->connection.halfClose(*stream_);
}

void ClientCall::cancel() {
  failure_timer_.disable();
  done_ = true;
  if (stream_ != nullptr) {
    stream_->connection.cancel(*stream_);
  }
}

bool ClientCall::active() const { return !done_ && stream_ != nullptr; }

size_t ClientCall::bufferedBytes() const {
  return stream_ == nullptr ? 0 : stream_->send.pending.length();
}

void ClientCall::notifyWhenDrained(std::function<void()> fn) {
  if (stream_ != nullptr) {
    stream_->send.notifyWhenDrained(std::move(fn));
  }
}

void ClientCall::pauseReading(bool paused) {
  if (stream_ != nullptr) {
    stream_->connection.setReadPaused(stream_->id, stream_->gate, paused);
  }
}

GrpcClient::GrpcClient(event::Dispatcher& dispatcher, std::string socket_path,
                       GrpcClientOptions options)
    : dispatcher_(dispatcher), socket_path_(std::move(socket_path)), options_(std::move(options)) {
  if (options_.peer_name.empty()) {
    options_.peer_name = socket_path_;
  }
}

GrpcClient::~GrpcClient() {
  shutting_down_ = true;
  if (active_ != nullptr) {
    active_->close(absl::UnavailableError("client shut down"));
  }
  for (auto& connection : draining_) {
    connection->close(absl::UnavailableError("client shut down"));
  }
}

size_t GrpcClient::connectionCount() const {
  size_t n = 0;
  if (active_ != nullptr && !active_->closed()) {
    ++n;
  }
  for (const auto& connection : draining_) {
    if (!connection->closed()) {
      ++n;
    }
  }
  return n;
}

ClientConnection& GrpcClient::connection() {
  if (active_ != nullptr && !active_->closed() && !active_->goingAway()) {
    return *active_;
  }
  if (active_ != nullptr) {
    if (active_->closed()) {
      dispatcher_.deferredDelete(std::move(active_));
    } else {
      draining_.push_back(std::move(active_));
    }
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int connect_errno = 0;
  bool connecting = false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (fd < 0) {
    connect_errno = errno;
  } else if (socket_path_.size() >= sizeof(addr.sun_path)) {
    connect_errno = ENAMETOOLONG;
  } else {
    std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (errno == EINPROGRESS) {
        connecting = true;
      } else {
        connect_errno = errno;
      }
    }
  }
  if (connect_errno != 0 && fd >= 0) {
    ::close(fd);
    fd = -1;
  }
  active_ = std::make_unique<ClientConnection>(*this, fd, connecting);
  CRISP_CONN_LOG(kCri, debug, active_->id(), "gRPC client connection to {}", socket_path_);
  active_->init(connect_errno);
  return *active_;
}

std::unique_ptr<ClientCall> GrpcClient::startCall(
    const std::string& path, const Metadata& metadata,
    std::optional<std::chrono::steady_clock::time_point> deadline,
    ClientCall::Callbacks& callbacks) {
  auto call = std::unique_ptr<ClientCall>(new ClientCall(dispatcher_, callbacks));
  if (shutting_down_) {
    call->failSoon(absl::UnavailableError(options_.peer_name + ": client shut down"));
    return call;
  }
  if (!connection().startStream(*call, path, metadata, deadline)) {
    call->failSoon(absl::UnavailableError(options_.peer_name + ": cannot start a call"));
  }
  return call;
}

void GrpcClient::onConnectionClosed(ClientConnection* connection) {
  if (shutting_down_) {
    return;
  }
  if (active_.get() == connection) {
    dispatcher_.deferredDelete(std::move(active_));
    return;
  }
  for (auto it = draining_.begin(); it != draining_.end(); ++it) {
    if (it->get() == connection) {
      std::unique_ptr<ClientConnection> owned = std::move(*it);
      draining_.erase(it);
      dispatcher_.deferredDelete(std::move(owned));
      return;
    }
  }
}

namespace {

class BlockingUnary : public ClientCall::Callbacks {
 public:
  explicit BlockingUnary(event::Dispatcher& dispatcher) : dispatcher_(dispatcher) {}

  void onMessage(std::string message) override { messages_.push_back(std::move(message)); }

  void onClose(const absl::Status& status, const Metadata&) override {
    status_ = status;
    done_ = true;
    dispatcher_.exit();
  }

  bool done() const { return done_; }

  absl::StatusOr<std::string> result() {
    if (!status_.ok()) {
      return status_;
    }
    if (messages_.size() != 1) {
      return absl::InternalError("unary call returned " + std::to_string(messages_.size()) +
                                 " response messages");
    }
    return std::move(messages_[0]);
  }

 private:
  event::Dispatcher& dispatcher_;
  std::vector<std::string> messages_;
  absl::Status status_;
  bool done_ = false;
};

}  // namespace

absl::StatusOr<std::string> unaryCallBlocking(const std::string& socket_path,
                                              const std::string& method_path,
                                              std::string_view request,
                                              std::chrono::milliseconds timeout,
                                              const Metadata& metadata) {
  event::Dispatcher dispatcher;
  BlockingUnary callbacks(dispatcher);
  absl::StatusOr<std::string> result;
  {
    GrpcClient client(dispatcher, socket_path);
    std::unique_ptr<ClientCall> call = client.startCall(
        method_path, metadata, std::chrono::steady_clock::now() + timeout, callbacks);
    call->sendMessage(request);
    call->halfClose();
    // The call's deadline timer bounds this loop.
    while (!callbacks.done()) {
      dispatcher.run();
    }
    result = callbacks.result();
  }
  return result;
}

}  // namespace crisp::cri
