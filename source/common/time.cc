#include "source/common/time.h"

#include <pthread.h>
#include <sys/random.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace crisp {
namespace {

bool readKernelRandom(uint8_t* p, size_t len) {
  while (len > 0) {
    const ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

// Bumped in the child of every fork(): a thread buffer filled under another
// generation was copied from the parent, whose next bytes it would repeat.
std::atomic<uint64_t> fork_generation{0};

void onForkChild() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

// What is left of the thread's last getrandom batch: bytes_[next_, end).
class ThreadRandomBuffer {
 public:
  ~ThreadRandomBuffer() { discard(); }

  bool fill(uint8_t* out, size_t len) {
    const uint64_t generation = fork_generation.load(std::memory_order_relaxed);
    if (generation != generation_) {
      discard();
      generation_ = generation;
    }
    if (SystemRandomSource::kRandomBatchBytes - next_ < len) {
      // The remainder is too short: dropped, never joined to the next batch.
      if (!readKernelRandom(bytes_, sizeof(bytes_))) {
        discard();
        return false;
      }
      next_ = 0;
    }
    std::memcpy(out, bytes_ + next_, len);
    explicit_bzero(bytes_ + next_, len);
    next_ += len;
    return true;
  }

 private:
  void discard() {
    explicit_bzero(bytes_ + next_, sizeof(bytes_) - next_);
    next_ = sizeof(bytes_);
  }

  uint8_t bytes_[SystemRandomSource::kRandomBatchBytes];
  size_t next_ = SystemRandomSource::kRandomBatchBytes;
  uint64_t generation_ = 0;
};

thread_local ThreadRandomBuffer thread_random;

}  // namespace

MonotonicTime RealTimeSource::coarseMonotonicTime() const {
  timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) {
    return monotonicTime();
  }
  return MonotonicTime(std::chrono::duration_cast<MonotonicTime::duration>(
      std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

bool SystemRandomSource::fill(void* out, size_t len) {
  auto* p = static_cast<uint8_t*>(out);
  if (len > kMaxBufferedFill) {
    return readKernelRandom(p, len);
  }
  // Registered before any thread buffer holds bytes, so no buffer can be
  // inherited by a child unnoticed.
  static const bool fork_handler_registered =
      pthread_atfork(nullptr, nullptr, onForkChild) == 0;
  if (!fork_handler_registered) {
    return readKernelRandom(p, len);
  }
  return thread_random.fill(p, len);
}

}  // namespace crisp
