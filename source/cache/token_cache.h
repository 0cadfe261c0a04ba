#pragma once

// TokenCache: the streaming requests waiting for their client, each under a
// random single-use token. Shared by the CRI thread (insert) and the stream
// server's loops (consume); sharded by token so that threads rarely meet.
//
// - Tokens carry at least 128 bits from the RandomSource, URL-safe base64
//   without padding, and are compared in constant time.
// - Single use: consume() removes the entry before checking its expiry, so a
//   token is burnt by its first presentation, whatever the outcome.
// - Expiry needs no timer per token: expired entries are dropped lazily.
// - At most max_in_flight live entries; insert() refuses beyond that with
//   RESOURCE_EXHAUSTED.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "source/common/time.h"
#include "source/session/request.h"

namespace crisp::cache {

struct TokenCacheOptions {
  std::chrono::milliseconds ttl{std::chrono::minutes(1)};
  uint32_t shards = 16;
  uint32_t max_in_flight = 1000;
};

class TokenCache {
 public:
  // `time` and `random` must outlive the cache.
  TokenCache(const TokenCacheOptions& options, const TimeSource& time, RandomSource& random);
  ~TokenCache();

  // Stores `request` and returns its new token. RESOURCE_EXHAUSTED
  // ("maximum number of in-flight requests exceeded") when full, UNAVAILABLE
  // when the random source fails. Thread-safe.
  absl::StatusOr<std::string> insert(session::StreamRequest request);

  // Removes and returns the request under `token` if it exists and has not
  // expired. Thread-safe.
  std::optional<session::StreamRequest> consume(std::string_view token);

  // Live entries, expired ones not yet dropped included.
  size_t size() const;

  // Changes the TTL applied to future inserts (reload).
  void setTtl(std::chrono::milliseconds ttl);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace crisp::cache
