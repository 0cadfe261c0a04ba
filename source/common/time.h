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
};

class RealTimeSource : public TimeSource {
 public:
  MonotonicTime monotonicTime() const override { return std::chrono::steady_clock::now(); }
};

class RandomSource {
 public:
  virtual ~RandomSource() = default;
  // Fills `out` with `len` bytes of cryptographic-quality randomness.
  // Returns false when the source fails (the caller refuses the request).
  virtual bool fill(void* out, size_t len) = 0;
};

// Reads from the kernel's CSPRNG (getrandom(2)).
class SystemRandomSource : public RandomSource {
 public:
  bool fill(void* out, size_t len) override;
};

}  // namespace crisp
