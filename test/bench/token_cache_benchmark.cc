// Issue+take pairs per second through the token cache, by shard count, thread
// count and number of tokens already live. Each group also runs a reference
// store (std::unordered_map under one std::mutex, same token generation, no
// expiry) in the same process, so the numbers read as a ratio to it.
//
//   bazel run -c opt //test/bench:token_cache_benchmark
//
// items_per_second is pairs per second summed over the threads (real time).
// sleeps is the threads' voluntary context switches per pair: a thread that
// finds a lock taken and goes to sleep leaves its core idle until it is woken.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <sys/resource.h>

#include "absl/strings/escaping.h"

#include "source/admin/metrics.h"
#include "source/cache/token_cache.h"

#include "benchmark/benchmark.h"

namespace crisp::cache {
namespace {

// Cheap and thread-safe, so the measurement is of the store, not of getrandom(2).
// Each thread runs its own counter from its own start: a counter the threads
// shared would be one more cache line moving between them on every token,
// which the store under test does not have.
class FastRandomSource : public RandomSource {
 public:
  bool fill(void* out, size_t len) override {
    thread_local uint64_t counter = next_start_.fetch_add(1ULL << 48, std::memory_order_relaxed);
    auto* p = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < len; i += 8) {
      counter += 0x9e3779b97f4a7c15ULL;
      uint64_t z = counter;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      z ^= z >> 31;
      std::memcpy(p + i, &z, std::min<size_t>(8, len - i));
    }
    return true;
  }

 private:
  std::atomic<uint64_t> next_start_{1};
};

// Times the calling thread gave up its core (blocked) so far.
int64_t voluntarySwitches() {
  struct rusage usage;
  getrusage(RUSAGE_THREAD, &usage);
  return usage.ru_nvcsw;
}

// Runs `pair` once per iteration and reports pairs per second and sleeps per
// pair (see the top of this file).
template <class Pair>
void runPairs(benchmark::State& state, Pair pair) {
  const int64_t switches = voluntarySwitches();
  for (auto _ : state) {
    if (!pair(state)) {
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["sleeps"] = benchmark::Counter(static_cast<double>(voluntarySwitches() - switches),
                                                benchmark::Counter::kAvgIterations);
}

session::StreamRequest smallRequest() {
  session::ExecSpec spec;
  spec.container_id = "bench";
  spec.stdout = true;
  return session::StreamRequest{spec};
}

// The reference: what a first, unsharded version would look like.
class ReferenceStore {
 public:
  ReferenceStore(RandomSource& random, size_t max) : random_(random), max_(max) {}

  std::optional<std::string> insert(session::StreamRequest request) {
    uint8_t bytes[16];
    if (!random_.fill(bytes, sizeof(bytes))) {
      return std::nullopt;
    }
    std::string token =
        absl::WebSafeBase64Escape(absl::string_view(reinterpret_cast<char*>(bytes), 16));
    std::lock_guard<std::mutex> lock(mutex_);
    if (map_.size() >= max_) {
      return std::nullopt;
    }
    map_.emplace(token, std::move(request));
    return token;
  }

  std::optional<session::StreamRequest> consume(const std::string& token) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = map_.find(token);
    if (it == map_.end()) {
      return std::nullopt;
    }
    session::StreamRequest request = std::move(it->second);
    map_.erase(it);
    return request;
  }

 private:
  RandomSource& random_;
  const size_t max_;
  std::mutex mutex_;
  std::unordered_map<std::string, session::StreamRequest> map_;
};

constexpr size_t kThreadMargin = 64;

RealTimeSource real_time;
FastRandomSource fast_random;
SystemRandomSource system_random;
stats::Registry bench_registry;

// Built by thread 0 before the timed loop (the loop starts behind a barrier),
// kept between the runs of one configuration so that a million live tokens are
// inserted once, not once per run.
struct Shared {
  int64_t shards = -1;
  int64_t live = -1;
  bool system = false;
  std::unique_ptr<TokenCache> cache;
  std::unique_ptr<ReferenceStore> reference;
};
Shared shared;

void prepareCache(int64_t shards, int64_t live, bool system) {
  if (shared.cache && shared.shards == shards && shared.live == live && shared.system == system) {
    return;
  }
  shared = Shared{};
  TokenCacheOptions options;
  options.shards = static_cast<uint32_t>(shards);
  options.max_in_flight = static_cast<uint32_t>(live + kThreadMargin);
  options.ttl = std::chrono::hours(1);
  options.registry = &bench_registry;
  shared.cache = std::make_unique<TokenCache>(
      options, real_time, system ? static_cast<RandomSource&>(system_random) : fast_random);
  for (int64_t i = 0; i < live; ++i) {
    if (!shared.cache->insert(smallRequest()).ok()) {
      std::abort();
    }
  }
  shared.shards = shards;
  shared.live = live;
  shared.system = system;
}

void prepareReference(int64_t live) {
  if (shared.reference && shared.live == live) {
    return;
  }
  shared = Shared{};
  shared.reference = std::make_unique<ReferenceStore>(fast_random, live + kThreadMargin);
  for (int64_t i = 0; i < live; ++i) {
    if (!shared.reference->insert(smallRequest())) {
      std::abort();
    }
  }
  shared.live = live;
}

// One issue and take; false (and the benchmark marked failed) on a refusal or
// a lost token.
bool issueTake(TokenCache& cache, benchmark::State& state) {
  absl::StatusOr<std::string> token = cache.insert(smallRequest());
  if (!token.ok()) {
    state.SkipWithError("insert refused");
    return false;
  }
  std::optional<session::StreamRequest> got = cache.consume(*token);
  if (!got) {
    state.SkipWithError("token not found");
    return false;
  }
  benchmark::DoNotOptimize(got);
  return true;
}

// Args: shards, live tokens, system random (0/1).
void BM_TokenCacheIssueTake(benchmark::State& state) {
  if (state.thread_index() == 0) {
    prepareCache(state.range(0), state.range(1), state.range(2) != 0);
  }
  runPairs(state, [](benchmark::State& state) { return issueTake(*shared.cache, state); });
}

// The machine's own parallelism, for reading the rows above: every thread
// issues and takes through a cache of its own, so the threads share no lock
// and no cache line. If two threads here get less than two threads' worth of
// pairs, the machine (other processes, a hypervisor), not the cache, is what
// keeps them apart.
void BM_TokenCachePerThreadIssueTake(benchmark::State& state) {
  TokenCacheOptions options;
  options.shards = 16;
  options.max_in_flight = kThreadMargin;
  options.ttl = std::chrono::hours(1);
  options.registry = &bench_registry;
  TokenCache cache(options, real_time, fast_random);
  runPairs(state, [&cache](benchmark::State& state) { return issueTake(cache, state); });
}

// Args: live tokens.
void BM_ReferenceMapIssueTake(benchmark::State& state) {
  if (state.thread_index() == 0) {
    prepareReference(state.range(0));
  }
  runPairs(state, [](benchmark::State& state) {
    std::optional<std::string> token = shared.reference->insert(smallRequest());
    if (!token) {
      state.SkipWithError("insert refused");
      return false;
    }
    std::optional<session::StreamRequest> got = shared.reference->consume(*token);
    if (!got) {
      state.SkipWithError("token not found");
      return false;
    }
    benchmark::DoNotOptimize(got);
    return true;
  });
}

// Few live tokens: shards x threads.
BENCHMARK(BM_ReferenceMapIssueTake)->ArgNames({"live"})->Arg(0)->ThreadRange(1, 4)->UseRealTime();
BENCHMARK(BM_TokenCacheIssueTake)
    ->ArgNames({"shards", "live", "getrandom"})
    ->ArgsProduct({{1, 16, 64}, {0}, {0}})
    ->ThreadRange(1, 4)
    ->UseRealTime();

BENCHMARK(BM_TokenCachePerThreadIssueTake)->ThreadRange(1, 2)->UseRealTime();

// A million live tokens: the maps no longer fit in cache.
BENCHMARK(BM_ReferenceMapIssueTake)
    ->ArgNames({"live"})
    ->Arg(1 << 20)
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();
BENCHMARK(BM_TokenCacheIssueTake)
    ->ArgNames({"shards", "live", "getrandom"})
    ->Args({16, 1 << 20, 0})
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

// The real random source, for what a production insert costs.
BENCHMARK(BM_TokenCacheIssueTake)
    ->ArgNames({"shards", "live", "getrandom"})
    ->Args({16, 0, 1})
    ->Threads(1)
    ->Threads(2)
    ->UseRealTime();

}  // namespace
}  // namespace crisp::cache
