#pragma once

// CloseLinger: the wait at the end of closing a stream connection, once our
// last frame is queued and we wait for the peer to finish reading and to
// close its side (a WebSocket close frame, a TCP EOF).
//
// Closing the socket too early loses data: what the kernel has not yet
// delivered is discarded if the socket is reset, and a closed socket is reset
// as soon as the peer sends anything (a keepalive ping, say); a proxy in
// between then typically tears down both directions, cutting off what it
// still holds for a slow reader. So the descriptor stays open while the peer
// shows signs of life, and the wait is measured from the last one:
// - bytes still queued or unacknowledged: the wait goes on while their count
//   falls, and gives up once it has not fallen for `stall_timeout` (a reader
//   that stopped reading, whatever else it sends);
// - everything acknowledged: the peer (or a proxy) holds our last bytes; the
//   wait goes on for `linger_timeout` after the last progress, re-armed by
//   every byte the peer sends (noteProgress()), since a slow reader behind a
//   proxy is only seen by its keepalive pings;
// - in any case the whole wait ends after `limit`, so a peer that pings
//   forever without closing is still cut off.
// The owner closes the transport when `done` runs (or earlier, when the
// peer's close arrives).
//
// Threading: the dispatcher's thread only.

#include <chrono>
#include <cstddef>
#include <functional>

#include "source/common/dispatcher.h"
#include "source/stream/transport.h"

namespace crisp::stream {

// When a closing connection of this process last made progress (bytes
// written or acknowledged, or a sign of life from its peer while we wait for
// its close); the epoch before any. Any thread. The drain at shutdown keeps
// waiting for ended sessions while this moves.
std::chrono::steady_clock::time_point lastCloseProgress();
void noteCloseProgress();

class CloseLinger {
 public:
  // `done(pending)` gets the bytes still queued or not acknowledged when the
  // wait gave up (0 when everything reached the peer).
  CloseLinger(event::Dispatcher& dispatcher, std::chrono::milliseconds linger_timeout,
              std::chrono::milliseconds stall_timeout, std::chrono::milliseconds limit,
              std::function<void(size_t pending)> done);

  // Starts watching `transport`, which must stay open until done runs or
  // cancel() is called. Restarting resets every clock.
  void start(const Transport& transport);
  // The peer sent bytes: a sign of life that re-arms the wait for its close
  // once everything is acknowledged (only while active).
  void noteProgress();
  void cancel();
  bool active() const { return timer_->enabled(); }

 private:
  void check();
  size_t pending() const;

  const Transport* transport_ = nullptr;
  const std::chrono::milliseconds linger_timeout_;
  const std::chrono::milliseconds stall_timeout_;
  const std::chrono::milliseconds limit_;
  std::function<void(size_t)> done_;
  event::TimerPtr timer_;
  size_t last_pending_ = 0;
  std::chrono::steady_clock::time_point started_;
  // The last fall of the pending count, and the last sign of life of any kind.
  std::chrono::steady_clock::time_point last_taken_;
  std::chrono::steady_clock::time_point last_progress_;
};

}  // namespace crisp::stream
