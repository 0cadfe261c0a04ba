#pragma once

// SpdyConnection: one SPDY/3.1 connection over a Transport (a TCP socket,
// TLS, a WebSocket tunnel), after the HTTP/1.1 upgrade; the server side, or
// with SpdyConnectionConfig::role kClient the side that sent the upgrade
// (crisp in front of a runtime's stream server), which opens the streams
// (openStream()) instead of accepting them. It owns the transport and a spdy::Codec, keeps the table of live
// streams, and gives its owner (a session such as SpdyRemoteCommand)
// stream-level callbacks and sends.
//
// What it does on its own:
// - whatever the transport already holds goes first: the upgrade's 101 out,
//   the bytes read past the request head in;
// - checks client stream ids (odd, strictly increasing; else RST_STREAM
//   PROTOCOL_ERROR), answers each accepted SYN_STREAM with a SYN_REPLY (empty
//   header block) and each refused one with RST_STREAM CANCEL;
// - echoes client PINGs (odd ids) unchanged, ahead of queued DATA: control
//   frames wait in their own queue, and the transport is handed whole frames
//   only while its own queue is under transport_queue_bytes, so a control
//   frame waits behind at most that much; this holds while closing too, until
//   our write side is shut;
// - ignores SETTINGS and WINDOW_UPDATE (Kubernetes peers have no flow control)
//   and accepts DATA frames of any size; splits outgoing DATA into frames of at
//   most max_data_frame_bytes;
// - removes a stream from the table as soon as it is closed in both
//   directions or reset, so long sessions do not grow;
// - output backpressure: onOutputAboveHighWatermark() when the bytes queued
//   (here and in the transport) pass the high watermark,
//   onOutputBelowLowWatermark() once they fall under the low one, so the owner
//   pauses its producer; the socket is still read meanwhile, so PINGs from a
//   slow reader are answered;
// - input backpressure: pauseReading() pauses the transport;
// - idle timeout: any frame in or out re-arms it; expiry closes;
// - close: RST_STREAM(CANCEL) on every stream we have not FIN'd, GOAWAY(OK),
//   both after the DATA already queued (nothing queued is dropped); flush;
//   shut the write side down; then wait for the peer to close its side
//   (CloseLinger): while bytes are unacknowledged, as long as the peer keeps
//   acknowledging them (drain_timeout without progress ends it); once all are
//   acknowledged, up to linger_timeout after the peer's last sign of life (an
//   acknowledgement, or any frame it sends: a client behind a proxy that
//   still reads our last bytes is seen only by its PINGs); never longer than
//   linger_limit in all; close. The peer's frames are decoded until then:
//   PINGs are counted (and answered until the write side is shut), DATA is
//   dropped. A codec error closes the same way with GOAWAY(PROTOCOL_ERROR);
//   one that is a limit (codec_limits) is counted in
//   crisp_stream_limit_hits_total (stream_limits.h). The peer closing its
//   side, or a transport error, ends the connection at once.
//
// Threading: everything runs on the dispatcher's thread. Callbacks may call
// back into the connection (send, reset, close, pauseReading). The owner must
// not destroy the connection from inside a callback; it uses
// Dispatcher::deferredDelete() (onConnectionClosed() is the usual place).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

#include "source/codec/spdy/codec.h"
#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/close_linger.h"
#include "source/stream/transport.h"

namespace crisp::stream {

struct SpdyConnectionConfig {
  // No frame in or out for this long closes the connection (kubelet default).
  std::chrono::milliseconds idle_timeout = std::chrono::hours(4);
  // Bytes queued (here and in the transport) above which the owner is asked
  // to pause.
  size_t output_high_watermark = 1024 * 1024;
  // Bytes queued below which a paused owner is told to go on.
  size_t output_low_watermark = 256 * 1024;
  // Most bytes left in the transport's queue at a time. Whole frames are
  // handed over while it holds less, so a control frame (PING reply,
  // RST_STREAM, SYN_REPLY) waits behind at most this much DATA.
  size_t transport_queue_bytes = 64 * 1024;
  // Replies the client makes us queue (PING echoes, RST_STREAM, SYN_REPLY)
  // and has not read: above this many bytes written but not taken by the
  // peer, the socket is not read until half of it drained. A client that
  // floods PINGs without reading is slowed down, never buffered for.
  size_t max_unread_output_bytes = 256 * 1024;
  // Largest DATA payload per frame we send, so control frames and other
  // streams are never stuck behind one huge frame. Frames end at segment
  // boundaries of the data below this size (no payload copy); at 128 KiB a
  // segment of a 64 KiB read always fits whole.
  size_t max_data_frame_bytes = 128 * 1024;
  // While closing: the longest time without any write progress before the
  // transport is closed with output still queued (a peer that stopped
  // reading).
  std::chrono::milliseconds drain_timeout = std::chrono::seconds(30);
  // After our last byte and the write side's shutdown, once the peer has
  // acknowledged every byte: how long after its last sign of life (an
  // acknowledgement, a frame) to wait for it to close its side. As long as
  // linger_limit by default: kubectl's SPDY client may hold megabytes it
  // read ahead (and a proxy more), sends its next PING only once it has read
  // our last PING reply, and loses what it still holds if that PING meets a
  // closed socket (reset). What waiting costs is a half-closed socket.
  std::chrono::milliseconds linger_timeout = std::chrono::minutes(5);
  // The longest wait for the peer's close after the write side's shutdown,
  // whatever signs of life it gives.
  std::chrono::milliseconds linger_limit = std::chrono::minutes(5);
  // Limits of the frame decoder.
  spdy::Limits codec_limits;
  // kServer accepts the peer's streams; kClient opens its own (odd ids) and
  // refuses any the peer opens.
  spdy::Codec::Role role = spdy::Codec::Role::kServer;
};

// Why a connection ended; the names are stable (logs, metrics, tests).
enum class SpdyCloseReason {
  kLocal,          // "local": the owner called close()
  kPeerClosed,     // "spdy.peer_closed": the client closed its side
  kSocketError,    // "spdy.socket_error": the transport failed (reset, ...)
  kProtocolError,  // "spdy.protocol_error": the client's bytes are not SPDY/3.1
  kIdleTimeout,    // "spdy.idle_timeout": no frame in or out for idle_timeout
};

const char* closeReasonName(SpdyCloseReason reason);

class SpdyConnectionCallbacks {
 public:
  virtual ~SpdyConnectionCallbacks() = default;

  // A client opened a stream with a valid id. Return true to accept it (a
  // SYN_REPLY goes out) or false to refuse it (RST_STREAM CANCEL). A SYN_STREAM
  // carrying FIN is followed by onStreamRemoteFin().
  virtual bool onStreamOpen(uint32_t stream_id, const spdy::HeaderList& headers) = 0;
  // Payload of an accepted stream; the callee drains what it keeps.
  virtual void onStreamData(uint32_t stream_id, Buffer& data) = 0;
  // Zero-copy input: a pipe that the payload of the client's DATA on this
  // stream may be spliced into from the socket (Transport::readIntoPipe), in
  // place of onStreamData(), or -1 (the default). Asked when a DATA frame's
  // header arrives ahead of its payload and again before each splice; a
  // callee returns a pipe only while every byte it was given before has gone
  // into it, so that the order holds (it may flush its queue inside), and
  // must not close the pipe while a splice may run without resetting the
  // stream or closing the connection first. The pipe's reader is the
  // backpressure: while it is full, the socket is not read.
  virtual int onStreamDataPipe(uint32_t stream_id) {
    (void)stream_id;
    return -1;
  }
  // `bytes` of the stream's payload went into the pipe of onStreamDataPipe().
  virtual void onStreamDataPiped(uint32_t stream_id, size_t bytes) {
    (void)stream_id;
    (void)bytes;
  }
  // The client half-closed the stream (FIN); it may still receive.
  virtual void onStreamRemoteFin(uint32_t stream_id) = 0;
  // The client reset the stream; it is gone from the table.
  virtual void onStreamReset(uint32_t stream_id, spdy::RstStatus status) = 0;
  // Client role: the peer accepted a stream we opened (SYN_REPLY).
  virtual void onStreamReply(uint32_t stream_id) { (void)stream_id; }
  // The peer sent GOAWAY: it opens (client role: accepts) no more streams;
  // the open ones go on.
  virtual void onPeerGoAway() {}
  // Output backpressure, edge-triggered, only while the connection is open.
  virtual void onOutputAboveHighWatermark() = 0;
  virtual void onOutputBelowLowWatermark() = 0;
  // The connection began to end for a reason other than close(): no stream
  // callbacks follow and sends are refused. `detail` says what happened.
  virtual void onConnectionClosing(SpdyCloseReason reason, const std::string& detail) = 0;
  // The transport is closed. The last callback, always called exactly once
  // (unless the connection is destroyed first).
  virtual void onConnectionClosed() = 0;
  // No frame in or out for idle_timeout. Returning true means the owner ends
  // the session itself (with close()); false lets the connection close with
  // GOAWAY (OK) and onConnectionClosing(kIdleTimeout).
  virtual bool onIdleTimeout() { return false; }
};

class SpdyConnection : private spdy::CodecCallbacks, private TransportCallbacks {
 public:
  // Takes ownership of `transport` (on `dispatcher`; bytes it already holds
  // are the first ones sent and decoded). Nothing happens before start().
  SpdyConnection(event::Dispatcher& dispatcher, TransportPtr transport, uint64_t connection_id,
                 SpdyConnectionCallbacks& callbacks, const SpdyConnectionConfig& config);
  // Closes the transport at once if it is still open (no callbacks).
  ~SpdyConnection() override;
  SpdyConnection(const SpdyConnection&) = delete;
  SpdyConnection& operator=(const SpdyConnection&) = delete;

  // Becomes the transport's owner, starts it and arms the idle timer. Input
  // the transport holds is decoded from the loop, not inside this call.
  void start();

  // Queues `data` (drained) on a stream as DATA frames of at most
  // max_data_frame_bytes; `fin` half-closes our side after it (an empty `data`
  // with `fin` sends one empty DATA+FIN). Returns false, dropping the data,
  // when the stream is unknown, already FIN'd by us, or the connection is
  // closing.
  bool sendData(uint32_t stream_id, Buffer& data, bool fin);
  bool sendData(uint32_t stream_id, std::string_view data, bool fin);
  // As sendData(), but the frame goes ahead of the DATA already queued, with
  // the control frames (at a frame boundary: frames already handed to the
  // transport stay whole). For a short payload that must not wait behind a
  // slow reader's backlog, such as a session's final status; `data` must be
  // at most max_data_frame_bytes.
  bool sendDataAhead(uint32_t stream_id, std::string_view data, bool fin);

  // Zero-copy DATA: frames of at most max_data_frame_bytes whose payload the
  // transport splices from `pipe_fd` (Transport::writeFromPipe), up to `limit`
  // bytes of what the pipe holds. `pipe_fd` must be a pipe that only the
  // caller reads, so that what FIONREAD reports is there for the frame.
  // Taken only while nothing is queued (here or in the transport) and the
  // transport can splice; returns the bytes taken, 0 when declined (the
  // caller then reads them and uses sendData(), which keeps the order). A
  // payload the socket did not take whole stays in the pipe until the socket
  // takes it: meanwhile the connection counts as above its high watermark, so
  // the owner pauses its producer, which must not read the pipe while paused.
  size_t sendDataFromPipe(uint32_t stream_id, int pipe_fd, size_t limit);
  // Whether sendDataFromPipe() would take bytes now (for a stream that may
  // still carry DATA): the transport can splice and nothing is queued.
  bool canSendFromPipe() const;

  // Whether DATA payloads can be spliced into an owner's pipe here (see
  // SpdyConnectionCallbacks::onStreamDataPipe): the transport is a plain
  // socket.
  bool canSpliceInput() const { return transport_ != nullptr && transport_->canReadIntoPipe(); }

  // Client role: opens a stream (SYN_STREAM with `headers`, FIN when `fin`)
  // and returns its id, or 0 when the connection is not open or the ids ran
  // out. Data may be sent on it at once; onStreamReply() tells when the peer
  // accepted it.
  uint32_t openStream(const spdy::HeaderList& headers, bool fin = false);

  // Resets a stream (RST_STREAM with `status`, ahead of queued DATA) and forgets
  // it. Returns false when it is not in the table.
  bool resetStream(uint32_t stream_id, spdy::RstStatus status);

  // Starts the graceful close described above. Idempotent; no-op once closing.
  void close();

  // Stops (true) or resumes (false) reading the transport.
  void pauseReading(bool paused);

  bool open() const { return state_ == State::kOpen; }
  uint64_t id() const { return id_; }
  // Bytes queued here and in the transport, not yet written.
  size_t queuedOutputBytes() const;
  bool aboveHighWatermark() const { return above_high_watermark_; }
  // Streams in the table (open in at least one direction).
  size_t streamCount() const { return streams_.size(); }
  bool hasStream(uint32_t stream_id) const { return streams_.count(stream_id) != 0; }

  // Counters for tests and logs: bytes received from the transport, and bytes
  // handed to it that have left its queue.
  uint64_t bytesRead() const { return bytes_read_; }
  // Of bytesRead(), DATA payload bytes spliced into an owner's pipe.
  uint64_t bytesSplicedIn() const { return bytes_spliced_in_; }
  uint64_t bytesWritten() const;
  uint64_t pingsReceived() const { return pings_received_; }

 private:
  enum class State {
    kIdle,       // constructed, start() not called
    kOpen,       // streams flow
    kClosing,    // GOAWAY queued; flushing the output
    kLingering,  // output flushed and write side shut; waiting for the peer's close
    kClosed,     // transport closed
  };

  struct Stream {
    bool local_fin = false;   // we sent (queued) FIN
    bool remote_fin = false;  // the client sent FIN
  };

  // spdy::CodecCallbacks
  void onSynStream(uint32_t stream_id, uint32_t associated_id, uint8_t priority, uint8_t flags,
                   spdy::HeaderList&& headers) override;
  void onSynReply(uint32_t stream_id, uint8_t flags, spdy::HeaderList&& headers) override;
  void onHeaders(uint32_t stream_id, uint8_t flags, spdy::HeaderList&& headers) override;
  void onData(uint32_t stream_id, Buffer& data, bool fin) override;
  bool onDataStreamed(uint32_t stream_id, uint32_t length) override;
  void onRstStream(uint32_t stream_id, spdy::RstStatus status) override;
  void onSettings(uint8_t flags, const std::vector<spdy::SettingsEntry>& entries) override;
  void onPing(uint32_t id) override;
  void onGoAway(uint32_t last_good_stream_id, spdy::GoAwayStatus status) override;
  void onWindowUpdate(uint32_t stream_id, uint32_t delta) override;

  // TransportCallbacks
  void onTransportData(Buffer& data) override;
  void onTransportEof() override;
  void onTransportDrained() override;
  void onTransportError(const std::string& detail) override;
  void onTransportPipeInput(size_t bytes, const std::string& pipe_error) override;

  void attachTransport();
  // The pipe the rest of a DATA payload on `stream_id` may be spliced into,
  // or -1.
  int inputPipeFor(uint32_t stream_id);
  // Splices the rest of the DATA payload the codec is in, when its stream's
  // owner offers a pipe and nothing read is left undecoded; between frames,
  // after a spliced payload, has the next header read alone.
  void maybeSpliceInput();
  // Stops a splice into an owner's pipe; the rest of the payload is read and
  // decoded as usual.
  void cancelInputSplice();
  void decodeInput();
  // Hands queued frames to the transport, control frames first, while its
  // queue is under transport_queue_bytes.
  void pumpOutput();
  // Pauses or resumes reading the transport: paused while the owner asked for
  // it or while the client leaves too many of our frames unread.
  void updateReadPause();
  void checkWatermarks();
  void touchIdle();
  void onIdleTimeout();

  // Queues a control frame (SYN_REPLY, RST_STREAM, PING) ahead of DATA.
  void queueControl(Buffer& frame);
  // Queues one frame behind the DATA already queued.
  void queueDataFrame(Buffer& frame);
  void removeIfDone(std::map<uint32_t, Stream>::iterator it);
  // The peer half-closed the stream: tells the owner, then forgets the
  // stream if we FIN'd it too.
  void markRemoteFin(std::map<uint32_t, Stream>::iterator it);
  // "client" or "server": the peer, in log and close texts.
  const char* peerName() const;

  // Graceful close with this GOAWAY status.
  void beginClose(spdy::GoAwayStatus status);
  // Ends the connection because of the peer or an error: the owner is told,
  // queued output is dropped and the transport closed at once.
  void abort(SpdyCloseReason reason, const std::string& detail);
  void finishFlush();
  void closeTransport();

  event::Dispatcher& dispatcher_;
  TransportPtr transport_;
  const uint64_t id_;
  SpdyConnectionCallbacks& callbacks_;
  const SpdyConnectionConfig config_;
  spdy::Codec codec_;
  State state_ = State::kIdle;

  event::TimerPtr idle_timer_;
  event::TimerPtr drain_timer_;
  std::unique_ptr<CloseLinger> linger_;

  Buffer input_;
  // Control frames, handed to the transport before the next DATA frame.
  Buffer control_;
  // DATA frames (and the closing RST/GOAWAY), in order, with their lengths.
  Buffer data_;
  std::deque<size_t> data_frame_lengths_;

  std::map<uint32_t, Stream> streams_;
  uint32_t last_peer_stream_id_ = 0;
  uint32_t last_local_stream_id_ = 0;
  bool peer_went_away_ = false;
  bool read_paused_ = false;
  bool backlog_paused_ = false;
  bool peer_eof_ = false;
  // The peer's bytes stopped making sense while closing: they are no longer
  // decoded, only counted.
  bool closing_input_failed_ = false;
  // The last DATA payload asked about (onDataStreamed()) is spliced into a
  // pipe: the next frame's header is read alone.
  bool splicing_input_ = false;
  // The stream whose pipe failed (its reader is gone): copied from then on.
  uint32_t pipe_failed_stream_ = 0;
  bool above_high_watermark_ = false;

  uint64_t bytes_read_ = 0;
  uint64_t bytes_spliced_in_ = 0;
  // Bytes handed to the transport; bytes_written_ is fixed when it closes.
  uint64_t bytes_handed_ = 0;
  uint64_t bytes_written_ = 0;
  uint64_t pings_received_ = 0;
};

using SpdyConnectionPtr = std::unique_ptr<SpdyConnection>;

}  // namespace crisp::stream
