#pragma once

// The limits of the stream server, in one place:
//
// - StreamLimit: every limit the stream server enforces on what clients send
//   or open, each counted in crisp_stream_limit_hits_total{limit} when a
//   client reaches it (the label names are listed in CRISP_STREAM_LIMITS).
// - SessionLimiter: the number of live sessions (exec, attach, port-forward,
//   any protocol) across every worker loop, capped at stream.max_sessions.
//   The HTTP/1.1 front takes a SessionPermit before it answers 101; the
//   permit then rides inside the upgraded connection's Transport
//   (holdSessionPermit()), so that whichever handler serves the session
//   gives the slot back, without knowing about it, when it closes or frees
//   that transport.
// - spdyLimits(): the SPDY decoder limits for stream.max_frame_bytes.
// - countProtocolError(): crisp_stream_protocol_errors_total{reason}, every
//   client protocol violation by the stable name its error starts with.
//
//   SessionLimiter limiter(config.stream.max_sessions);   // shared by all workers
//   SessionPermit permit = limiter.tryAcquire();
//   if (!permit) { answer 503; countLimitHit(StreamLimit::kMaxSessions, registry); }
//   transport = holdSessionPermit(std::move(transport), std::move(permit));

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

#include "absl/status/status.h"

#include "source/admin/metrics.h"
#include "source/codec/spdy/codec.h"
#include "source/stream/transport.h"

namespace crisp::stream {

// Every limit a client can hit, with its `limit` label:
//   max_sessions        stream.max_sessions: upgrade refused with 503 before the 101
//   header_bytes        stream.max_header_bytes: request head (HTTP/1.1) or
//                       header list (HTTP/2) refused with 431
//   header_timeout      stream.header_timeout: no complete head in time, closed
//   frame_bytes         stream.max_frame_bytes: a SPDY frame or WebSocket message
//                       over the limit, connection closed (GOAWAY PROTOCOL_ERROR
//                       or close 1009)
//   header_block_bytes  a SPDY header block beyond 64 KiB (or 1024 entries)
//                       once decompressed, connection closed (GOAWAY)
//   portforward_pairs   more than 4096 open port-forward stream pairs on one
//                       connection, stream refused (RST_STREAM CANCEL)
//   portforward_early_data  more than 1 MiB on a port-forward data stream
//                       before its error stream, stream reset
//   http2_streams       stream.max_concurrent_streams: a HEADERS frame beyond
//                       the streams open on one HTTP/2 connection, refused
//                       (REFUSED_STREAM, or GOAWAY once SETTINGS were acked)
#define CRISP_STREAM_LIMITS(X)                       \
  X(kMaxSessions, "max_sessions")                    \
  X(kHeaderBytes, "header_bytes")                    \
  X(kHeaderTimeout, "header_timeout")                \
  X(kFrameBytes, "frame_bytes")                      \
  X(kHeaderBlockBytes, "header_block_bytes")         \
  X(kPortForwardPairs, "portforward_pairs")          \
  X(kPortForwardEarlyData, "portforward_early_data") \
  X(kHttp2Streams, "http2_streams")

enum class StreamLimit {
#define CRISP_STREAM_LIMIT_ENUM(name, label) name,
  CRISP_STREAM_LIMITS(CRISP_STREAM_LIMIT_ENUM)
#undef CRISP_STREAM_LIMIT_ENUM
};

// The `limit` label: "max_sessions", "frame_bytes", ...
const char* streamLimitName(StreamLimit limit);

// crisp_stream_limit_hits_total{limit=<name>} in `registry` (null:
// stats::registry()). Looks the child up under a lock: for rare events only.
stats::Counter& limitHitCounter(StreamLimit limit, stats::Registry* registry = nullptr);
inline void countLimitHit(StreamLimit limit, stats::Registry* registry = nullptr) {
  limitHitCounter(limit, registry).inc();
}

// The limit behind a codec's error status, from the stable reason its message
// starts with ("spdy.frame_too_large: ...", "ws.message_too_big: ..."):
// frame_bytes for spdy.frame_too_large and ws.message_too_big,
// header_block_bytes for spdy.header_block_too_large; nullopt for protocol
// violations that are not limits.
std::optional<StreamLimit> limitOfCodecError(const absl::Status& status);

// Counts one client protocol violation in
// crisp_stream_protocol_errors_total{reason} of `registry` (null:
// stats::registry()). Most end the connection or the session (a malformed
// frame, invalid UTF-8 in a text message, a bad channel message); a few are
// only ignored, as kubelet ignores them (a message for an unknown channel).
// `message` is the error text; its reason is protocolErrorReason(message).
// Looks the child up under a lock: for rare events only.
void countProtocolError(std::string_view message, stats::Registry* registry = nullptr);
// The counter of one reason (a name protocolErrorReason() returns).
stats::Counter& protocolErrorCounter(std::string_view reason, stats::Registry* registry = nullptr);

// crisp_stream_pings_total{protocol}: keepalive pings received from clients,
// by protocol ("spdy", "websocket"). Each is answered ahead of the data
// already queued, so a client that pings during a bulk transfer does not
// time out behind it. Looks the child up under a lock: pings are rare.
stats::Counter& clientPingCounter(std::string_view protocol);
inline void countProtocolError(const absl::Status& status, stats::Registry* registry = nullptr) {
  countProtocolError(std::string_view(status.message().data(), status.message().size()), registry);
}

// The stable dotted name an error message starts with, up to the first ':'
// ("ws.invalid_utf8: payload is not valid UTF-8" -> "ws.invalid_utf8", or the
// whole message when it is just a name), or
// "other" when the message starts with none. The names are literals of the
// codecs and adapters, so the label takes a fixed set of values whatever a
// client sends.
std::string_view protocolErrorReason(std::string_view message);

// Default of stream.max_frame_bytes: 16 MiB, the WebSocket message limit.
inline constexpr uint32_t kDefaultMaxFrameBytes = 16 * 1024 * 1024;

// The SPDY decoder limits for stream.max_frame_bytes: DATA payloads up to
// `max_frame_bytes`, at most the 24-bit wire limit (16 MiB - 1, so the
// default is the wire limit itself); control frames up to the smaller of it
// and spdy::Limits' own 64 KiB. Header block limits keep their defaults.
spdy::Limits spdyLimits(uint32_t max_frame_bytes);

class SessionLimiter;

// One slot of a SessionLimiter, given back when the permit is destroyed or
// reset(). Move-only. An empty permit (default, or from a full limiter) holds
// nothing. Any thread, but one permit is used by one thread at a time.
class SessionPermit {
 public:
  SessionPermit() = default;
  ~SessionPermit() { reset(); }
  SessionPermit(SessionPermit&& other) noexcept : limiter_(other.limiter_) {
    other.limiter_ = nullptr;
  }
  SessionPermit& operator=(SessionPermit&& other) noexcept;
  SessionPermit(const SessionPermit&) = delete;
  SessionPermit& operator=(const SessionPermit&) = delete;

  explicit operator bool() const { return limiter_ != nullptr; }
  // Gives the slot back now (no-op when empty).
  void reset();

 private:
  friend class SessionLimiter;
  explicit SessionPermit(SessionLimiter* limiter) : limiter_(limiter) {}
  SessionLimiter* limiter_ = nullptr;
};

// Counts live sessions against a maximum. Thread-safe and lock-free; one
// limiter is shared by every worker loop. It must outlive every permit it
// gave out (and so every transport holding one).
class SessionLimiter {
 public:
  // `max_sessions` of 0 admits nothing.
  explicit SessionLimiter(uint32_t max_sessions) : max_(max_sessions) {}
  SessionLimiter(const SessionLimiter&) = delete;
  SessionLimiter& operator=(const SessionLimiter&) = delete;

  // A slot while fewer than max() are taken; an empty permit otherwise.
  SessionPermit tryAcquire();

  uint32_t max() const { return max_.load(std::memory_order_relaxed); }
  // A new maximum (reload). Sessions above it are not ended; new ones wait
  // until the count is below it.
  void setMax(uint32_t max_sessions) { max_.store(max_sessions, std::memory_order_relaxed); }
  // Slots taken now.
  uint32_t active() const { return active_.load(std::memory_order_acquire); }

 private:
  friend class SessionPermit;
  void release() { active_.fetch_sub(1, std::memory_order_acq_rel); }

  std::atomic<uint32_t> max_;
  std::atomic<uint32_t> active_{0};
};

// Wraps `inner` in a Transport that forwards every call to it (callbacks go
// from `inner` straight to the owner) and holds `permit` until the transport
// is closed (close()) or destroyed, whichever comes first. Takes ownership of
// both; `inner` must not be null.
TransportPtr holdSessionPermit(TransportPtr inner, SessionPermit permit);

}  // namespace crisp::stream
