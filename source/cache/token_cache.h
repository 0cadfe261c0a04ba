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
//   Times come from TimeSource::coarseMonotonicTime(), so with the real clock
//   a token's life is its TTL give or take one kernel tick (a few ms).
// - At most max_in_flight live entries; insert() refuses beyond that with
//   RESOURCE_EXHAUSTED.
// - Metrics (crisp_tokens_*) go to options.registry, or to the process-wide
//   registry when it is null; their list is in token_cache.cc. Each shard
//   counts under its own lock and the registry's collector adds the shards up
//   when the metrics are rendered.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

#include "source/common/time.h"
#include "source/session/request.h"

namespace crisp::stats {
class Registry;
}  // namespace crisp::stats

namespace crisp::cache {

// Length of every token insert() returns: 16 random bytes in base64url.
inline constexpr size_t kTokenLength = 22;

struct TokenCacheOptions {
  std::chrono::milliseconds ttl{std::chrono::minutes(1)};
  uint32_t shards = 16;  // 0 is taken as 1
  uint32_t max_in_flight = 1000;
  // Where the metrics go; null = stats::registry(). Must outlive the cache.
  stats::Registry* registry = nullptr;
};

class TokenCache {
 public:
  // `time` and `random` must outlive the cache.
  TokenCache(const TokenCacheOptions& options, const TimeSource& time, RandomSource& random);
  ~TokenCache();

  // Stores `request` and returns its new token (kTokenLength characters of
  // A-Z a-z 0-9 - _). RESOURCE_EXHAUSTED ("maximum number of in-flight
  // requests exceeded") when full, UNAVAILABLE when the random source fails
  // or keeps returning tokens already in use. Thread-safe.
  absl::StatusOr<std::string> insert(session::StreamRequest request);

  // Removes and returns the request under `token` if it exists and has not
  // expired (it is valid up to and including insert time + TTL). A token that
  // exists is removed even when it has expired; a token of the wrong length or
  // alphabet is simply not found. Thread-safe.
  std::optional<session::StreamRequest> consume(std::string_view token);

  // Live entries, expired ones not yet dropped included.
  size_t size() const;

  // Changes the TTL applied to future inserts (reload). Thread-safe.
  void setTtl(std::chrono::milliseconds ttl);
  // A new max_in_flight (reload); tokens already issued stay valid.
  void setMaxInFlight(uint32_t max);

  // Entries per shard, in shard order (admin and tests). Thread-safe; each
  // shard is read under its own lock, so the sum may differ from size().
  std::vector<size_t> shardSizes() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace crisp::cache
