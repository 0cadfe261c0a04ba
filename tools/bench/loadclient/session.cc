#include "tools/bench/loadclient/session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include <event2/buffer.h>

#include "source/codec/spdy/codec.h"
#include "source/codec/websocket/ws_codec.h"
#include "source/common/time.h"
#include "source/stream/raw_socket_transport.h"

namespace crisp::bench {
namespace {

// What the client reads and writes per wake-up, the same as crisp's defaults
// so the client is never the slower end.
constexpr size_t kSendQueueBytes = 512 * 1024;

// Zeros referenced (not copied) into every outgoing payload.
const char* zeros() {
  static const std::string block(16 * 1024 * 1024, '\0');
  return block.data();
}

void addZeros(Buffer& out, size_t len) {
  while (len > 0) {
    const size_t n = std::min<size_t>(len, 16 * 1024 * 1024);
    evbuffer_add_reference(out.raw(), zeros(), n, nullptr, nullptr);
    len -= n;
  }
}

class FastRandom : public RandomSource {
 public:
  bool fill(void* out, size_t len) override {
    auto* p = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < len; ++i) {
      state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
      p[i] = static_cast<uint8_t>(state_ >> 56);
    }
    return true;
  }

 private:
  uint64_t state_ = 0x853c49e6748fea9bULL;
};

FastRandom fast_random;

// The HTTP/1.1 upgrade and the 101, then the protocol's bytes.
class UpgradingSession : public Session, protected stream::TransportCallbacks {
 public:
  UpgradingSession(event::Dispatcher& dispatcher, SessionObserver& observer,
                   const SessionOptions& options)
      : dispatcher_(dispatcher), observer_(observer), options_(options) {}

  void start(const Url& url) override {
    const int fd = connectTcp(url.host, url.port);
    if (fd < 0) {
      const std::string why = std::strerror(errno);
      dispatcher_.post([this, why] { finish(false, "connect: " + why); });
      return;
    }
    Buffer head;
    head.add("GET " + url.target + " HTTP/1.1\r\nHost: " + url.host + ":" +
             std::to_string(url.port) + "\r\n" + upgradeHeaders() + "\r\n");
    transport_ = std::make_unique<stream::RawSocketTransport>(dispatcher_, fd, url.host, Buffer(),
                                                              std::move(head));
    transport_->setCallbacks(*this);
    transport_->start();
  }

  void abort() override {
    if (transport_) {
      transport_->close();
    }
    done_ = true;
  }

 protected:
  virtual std::string upgradeHeaders() = 0;
  virtual void onUpgraded() = 0;
  virtual void onProtocolData(Buffer& data) = 0;
  // The server closed the connection.
  virtual void onPeerClosed() { finish(false, "connection closed before the session ended"); }

  void finish(bool ok, const std::string& detail) {
    if (done_) {
      return;
    }
    done_ = true;
    ok_ = ok;
    detail_ = detail;
    done_at_ = Clock::now();
    if (transport_) {
      transport_->close();
    }
    observer_.onSessionDone(*this);
  }

  void countReceived(size_t n) {
    if (n == 0) {
      return;
    }
    if (bytes_received_ == 0) {
      first_byte_at_ = Clock::now();
      bytes_received_ += n;
      observer_.onFirstByte(*this);
      return;
    }
    bytes_received_ += n;
  }

  void write(Buffer& out) {
    if (!out.empty() && transport_ && !done_) {
      transport_->write(out);
    }
  }

  size_t queued() const { return transport_ ? transport_->queuedBytes() : 0; }

  // TransportCallbacks
  void onTransportData(Buffer& data) override {
    if (done_) {
      data.drain(data.length());
      return;
    }
    if (!upgraded_) {
      head_.move(data);
      const std::string text = head_.peekString();
      const size_t end = text.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (text.size() > 64 * 1024) {
          finish(false, "response head too large");
        }
        return;
      }
      if (text.compare(0, 13, "HTTP/1.1 101 ") != 0) {
        finish(false, "upgrade refused: " + text.substr(0, text.find("\r\n")));
        return;
      }
      head_.drain(end + 4);
      upgraded_ = true;
      onUpgraded();
      if (done_) {
        return;
      }
      data.move(head_);
    }
    onProtocolData(data);
  }
  void onTransportEof() override { onPeerClosed(); }
  void onTransportDrained() override { onWritable(); }
  void onTransportError(const std::string& detail) override { finish(false, detail); }
  virtual void onWritable() {}

  event::Dispatcher& dispatcher_;
  SessionObserver& observer_;
  const SessionOptions options_;
  std::unique_ptr<stream::RawSocketTransport> transport_;
  Buffer head_;
  bool upgraded_ = false;
};

// ---- SPDY ------------------------------------------------------------------

class SpdySession : public UpgradingSession, private spdy::CodecCallbacks {
 public:
  using UpgradingSession::UpgradingSession;

 protected:
  // Opens the streams; returns the id of the stream whose SYN_REPLY completes
  // the set.
  virtual void openStreams() = 0;
  virtual void onStreamData(uint32_t id, Buffer& data, bool fin) = 0;

  void onUpgraded() override {
    openStreams();
    write(out_);
  }

  void onProtocolData(Buffer& data) override {
    // The codec keeps a partial frame in its input; the transport's buffer
    // must be drained whole.
    input_.move(data);
    absl::Status status = codec_.dispatch(input_);
    if (!status.ok()) {
      finish(false, std::string(status.message()));
      return;
    }
    write(out_);
  }

  void synStream(uint32_t id, const spdy::HeaderList& headers) {
    codec_.encodeSynStream(out_, id, 0, 0, 0, headers);
    last_stream_ = id;
  }

  // Sends zeros on `send_stream_` while the socket's queue is short.
  void pump() {
    // A stdin without bytes to send stays open (an idle interactive session).
    if (send_stream_ == 0 || send_done_ || done_ || options_.send_bytes == 0) {
      return;
    }
    while (queued() < kSendQueueBytes && bytes_sent_ < options_.send_bytes) {
      const size_t n = std::min<uint64_t>(options_.send_chunk, options_.send_bytes - bytes_sent_);
      Buffer payload;
      addZeros(payload, n);
      spdy::Codec::encodeData(out_, send_stream_, payload, false);
      bytes_sent_ += n;
      write(out_);
    }
    if (bytes_sent_ >= options_.send_bytes) {
      Buffer empty;
      spdy::Codec::encodeData(out_, send_stream_, empty, true);
      write(out_);
      send_done_ = true;
    }
  }

  void onWritable() override { pump(); }

  // spdy::CodecCallbacks
  void onSynStream(uint32_t id, uint32_t, uint8_t, uint8_t, spdy::HeaderList&&) override {
    spdy::Codec::encodeRstStream(out_, id, spdy::RstStatus::kRefusedStream);
  }
  void onSynReply(uint32_t id, uint8_t, spdy::HeaderList&&) override {
    if (id == last_stream_) {
      observer_.onSessionReady(*this);
      pump();
    }
  }
  void onHeaders(uint32_t, uint8_t, spdy::HeaderList&&) override {}
  void onData(uint32_t id, Buffer& data, bool fin) override { onStreamData(id, data, fin); }
  void onRstStream(uint32_t id, spdy::RstStatus status) override {
    rst_seen_ = true;
    last_rst_ = "stream " + std::to_string(id) + " reset (" +
                std::to_string(static_cast<uint32_t>(status)) + ")";
  }
  void onSettings(uint8_t, const std::vector<spdy::SettingsEntry>&) override {}
  void onPing(uint32_t id) override { spdy::Codec::encodePing(out_, id); }
  void onGoAway(uint32_t, spdy::GoAwayStatus) override {}
  void onWindowUpdate(uint32_t, uint32_t) override {}

  spdy::Codec codec_{spdy::Codec::Role::kClient, *this};
  Buffer input_;
  Buffer out_;
  uint32_t last_stream_ = 0;
  uint32_t send_stream_ = 0;
  bool send_done_ = false;
  bool rst_seen_ = false;
  std::string last_rst_;
};

constexpr uint32_t kErrorStream = 1;
constexpr uint32_t kStdinStream = 3;
constexpr uint32_t kStdoutStream = 5;

bool statusIsSuccess(const std::string& status) {
  return status.find("\"status\":\"Success\"") != std::string::npos;
}

class SpdyExecSession : public SpdySession {
 public:
  using SpdySession::SpdySession;

 protected:
  std::string upgradeHeaders() override {
    return "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
           "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n";
  }

  void openStreams() override {
    synStream(kErrorStream, {{"streamtype", "error"}});
    if (options_.stdin || options_.send_bytes > 0) {
      synStream(kStdinStream, {{"streamtype", "stdin"}});
      send_stream_ = kStdinStream;
    }
    synStream(kStdoutStream, {{"streamtype", "stdout"}});
  }

  void onStreamData(uint32_t id, Buffer& data, bool fin) override {
    if (id == kStdoutStream) {
      countReceived(data.length());
      data.drain(data.length());
      return;
    }
    if (id == kErrorStream) {
      status_ += data.toString();
      if (fin) {
        finish(statusIsSuccess(status_), status_);
      }
      return;
    }
    data.drain(data.length());
  }

  void onPeerClosed() override {
    finish(false, "connection closed without a status" + (rst_seen_ ? ": " + last_rst_ : ""));
  }

  std::string status_;
};

class SpdyPortForwardSession : public SpdySession {
 public:
  using SpdySession::SpdySession;

 protected:
  std::string upgradeHeaders() override {
    return "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
           "X-Stream-Protocol-Version: portforward.k8s.io\r\n";
  }

  void openStreams() override {
    const std::string port = std::to_string(options_.port);
    synStream(kErrorStream, {{"streamtype", "error"}, {"port", port}, {"requestid", "0"}});
    Buffer empty;
    spdy::Codec::encodeData(out_, kErrorStream, empty, true);
    synStream(kDataStream, {{"streamtype", "data"}, {"port", port}, {"requestid", "0"}});
    if (options_.send_bytes > 0) {
      send_stream_ = kDataStream;
    }
  }

  void onStreamData(uint32_t id, Buffer& data, bool fin) override {
    if (id == kDataStream) {
      countReceived(data.length());
      data.drain(data.length());
      if (fin) {
        finish(error_.empty(), error_.empty() ? "" : error_);
      }
      return;
    }
    if (id == kErrorStream) {
      error_ += data.toString();
      return;
    }
    data.drain(data.length());
  }

  void onPeerClosed() override {
    finish(false, "connection closed before the data stream ended" +
                      (error_.empty() ? std::string() : ": " + error_));
  }

  static constexpr uint32_t kDataStream = 3;
  std::string error_;
};

// ---- WebSocket ---------------------------------------------------------------

class WsSession : public UpgradingSession, private websocket::CodecCallbacks {
 public:
  using UpgradingSession::UpgradingSession;

 protected:
  virtual void onChannelData(uint8_t channel, Buffer& payload) = 0;
  virtual void onClosed(uint16_t code) = 0;
  // The last message after the data sent (v5: the stdin CLOSE signal).
  virtual void afterSend() {}

  std::string wsHeaders(std::string_view subprotocol) {
    return "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: " +
           std::string(subprotocol) + "\r\n";
  }

  void onUpgraded() override {
    websocket::CodecOptions options;
    options.role = websocket::Role::kClient;
    options.random = &fast_random;
    options.max_message_bytes = 64 * 1024 * 1024;
    auto codec = websocket::Codec::create(options, *this);
    if (!codec.ok()) {
      finish(false, std::string(codec.status().message()));
      return;
    }
    codec_ = std::move(*codec);
    observer_.onSessionReady(*this);
    pump();
  }

  void onProtocolData(Buffer& data) override {
    input_.move(data);
    absl::Status status = codec_->dispatch(input_);
    write(codec_->output());
    if (!status.ok()) {
      finish(false, std::string(status.message()));
    }
  }

  void pump() {
    if (!send_ || send_done_ || done_ || !codec_ || options_.send_bytes == 0) {
      return;
    }
    while (queued() < kSendQueueBytes && bytes_sent_ < options_.send_bytes) {
      const size_t n = std::min<uint64_t>(options_.send_chunk, options_.send_bytes - bytes_sent_);
      Buffer message;
      message.addUint8(send_channel_);
      addZeros(message, n);
      (void)codec_->sendMessage(websocket::MessageType::kBinary, message);
      bytes_sent_ += n;
      write(codec_->output());
    }
    if (bytes_sent_ >= options_.send_bytes) {
      afterSend();
      write(codec_->output());
      send_done_ = true;
    }
  }

  void onWritable() override { pump(); }

  // websocket::CodecCallbacks
  void onMessage(websocket::MessageType, Buffer& payload) override {
    if (payload.empty()) {
      return;
    }
    uint8_t channel = 0;
    payload.copyOut(&channel, 1);
    payload.drain(1);
    onChannelData(channel, payload);
  }
  void onClose(uint16_t code, std::string_view) override { onClosed(code); }

  void onPeerClosed() override { onClosed(websocket::kCloseAbnormal); }

  std::unique_ptr<websocket::Codec> codec_;
  Buffer input_;
  bool send_ = false;
  uint8_t send_channel_ = 0;
  bool send_done_ = false;
};

class WsExecSession : public WsSession {
 public:
  WsExecSession(event::Dispatcher& dispatcher, SessionObserver& observer,
                const SessionOptions& options)
      : WsSession(dispatcher, observer, options) {
    send_ = options.stdin || options.send_bytes > 0;
    send_channel_ = 0;
  }

 protected:
  std::string upgradeHeaders() override { return wsHeaders("v5.channel.k8s.io"); }

  void afterSend() override {
    const uint8_t close_stdin[2] = {0xFF, 0};
    (void)codec_->sendMessage(websocket::MessageType::kBinary,
                              std::string_view(reinterpret_cast<const char*>(close_stdin), 2));
  }

  void onChannelData(uint8_t channel, Buffer& payload) override {
    if (channel == 1) {
      countReceived(payload.length());
    } else if (channel == 3) {
      status_ += payload.toString();
    }
    payload.drain(payload.length());
  }

  void onClosed(uint16_t code) override {
    finish(statusIsSuccess(status_),
           status_.empty() ? "closed (" + std::to_string(code) + ") without a status" : status_);
  }

  std::string status_;
};

class WsPortForwardSession : public WsSession {
 public:
  WsPortForwardSession(event::Dispatcher& dispatcher, SessionObserver& observer,
                       const SessionOptions& options)
      : WsSession(dispatcher, observer, options) {
    send_ = options.send_bytes > 0;
    send_channel_ = 0;
  }

 protected:
  std::string upgradeHeaders() override { return wsHeaders("v4.channel.k8s.io"); }

  void onChannelData(uint8_t channel, Buffer& payload) override {
    // The first message on each channel is the port number.
    if (channel == 0) {
      if (!data_prefix_seen_) {
        data_prefix_seen_ = true;
      } else {
        countReceived(payload.length());
      }
    } else if (channel == 1) {
      if (!error_prefix_seen_) {
        error_prefix_seen_ = true;
      } else {
        error_ += payload.peekString();
      }
    }
    payload.drain(payload.length());
  }

  void onClosed(uint16_t code) override {
    const bool ok = code == websocket::kCloseNormal && error_.empty();
    finish(ok, ok ? "" : "closed (" + std::to_string(code) + ") " + error_);
  }

  bool data_prefix_seen_ = false;
  bool error_prefix_seen_ = false;
  std::string error_;
};

}  // namespace

bool parseUrl(const std::string& url, Url& out) {
  constexpr std::string_view kScheme = "http://";
  if (url.compare(0, kScheme.size(), kScheme) != 0) {
    return false;
  }
  const size_t host_start = kScheme.size();
  const size_t slash = url.find('/', host_start);
  if (slash == std::string::npos) {
    return false;
  }
  const std::string authority = url.substr(host_start, slash - host_start);
  const size_t colon = authority.rfind(':');
  if (colon == std::string::npos) {
    return false;
  }
  out.host = authority.substr(0, colon);
  if (!out.host.empty() && out.host.front() == '[' && out.host.back() == ']') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  const int port = std::atoi(authority.c_str() + colon + 1);
  if (port <= 0 || port > 65535) {
    return false;
  }
  out.port = static_cast<uint16_t>(port);
  out.target = url.substr(slash);
  return true;
}

bool parseProtocol(const std::string& name, bool port_forward, Protocol& out) {
  if (name == "spdy") {
    out = port_forward ? Protocol::kSpdyPortForward : Protocol::kSpdyExec;
    return true;
  }
  if (name == "ws") {
    out = port_forward ? Protocol::kWsPortForward : Protocol::kWsExec;
    return true;
  }
  return false;
}

int connectTcp(const std::string& host, uint16_t port) {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_INET;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof(*v6);
  } else {
    errno = EINVAL;
    return -1;
  }
  const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    const int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

std::unique_ptr<Session> makeSession(event::Dispatcher& dispatcher, SessionObserver& observer,
                                     const SessionOptions& options) {
  switch (options.protocol) {
    case Protocol::kSpdyExec:
      return std::make_unique<SpdyExecSession>(dispatcher, observer, options);
    case Protocol::kWsExec:
      return std::make_unique<WsExecSession>(dispatcher, observer, options);
    case Protocol::kSpdyPortForward:
      return std::make_unique<SpdyPortForwardSession>(dispatcher, observer, options);
    case Protocol::kWsPortForward:
      return std::make_unique<WsPortForwardSession>(dispatcher, observer, options);
  }
  return nullptr;
}

}  // namespace crisp::bench
