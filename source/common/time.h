#pragma once

// Injected time and randomness. Production code asks these interfaces, never
// the system directly, so tests can drive expiry and token generation exactly.

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace crisp {

using MonotonicTime = std::chrono::steady_clock::time_point;

class TimeSource {
 public:
  virtual ~TimeSource() = default;
  virtual MonotonicTime monotonicTime() const = 0;
  // The same clock read at the kernel tick's resolution (it may lag
  // monotonicTime() by up to one tick, a few milliseconds), for callers on a
  // hot path that need no finer grain: several times cheaper to read.
  virtual MonotonicTime coarseMonotonicTime() const { return monotonicTime(); }
};

class RealTimeSource : public TimeSource {
 public:
  MonotonicTime monotonicTime() const override { return std::chrono::steady_clock::now(); }
  // CLOCK_MONOTONIC_COARSE: the value CLOCK_MONOTONIC (steady_clock) had at
  // the last tick.
  MonotonicTime coarseMonotonicTime() const override;
};

class RandomSource {
 public:
  virtual ~RandomSource() = default;
  // Fills `out` with `len` bytes of cryptographic-quality randomness.
  // Returns false when the source fails (the caller refuses the request).
  virtual bool fill(void* out, size_t len) = 0;
};

// Reads from the kernel's CSPRNG (getrandom(2)). Requests of up to
// kMaxBufferedFill bytes are served from a buffer per thread that one
// getrandom call refills kRandomBatchBytes at a time: a system call costs
// several times what the token cache does with a token, so one per token
// would dominate issuing it. Every byte is still kernel CSPRNG output and is
// handed out once; bytes are wiped from the buffer as they leave it, and a
// child created by fork() drops what it inherited instead of repeating its
// parent's next bytes. Larger requests go to the kernel directly.
class SystemRandomSource : public RandomSource {
 public:
  static constexpr size_t kRandomBatchBytes = 1024;
  static constexpr size_t kMaxBufferedFill = 64;

  bool fill(void* out, size_t len) override;
};

}  // namespace crisp
