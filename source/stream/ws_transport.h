#pragma once

// WsTransport: a Transport whose bytes travel in the binary messages of a
// WebSocket, for the SPDY-over-WebSocket tunnel (`SPDY/3.1+portforward.k8s.io`,
// what kubectl 1.31 and later try first for port-forward). A SpdyConnection on
// top of it runs unchanged:
//
//   auto ws = WsTransport::create(dispatcher, std::move(upgraded.transport), id, {});
//   upgraded.transport = std::move(ws).value();
//   SpdyPortForward session(dispatcher, runtime, std::move(upgraded), ...);
//
// It owns a WsConnection (server role) over the upgraded transport:
// - in: the payload of every binary message, in order, as one byte stream
//   (message boundaries mean nothing); a text message is not SPDY and fails
//   the transport ("ws.tunnel.text_message", close 1003);
// - out: written bytes become binary messages of at most max_message_bytes.
//   They are handed to the WebSocket while its queue is under its high
//   watermark and held here (queuedBytes()) above it, so the owner's own
//   backpressure and its control-frames-first ordering keep working;
//   onTransportDrained() follows, from the loop, whenever bytes moved on;
// - shutdownWrite(): once every held byte is handed on, the WebSocket close
//   handshake (1000) starts, behind the messages already queued;
// - the client's close frame, or the socket's EOF: onTransportEof() after
//   every byte received; bytes held for sending are dropped (a closing
//   WebSocket sends no more messages), and onTransportDrained() reports it;
// - a transport failure, a WebSocket protocol error or the idle timeout:
//   onTransportError();
// - both are reported once the WebSocket has closed (its close frame, or the
//   reply to the client's, written), so that an owner that closes and frees
//   the transport at once loses nothing of the close handshake;
// - close(): nothing more is delivered or sent; the WebSocket closes with
//   1001 (1000 after shutdownWrite()) if still open, and the socket at the
//   latest when this object is destroyed.
// WebSocket pings are answered by the WebSocket layer.
//
// Lives on one dispatcher; create, use and destroy it on that thread. As the
// Transport contract asks, no callback runs inside a method call of the owner.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/transport.h"
#include "source/stream/ws_connection.h"

namespace crisp::stream {

struct WsTransportConfig {
  // Largest binary message sent. Messages end at the segments of what was
  // written below this size; at 128 KiB a SPDY DATA frame of one 64 KiB read
  // (its 8-byte header and its payload) fits whole, so nothing is copied.
  size_t max_message_bytes = 128 * 1024;
  // The WebSocket under the tunnel. Its watermarks bound how much waits in
  // the socket's queue, so that a SPDY PING reply waits behind little.
  WsConnectionConfig connection = defaultConnectionConfig();

  static WsConnectionConfig defaultConnectionConfig() {
    WsConnectionConfig c;
    c.output_high_watermark = 256 * 1024;
    c.output_low_watermark = 64 * 1024;
    c.max_queued_output = 1024 * 1024;
    return c;
  }
};

class WsTransport : public Transport, private WsConnectionCallbacks {
 public:
  // Takes ownership of `upgraded`, the connection after the WebSocket 101 (not
  // started; the 101 queued in it). Fails only when the WebSocket cannot be
  // made (see WsConnection::create); `upgraded` is closed then.
  static absl::StatusOr<std::unique_ptr<WsTransport>> create(event::Dispatcher& dispatcher,
                                                             TransportPtr upgraded,
                                                             uint64_t connection_id,
                                                             const WsTransportConfig& config);
  // Closes at once, without callbacks.
  ~WsTransport() override;
  WsTransport(const WsTransport&) = delete;
  WsTransport& operator=(const WsTransport&) = delete;

  // Transport
  void setCallbacks(TransportCallbacks& callbacks) override { callbacks_ = &callbacks; }
  void start() override;
  void write(Buffer& data) override;
  size_t queuedBytes() const override { return held_output_.length(); }
  void pauseReading(bool paused) override;
  void unreadInput(Buffer& data) override;
  void shutdownWrite() override;
  void close() override;
  const std::string& peerAddress() const override { return peer_address_; }

  // The WebSocket underneath, for tests and logs.
  const WsConnection& connection() const { return *connection_; }

 private:
  WsTransport(event::Dispatcher& dispatcher, uint64_t connection_id,
              const WsTransportConfig& config);

  // WsConnectionCallbacks
  void onMessage(websocket::MessageType type, Buffer& payload) override;
  void onOutputAboveHighWatermark() override {}
  void onOutputBelowLowWatermark() override;
  void onConnectionClosing(WsCloseReason reason, const std::string& detail) override;
  void onConnectionClosed() override;

  // Hands held bytes to the WebSocket while it takes them; starts the close
  // handshake once they are all gone after shutdownWrite().
  void handOn();
  // Delivers held input, then the EOF, while reading runs. Only from the loop.
  void deliver();
  // Runs deliver() and the drained notice from the loop, soon.
  void schedule();
  void onScheduled();
  // The WebSocket began to close: nothing more is sent; the owner hears the
  // end (EOF, or `error`) once it has closed.
  void wsEnding(std::optional<std::string> error);
  // The client will send nothing more; held output can no longer be sent.
  void peerEnded();
  void fail(const std::string& detail);

  event::Dispatcher& dispatcher_;
  const uint64_t id_;
  const WsTransportConfig config_;
  std::unique_ptr<WsConnection> connection_;
  std::string peer_address_;
  TransportCallbacks* callbacks_ = nullptr;
  event::TimerPtr scheduled_;

  Buffer input_;        // received, not yet delivered
  Buffer held_output_;  // written, not yet handed to the WebSocket
  bool started_ = false;
  bool paused_ = false;
  bool write_shut_ = false;     // shutdownWrite() was called
  bool close_started_ = false;  // we asked the WebSocket to close
  bool peer_ended_ = false;     // no more input will come
  bool eof_delivered_ = false;
  bool drained_pending_ = false;  // held bytes moved on (or were dropped) since the last notice
  bool ws_ending_ = false;        // the WebSocket is closing; see wsEnding()
  std::optional<std::string> end_error_;
  bool closed_ = false;  // close() was called, or the transport failed
};

}  // namespace crisp::stream
