#pragma once

// CloseLinger: the last phase of closing a stream connection, once every
// queued byte was handed to the kernel and the write side is shut down.
//
// Closing the socket at that point can still lose data: what the kernel has
// not yet delivered is discarded if the socket is reset, and a socket that
// is closed is reset as soon as the peer sends anything (a keepalive ping,
// say). A client that reads slowly can have megabytes in flight, so the
// descriptor stays open while the peer acknowledges them: the linger waits
// as long as the count of unacknowledged bytes keeps falling, gives up once
// it has not fallen for `stall_timeout`, and once everything is acknowledged
// waits up to `linger_timeout` more for the peer to close its side. The
// owner closes the transport when `done` runs (or earlier, when the peer's
// EOF arrives).
//
// Threading: the dispatcher's thread only.

#include <chrono>
#include <cstddef>
#include <functional>

#include "source/common/dispatcher.h"
#include "source/stream/transport.h"

namespace crisp::stream {

class CloseLinger {
 public:
  // `done(unacknowledged)` gets the bytes still not acknowledged when the
  // linger gave up (0 after a clean wait).
  CloseLinger(event::Dispatcher& dispatcher, std::chrono::milliseconds linger_timeout,
              std::chrono::milliseconds stall_timeout,
              std::function<void(size_t unacknowledged)> done);

  // Starts watching `transport`, which must stay open until done runs or
  // cancel() is called.
  void start(const Transport& transport);
  void cancel();
  bool active() const { return timer_->enabled(); }

 private:
  void check();

  const Transport* transport_ = nullptr;
  const std::chrono::milliseconds linger_timeout_;
  const std::chrono::milliseconds stall_timeout_;
  std::function<void(size_t)> done_;
  event::TimerPtr timer_;
  size_t last_unacknowledged_ = 0;
  std::chrono::steady_clock::time_point last_progress_;
  // Set once every byte was acknowledged: the end of the wait for the
  // peer's close.
  std::chrono::steady_clock::time_point linger_deadline_;
  bool all_acknowledged_ = false;
};

}  // namespace crisp::stream
