#pragma once

// WsConnection: the server side of one WebSocket connection (RFC 6455) after
// the upgrade, over a Transport. It owns the transport and a
// websocket::Codec in server role, and gives its owner (a session such as
// WsRemoteCommand) whole messages and message sends.
//
// What it does on its own:
// - answers every ping with a pong (the codec makes it); pongs, and our own
//   pings, go out ahead of the messages already queued: messages wait in the
//   connection's own queue and the transport is handed whole frames only
//   while its queue is under transport_queue_bytes, so a pong waits behind
//   at most that much (never inside a frame); with keepalive_interval set, it
//   also pings the client itself while open;
// - idle timeout: any data message in or out, and any ping from the client,
//   re-arms it (a client that pings every few seconds, as client-go does,
//   keeps the connection forever); expiry closes with 1001 "ws.idle_timeout";
// - output backpressure: onOutputAboveHighWatermark() when the bytes queued
//   (here and in the transport) pass the high watermark,
//   onOutputBelowLowWatermark() once they fall under the low one, so the
//   owner pauses its producer; the client is still read meanwhile (its pings
//   are answered), except while more than max_queued_output bytes of pongs
//   and frames handed to the transport wait (a client that sends pings but
//   reads nothing cannot make the pong queue grow without bound);
// - input backpressure: pauseReading() stops delivering messages;
// - close handshake: close() queues a close frame behind the messages
//   already queued (nothing the owner sent is lost) and waits for the
//   client's close frame (CloseLinger): while our bytes are on their way, as
//   long as the client takes them; once all are acknowledged, up to
//   close_timeout after the client's last sign of life (an acknowledgement,
//   or any frame: a client behind a proxy that still reads our last bytes is
//   seen only by its pings); never longer than linger_limit in all. Then, and
//   after the client's own close or a protocol error, every queued byte is
//   written, the write side is shut down, and the connection waits the same
//   way, up to linger_timeout after the last sign of life, for the client to
//   close its side before closing the transport. A client that stops reading
//   meanwhile is cut off once no write progress happened for drain_timeout.
// - protocol errors (codec.h lists them: unmasked frame, oversized message,
//   bad close code, invalid UTF-8, ...) close with the codec's close code
//   (1002, 1009, 1007) and the codec's reason as the close reason; the owner
//   hears onConnectionClosing(kProtocolError, "<ws.reason>: <detail>").
//   A message over max_message_bytes is also counted in
//   crisp_stream_limit_hits_total{limit="frame_bytes"}.
// - the client closing the transport without a close frame, or a transport
//   error, ends the connection at once.
//
// Threading: everything runs on the dispatcher's thread. Callbacks may call
// back into the connection (send, close, pauseReading). The owner must not
// destroy the connection from inside a callback; it uses
// Dispatcher::deferredDelete() (onConnectionClosed() is the usual place).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "source/codec/websocket/ws_codec.h"
#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/close_linger.h"
#include "source/stream/transport.h"

namespace crisp::stream {

struct WsConnectionConfig {
  // No data message in or out, and no ping from the client, for this long
  // closes the connection (kubelet default).
  std::chrono::milliseconds idle_timeout = std::chrono::hours(4);
  // Interval of the server's own pings while open; zero sends none. Our
  // pings and the client's pongs do not re-arm the idle timeout.
  std::chrono::milliseconds keepalive_interval{0};
  // Bytes queued in the transport above which the owner is asked to pause.
  size_t output_high_watermark = 1024 * 1024;
  // Bytes queued below which a paused owner is told to go on.
  size_t output_low_watermark = 256 * 1024;
  // Most bytes left in the transport's queue at a time. Whole frames are
  // handed over while it holds less, so a pong waits behind at most this
  // much of the messages queued before it.
  size_t transport_queue_bytes = 64 * 1024;
  // Bytes in the transport plus pongs not yet handed to it above which
  // reading stops until they fall under half of it (the messages queued here
  // are bounded by the owner's pause at the high watermark).
  size_t max_queued_output = 4 * 1024 * 1024;
  // After our close frame, once the client has acknowledged everything: how
  // long after its last sign of life to wait for its close frame.
  std::chrono::milliseconds close_timeout = std::chrono::seconds(30);
  // While closing: the longest time without write progress before the
  // transport is closed with output still queued.
  std::chrono::milliseconds drain_timeout = std::chrono::seconds(30);
  // After our last byte and the write shutdown: how long to wait for the
  // client to close its side.
  std::chrono::milliseconds linger_timeout = std::chrono::seconds(2);
  // The longest wait for the client's close frame, and again for its close
  // of the transport, whatever signs of life it gives.
  std::chrono::milliseconds linger_limit = std::chrono::minutes(5);
  // Largest incoming message (all fragments); larger ones close with 1009.
  uint64_t max_message_bytes = websocket::kDefaultMaxMessageBytes;
};

// Why a connection ended; the names are stable (logs, metrics, tests).
enum class WsCloseReason {
  kLocal,           // "local": the owner called close()
  kPeerClose,       // "ws.peer_close": the client sent a close frame
  kPeerEof,         // "ws.peer_eof": the transport ended without a close frame
  kTransportError,  // "ws.transport_error": reset, I/O error
  kProtocolError,   // "ws.protocol_error": the client broke RFC 6455 (detail names how)
  kIdleTimeout,     // "ws.idle_timeout"
};

const char* closeReasonName(WsCloseReason reason);

class WsConnectionCallbacks {
 public:
  virtual ~WsConnectionCallbacks() = default;

  // One complete data message from the client (fragments joined). The callee
  // may drain or move from `payload`; what is left is dropped. Only while
  // the connection is open.
  virtual void onMessage(websocket::MessageType type, Buffer& payload) = 0;
  // Output backpressure, edge-triggered, only while the connection is open.
  virtual void onOutputAboveHighWatermark() = 0;
  virtual void onOutputBelowLowWatermark() = 0;
  // The connection began to end for a reason other than close(): no message
  // follows and sends are refused. `detail` says what happened.
  virtual void onConnectionClosing(WsCloseReason reason, const std::string& detail) = 0;
  // The transport is closed. The last callback, always called exactly once
  // (unless the connection is destroyed first).
  virtual void onConnectionClosed() = 0;
  // No message for idle_timeout. Returning true means the owner ends the
  // session itself (with close()); false lets the connection close with 1001
  // "ws.idle_timeout" and onConnectionClosing(kIdleTimeout).
  virtual bool onIdleTimeout() { return false; }
};

class WsConnection : private TransportCallbacks, private websocket::CodecCallbacks {
 public:
  // Takes ownership of `transport` (not started yet). Nothing happens before
  // start(). Fails only when the codec cannot be created (out of memory, or
  // a zero max_message_bytes).
  static absl::StatusOr<std::unique_ptr<WsConnection>> create(event::Dispatcher& dispatcher,
                                                              std::unique_ptr<Transport> transport,
                                                              uint64_t connection_id,
                                                              WsConnectionCallbacks& callbacks,
                                                              const WsConnectionConfig& config);
  // Closes the transport at once if it is still open (no callbacks); the
  // transport object itself is freed by the dispatcher later (deferred), so a
  // connection may be destroyed inside one of the transport's callbacks.
  ~WsConnection() override;
  WsConnection(const WsConnection&) = delete;
  WsConnection& operator=(const WsConnection&) = delete;

  // Starts the transport (which delivers the bytes it already holds first)
  // and arms the idle and keepalive timers.
  void start();

  // Queues one unfragmented message (the Buffer overload drains `payload`).
  // Returns false, dropping it, once the connection is closing.
  bool sendMessage(websocket::MessageType type, Buffer& payload);
  bool sendMessage(websocket::MessageType type, std::string_view payload);
  // As sendMessage(), but the message goes out ahead of the messages already
  // queued, with the pongs (at a frame boundary). For a short message that
  // must not wait behind a slow reader's backlog, such as a final status.
  bool sendMessageAhead(websocket::MessageType type, Buffer& payload);
  // Zero-copy messages: each one `prefix` (a channel byte) followed by up to
  // max_payload bytes that the transport splices from `pipe_fd`
  // (Transport::writeFromPipe), up to `limit` bytes of what the pipe holds.
  // As SpdyConnection::sendDataFromPipe(): `pipe_fd` is a pipe only the
  // caller reads; taken only while nothing is queued and the transport can
  // splice; returns the payload bytes taken, 0 when declined; a payload the
  // socket did not take whole holds the connection above its high watermark
  // until it is written.
  size_t sendMessageFromPipe(websocket::MessageType type, std::string_view prefix, int pipe_fd,
                             size_t limit, size_t max_payload);
  // Whether sendMessageFromPipe() would take bytes now: the transport can
  // splice and nothing is queued.
  bool canSendFromPipe() const;

  // Starts the close handshake described above with `code` (one an endpoint
  // may send, websocket::isSendableCloseCode; anything else is sent as 1011)
  // and `reason` (cut to 123 bytes). Idempotent; no-op once closing.
  void close(uint16_t code = websocket::kCloseNormal, std::string_view reason = {});

  // Stops (true) or resumes (false) delivering messages.
  void pauseReading(bool paused);

  bool open() const { return state_ == State::kOpen; }
  uint64_t id() const { return id_; }
  const std::string& peerAddress() const { return transport_->peerAddress(); }
  // Bytes queued here and in the transport, not yet written.
  size_t queuedOutputBytes() const;
  bool aboveHighWatermark() const { return above_high_watermark_; }
  // Close codes on the wire: websocket::kCloseAbnormal before one.
  uint16_t closeCodeSent() const { return codec_->closeCodeSent(); }
  uint16_t closeCodeReceived() const { return codec_->closeCodeReceived(); }

  // Counters for tests and logs.
  uint64_t messagesReceived() const { return messages_received_; }
  uint64_t messagesSent() const { return messages_sent_; }
  uint64_t pingsReceived() const { return pings_received_; }
  uint64_t pingsSent() const { return pings_sent_; }
  uint64_t pongsReceived() const { return pongs_received_; }

 private:
  enum class State {
    kIdle,      // constructed, start() not called
    kOpen,      // messages flow
    kClosing,   // our close frame is queued; waiting for the client's
    kFlushing,  // handshake over (or given up): writing the rest, write side shut
    kClosed,    // transport closed
  };

  WsConnection(event::Dispatcher& dispatcher, std::unique_ptr<Transport> transport,
               uint64_t connection_id, WsConnectionCallbacks& callbacks,
               const WsConnectionConfig& config);

  // TransportCallbacks
  void onTransportData(Buffer& data) override;
  void onTransportEof() override;
  void onTransportDrained() override;
  void onTransportError(const std::string& detail) override;

  // websocket::CodecCallbacks
  void onMessage(websocket::MessageType type, Buffer& payload) override;
  void onPing(std::string_view payload) override;
  void onPong(std::string_view payload) override;
  void onClose(uint16_t code, std::string_view reason) override;

  void startIfIdle();
  bool send(websocket::MessageType type, Buffer& payload, bool ahead);
  // Moves what the codec wrote into the queue for pongs and pings (`ahead`)
  // or, as one unit of whole frames, behind the messages already queued.
  void takeCodecOutput(bool ahead);
  // Hands queued frames to the transport, pongs first, while its queue is
  // under transport_queue_bytes; once flushing and everything is handed,
  // shuts the write side down.
  void pumpOutput();
  // Moves what the codec wrote to the queue, then pumps.
  void writeOutput();
  // Everything handed over and written.
  bool outputEmpty() const;
  void checkWatermarks();
  void updateReadPause();
  void touchIdle();
  void onIdleTimeout();
  void onKeepalive();
  // Queues our close frame and waits for the client's.
  void beginClose(uint16_t code, std::string_view reason);
  // Writes what is queued, shuts the write side, lingers for the client's close.
  void beginFlush();
  // Tells the owner (once) that the connection ends for `reason`.
  void notifyClosing(WsCloseReason reason, const std::string& detail);
  void closeNow();

  event::Dispatcher& dispatcher_;
  std::unique_ptr<Transport> transport_;
  const uint64_t id_;
  WsConnectionCallbacks& callbacks_;
  const WsConnectionConfig config_;
  std::unique_ptr<websocket::Codec> codec_;
  State state_ = State::kIdle;

  event::TimerPtr idle_timer_;
  event::TimerPtr keepalive_timer_;
  event::TimerPtr drain_timer_;
  // Waits for the client's close frame after ours.
  std::unique_ptr<CloseLinger> close_wait_;
  std::unique_ptr<CloseLinger> linger_;

  Buffer input_;
  // Pongs and our pings, handed to the transport before the next message.
  Buffer control_;
  // Messages and the close frame, in order, with the length of each unit.
  Buffer data_;
  std::deque<size_t> data_unit_lengths_;
  bool write_shut_ = false;
  bool owner_paused_ = false;
  bool output_full_ = false;
  bool transport_paused_ = false;
  bool above_high_watermark_ = false;
  bool peer_eof_ = false;
  // The owner called close(): it is not told onConnectionClosing().
  bool local_close_ = false;
  bool notified_closing_ = false;

  uint64_t messages_received_ = 0;
  uint64_t messages_sent_ = 0;
  uint64_t pings_received_ = 0;
  uint64_t pings_sent_ = 0;
  uint64_t pongs_received_ = 0;
};

using WsConnectionPtr = std::unique_ptr<WsConnection>;

}  // namespace crisp::stream
