#pragma once

// Http2Connection: the server side of one HTTP/2 connection of the stream
// server (RFC 9113), on nghttp2, over a Transport (a plain socket after the
// prior-knowledge preface, or TLS after ALPN "h2"). Its streams are requests;
// an accepted extended CONNECT (RFC 8441) becomes an Http2StreamTransport,
// a Transport of its own, so the WebSocket handlers serve it unchanged.
//
//   Http2Connection c(dispatcher, std::move(transport), id, options, owner);
//   // owner.onStreamRequest(c, stream_id, request) for every complete head:
//   c.respond(stream_id, goNotFound());                 // refuse, stream ends
//   TransportPtr t = c.accept(stream_id, {{"sec-websocket-protocol", "v5.channel.k8s.io"}});
//
// What it settles by itself, before the owner sees a request:
// - SETTINGS: MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE and
//   INITIAL_WINDOW_SIZE from the options, ENABLE_CONNECT_PROTOCOL = 1.
// - Malformed requests (missing or repeated pseudo-headers, upper-case or
//   connection-specific fields, :protocol without CONNECT, CONNECT with :path
//   but no :protocol, ...) are reset with PROTOCOL_ERROR by nghttp2's
//   messaging checks (RFC 9113 8.1.1) and counted as bad requests.
// - A header list above max_header_list_bytes (RFC 9113 6.5.2 sizing: name +
//   value + 32 per field) is answered 431 and counted as the header_bytes
//   limit. A HEADERS frame beyond max_concurrent_streams is refused as
//   nghttp2 does (REFUSED_STREAM before the client acknowledged our
//   SETTINGS, a PROTOCOL_ERROR GOAWAY after) and counted as the
//   http2_streams limit.
// - Flow control is per stream and manual: the connection window reopens as
//   soon as DATA arrives, a stream's window only as its owner takes the
//   bytes. A stream whose owner does not read holds at most
//   stream_window_bytes and stalls only its own sender; the other streams go
//   on. In the other direction, nghttp2 is asked for frames only while the
//   connection's transport holds less than kOutputHighWatermark, so each
//   stream transport's queuedBytes() grows when the client or the network is
//   slow, and its owner's backpressure follows.
// - A connection without an accepted stream for idle_timeout (from the first
//   byte on, so a client that never completes a request too) is ended with
//   GOAWAY NO_ERROR.
//
// Stream transports and the connection may end in either order: when the
// connection ends first, every stream transport reports onTransportError;
// destroying a stream transport whose stream is still open resets it with
// CANCEL (close() after both directions ended sends nothing).
//
// Lives on one dispatcher; create, use and destroy it on that thread. The
// owner destroys the connection after onClosed(), through
// Dispatcher::deferredDelete.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/http1_response.h"
#include "source/stream/transport.h"
#include "source/stream/upgrade.h"

typedef struct nghttp2_session nghttp2_session;

namespace crisp::stats {
class Registry;
}  // namespace crisp::stats

namespace crisp::stream {

// The client connection preface (RFC 9113 3.4) that selects HTTP/2 on a
// connection without ALPN.
inline constexpr std::string_view kHttp2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct Http2ConnectionOptions {
  // SETTINGS_MAX_CONCURRENT_STREAMS.
  uint32_t max_concurrent_streams = 100;
  // SETTINGS_MAX_HEADER_LIST_SIZE, and above it a request gets 431.
  uint32_t max_header_list_bytes = 16384;
  // SETTINGS_INITIAL_WINDOW_SIZE: the most bytes buffered per stream for an
  // owner that does not read.
  uint32_t stream_window_bytes = 256 * 1024;
  // A connection without an accepted stream this long is ended.
  std::chrono::milliseconds idle_timeout{10000};
  // Where the limit counters go; null = stats::registry().
  stats::Registry* registry = nullptr;
};

// A request head received on one stream.
struct Http2Request {
  // :method and :path (split into path and query), the regular fields, the
  // peer; :authority is in `headers` as "host" for logs.
  HttpRequest request;
  // :protocol of an extended CONNECT, empty when absent.
  std::string protocol;
};

class Http2StreamTransport;

class Http2Connection : private TransportCallbacks {
 public:
  // Most bytes queued in the connection's transport before nghttp2 is asked
  // for more frames.
  static constexpr size_t kOutputHighWatermark = 1024 * 1024;

  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    // A complete request head on `stream_id`. The owner answers it, now or
    // later, with respond() or accept(). A stream the client resets meanwhile
    // makes both no-ops (accept() returns null).
    virtual void onStreamRequest(Http2Connection& connection, int32_t stream_id,
                                 Http2Request&& request) = 0;
    // A request was refused by the connection itself (reason: "bad_request",
    // "header_too_large"), for the owner's request counters.
    virtual void onStreamRefused(Http2Connection& connection, const char* reason) = 0;
    // The connection is closed; the owner may now destroy it.
    virtual void onClosed(Http2Connection& connection) = 0;
  };

  // Takes ownership of `transport` (on `dispatcher`, started or not, with any
  // bytes read so far handed back through unreadInput()) and starts at once.
  // `callbacks` must outlive the connection.
  Http2Connection(event::Dispatcher& dispatcher, TransportPtr transport, uint64_t id,
                  const Http2ConnectionOptions& options, Callbacks& callbacks);
  // Closes the transport if still open, without callbacks; stream transports
  // still alive are detached and report an error from the loop.
  ~Http2Connection() override;
  Http2Connection(const Http2Connection&) = delete;
  Http2Connection& operator=(const Http2Connection&) = delete;

  // Answers `stream_id` with `response` (status, headers with any case,
  // body) and ends it. The client's request side is reset with NO_ERROR
  // once the answer is out, if it is still open.
  void respond(int32_t stream_id, const HttpResponse& response);
  // Answers `stream_id` with 200 plus `headers` (lower-case names) and
  // returns its transport, reading paused until the owner's start(). Null
  // when the stream is gone.
  TransportPtr accept(int32_t stream_id,
                      const std::vector<std::pair<std::string, std::string>>& headers);
  // Sends GOAWAY NO_ERROR: no new streams; the connection ends when the open
  // ones have.
  void shutdown();
  // Closes the transport now; every stream transport reports an error.
  // onClosed() follows, from the loop.
  void close(const std::string& reason);

  uint64_t id() const { return id_; }
  const std::string& peer() const { return peer_; }
  // Streams nghttp2 has opened and not yet closed.
  size_t openStreams() const { return streams_.size(); }

 private:
  friend class Http2StreamTransport;
  struct Stream;
  struct NghttpCallbacks;

  // TransportCallbacks
  void onTransportData(Buffer& data) override;
  void onTransportEof() override;
  void onTransportDrained() override;
  void onTransportError(const std::string& detail) override;

  // Called by nghttp2 (through NghttpCallbacks).
  int onBeginHeaders(int32_t stream_id);
  int onHeader(int32_t stream_id, std::string_view name, std::string_view value);
  int onFrameRecv(uint8_t type, uint8_t flags, int32_t stream_id);
  int onFrameSend(uint8_t type, uint8_t flags, int32_t stream_id);
  int onInvalidFrameRecv(uint8_t type, int32_t stream_id, int lib_error);
  int onDataChunk(int32_t stream_id, const uint8_t* data, size_t len);
  int onStreamClose(int32_t stream_id, uint32_t error_code);
  long readStreamData(int32_t stream_id, uint8_t* buf, size_t length, uint32_t* data_flags);

  // From stream transports.
  void streamWrite(int32_t stream_id, Buffer& data);
  void streamShutdownWrite(int32_t stream_id);
  void streamConsumed(int32_t stream_id, size_t bytes);
  void streamTransportGone(int32_t stream_id, bool reset);
  size_t streamQueued(int32_t stream_id) const;

  Stream* find(int32_t stream_id) const;
  void submitResponse(Stream& stream, const HttpResponse& response);
  // Writes what nghttp2 has, up to the high watermark; ends the connection
  // when nghttp2 wants neither to read nor to write.
  void flush();
  void scheduleFlush();
  void updateIdleTimer();
  void onIdle();
  void fail(const std::string& reason);

  event::Dispatcher& dispatcher_;
  TransportPtr transport_;
  const uint64_t id_;
  const std::string peer_;
  const Http2ConnectionOptions options_;
  Callbacks& callbacks_;
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  // Accepted streams whose transport is alive.
  size_t accepted_ = 0;
  bool closed_ = false;
  bool in_recv_ = false;
  // GOAWAY sent or the session over: the next idle timer fire closes.
  bool ending_ = false;
  event::Timer flush_timer_;
  event::Timer idle_timer_;
  event::Timer closed_timer_;
};

// One accepted stream as a Transport: DATA in, DATA out, END_STREAM as EOF
// and shutdownWrite(), RST_STREAM as an error (see Http2Connection).
class Http2StreamTransport : public Transport {
 public:
  ~Http2StreamTransport() override;
  Http2StreamTransport(const Http2StreamTransport&) = delete;
  Http2StreamTransport& operator=(const Http2StreamTransport&) = delete;

  // Transport
  void setCallbacks(TransportCallbacks& callbacks) override { callbacks_ = &callbacks; }
  void start() override;
  void write(Buffer& data) override;
  size_t queuedBytes() const override;
  void pauseReading(bool paused) override;
  void unreadInput(Buffer& data) override;
  void shutdownWrite() override;
  void close() override;
  const std::string& peerAddress() const override { return peer_address_; }
  std::string peerIdentity() const override { return peer_identity_; }

  int32_t streamId() const { return stream_id_; }

 private:
  friend class Http2Connection;
  Http2StreamTransport(event::Dispatcher& dispatcher, Http2Connection& connection,
                       int32_t stream_id, std::string peer_address, std::string peer_identity);

  // Runs the owner's callbacks due (input, EOF, drained, error) from the loop.
  void schedule();
  void deliver();
  // The connection or the stream ended under the transport.
  void detach(const std::string& error);

  Http2Connection* connection_;
  const int32_t stream_id_;
  const std::string peer_address_;
  const std::string peer_identity_;
  TransportCallbacks* callbacks_ = nullptr;
  event::Timer scheduled_;
  Buffer input_;  // received, not yet taken by the owner
  // Bytes at the front of input_ handed back by unreadInput(), whose window
  // was already reopened.
  size_t returned_ = 0;
  bool started_ = false;
  bool paused_ = false;
  bool peer_eof_ = false;
  bool eof_delivered_ = false;
  bool drained_due_ = false;
  bool closed_ = false;
  std::string error_;  // set once detached with an error, delivered once
};

}  // namespace crisp::stream
