#include "source/cri/grpc_server.h"

#include <cstring>
#include <vector>

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "source/common/logger.h"
#include "source/cri/grpc_connection.h"
#include "source/cri/grpc_metrics.h"

namespace crisp::cri {
namespace internal {

// One request stream. Owned by its ServerConnection; linked both ways with the
// ServerCall handed to the handler (call == nullptr once the handler dropped it,
// ServerCall::stream_ == nullptr once the stream is gone).
struct ServerStream {
  ServerStream(ServerConnection& c, int32_t stream_id, size_t max_message_bytes)
      : connection(c), id(stream_id), decoder(max_message_bytes) {}

  ServerConnection& connection;
  const int32_t id;
  std::string method;
  std::string path;
  std::string content_type;
  std::string grpc_encoding;
  std::optional<std::string> grpc_timeout;
  Metadata metadata;
  size_t header_bytes = 0;
  bool headers_too_large = false;
  std::optional<std::chrono::steady_clock::time_point> deadline;
  GrpcMessageDecoder decoder;
  StreamSendState send;
  ReadGate gate;
  bool response_submitted = false;
  // The final status (or an HTTP error, or a reset) is queued; nothing more goes
  // out and nothing more is delivered.
  bool finished = false;
  bool remote_ended = false;
  ServerCall* call = nullptr;
  // What arrived before the handler set callbacks.
  std::vector<std::string> early_messages;
  bool early_half_close = false;
  event::TimerPtr deadline_timer;
};

class ServerConnection : public Http2Connection {
 public:
  ServerConnection(GrpcServer& server, int fd)
      : Http2Connection(server.dispatcher(), fd, false), server_(server) {}

  ~ServerConnection() override {
    // close() already detached every call; streams die with the map.
  }

  bool init() {
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_option* option = nullptr;
    if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&option) != 0) {
      std::abort();
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, &onBeginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, &onHeader);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, &onFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, &onDataChunkRecv);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, &onStreamClose);
    nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, &onFrameSend);
    nghttp2_option_set_no_auto_window_update(option, 1);
    nghttp2_session* session = nullptr;
    const int rv = nghttp2_session_server_new2(&session, callbacks, this, option);
    nghttp2_session_callbacks_del(callbacks);
    nghttp2_option_del(option);
    if (rv != 0) {
      closeSoon(absl::InternalError("nghttp2_session_server_new2 failed"));
      return false;
    }
    const std::vector<nghttp2_settings_entry> settings = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, server_.options().max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kWindowBytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(kMaxHeaderListBytes)},
    };
    return start(session, settings);
  }

  size_t streamCount() const { return streams_.size(); }

  // GOAWAY(NO_ERROR) naming the last stream this side processed.
  void goAway() {
    if (closed()) {
      return;
    }
    nghttp2_submit_goaway(session(), NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(session()), NGHTTP2_NO_ERROR,
                          nullptr, 0);
    scheduleFlush();
  }

  // ServerCall operations.
  bool sendHeaders(ServerStream& s, const Metadata& headers);
  bool sendMessage(ServerStream& s, std::string_view message);
  bool finish(ServerStream& s, const absl::Status& status, const Metadata& trailers);
  void detach(ServerStream& s) {
    if (s.call != nullptr) {
      s.call->stream_ = nullptr;
      s.call = nullptr;
    }
  }

 protected:
  StreamSendState* sendStateFor(int32_t stream_id) override {
    auto it = streams_.find(stream_id);
    return it == streams_.end() ? nullptr : &it->second->send;
  }

  void onClosed(const absl::Status& reason) override {
    const absl::Status cancelled =
        absl::CancelledError("client disconnected (" + std::string(reason.message()) + ")");
    std::map<int32_t, std::unique_ptr<ServerStream>> streams;
    streams.swap(streams_);
    for (auto& [id, stream] : streams) {
      cancelStream(*stream, cancelled);
    }
    streams.clear();
    server_.onConnectionClosed(this);
  }

 private:
  static ServerConnection* self(void* user_data) {
    return static_cast<ServerConnection*>(user_data);
  }
  ServerStream* findStream(int32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
  }

  static int onBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static int onHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user_data);
  static int onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);
  static int onDataChunkRecv(nghttp2_session* session, uint8_t flags, int32_t stream_id,
                             const uint8_t* data, size_t len, void* user_data);
  static int onStreamClose(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                           void* user_data);
  static int onFrameSend(nghttp2_session* session, const nghttp2_frame* frame, void* user_data);

  void onRequestHeaders(ServerStream& s);
  void onRemoteEnd(ServerStream& s);
  void onDeadline(ServerStream& s);
  void respondHttpError(ServerStream& s, const char* status);
  // The transport ends the call with `status` and tells the handler.
  void failStream(ServerStream& s, const absl::Status& status);
  // Tells the handler the call is over (without sending anything).
  void cancelStream(ServerStream& s, const absl::Status& reason);
  void deliverMessages(ServerStream& s, std::vector<std::string>& messages);

  GrpcServer& server_;
  std::map<int32_t, std::unique_ptr<ServerStream>> streams_;
};

int ServerConnection::onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame,
                                     void* user_data) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;
  }
  ServerConnection* c = self(user_data);
  auto stream = std::make_unique<ServerStream>(*c, frame->hd.stream_id,
                                               c->server_.options().max_message_bytes);
  c->streams_[frame->hd.stream_id] = std::move(stream);
  return 0;
}

int ServerConnection::onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                               size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                               void* user_data) {
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
    return 0;  // Request trailers carry nothing gRPC uses.
  }
  ServerStream* s = self(user_data)->findStream(frame->hd.stream_id);
  if (s == nullptr) {
    return 0;
  }
  s->header_bytes += namelen + valuelen + 32;
  if (s->header_bytes > kMaxHeaderListBytes) {
    s->headers_too_large = true;
    return 0;
  }
  std::string n(reinterpret_cast<const char*>(name), namelen);
  std::string v(reinterpret_cast<const char*>(value), valuelen);
  if (!n.empty() && n[0] == ':') {
    if (n == ":method") {
      s->method = std::move(v);
    } else if (n == ":path") {
      s->path = std::move(v);
    }
    return 0;
  }
  if (n == "content-type") {
    s->content_type = v;
  } else if (n == "grpc-encoding") {
    s->grpc_encoding = v;
  } else if (n == "grpc-timeout") {
    s->grpc_timeout = v;
  }
  s->metadata.emplace_back(std::move(n), std::move(v));
  return 0;
}

int ServerConnection::onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
  ServerConnection* c = self(user_data);
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
    return 0;
  }
  ServerStream* s = c->findStream(frame->hd.stream_id);
  if (s == nullptr) {
    return 0;
  }
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    c->onRequestHeaders(*s);
    // The handler may have finished the call; the stream stays until closed.
    s = c->findStream(frame->hd.stream_id);
    if (s == nullptr) {
      return 0;
    }
  }
  if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    c->onRemoteEnd(*s);
  }
  return 0;
}

int ServerConnection::onDataChunkRecv(nghttp2_session*, uint8_t, int32_t stream_id,
                                      const uint8_t* data, size_t len, void* user_data) {
  ServerConnection* c = self(user_data);
  ServerStream* s = c->findStream(stream_id);
  if (s == nullptr) {
    nghttp2_session_consume_connection(c->session(), len);
    return 0;
  }
  c->consumeReceived(stream_id, s->gate, len);
  if (s->finished) {
    return 0;
  }
  std::vector<std::string> messages;
  const absl::Status status = s->decoder.decode(data, len, messages);
  c->deliverMessages(*s, messages);
  if (!status.ok() && !s->finished) {
    c->failStream(*s, status);
  }
  return 0;
}

int ServerConnection::onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                                    void* user_data) {
  ServerConnection* c = self(user_data);
  auto it = c->streams_.find(stream_id);
  if (it == c->streams_.end()) {
    return 0;
  }
  std::unique_ptr<ServerStream> stream = std::move(it->second);
  c->streams_.erase(it);
  if (!stream->finished) {
    c->cancelStream(
        *stream, absl::CancelledError(error_code == NGHTTP2_NO_ERROR || error_code == NGHTTP2_CANCEL
                                          ? "client cancelled the call"
                                          : std::string("client reset the stream: ") +
                                                nghttp2_http2_strerror(error_code)));
  } else {
    c->detach(*stream);
  }
  return 0;
}

int ServerConnection::onFrameSend(nghttp2_session* session, const nghttp2_frame* frame,
                                  void* user_data) {
  // A response that ends before the request did: reset the request side with
  // NO_ERROR so that the client stops sending (RFC 9113 section 8.1).
  if (frame->hd.type != NGHTTP2_HEADERS || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
    return 0;
  }
  ServerStream* s = self(user_data)->findStream(frame->hd.stream_id);
  if (s != nullptr && !s->remote_ended &&
      nghttp2_session_find_stream(session, frame->hd.stream_id) != nullptr) {
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

void ServerConnection::respondHttpError(ServerStream& s, const char* status) {
  s.finished = true;
  const Metadata headers = {{":status", status}};
  const std::vector<nghttp2_nv> nv = toNv(headers);
  nghttp2_submit_response(session(), s.id, nv.data(), nv.size(), nullptr);
  scheduleFlush();
}

void ServerConnection::onRequestHeaders(ServerStream& s) {
  if (s.headers_too_large) {
    respondHttpError(s, "431");
    return;
  }
  if (s.method != "POST") {
    respondHttpError(s, "405");
    return;
  }
  const std::string_view kGrpcType = "application/grpc";
  if (s.content_type.compare(0, kGrpcType.size(), kGrpcType) != 0 ||
      (s.content_type.size() > kGrpcType.size() && s.content_type[kGrpcType.size()] != '+' &&
       s.content_type[kGrpcType.size()] != ';')) {
    respondHttpError(s, "415");
    return;
  }
  if (s.grpc_timeout.has_value()) {
    const auto timeout = parseGrpcTimeout(*s.grpc_timeout);
    if (!timeout.has_value()) {
      finish(s, absl::InternalError("malformed grpc-timeout: " + *s.grpc_timeout), {});
      return;
    }
    s.deadline = std::chrono::steady_clock::now() +
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(*timeout);
    ServerStream* sp = &s;
    s.deadline_timer =
        std::make_unique<event::Timer>(dispatcher(), [this, sp] { onDeadline(*sp); });
    s.deadline_timer->enable(std::chrono::ceil<std::chrono::milliseconds>(*timeout));
  }
  if (!s.grpc_encoding.empty() && s.grpc_encoding != "identity") {
    finish(s, absl::UnimplementedError("message encoding " + s.grpc_encoding + " is not supported"),
           {{"grpc-accept-encoding", "identity"}});
    return;
  }
  auto call = std::unique_ptr<ServerCall>(new ServerCall(&s));
  s.call = call.get();
  CRISP_CONN_LOG(kCri, trace, id(), "call {} on stream {}", s.path, s.id);
  server_.dispatch(std::move(call));
}

void ServerConnection::onRemoteEnd(ServerStream& s) {
  s.remote_ended = true;
  if (s.finished) {
    return;
  }
  const absl::Status status = s.decoder.finish();
  if (!status.ok()) {
    failStream(s, status);
    return;
  }
  if (s.call != nullptr && s.call->callbacks_ != nullptr) {
    s.call->callbacks_->onHalfClose();
  } else {
    s.early_half_close = true;
  }
}

void ServerConnection::onDeadline(ServerStream& s) {
  if (s.finished) {
    return;
  }
  // PROTOCOL-HTTP2.md "Client Cancellation": a server that sees the deadline
  // pass cancels the call and resets the stream with CANCEL.
  s.finished = true;
  recordCall(s.path, absl::StatusCode::kDeadlineExceeded);
  nghttp2_submit_rst_stream(session(), NGHTTP2_FLAG_NONE, s.id, NGHTTP2_CANCEL);
  scheduleFlush();
  cancelStream(s, absl::DeadlineExceededError("deadline exceeded"));
}

void ServerConnection::failStream(ServerStream& s, const absl::Status& status) {
  CRISP_CONN_LOG(kCri, debug, id(), "stream {} ({}) failed: {}", s.id, s.path, status.ToString());
  finish(s, status, {});
  cancelStream(s, status);
}

void ServerConnection::cancelStream(ServerStream& s, const absl::Status& reason) {
  if (!s.finished) {
    s.finished = true;
    recordCall(s.path, reason.code());
  }
  if (s.deadline_timer != nullptr) {
    s.deadline_timer->disable();
  }
  s.send.cancelDrainedNotice();
  ServerCall* call = s.call;
  detach(s);
  if (call == nullptr) {
    return;
  }
  if (call->callbacks_ != nullptr) {
    call->callbacks_->onCancel(reason);
  } else {
    // The handler has not set callbacks yet; it learns on setCallbacks().
    call->pending_cancel_ = reason;
  }
}

void ServerConnection::deliverMessages(ServerStream& s, std::vector<std::string>& messages) {
  for (auto& message : messages) {
    if (s.finished) {
      return;
    }
    if (s.call != nullptr && s.call->callbacks_ != nullptr) {
      s.call->callbacks_->onMessage(std::move(message));
    } else {
      s.early_messages.push_back(std::move(message));
    }
  }
}

bool ServerConnection::sendHeaders(ServerStream& s, const Metadata& headers) {
  if (closed() || s.finished || s.response_submitted) {
    return false;
  }
  Metadata out = {{":status", "200"}};
  std::string content_type = "application/grpc";
  for (const auto& [name, value] : headers) {
    if (name == "content-type") {
      content_type = value;
    }
  }
  out.emplace_back("content-type", content_type);
  for (const auto& [name, value] : headers) {
    if (name == "content-type" || name == "grpc-status" || name == "grpc-message" ||
        isHopByHopHeader(name) || !isValidHeaderField(name, value)) {
      continue;
    }
    out.emplace_back(name, value);
  }
  const std::vector<nghttp2_nv> nv = toNv(out);
  const nghttp2_data_provider provider = dataProvider(s.send);
  if (nghttp2_submit_response(session(), s.id, nv.data(), nv.size(), &provider) != 0) {
    return false;
  }
  s.response_submitted = true;
  scheduleFlush();
  return true;
}

bool ServerConnection::sendMessage(ServerStream& s, std::string_view message) {
  if (closed() || s.finished) {
    return false;
  }
  if (!s.response_submitted && !sendHeaders(s, {})) {
    return false;
  }
  appendGrpcMessage(s.send.pending, message);
  queueSend(s.id, s.send);
  return true;
}

bool ServerConnection::finish(ServerStream& s, const absl::Status& status,
                              const Metadata& trailers) {
  if (closed() || s.finished) {
    return false;
  }
  s.finished = true;
  if (s.deadline_timer != nullptr) {
    s.deadline_timer->disable();
  }
  recordCall(s.path, status.code());
  Metadata out;
  out.emplace_back("grpc-status", std::to_string(static_cast<int>(status.code())));
  if (!status.message().empty()) {
    out.emplace_back("grpc-message", percentEncodeGrpcMessage(std::string(status.message())));
  }
  for (const auto& [name, value] : trailers) {
    if (name == "grpc-status" || name == "grpc-message" || name == "content-type" ||
        isHopByHopHeader(name) || !isValidHeaderField(name, value)) {
      continue;
    }
    out.emplace_back(name, value);
  }
  if (!s.response_submitted) {
    // Trailers-Only: one HEADERS frame with END_STREAM.
    out.insert(out.begin(), {{":status", "200"}, {"content-type", "application/grpc"}});
    const std::vector<nghttp2_nv> nv = toNv(out);
    s.response_submitted = true;
    if (nghttp2_submit_response(session(), s.id, nv.data(), nv.size(), nullptr) != 0) {
      nghttp2_submit_rst_stream(session(), NGHTTP2_FLAG_NONE, s.id, NGHTTP2_INTERNAL_ERROR);
    }
    scheduleFlush();
    return true;
  }
  s.send.end = true;
  s.send.end_with_trailers = true;
  s.send.trailers = std::move(out);
  queueSend(s.id, s.send);
  return true;
}

}  // namespace internal

using internal::ServerStream;

ServerCall::ServerCall(ServerStream* stream)
    : stream_(stream),
      path_(stream->path),
      metadata_(stream->metadata),
      deadline_(stream->deadline),
      connection_id_(stream->connection.id()) {}

ServerCall::~ServerCall() {
  if (stream_ == nullptr) {
    return;
  }
  ServerStream& s = *stream_;
  s.call = nullptr;
  stream_ = nullptr;
  s.send.cancelDrainedNotice();
  if (!s.finished) {
    s.connection.finish(s, absl::InternalError("call dropped by the server without a status"), {});
  }
}

void ServerCall::setCallbacks(Callbacks* callbacks) {
  callbacks_ = callbacks;
  if (callbacks_ == nullptr) {
    return;
  }
  if (pending_cancel_.has_value()) {
    const absl::Status reason = *pending_cancel_;
    pending_cancel_.reset();
    callbacks_->onCancel(reason);
    return;
  }
  ServerStream* s = stream_;
  if (s == nullptr) {
    return;
  }
  std::vector<std::string> early;
  early.swap(s->early_messages);
  const bool half_closed = s->early_half_close;
  s->early_half_close = false;
  for (auto& message : early) {
    if (stream_ == nullptr || !active()) {
      return;
    }
    callbacks_->onMessage(std::move(message));
  }
  if (half_closed && stream_ != nullptr && active()) {
    callbacks_->onHalfClose();
  }
}

bool ServerCall::sendHeaders(const Metadata& headers) {
  return stream_ != nullptr && stream_->connection.sendHeaders(*stream_, headers);
}

bool ServerCall::sendMessage(std::string_view message) {
  return stream_ != nullptr && stream_->connection.sendMessage(*stream_, message);
}

bool ServerCall::finish(const absl::Status& status, const Metadata& trailers) {
  return stream_ != nullptr && stream_->connection.finish(*stream_, status, trailers);
}

bool ServerCall::active() const {
  return stream_ != nullptr && !stream_->finished && !stream_->connection.closed();
}

size_t ServerCall::bufferedBytes() const {
  return stream_ == nullptr ? 0 : stream_->send.pending.length();
}

void ServerCall::notifyWhenDrained(std::function<void()> fn) {
  if (stream_ != nullptr) {
    stream_->send.notifyWhenDrained(std::move(fn));
  }
}

void ServerCall::pauseReading(bool paused) {
  if (stream_ != nullptr) {
    stream_->connection.setReadPaused(stream_->id, stream_->gate, paused);
  }
}

namespace {

// Adapts a UnaryHandler to ServerCall::Callbacks. Owns the call; keeps itself
// alive until the handler has the request, then the UnaryDone keeps it.
class UnaryCall : public ServerCall::Callbacks, public std::enable_shared_from_this<UnaryCall> {
 public:
  UnaryCall(std::unique_ptr<ServerCall> call,
            std::shared_ptr<GrpcServer::CancellableUnaryHandler> handler,
            event::Dispatcher& dispatcher)
      : call_(std::move(call)), handler_(std::move(handler)), dispatcher_(dispatcher) {}

  void start() {
    self_ = shared_from_this();
    call_->setCallbacks(this);
  }

  void onMessage(std::string message) override {
    if (request_.has_value()) {
      fail(absl::InternalError("unary method received more than one request message"));
      return;
    }
    request_ = std::move(message);
  }

  void onHalfClose() override {
    if (!request_.has_value()) {
      fail(absl::InternalError("unary method received no request message"));
      return;
    }
    auto ref = std::make_shared<LoopRef>(std::move(self_), dispatcher_);
    // Always through post(): safe from any thread, and a handler that answers
    // at once never re-enters the connection from its own call stack.
    GrpcServer::UnaryDone done = [ref](absl::StatusOr<std::string> result) {
      ref->dispatcher().post(
          [ref, result = std::move(result)]() mutable { ref->call().complete(std::move(result)); });
    };
    on_cancel_ = (*handler_)(std::move(*request_), std::move(done));
  }

  void onCancel(const absl::Status&) override {
    // The handler's work is abandoned only while its answer is outstanding.
    if (on_cancel_ && !completed_) {
      std::function<void()> cancel = std::move(on_cancel_);
      cancel();
    }
    std::shared_ptr<UnaryCall> self = std::move(self_);
    // `self` may be the last reference: this object goes away on return.
  }

 private:
  // Holds a UnaryCall for a UnaryDone, which may be copied and destroyed on any
  // thread: the last reference is always dropped on the loop thread.
  class LoopRef {
   public:
    LoopRef(std::shared_ptr<UnaryCall> call, event::Dispatcher& dispatcher)
        : call_(std::move(call)), dispatcher_(dispatcher) {}
    ~LoopRef() {
      dispatcher_.post([call = std::move(call_)]() mutable { call.reset(); });
    }
    UnaryCall& call() { return *call_; }
    event::Dispatcher& dispatcher() { return dispatcher_; }

   private:
    std::shared_ptr<UnaryCall> call_;
    event::Dispatcher& dispatcher_;
  };

  void fail(const absl::Status& status) {
    call_->finish(status);
    std::shared_ptr<UnaryCall> self = std::move(self_);
  }

  void complete(absl::StatusOr<std::string> result) {
    completed_ = true;
    on_cancel_ = nullptr;
    if (!call_->active()) {
      return;
    }
    if (result.ok()) {
      call_->sendMessage(*result);
      call_->finish(absl::OkStatus());
    } else if (result.status().ok()) {
      call_->finish(absl::InternalError("handler returned an OK status without a message"));
    } else {
      call_->finish(result.status());
    }
  }

  std::unique_ptr<ServerCall> call_;
  std::shared_ptr<GrpcServer::CancellableUnaryHandler> handler_;
  event::Dispatcher& dispatcher_;
  std::optional<std::string> request_;
  std::function<void()> on_cancel_;
  bool completed_ = false;
  std::shared_ptr<UnaryCall> self_;
};

}  // namespace

GrpcServer::GrpcServer(event::Dispatcher& dispatcher, GrpcServerOptions options)
    : dispatcher_(dispatcher), options_(options) {}

void GrpcServer::closeListener() {
  accept_watcher_.reset();
  accept_retry_timer_.reset();
  if (listen_fd_ < 0) {
    return;
  }
  ::close(listen_fd_);
  listen_fd_ = -1;
  // Remove the socket file only if it is still the one this server created.
  struct stat st;
  if (lstat(socket_path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == socket_inode_) {
    ::unlink(socket_path_.c_str());
  }
}

void GrpcServer::drain() {
  CRISP_LOG(kCri, info, "gRPC server on {} draining {} connection(s)", socket_path_,
            connections_.size());
  closeListener();
  for (auto& [id, connection] : connections_) {
    connection->goAway();
  }
}

GrpcServer::~GrpcServer() {
  closeListener();
  std::map<uint64_t, std::unique_ptr<internal::ServerConnection>> connections;
  connections.swap(connections_);
  for (auto& [id, connection] : connections) {
    connection->close(absl::CancelledError("server shutting down"));
  }
}

namespace {

// True when a server accepts connections on the unix socket at `addr`.
bool socketAnswers(const sockaddr_un& addr) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return false;
  }
  const bool answered = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return answered;
}

}  // namespace

absl::Status GrpcServer::listenUnix(const std::string& path, mode_t mode,
                                    std::optional<uint32_t> gid) {
  if (listen_fd_ >= 0) {
    return absl::FailedPreconditionError("server already listens on " + socket_path_);
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError("unix socket path is empty or longer than " +
                                      std::to_string(sizeof(addr.sun_path) - 1) +
                                      " bytes: " + path);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return absl::FailedPreconditionError(path + " exists and is not a socket");
    }
    // A socket file is stale only when nothing answers on it: never take the
    // socket away from a running server (another crisp, or the runtime itself).
    if (socketAnswers(addr)) {
      return absl::FailedPreconditionError(path +
                                           " is in use: another process accepts connections on it");
    }
    if (::unlink(path.c_str()) != 0) {
      return absl::UnavailableError("remove stale socket " + path + ": " + std::strerror(errno));
    }
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(std::string("socket: ") + std::strerror(errno));
  }
  // bind() creates the file with the process umask; make it owner-only until
  // the group and mode are in place (umask is per process: this runs at start,
  // before other threads create files).
  const mode_t previous_umask = ::umask(0177);
  const int bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  const int bind_err = errno;
  ::umask(previous_umask);
  if (bound != 0) {
    ::close(fd);
    return absl::UnavailableError("bind " + path + ": " + std::strerror(bind_err));
  }
  if (gid && ::lchown(path.c_str(), static_cast<uid_t>(-1), *gid) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return absl::UnavailableError("chown " + path + " to group " + std::to_string(*gid) + ": " +
                                  std::strerror(err));
  }
  if (::chmod(path.c_str(), mode) != 0 || ::listen(fd, SOMAXCONN) != 0 ||
      lstat(path.c_str(), &st) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return absl::UnavailableError("listen " + path + ": " + std::strerror(err));
  }
  listen_fd_ = fd;
  socket_path_ = path;
  socket_inode_ = st.st_ino;
  accept_watcher_ =
      std::make_unique<event::FdWatcher>(dispatcher_, fd, [this](short) { onAcceptReady(); });
  accept_retry_timer_ = std::make_unique<event::Timer>(
      dispatcher_, [this] { accept_watcher_->setEnabled(event::FdWatcher::kRead); });
  accept_watcher_->setEnabled(event::FdWatcher::kRead);
  CRISP_LOG(kCri, info, "gRPC server listening on {}", path);
  return absl::OkStatus();
}

void GrpcServer::onAcceptReady() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: pause accepting instead of spinning on a ready socket.
        CRISP_LOG(kCri, warn, "accept on {}: {}; retrying in 100 ms", socket_path_,
                  std::strerror(errno));
        accept_watcher_->setEnabled(0);
        accept_retry_timer_->enable(std::chrono::milliseconds(100));
      }
      return;
    }
    auto connection = std::make_unique<internal::ServerConnection>(*this, fd);
    internal::ServerConnection* raw = connection.get();
    connections_[raw->id()] = std::move(connection);
    CRISP_CONN_LOG(kCri, debug, raw->id(), "accepted gRPC connection on {}", socket_path_);
    raw->init();
  }
}

void GrpcServer::registerUnary(const std::string& path, UnaryHandler handler) {
  registerCancellableUnary(path,
                           [handler = std::move(handler)](std::string request, UnaryDone done) {
                             handler(std::move(request), std::move(done));
                             return std::function<void()>();
                           });
}

void GrpcServer::registerCancellableUnary(const std::string& path,
                                          CancellableUnaryHandler handler) {
  Route route;
  route.unary = std::make_shared<CancellableUnaryHandler>(std::move(handler));
  routes_[path] = std::move(route);
}

void GrpcServer::registerHandler(const std::string& path, CallHandler& handler) {
  Route route;
  route.handler = &handler;
  routes_[path] = std::move(route);
}

void GrpcServer::setFallback(CallHandler* handler) { fallback_ = handler; }

size_t GrpcServer::activeStreamCount() const {
  size_t n = 0;
  for (const auto& [id, connection] : connections_) {
    n += connection->streamCount();
  }
  return n;
}

void GrpcServer::dispatch(std::unique_ptr<ServerCall> call) {
  auto it = routes_.find(call->path());
  if (it != routes_.end()) {
    if (it->second.unary != nullptr) {
      auto unary = std::make_shared<UnaryCall>(std::move(call), it->second.unary, dispatcher_);
      unary->start();
    } else {
      it->second.handler->onCall(std::move(call));
    }
    return;
  }
  if (fallback_ != nullptr) {
    fallback_->onCall(std::move(call));
    return;
  }
  call->finish(absl::UnimplementedError("unknown method " + call->path()));
}

void GrpcServer::onConnectionClosed(internal::ServerConnection* connection) {
  auto it = connections_.find(connection->id());
  if (it == connections_.end()) {
    return;  // Shutting down: the destructor owns it.
  }
  std::unique_ptr<internal::ServerConnection> owned = std::move(it->second);
  connections_.erase(it);
  dispatcher_.deferredDelete(std::move(owned));
}

}  // namespace crisp::cri
