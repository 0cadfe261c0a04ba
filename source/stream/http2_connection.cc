#include "source/stream/http2_connection.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include <nghttp2/nghttp2.h>

#include "source/common/logger.h"
#include "source/stream/stream_limits.h"

namespace crisp::stream {
namespace {

// The connection window: its bytes are consumed on arrival, so it only has
// to be large enough not to throttle a fast stream.
constexpr int32_t kConnectionWindowBytes = 16 * 1024 * 1024;
// Largest piece of nghttp2 output collected before handing it down.
constexpr size_t kWriteBatchBytes = 64 * 1024;
// After GOAWAY, how long the open streams may take before the connection is
// closed anyway.
constexpr std::chrono::seconds kGoawayGrace{1};

const char* errorCodeName(uint32_t code) { return nghttp2_http2_strerror(code); }

}  // namespace

struct Http2Connection::Stream {
  enum class Phase {
    kHeaders,          // receiving the request head
    kWaitingForOwner,  // onStreamRequest() was called, no answer yet
    kRefused,          // answered by respond()
    kAccepted,         // a tunnel with a transport (or whose transport is gone)
  };

  explicit Stream(int32_t stream_id) : id(stream_id) {}

  const int32_t id;
  Phase phase = Phase::kHeaders;
  Http2Request request;
  size_t header_bytes = 0;
  bool header_too_large = false;
  // DATA received before the owner answered; not consumed yet.
  Buffer early_input;
  Http2StreamTransport* transport = nullptr;
  // Bytes for DATA frames not yet taken by nghttp2, and how they end.
  Buffer out;
  bool out_end = false;   // nothing follows `out`
  bool end_sent = false;  // nghttp2 has the END_STREAM flag
  bool deferred = false;  // nghttp2 waits for resume_data
  bool remote_end = false;
};

// The C callbacks nghttp2 calls, each forwarding to the connection.
struct Http2Connection::NghttpCallbacks {
  static Http2Connection& self(void* user_data) {
    return *static_cast<Http2Connection*>(user_data);
  }

  static int beginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;
    }
    return self(user_data).onBeginHeaders(frame->hd.stream_id);
  }

  static int header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                    size_t name_len, const uint8_t* value, size_t value_len, uint8_t,
                    void* user_data) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;  // trailers carry nothing crisp uses
    }
    return self(user_data).onHeader(
        frame->hd.stream_id, std::string_view(reinterpret_cast<const char*>(name), name_len),
        std::string_view(reinterpret_cast<const char*>(value), value_len));
  }

  static int frameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    uint8_t flags = frame->hd.flags;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      flags &= NGHTTP2_FLAG_END_STREAM;  // trailers: only the end matters
      return self(user_data).onFrameRecv(NGHTTP2_DATA, flags, frame->hd.stream_id);
    }
    return self(user_data).onFrameRecv(frame->hd.type, flags, frame->hd.stream_id);
  }

  static int frameSend(nghttp2_session*, const nghttp2_frame* frame, void* user_data) {
    return self(user_data).onFrameSend(frame->hd.type, frame->hd.flags, frame->hd.stream_id);
  }

  static int invalidFrameRecv(nghttp2_session*, const nghttp2_frame* frame, int lib_error,
                              void* user_data) {
    return self(user_data).onInvalidFrameRecv(frame->hd.type, frame->hd.stream_id, lib_error);
  }

  static int dataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                       size_t len, void* user_data) {
    return self(user_data).onDataChunk(stream_id, data, len);
  }

  static int streamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code,
                         void* user_data) {
    return self(user_data).onStreamClose(stream_id, error_code);
  }

  static ssize_t readData(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source*, void* user_data) {
    return self(user_data).readStreamData(stream_id, buf, length, data_flags);
  }
};

Http2Connection::Http2Connection(event::Dispatcher& dispatcher, TransportPtr transport, uint64_t id,
                                 const Http2ConnectionOptions& options, Callbacks& callbacks)
    : dispatcher_(dispatcher),
      transport_(std::move(transport)),
      id_(id),
      peer_(transport_->peerAddress()),
      options_(options),
      callbacks_(callbacks),
      flush_timer_(dispatcher, [this] { flush(); }),
      idle_timer_(dispatcher, [this] { onIdle(); }),
      closed_timer_(dispatcher, [this] { callbacks_.onClosed(*this); }) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_option* option = nullptr;
  int rv = nghttp2_session_callbacks_new(&cbs);
  if (rv == 0) {
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &NghttpCallbacks::beginHeaders);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &NghttpCallbacks::header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &NghttpCallbacks::frameRecv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &NghttpCallbacks::frameSend);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(
        cbs, &NghttpCallbacks::invalidFrameRecv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &NghttpCallbacks::dataChunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &NghttpCallbacks::streamClose);
    rv = nghttp2_option_new(&option);
  }
  if (rv == 0) {
    // Windows open as owners take bytes, not as nghttp2 receives them.
    nghttp2_option_set_no_auto_window_update(option, 1);
    rv = nghttp2_session_server_new2(&session_, cbs, this, option);
  }
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(cbs);
  if (rv == 0) {
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options_.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, options_.stream_window_bytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, options_.max_header_list_bytes},
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
    };
    rv = nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings,
                                 sizeof(settings) / sizeof(settings[0]));
  }
  if (rv == 0) {
    rv = nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                               kConnectionWindowBytes);
  }
  transport_->setCallbacks(*this);
  if (rv != 0) {
    CRISP_CONN_LOG(kStream, error, id_, "http2 setup: {}", nghttp2_strerror(rv));
    close(absl::StrCat("http2 setup: ", nghttp2_strerror(rv)));
    return;
  }
  transport_->start();
  updateIdleTimer();
  scheduleFlush();
}

Http2Connection::~Http2Connection() {
  if (!closed_) {
    closed_ = true;
    transport_->close();
  }
  for (auto& [stream_id, stream] : streams_) {
    if (stream->transport != nullptr) {
      stream->transport->detach("HTTP/2 connection closed");
    }
  }
  streams_.clear();
  if (session_ != nullptr) {
    nghttp2_session_del(session_);
  }
}

void Http2Connection::close(const std::string& reason) {
  if (closed_) {
    return;
  }
  closed_ = true;
  CRISP_CONN_LOG(kStream, debug, id_, "http2 connection closed: {} ({} streams open)", reason,
                 streams_.size());
  transport_->close();
  flush_timer_.disable();
  idle_timer_.disable();
  for (auto& [stream_id, stream] : streams_) {
    if (stream->transport != nullptr) {
      stream->transport->detach(absl::StrCat("HTTP/2 connection closed: ", reason));
      stream->transport = nullptr;
    }
  }
  accepted_ = 0;
  streams_.clear();
  closed_timer_.enable(std::chrono::milliseconds(0));
}

void Http2Connection::fail(const std::string& reason) {
  CRISP_CONN_LOG(kStream, info, id_, "http2 connection from {} failed: {}", peer_, reason);
  close(reason);
}

void Http2Connection::shutdown() {
  if (closed_ || ending_) {
    return;
  }
  ending_ = true;
  nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
  scheduleFlush();
}

void Http2Connection::onIdle() {
  if (ending_) {
    close("ended");
    return;
  }
  if (accepted_ > 0) {
    return;
  }
  CRISP_CONN_LOG(kStream, debug, id_, "http2: no session for {} ms; GOAWAY",
                 options_.idle_timeout.count());
  shutdown();
  idle_timer_.enable(std::chrono::duration_cast<std::chrono::milliseconds>(kGoawayGrace));
}

// TransportCallbacks

void Http2Connection::onTransportData(Buffer& data) {
  if (closed_) {
    data.drain(data.length());
    return;
  }
  const size_t len = data.length();
  const uint8_t* bytes = data.linearize(len);
  in_recv_ = true;
  const ssize_t rv = nghttp2_session_mem_recv(session_, bytes, len);
  in_recv_ = false;
  data.drain(len);
  if (closed_) {
    return;
  }
  if (rv < 0) {
    // Fatal for the session (a wrong preface, a flood, a callback failure);
    // a GOAWAY is queued where one can be sent.
    flush();
    fail(absl::StrCat("http2: ", nghttp2_strerror(static_cast<int>(rv))));
    return;
  }
  flush();
}

void Http2Connection::onTransportEof() { close("client closed the connection"); }

void Http2Connection::onTransportDrained() { flush(); }

void Http2Connection::onTransportError(const std::string& detail) { fail(detail); }

// nghttp2 callbacks

int Http2Connection::onBeginHeaders(int32_t stream_id) {
  auto stream = std::make_unique<Stream>(stream_id);
  stream->request.request.peer = peer_;
  streams_[stream_id] = std::move(stream);
  return 0;
}

int Http2Connection::onHeader(int32_t stream_id, std::string_view name, std::string_view value) {
  Stream* stream = find(stream_id);
  if (stream == nullptr || stream->phase != Stream::Phase::kHeaders) {
    return 0;
  }
  // RFC 9113 6.5.2: the size of a field is its name and value plus 32.
  stream->header_bytes += name.size() + value.size() + 32;
  if (stream->header_bytes > options_.max_header_list_bytes) {
    stream->header_too_large = true;
  }
  if (stream->header_too_large) {
    return 0;
  }
  HttpRequest& request = stream->request.request;
  if (name == ":method") {
    request.method = std::string(value);
  } else if (name == ":path") {
    const size_t q = value.find('?');
    request.path = std::string(value.substr(0, q));
    request.query = q == std::string_view::npos ? "" : std::string(value.substr(q + 1));
  } else if (name == ":protocol") {
    stream->request.protocol = std::string(value);
  } else if (name == ":authority") {
    request.headers.emplace_back("host", std::string(value));
  } else if (!name.empty() && name.front() != ':') {
    request.headers.emplace_back(std::string(name), std::string(value));
  }
  return 0;
}

int Http2Connection::onFrameRecv(uint8_t type, uint8_t flags, int32_t stream_id) {
  Stream* stream = find(stream_id);
  if (stream == nullptr) {
    return 0;
  }
  if ((flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    stream->remote_end = true;
    if (stream->transport != nullptr) {
      stream->transport->peer_eof_ = true;
      stream->transport->schedule();
    }
  }
  if (type != NGHTTP2_HEADERS || stream->phase != Stream::Phase::kHeaders) {
    return 0;
  }
  if (stream->header_too_large) {
    CRISP_CONN_LOG(kStream, info, id_, "http2 stream {}: header list above {} bytes", stream_id,
                   options_.max_header_list_bytes);
    countLimitHit(StreamLimit::kHeaderBytes, options_.registry);
    stream->phase = Stream::Phase::kWaitingForOwner;
    respond(stream_id, goHeadError(431));
    callbacks_.onStreamRefused(*this, "header_too_large");
    return 0;
  }
  stream->phase = Stream::Phase::kWaitingForOwner;
  Http2Request request = std::move(stream->request);
  callbacks_.onStreamRequest(*this, stream_id, std::move(request));
  return 0;
}

int Http2Connection::onFrameSend(uint8_t type, uint8_t flags, int32_t stream_id) {
  if ((type != NGHTTP2_HEADERS && type != NGHTTP2_DATA) || (flags & NGHTTP2_FLAG_END_STREAM) == 0) {
    return 0;
  }
  Stream* stream = find(stream_id);
  if (stream != nullptr && stream->phase == Stream::Phase::kRefused && !stream->remote_end) {
    // The answer is complete; the client need not send the rest of its
    // request (RFC 9113 8.1).
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_NO_ERROR);
  }
  return 0;
}

int Http2Connection::onInvalidFrameRecv(uint8_t type, int32_t stream_id, int lib_error) {
  if (type != NGHTTP2_HEADERS) {
    return 0;
  }
  // nghttp2 checks the stream count before a stream exists: REFUSED_STREAM
  // while our SETTINGS are unacknowledged, a connection error after.
  const bool over_limit = lib_error == NGHTTP2_ERR_REFUSED_STREAM ||
                          (lib_error == NGHTTP2_ERR_PROTO && find(stream_id) == nullptr &&
                           streams_.size() >= options_.max_concurrent_streams);
  if (over_limit) {
    CRISP_CONN_LOG(kStream, info, id_, "http2 stream {}: more than {} concurrent streams",
                   stream_id, options_.max_concurrent_streams);
    countLimitHit(StreamLimit::kHttp2Streams, options_.registry);
    return 0;
  }
  CRISP_CONN_LOG(kStream, info, id_, "http2 stream {}: malformed request ({})", stream_id,
                 nghttp2_strerror(lib_error));
  callbacks_.onStreamRefused(*this, "bad_request");
  return 0;
}

int Http2Connection::onDataChunk(int32_t stream_id, const uint8_t* data, size_t len) {
  nghttp2_session_consume_connection(session_, len);
  Stream* stream = find(stream_id);
  if (stream != nullptr && stream->transport != nullptr) {
    stream->transport->input_.add(data, len);
    stream->transport->schedule();
    return 0;
  }
  if (stream != nullptr && stream->phase == Stream::Phase::kWaitingForOwner) {
    stream->early_input.add(data, len);
    return 0;
  }
  // Nobody will read it: a refused request's body, or a tunnel whose owner
  // has gone.
  nghttp2_session_consume_stream(session_, stream_id, len);
  return 0;
}

int Http2Connection::onStreamClose(int32_t stream_id, uint32_t error_code) {
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) {
    return 0;
  }
  Stream& stream = *it->second;
  if (stream.transport != nullptr) {
    if (error_code != NGHTTP2_NO_ERROR) {
      stream.transport->detach(
          absl::StrCat("HTTP/2 stream reset by the client (", errorCodeName(error_code), ")"));
    } else if (!stream.end_sent) {
      stream.transport->detach("HTTP/2 stream closed by the client");
    } else {
      // Both directions ended: an EOF that has not been delivered yet still is.
      stream.transport->peer_eof_ = true;
      stream.transport->detach("");
    }
    --accepted_;
  }
  streams_.erase(it);
  updateIdleTimer();
  return 0;
}

long Http2Connection::readStreamData(int32_t stream_id, uint8_t* buf, size_t length,
                                     uint32_t* data_flags) {
  Stream* stream = find(stream_id);
  if (stream == nullptr) {
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  const size_t n = stream->out.copyOut(buf, length);
  stream->out.drain(n);
  if (stream->out.empty()) {
    if (stream->out_end) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      stream->end_sent = true;
    } else if (n == 0) {
      stream->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  if (stream->transport != nullptr) {
    stream->transport->drained_due_ = true;
    stream->transport->schedule();
  }
  return static_cast<long>(n);
}

// Answers

void Http2Connection::respond(int32_t stream_id, const HttpResponse& response) {
  Stream* stream = find(stream_id);
  if (closed_ || stream == nullptr || stream->phase != Stream::Phase::kWaitingForOwner) {
    return;
  }
  stream->phase = Stream::Phase::kRefused;
  if (!stream->early_input.empty()) {
    nghttp2_session_consume_stream(session_, stream_id, stream->early_input.length());
    stream->early_input.drain(stream->early_input.length());
  }
  submitResponse(*stream, response);
  scheduleFlush();
}

void Http2Connection::submitResponse(Stream& stream, const HttpResponse& response) {
  std::vector<std::pair<std::string, std::string>> fields;
  fields.emplace_back(":status", std::to_string(response.status));
  for (const auto& [name, value] : response.headers) {
    std::string lower = absl::AsciiStrToLower(name);
    // Connection-specific fields are not allowed in HTTP/2 (RFC 9113 8.2.2).
    if (lower == "connection" || lower == "content-length" || lower == "transfer-encoding") {
      continue;
    }
    fields.emplace_back(std::move(lower), value);
  }
  const bool has_body = !response.body.empty() && !response.omit_body;
  if (has_body) {
    fields.emplace_back("content-length", std::to_string(response.body.size()));
  }
  std::vector<nghttp2_nv> nv;
  nv.reserve(fields.size());
  for (const auto& [name, value] : fields) {
    nv.push_back(nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                            const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())),
                            name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  nghttp2_data_provider provider{};
  provider.read_callback = &NghttpCallbacks::readData;
  if (has_body) {
    stream.out.add(response.body);
    stream.out_end = true;
  }
  const int rv = nghttp2_submit_response(session_, stream.id, nv.data(), nv.size(),
                                         has_body ? &provider : nullptr);
  if (rv != 0) {
    CRISP_CONN_LOG(kStream, warn, id_, "http2 stream {}: cannot answer: {}", stream.id,
                   nghttp2_strerror(rv));
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream.id, NGHTTP2_INTERNAL_ERROR);
  }
}

TransportPtr Http2Connection::accept(
    int32_t stream_id, const std::vector<std::pair<std::string, std::string>>& headers) {
  Stream* stream = find(stream_id);
  if (closed_ || stream == nullptr || stream->phase != Stream::Phase::kWaitingForOwner) {
    return nullptr;
  }
  stream->phase = Stream::Phase::kAccepted;
  std::unique_ptr<Http2StreamTransport> transport(
      new Http2StreamTransport(dispatcher_, *this, stream_id, peer_, transport_->peerIdentity()));
  transport->input_.move(stream->early_input);
  transport->peer_eof_ = stream->remote_end;
  stream->transport = transport.get();
  ++accepted_;
  updateIdleTimer();

  std::vector<std::pair<std::string, std::string>> fields;
  fields.emplace_back(":status", "200");
  fields.insert(fields.end(), headers.begin(), headers.end());
  std::vector<nghttp2_nv> nv;
  for (const auto& [name, value] : fields) {
    nv.push_back(nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                            const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())),
                            name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  nghttp2_data_provider provider{};
  provider.read_callback = &NghttpCallbacks::readData;
  const int rv = nghttp2_submit_response(session_, stream_id, nv.data(), nv.size(), &provider);
  if (rv != 0) {
    CRISP_CONN_LOG(kStream, warn, id_, "http2 stream {}: cannot answer: {}", stream_id,
                   nghttp2_strerror(rv));
    transport->detach(absl::StrCat("http2: ", nghttp2_strerror(rv)));
  }
  scheduleFlush();
  return transport;
}

// From stream transports

void Http2Connection::streamWrite(int32_t stream_id, Buffer& data) {
  Stream* stream = find(stream_id);
  if (closed_ || stream == nullptr || stream->out_end) {
    data.drain(data.length());
    return;
  }
  stream->out.move(data);
  if (stream->deferred) {
    stream->deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  scheduleFlush();
}

void Http2Connection::streamShutdownWrite(int32_t stream_id) {
  Stream* stream = find(stream_id);
  if (closed_ || stream == nullptr || stream->out_end) {
    return;
  }
  stream->out_end = true;
  if (stream->deferred) {
    stream->deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  scheduleFlush();
}

void Http2Connection::streamConsumed(int32_t stream_id, size_t bytes) {
  if (closed_ || bytes == 0 || find(stream_id) == nullptr) {
    return;
  }
  nghttp2_session_consume_stream(session_, stream_id, bytes);
  scheduleFlush();
}

void Http2Connection::streamTransportGone(int32_t stream_id, bool reset) {
  Stream* stream = find(stream_id);
  if (closed_ || stream == nullptr || stream->transport == nullptr) {
    return;
  }
  stream->transport = nullptr;
  --accepted_;
  if (reset || !stream->end_sent) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
  } else if (!stream->remote_end) {
    // Our side is complete; the client need not send more.
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_NO_ERROR);
  }
  updateIdleTimer();
  scheduleFlush();
}

size_t Http2Connection::streamQueued(int32_t stream_id) const {
  const Stream* stream = find(stream_id);
  if (stream == nullptr) {
    return 0;
  }
  // An END_STREAM still to be sent counts as one byte, so that an owner
  // waiting for its queue to empty waits for the end too.
  return stream->out.length() + (stream->out_end && !stream->end_sent ? 1 : 0);
}

Http2Connection::Stream* Http2Connection::find(int32_t stream_id) const {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

// Output

void Http2Connection::scheduleFlush() {
  if (!closed_ && !in_recv_ && !flush_timer_.enabled()) {
    flush_timer_.enable(std::chrono::milliseconds(0));
  }
}

void Http2Connection::flush() {
  if (closed_) {
    return;
  }
  Buffer batch;
  while (transport_->queuedBytes() + batch.length() < kOutputHighWatermark) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (closed_) {
      return;
    }
    if (n < 0) {
      fail(absl::StrCat("http2 send: ", nghttp2_strerror(static_cast<int>(n))));
      return;
    }
    if (n == 0) {
      break;
    }
    batch.add(data, static_cast<size_t>(n));
    if (batch.length() >= kWriteBatchBytes) {
      transport_->write(batch);
    }
  }
  if (!batch.empty()) {
    transport_->write(batch);
  }
  // A client that sends faster than it reads (PINGs, SETTINGS) waits until
  // it has read our answers.
  transport_->pauseReading(transport_->queuedBytes() >= kOutputHighWatermark);
  if (nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0) {
    // GOAWAY exchanged and every stream over, or the session failed: let
    // the client read what is queued, then end.
    transport_->shutdownWrite();
    ending_ = true;
    if (!idle_timer_.enabled()) {
      idle_timer_.enable(std::chrono::duration_cast<std::chrono::milliseconds>(kGoawayGrace));
    }
  }
}

void Http2Connection::updateIdleTimer() {
  if (closed_ || ending_) {
    return;
  }
  if (accepted_ == 0) {
    if (!idle_timer_.enabled()) {
      idle_timer_.enable(options_.idle_timeout);
    }
  } else {
    idle_timer_.disable();
  }
}

// Http2StreamTransport

Http2StreamTransport::Http2StreamTransport(event::Dispatcher& dispatcher,
                                           Http2Connection& connection, int32_t stream_id,
                                           std::string peer_address, std::string peer_identity)
    : connection_(&connection),
      stream_id_(stream_id),
      peer_address_(std::move(peer_address)),
      peer_identity_(std::move(peer_identity)),
      scheduled_(dispatcher, [this] { deliver(); }) {}

Http2StreamTransport::~Http2StreamTransport() {
  if (!closed_) {
    close();
  }
}

void Http2StreamTransport::start() {
  started_ = true;
  paused_ = false;
  schedule();
}

void Http2StreamTransport::write(Buffer& data) {
  if (closed_ || connection_ == nullptr) {
    data.drain(data.length());
    return;
  }
  connection_->streamWrite(stream_id_, data);
}

size_t Http2StreamTransport::queuedBytes() const {
  return connection_ == nullptr ? 0 : connection_->streamQueued(stream_id_);
}

void Http2StreamTransport::pauseReading(bool paused) {
  paused_ = paused;
  if (!paused) {
    schedule();
  }
}

void Http2StreamTransport::unreadInput(Buffer& data) {
  // Bytes handed back were consumed (their window reopened) when first
  // delivered; they are not counted again.
  returned_ += data.length();
  Buffer front;
  front.move(data);
  front.move(input_);
  input_ = std::move(front);
  schedule();
}

void Http2StreamTransport::shutdownWrite() {
  if (!closed_ && connection_ != nullptr) {
    connection_->streamShutdownWrite(stream_id_);
  }
}

void Http2StreamTransport::close() {
  if (closed_) {
    return;
  }
  closed_ = true;
  scheduled_.disable();
  input_.drain(input_.length());
  if (connection_ != nullptr) {
    Http2Connection* connection = connection_;
    connection_ = nullptr;
    connection->streamTransportGone(stream_id_, false);
  }
}

void Http2StreamTransport::schedule() {
  if (!closed_ && callbacks_ != nullptr && !scheduled_.enabled()) {
    scheduled_.enable(std::chrono::milliseconds(0));
  }
}

void Http2StreamTransport::detach(const std::string& error) {
  connection_ = nullptr;
  if (!error.empty()) {
    error_ = error;
  }
  schedule();
}

void Http2StreamTransport::deliver() {
  if (closed_ || callbacks_ == nullptr) {
    return;
  }
  if (!error_.empty()) {
    const std::string error = std::move(error_);
    closed_ = true;
    input_.drain(input_.length());
    callbacks_->onTransportError(error);
    return;
  }
  if (!started_) {
    return;
  }
  if (!paused_ && !input_.empty()) {
    const size_t n = input_.length();
    callbacks_->onTransportData(input_);
    const size_t fresh = n - std::min(n, returned_);
    returned_ -= n - fresh;
    if (closed_) {
      return;
    }
    if (connection_ != nullptr) {
      connection_->streamConsumed(stream_id_, fresh);
    }
  }
  if (!paused_ && input_.empty() && peer_eof_ && !eof_delivered_) {
    eof_delivered_ = true;
    callbacks_->onTransportEof();
    if (closed_) {
      return;
    }
  }
  if (drained_due_) {
    drained_due_ = false;
    callbacks_->onTransportDrained();
  }
}

}  // namespace crisp::stream
