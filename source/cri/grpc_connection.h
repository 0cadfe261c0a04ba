#pragma once

// Http2Connection: the socket half of crisp's gRPC server and client connections
// (internal to source/cri). It owns a non-blocking stream socket and an nghttp2
// session, feeds received bytes to nghttp2_session_mem_recv and writes what
// nghttp2_session_mem_send produces, driven by an FdWatcher on one Dispatcher.
//
// - Writes are never done from inside nghttp2 callbacks or from a caller's
//   stack: scheduleFlush() arms a zero timer, so that code may queue frames from
//   any callback without re-entering the session.
// - Output backpressure: nghttp2 is asked for more frames only while less than
//   kOutputHighWatermark bytes wait for the socket, and the socket is not read
//   while that much waits (a peer that floods PINGs but never reads stalls
//   itself, not crisp). Stream and connection windows (kWindowBytes) are below
//   the watermark, so DATA alone cannot trigger the stall.
// - Receive flow control is manual (no automatic WINDOW_UPDATE): the connection
//   window reopens as soon as bytes arrive; a stream's window reopens unless its
//   owner paused reading it (ReadGate), which is how a proxy stops a fast sender.
// - Send side of a stream: StreamSendState holds the bytes for DATA frames and
//   how the stream ends; dataProvider() hands it to nghttp2.
//
// Everything runs on the dispatcher's thread. Subclasses own their streams and
// are destroyed through Dispatcher::deferredDelete once closed.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include <nghttp2/nghttp2.h>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/cri/grpc_common.h"

namespace crisp::cri::internal {

inline constexpr uint32_t kWindowBytes = 1024 * 1024;
inline constexpr size_t kOutputHighWatermark = 2 * 1024 * 1024;
// A stream's queued send bytes at or below this count as drained.
inline constexpr size_t kSendLowWatermark = 256 * 1024;
inline constexpr size_t kMaxHeaderListBytes = 64 * 1024;

// Bytes waiting to go out as DATA frames on one stream, and how the stream ends.
struct StreamSendState {
  Buffer pending;
  // Nothing follows `pending`.
  bool end = false;
  // End with a trailer HEADERS frame carrying `trailers` (server responses)
  // instead of END_STREAM on the last DATA frame (client requests).
  bool end_with_trailers = false;
  Metadata trailers;
  // nghttp2 was told there is nothing to send; resume before queueing more.
  bool deferred = false;

  // Runs `fn` once `pending` is at or below kSendLowWatermark: at once if it
  // already is, else when the connection has taken enough of it (replacing a
  // callback set earlier).
  void notifyWhenDrained(std::function<void()> fn);
  // Drops the callback, if any (the stream ended).
  void cancelDrainedNotice() { on_drained_ = nullptr; }
  // Whether a callback waits and `pending` is low enough to run it.
  bool drainNoticeDue() const {
    return on_drained_ != nullptr && pending.length() <= kSendLowWatermark;
  }
  // Hands over the callback and drops it here (empty if none was set).
  std::function<void()> takeDrainedNotice() { return std::exchange(on_drained_, nullptr); }

 private:
  std::function<void()> on_drained_;
};

// Window bookkeeping of one received stream.
struct ReadGate {
  bool paused = false;
  size_t unconsumed = 0;
};

class Http2Connection {
 public:
  virtual ~Http2Connection();
  Http2Connection(const Http2Connection&) = delete;
  Http2Connection& operator=(const Http2Connection&) = delete;

  uint64_t id() const { return id_; }
  bool closed() const { return closed_; }
  event::Dispatcher& dispatcher() { return dispatcher_; }
  nghttp2_session* session() { return session_; }

  // Writes queued frames on the next loop iteration. No-op once closed.
  void scheduleFlush();

  // Closes the socket now and calls onClosed(reason) once. Safe from inside
  // nghttp2 callbacks: the session is only freed by the destructor.
  void close(const absl::Status& reason);

  // Queues `bytes` for DATA on `stream_id` and resumes the stream if nghttp2
  // had deferred it. `end` marks the last bytes.
  void queueSend(int32_t stream_id, StreamSendState& state);

  // Accounts `len` received DATA bytes of a stream (see ReadGate).
  void consumeReceived(int32_t stream_id, ReadGate& gate, size_t len);
  // Pauses or resumes the window updates of a stream.
  void setReadPaused(int32_t stream_id, ReadGate& gate, bool paused);

  // A data provider reading from `state`. It submits trailers itself when
  // state.end_with_trailers is set.
  static nghttp2_data_provider dataProvider(StreamSendState& state);

  // Builds an nghttp2 header list pointing into `headers` (which must outlive
  // the submit call; nghttp2 copies).
  static std::vector<nghttp2_nv> toNv(const Metadata& headers);

 protected:
  // `fd` is a connected (or, with `connecting`, connecting) non-blocking socket,
  // owned from now on.
  Http2Connection(event::Dispatcher& dispatcher, int fd, bool connecting);

  // Adopts the session (created by the subclass with `this` as user data),
  // submits SETTINGS and starts I/O. Returns false (and closes) on failure.
  bool start(nghttp2_session* session, const std::vector<nghttp2_settings_entry>& settings);

  // The send state of an open stream, or nullptr (used for drain notices).
  virtual StreamSendState* sendStateFor(int32_t stream_id) = 0;
  // The socket is gone; every stream must be failed. Called once.
  virtual void onClosed(const absl::Status& reason) = 0;
  // Describes socket errors in close reasons ("connect: ..."); clients override
  // to name their peer.
  virtual absl::Status socketError(const std::string& what, int err);

  // Reports `reason` through close() on the next loop iteration, so that a
  // failure found while setting up never calls back into the caller's stack.
  void closeSoon(const absl::Status& reason);

 private:
  static ssize_t readData(nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* user_data);

  void onFdReady(short events);
  void onConnectDone();
  void doRead();
  void doFlush();
  void updateInterest();
  // Writes what the socket takes from out_; the result of sendmsg(2).
  ssize_t sendSome();
  void notifyDrained();

  event::Dispatcher& dispatcher_;
  const uint64_t id_;
  int fd_;
  bool connecting_;
  bool closed_ = false;
  nghttp2_session* session_ = nullptr;
  Buffer out_;
  event::FdWatcher watcher_;
  event::Timer flush_timer_;
  std::vector<int32_t> drained_streams_;
  absl::Status pending_close_;
};

}  // namespace crisp::cri::internal
