#include "test/stream/h2_test_client.h"

#include <cstring>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crisp::stream::testing {

struct H2TestClient::StreamState : public websocket::CodecCallbacks {
  explicit StreamState(bool keep) : keep_messages(keep) {}

  const bool keep_messages;
  Stream view;
  bool websocket = false;
  std::unique_ptr<websocket::Codec> codec;
  Buffer in;  // DATA not yet read by the test
  size_t unconsumed = 0;
  bool paused = false;
  Buffer out;
  bool out_end = false;
  bool deferred = false;
  bool submitted = false;

  void onMessage(websocket::MessageType type, Buffer& payload) override {
    if (type == websocket::MessageType::kBinary && !payload.empty()) {
      uint8_t channel = 0;
      payload.copyOut(&channel, 1);
      view.channel_bytes[channel] += payload.length() - 1;
    }
    if (keep_messages) {
      view.messages.emplace_back(type, payload.toString());
    }
  }
  void onClose(uint16_t code, std::string_view) override { view.close_code = code; }
};

std::string H2TestClient::Stream::channelData(uint8_t channel) const {
  std::string out;
  for (const auto& [type, payload] : messages) {
    if (type == websocket::MessageType::kBinary && !payload.empty() &&
        static_cast<uint8_t>(payload[0]) == channel) {
      out.append(payload, 1, std::string::npos);
    }
  }
  return out;
}

struct H2TestClient::Callbacks {
  static H2TestClient& self(void* p) { return *static_cast<H2TestClient*>(p); }

  static int header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                    size_t name_len, const uint8_t* value, size_t value_len, uint8_t, void* p) {
    if (frame->hd.type != NGHTTP2_HEADERS) {
      return 0;
    }
    Stream& s = self(p).state(frame->hd.stream_id).view;
    const std::string n(reinterpret_cast<const char*>(name), name_len);
    const std::string v(reinterpret_cast<const char*>(value), value_len);
    if (n == ":status") {
      s.status = std::atoi(v.c_str());
    } else {
      s.headers.emplace_back(n, v);
    }
    return 0;
  }

  static int frameRecv(nghttp2_session*, const nghttp2_frame* frame, void* p) {
    H2TestClient& c = self(p);
    switch (frame->hd.type) {
      case NGHTTP2_SETTINGS:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
          for (size_t i = 0; i < frame->settings.niv; ++i) {
            c.server_settings_[frame->settings.iv[i].settings_id] = frame->settings.iv[i].value;
          }
        }
        break;
      case NGHTTP2_GOAWAY:
        c.goaway_ = frame->goaway.error_code;
        break;
      case NGHTTP2_HEADERS:
      case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
          c.state(frame->hd.stream_id).view.end = true;
        }
        break;
      default:
        break;
    }
    return 0;
  }

  static int dataChunk(nghttp2_session* session, uint8_t, int32_t stream_id, const uint8_t* data,
                       size_t len, void* p) {
    H2TestClient& c = self(p);
    nghttp2_session_consume_connection(session, len);
    StreamState& s = c.state(stream_id);
    s.view.received += len;
    s.in.add(data, len);
    if (s.paused) {
      s.unconsumed += len;
    } else {
      nghttp2_session_consume_stream(session, stream_id, len);
      c.decode(s);
    }
    return 0;
  }

  static int streamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* p) {
    Stream& s = self(p).state(stream_id).view;
    s.closed = true;
    s.reset = error_code;
    return 0;
  }

  static ssize_t readData(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* flags, nghttp2_data_source*, void* p) {
    StreamState& s = self(p).state(stream_id);
    const size_t n = s.out.copyOut(buf, length);
    s.out.drain(n);
    if (s.out.empty()) {
      if (s.out_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
      } else if (n == 0) {
        s.deferred = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    return static_cast<ssize_t>(n);
  }
};

std::unique_ptr<H2TestClient> H2TestClient::connect(const std::string& host, uint16_t port,
                                                    const H2ClientOptions& options,
                                                    std::string* error) {
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<H2TestClient> c(new H2TestClient());
  c->keep_messages_ = options.keep_messages;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    addr_len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    addr_len = sizeof(sockaddr_in6);
  } else {
    *error = "not an IP address: " + host;
    return nullptr;
  }
  c->fd_ = ::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd_ < 0 || ::connect(c->fd_, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
    *error = std::string("connect: ") + std::strerror(errno);
    return nullptr;
  }
  const int one = 1;
  setsockopt(c->fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (options.tls) {
    c->ssl_ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(c->ssl_ctx_, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_mode(c->ssl_ctx_,
                     SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (!options.alpn.empty()) {
      std::string wire;
      for (const std::string& p : options.alpn) {
        wire += static_cast<char>(p.size());
        wire += p;
      }
      SSL_CTX_set_alpn_protos(c->ssl_ctx_, reinterpret_cast<const unsigned char*>(wire.data()),
                              static_cast<unsigned int>(wire.size()));
    }
    c->ssl_ = SSL_new(c->ssl_ctx_);
    SSL_set_fd(c->ssl_, c->fd_);
    if (SSL_connect(c->ssl_) != 1) {
      char text[256];
      ERR_error_string_n(ERR_get_error(), text, sizeof(text));
      *error = std::string("TLS handshake: ") + text;
      return nullptr;
    }
    const unsigned char* proto = nullptr;
    unsigned int proto_len = 0;
    SSL_get0_alpn_selected(c->ssl_, &proto, &proto_len);
    c->alpn_.assign(reinterpret_cast<const char*>(proto), proto != nullptr ? proto_len : 0);
  }
  fcntl(c->fd_, F_SETFL, fcntl(c->fd_, F_GETFL, 0) | O_NONBLOCK);

  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::frameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::dataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::streamClose);
  nghttp2_option* option = nullptr;
  nghttp2_option_new(&option);
  nghttp2_option_set_no_auto_window_update(option, 1);
  // Header checks are the server's business here: send whatever the test asks.
  nghttp2_option_set_no_http_messaging(option, 1);
  const int rv = nghttp2_session_client_new2(&c->session_, cbs, c.get(), option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    *error = nghttp2_strerror(rv);
    return nullptr;
  }
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, options.stream_window},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  nghttp2_submit_settings(c->session_, NGHTTP2_FLAG_NONE, settings, 2);
  nghttp2_session_set_local_window_size(c->session_, NGHTTP2_FLAG_NONE, 0,
                                        static_cast<int32_t>(options.connection_window));
  if (!c->sendPending()) {
    *error = c->error_;
    return nullptr;
  }
  return c;
}

H2TestClient::~H2TestClient() {
  if (session_ != nullptr) {
    nghttp2_session_del(session_);
  }
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
  if (ssl_ctx_ != nullptr) {
    SSL_CTX_free(ssl_ctx_);
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

H2TestClient::StreamState& H2TestClient::state(int32_t stream_id) {
  auto& slot = streams_[stream_id];
  if (slot == nullptr) {
    slot = std::make_unique<StreamState>(keep_messages_);
  }
  return *slot;
}

const H2TestClient::Stream& H2TestClient::stream(int32_t stream_id) {
  return state(stream_id).view;
}

int32_t H2TestClient::request(const H2Fields& fields, bool end_stream) {
  std::vector<nghttp2_nv> nv;
  for (const auto& [name, value] : fields) {
    nv.push_back(nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                            const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())),
                            name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  nghttp2_data_provider provider{};
  provider.read_callback = &Callbacks::readData;
  const int32_t id = nghttp2_submit_request(session_, nullptr, nv.data(), nv.size(),
                                            end_stream ? nullptr : &provider, nullptr);
  if (id < 0) {
    error_ = nghttp2_strerror(id);
    return -1;
  }
  state(id).submitted = true;
  sendPending();
  return id;
}

int32_t H2TestClient::openWebSocket(const std::string& path,
                                    const std::vector<std::string>& subprotocols) {
  H2Fields fields = {{":method", "CONNECT"},
                     {":protocol", "websocket"},
                     {":scheme", ssl_ != nullptr ? "https" : "http"},
                     {":path", path},
                     {":authority", "crisp.test"},
                     {"sec-websocket-version", "13"}};
  std::string offer;
  for (const std::string& p : subprotocols) {
    offer += (offer.empty() ? "" : ", ") + p;
  }
  if (!offer.empty()) {
    fields.emplace_back("sec-websocket-protocol", offer);
  }
  const int32_t id = request(fields, false);
  if (id < 0) {
    return id;
  }
  StreamState& s = state(id);
  s.websocket = true;
  websocket::CodecOptions options;
  options.role = websocket::Role::kClient;
  options.random = &random_;
  options.max_message_bytes = uint64_t{1} << 32;
  auto codec = websocket::Codec::create(options, s);
  if (codec.ok()) {
    s.codec = std::move(codec).value();
  }
  return id;
}

void H2TestClient::queueWs(int32_t stream_id) {
  StreamState& s = state(stream_id);
  s.out.move(s.codec->output());
  if (s.deferred) {
    s.deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
}

bool H2TestClient::sendMessage(int32_t stream_id, websocket::MessageType type,
                               std::string_view payload) {
  StreamState& s = state(stream_id);
  if (s.codec == nullptr || s.view.closed || !s.codec->sendMessage(type, payload).ok()) {
    return false;
  }
  queueWs(stream_id);
  return sendPending();
}

bool H2TestClient::sendChannel(int32_t stream_id, uint8_t channel, std::string_view payload) {
  std::string message(1, static_cast<char>(channel));
  message.append(payload);
  return sendMessage(stream_id, websocket::MessageType::kBinary, message);
}

bool H2TestClient::sendClose(int32_t stream_id, uint16_t code) {
  StreamState& s = state(stream_id);
  if (s.codec == nullptr || s.view.closed || !s.codec->sendClose(code).ok()) {
    return false;
  }
  queueWs(stream_id);
  return sendPending();
}

bool H2TestClient::endStream(int32_t stream_id) {
  StreamState& s = state(stream_id);
  if (s.view.closed) {
    return false;
  }
  s.out_end = true;
  if (s.deferred) {
    s.deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  return sendPending();
}

void H2TestClient::reset(int32_t stream_id, uint32_t error_code) {
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
  sendPending();
}

void H2TestClient::pauseReading(int32_t stream_id, bool paused) {
  StreamState& s = state(stream_id);
  s.paused = paused;
  if (!paused) {
    if (s.unconsumed > 0) {
      nghttp2_session_consume_stream(session_, stream_id, s.unconsumed);
      s.unconsumed = 0;
    }
    decode(s);
    sendPending();
  }
}

void H2TestClient::decode(StreamState& s) {
  if (s.in.empty()) {
    return;
  }
  if (s.websocket && s.codec != nullptr && s.view.status == 200) {
    (void)s.codec->dispatch(s.in);
    // Pongs and the close reply go back on the same stream.
    if (!s.codec->output().empty()) {
      for (auto& [id, state] : streams_) {
        if (state.get() == &s) {
          queueWs(id);
        }
      }
    }
    return;
  }
  s.view.body += s.in.toString();
}

bool H2TestClient::writeRaw(std::string_view bytes) {
  if (!sendPending()) {
    return false;
  }
  out_.add(bytes);
  return sendPending();
}

long H2TestClient::readSome(uint8_t* buf, size_t len) {
  if (ssl_ == nullptr) {
    const ssize_t n = ::read(fd_, buf, len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      return -1;
    }
    return n < 0 ? -2 : n;
  }
  const int n = SSL_read(ssl_, buf, static_cast<int>(len));
  if (n > 0) {
    return n;
  }
  const int err = SSL_get_error(ssl_, n);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    return -1;
  }
  return err == SSL_ERROR_ZERO_RETURN ? 0 : -2;
}

long H2TestClient::writeSome(const uint8_t* buf, size_t len) {
  if (ssl_ == nullptr) {
    const ssize_t n = ::send(fd_, buf, len, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      return 0;
    }
    return n < 0 ? -1 : n;
  }
  const int n = SSL_write(ssl_, buf, static_cast<int>(len));
  if (n > 0) {
    return n;
  }
  const int err = SSL_get_error(ssl_, n);
  return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

bool H2TestClient::sendPending() {
  if (closed_) {
    return false;
  }
  for (;;) {
    while (out_.length() < (256u << 10)) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) {
        error_ = nghttp2_strerror(static_cast<int>(n));
        closed_ = true;
        return false;
      }
      if (n == 0) {
        break;
      }
      out_.add(data, static_cast<size_t>(n));
    }
    if (out_.empty()) {
      return true;
    }
    const size_t chunk = std::min<size_t>(out_.length(), 64 << 10);
    const long n = writeSome(out_.linearize(chunk), chunk);
    if (n < 0) {
      error_ = "write failed";
      closed_ = true;
      return false;
    }
    if (n == 0) {
      return true;  // the socket is full; pump() waits for it
    }
    out_.drain(static_cast<size_t>(n));
  }
}

bool H2TestClient::pump(std::chrono::milliseconds wait) {
  if (!sendPending()) {
    return false;
  }
  const bool buffered = ssl_ != nullptr && SSL_pending(ssl_) > 0;
  pollfd p{fd_, static_cast<short>(POLLIN | (out_.empty() ? 0 : POLLOUT)), 0};
  if (!buffered && ::poll(&p, 1, static_cast<int>(wait.count())) <= 0) {
    return true;
  }
  uint8_t buf[64 * 1024];
  for (int i = 0; i < 16; ++i) {
    const long n = readSome(buf, sizeof(buf));
    if (n == -1) {
      break;
    }
    if (n <= 0) {
      closed_ = true;
      if (n < 0) {
        error_ = "read failed";
      }
      return false;
    }
    const ssize_t rv = nghttp2_session_mem_recv(session_, buf, static_cast<size_t>(n));
    if (rv < 0) {
      error_ = nghttp2_strerror(static_cast<int>(rv));
      closed_ = true;
      return false;
    }
  }
  return sendPending();
}

bool H2TestClient::waitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return false;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    if (!pump(std::min(left, std::chrono::milliseconds(50)))) {
      return done();
    }
  }
  return true;
}

int H2TestClient::waitForStatus(int32_t stream_id, std::chrono::milliseconds timeout) {
  waitFor([&] { return stream(stream_id).status != 0 || stream(stream_id).closed; }, timeout);
  return stream(stream_id).status;
}

}  // namespace crisp::stream::testing
