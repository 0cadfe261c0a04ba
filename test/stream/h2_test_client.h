#pragma once

// H2TestClient: a blocking HTTP/2 client for tests, on nghttp2, over plain TCP
// (prior knowledge) or TLS (ALPN). It plays the client side of RFC 8441:
// extended CONNECT with :protocol websocket, then WebSocket frames (masked,
// websocket::Codec in client role) in the stream's DATA, one codec per
// stream; and it can send any request head, or raw bytes, to see how a
// server answers what a correct client never sends.
//
// Flow control is the test's: a stream's window reopens only as the test
// lets it read (pauseReading()), so a stalled reader can be played on one
// stream while the others run.
//
// All waits are bounded: waitFor() runs the connection until a condition
// holds, the connection ends, or the timeout. Not thread-safe; use from the
// test's thread only.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "source/codec/websocket/ws_codec.h"
#include "source/common/buffer.h"
#include "source/common/time.h"

typedef struct nghttp2_session nghttp2_session;
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace crisp::stream::testing {

using H2Fields = std::vector<std::pair<std::string, std::string>>;

struct H2ClientOptions {
  // TLS without certificate verification; offers `alpn` (empty: no ALPN).
  bool tls = false;
  std::vector<std::string> alpn = {"h2"};
  // SETTINGS_INITIAL_WINDOW_SIZE of our streams, and the connection window.
  uint32_t stream_window = 1 << 20;
  uint32_t connection_window = 64 << 20;
  // Keep every WebSocket message (Stream::messages); false keeps only the
  // byte counts per channel, for large transfers.
  bool keep_messages = true;
};

class H2TestClient {
 public:
  // What one stream received.
  struct Stream {
    int status = 0;
    H2Fields headers;       // response fields, :status excluded
    std::string body;       // DATA, when the stream carries no WebSocket
    bool end = false;       // END_STREAM received
    bool closed = false;    // the stream is over
    uint32_t reset = 0;     // RST_STREAM error code, 0 for none
    uint64_t received = 0;  // DATA bytes received (read or not)
    // WebSocket messages decoded from the DATA: type and payload.
    std::vector<std::pair<websocket::MessageType, std::string>> messages;
    std::optional<uint16_t> close_code;
    // Payload bytes of binary channel messages, by channel.
    std::map<uint8_t, uint64_t> channel_bytes;

    // The payloads of binary channel messages on `channel` (the first byte),
    // joined, channel byte removed.
    std::string channelData(uint8_t channel) const;
  };

  // Connects to `host` ("127.0.0.1", "::1") and `port`, runs the TLS
  // handshake when asked, sends the preface and SETTINGS. Null and `error`
  // set on failure.
  static std::unique_ptr<H2TestClient> connect(const std::string& host, uint16_t port,
                                               const H2ClientOptions& options, std::string* error);
  ~H2TestClient();
  H2TestClient(const H2TestClient&) = delete;
  H2TestClient& operator=(const H2TestClient&) = delete;

  // The protocol the TLS handshake chose ("h2"); empty without TLS or ALPN.
  const std::string& alpn() const { return alpn_; }

  // Sends a request head with exactly `fields` (pseudo-headers included, in
  // order); `end_stream` ends the request with it. The stream id, or -1.
  int32_t request(const H2Fields& fields, bool end_stream);
  // An extended CONNECT for a WebSocket on `path` offering `subprotocols`;
  // the stream decodes DATA as WebSocket frames once the answer is 200.
  int32_t openWebSocket(const std::string& path, const std::vector<std::string>& subprotocols);

  // WebSocket messages and closes on an open stream (false when it is gone).
  bool sendMessage(int32_t stream_id, websocket::MessageType type, std::string_view payload);
  // A binary message [channel, payload...].
  bool sendChannel(int32_t stream_id, uint8_t channel, std::string_view payload);
  bool sendClose(int32_t stream_id, uint16_t code = websocket::kCloseNormal);
  // END_STREAM after what is queued.
  bool endStream(int32_t stream_id);
  // RST_STREAM with `error_code`.
  void reset(int32_t stream_id, uint32_t error_code);

  // Stops (true) or resumes (false) reading `stream_id`: while paused its
  // DATA is neither decoded nor acknowledged, so its window closes.
  void pauseReading(int32_t stream_id, bool paused);

  // Writes `bytes` to the connection as they are (after what nghttp2 queued).
  bool writeRaw(std::string_view bytes);

  // Runs the connection until `done()` holds (true) or it ends or the
  // timeout passes (false, unless done() holds by then).
  bool waitFor(const std::function<bool()>& done,
               std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Waits for the response head of `stream_id`; its status, 0 on timeout.
  int waitForStatus(int32_t stream_id,
                    std::chrono::milliseconds timeout = std::chrono::seconds(10));

  const Stream& stream(int32_t stream_id);
  bool connectionClosed() const { return closed_; }
  // The server's GOAWAY error code, when one came.
  std::optional<uint32_t> goaway() const { return goaway_; }
  // The server's SETTINGS values by id (what it sent last).
  std::map<int32_t, uint32_t> serverSettings() const { return server_settings_; }
  const std::string& error() const { return error_; }

 private:
  struct StreamState;
  struct Callbacks;

  H2TestClient() = default;
  StreamState& state(int32_t stream_id);
  // One round of I/O: send what nghttp2 has, read what arrived (waiting up
  // to `wait`). False once the connection is over.
  bool pump(std::chrono::milliseconds wait);
  bool sendPending();
  long readSome(uint8_t* buf, size_t len);
  long writeSome(const uint8_t* buf, size_t len);
  void queueWs(int32_t stream_id);
  void decode(StreamState& s);

  int fd_ = -1;
  SSL_CTX* ssl_ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  nghttp2_session* session_ = nullptr;
  std::string alpn_;
  bool keep_messages_ = true;
  Buffer out_;
  std::map<int32_t, std::unique_ptr<StreamState>> streams_;
  std::map<int32_t, uint32_t> server_settings_;
  std::optional<uint32_t> goaway_;
  bool closed_ = false;
  std::string error_;
  SystemRandomSource random_;
};

}  // namespace crisp::stream::testing
