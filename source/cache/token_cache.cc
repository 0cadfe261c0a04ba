#include "source/cache/token_cache.h"

#include <pthread.h>

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"

#include "source/admin/metrics.h"

namespace crisp::cache {
namespace {

// Every metric of the token cache, in one place:
//   X(member, name, kind, label names, help)
// Refusals carry reason="full" (max_in_flight reached) or reason="random" (the
// random source failed or kept repeating itself).
#define CRISP_TOKEN_CACHE_METRICS(X)                                              \
  X(issued, "crisp_tokens_issued_total", kCounter, {}, "Tokens handed out.")      \
  X(taken, "crisp_tokens_taken_total", kCounter, {}, "Tokens presented in time.") \
  X(expired, "crisp_tokens_expired_total", kCounter, {},                          \
    "Tokens that expired unused, dropped or presented too late.")                 \
  X(refused, "crisp_tokens_refused_total", kCounter, {"reason"},                  \
    "Token requests refused, by reason (full|random).")                           \
  X(live, "crisp_tokens_live", kGauge, {}, "Tokens issued and neither taken nor dropped.")

constexpr size_t kTokenBytes = 16;
static_assert((kTokenBytes * 8 + 5) / 6 == kTokenLength, "22 base64 characters hold 16 bytes");

// The same bound as kubelet's request cache: a random source that keeps
// returning tokens already in use is broken, not unlucky.
constexpr int kMaxTokenAttempts = 10;

constexpr char kFullMessage[] = "maximum number of in-flight requests exceeded";

uint64_t loadWord(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}

// A token's characters as the three little-endian words that cover them:
// characters 0-7, 8-15 and the last eight, 14-21 (overlapping the second).
// Everything here works on these words: reading an 8-byte word back from
// characters stored one by one stalls the processor (no store forwarding),
// which cost a tenth of a pair's time.
struct TokenWords {
  uint64_t first;
  uint64_t middle;
  uint64_t last;

  static TokenWords load(const char* p) {
    return {loadWord(p), loadWord(p + 8), loadWord(p + kTokenLength - 8)};
  }
  void store(char* p) const {
    std::memcpy(p, &first, 8);
    std::memcpy(p + 8, &middle, 8);
    std::memcpy(p + kTokenLength - 8, &last, 8);
  }
};

// The 128-bit product of two words folded to 64 bits: every output bit
// depends on every input bit of both.
uint64_t foldedProduct(uint64_t a, uint64_t b) {
  const unsigned __int128 product = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(product) ^ static_cast<uint64_t>(product >> 64);
}

// Tokens stored here are random, so two keyed multiply-and-folds of the three
// words spread them as well as a general string hash, at a fraction of the
// cost (two multiplications in a row instead of six). The keys differ per
// process (abseil seeds its hash per process), so presented guesses cannot
// aim at one slot.
size_t tokenHash(const TokenWords& words) {
  static const std::array<uint64_t, 4> keys = {
      absl::HashOf(uint64_t{0x5eed}), absl::HashOf(uint64_t{0x5eed + 1}),
      absl::HashOf(uint64_t{0x5eed + 2}), absl::HashOf(uint64_t{0x5eed + 3})};
  const uint64_t head = foldedProduct(words.first ^ keys[0], words.middle ^ keys[1]);
  return static_cast<size_t>(foldedProduct(head ^ keys[2], words.last ^ keys[3]));
}

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "token words hold their first character in their low byte");

// Character `index` of 16 bytes in base64url without padding (RFC 4648
// section 5): the bytes as one big-endian 128-bit number `high:low`, then four
// zero bits, cut into 22 groups of six bits.
inline uint64_t tokenChar(uint64_t high, uint64_t low, int index) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const int first_bit = 6 * index;  // counted from the top of `high`
  uint64_t group;
  if (first_bit + 6 <= 64) {
    group = high >> (58 - first_bit);
  } else if (first_bit < 64) {
    group = (high << (first_bit - 58)) | (low >> (122 - first_bit));
  } else if (first_bit + 6 <= 128) {
    group = low >> (122 - first_bit);
  } else {
    group = low << (first_bit - 122);
  }
  return static_cast<uint8_t>(kAlphabet[group & 63]);
}

// Characters [begin, begin + 8) of the encoding as one word, built in
// registers.
inline uint64_t tokenWord(uint64_t high, uint64_t low, int begin) {
  uint64_t word = 0;
  // Unrolled, every shift below is a constant.
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    word |= tokenChar(high, low, begin + i) << (8 * i);
  }
  return word;
}

TokenWords encodeToken(const uint8_t* bytes) {
  static_assert(kTokenBytes == 16 && kTokenLength == 22, "two words in, 22 characters out");
  const char* p = reinterpret_cast<const char*>(bytes);
  const uint64_t high = __builtin_bswap64(loadWord(p));
  const uint64_t low = __builtin_bswap64(loadWord(p + 8));
  return {tokenWord(high, low, 0), tokenWord(high, low, 8),
          tokenWord(high, low, kTokenLength - 8)};
}

// A token's characters: the key of a shard's index.
using TokenChars = std::array<char, kTokenLength>;

// A token's characters and their hash, computed once for picking the shard.
struct TokenKey {
  TokenChars chars;
  size_t hash;

  explicit TokenKey(const TokenWords& words) : hash(tokenHash(words)) {
    words.store(chars.data());
  }
};

// The text insert() returns.
std::string tokenText(const TokenWords& words) {
  std::string out(kTokenLength, '\0');
  words.store(out.data());
  return out;
}

// The index stores no hash beside the characters, to keep its slots small
// (see Shard): it is computed again when the table grows or an expired entry
// is erased. Insert and lookup pass the TokenKey, whose hash is known.
struct TokenCharsHash {
  using is_transparent = void;
  size_t operator()(const TokenChars& chars) const {
    return tokenHash(TokenWords::load(chars.data()));
  }
  size_t operator()(const TokenKey& key) const { return key.hash; }
};

// Constant time: the time a lookup takes says nothing about how many leading
// characters of a guess were right. Three overlapping 8-byte words cover the
// 22 characters; no branch depends on their content.
struct TokenCharsEq {
  using is_transparent = void;
  bool operator()(const TokenChars& a, const TokenKey& b) const { return (*this)(a, b.chars); }
  bool operator()(const TokenKey& a, const TokenChars& b) const { return (*this)(a.chars, b); }
  bool operator()(const TokenChars& a, const TokenChars& b) const {
    static_assert(kTokenLength > 16 && kTokenLength <= 24, "three words cover a token");
    const char* x = a.data();
    const char* y = b.data();
    const uint64_t diff = (loadWord(x) ^ loadWord(y)) | (loadWord(x + 8) ^ loadWord(y + 8)) |
                          (loadWord(x + kTokenLength - 8) ^ loadWord(y + kTokenLength - 8));
    return diff == 0;
  }
};

// The base64url alphabet (RFC 4648 section 5).
constexpr std::array<bool, 256> kTokenAlphabet = [] {
  std::array<bool, 256> table{};
  for (int c = 'A'; c <= 'Z'; ++c) {
    table[c] = true;
  }
  for (int c = 'a'; c <= 'z'; ++c) {
    table[c] = true;
  }
  for (int c = '0'; c <= '9'; ++c) {
    table[c] = true;
  }
  table['-'] = true;
  table['_'] = true;
  return table;
}();

// A presented token of the wrong shape cannot be in the cache: it is rejected
// before any lookup. This looks only at the caller's own input.
std::optional<TokenKey> parseToken(std::string_view token) {
  if (token.size() != kTokenLength) {
    return std::nullopt;
  }
  bool valid = true;
  for (char c : token) {
    valid &= kTokenAlphabet[static_cast<unsigned char>(c)];
  }
  if (!valid) {
    return std::nullopt;
  }
  return TokenKey(TokenWords::load(token.data()));
}

// A live token's request, in the shard's record array. Records are reused
// last-freed-first, so the one an insert fills is usually still in the
// processor's cache even when a million tokens are live.
struct Record {
  // Engaged while the record is in use: built in place on insert, moved out
  // and destroyed on take, so a request is moved twice in all.
  std::optional<session::StreamRequest> request;
  TokenChars key{};  // what the index holds for it, to erase on expiry
};

constexpr uint32_t kNoRecord = ~uint32_t{0};

// A record's place in its shard's expiry list, kept apart from the records
// (16 bytes each) so that the list's ends stay in cache.
struct Link {
  MonotonicTime expire{};
  uint32_t prev = kNoRecord;  // inserted just before this one
  uint32_t next = kNoRecord;  // inserted just after
};

// A shard's lock is held for a hash-table operation, tens of nanoseconds.
// std::mutex puts a thread that finds it taken to sleep at once, and until
// that thread is woken again (a system call, and on a virtual machine the
// wake-up of an idle vCPU) only the holder runs: two threads issuing and
// taking ran one at a time. glibc's adaptive mutex spins a little first.
class ABSL_LOCKABLE ShardMutex {
 public:
  ShardMutex() {
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&mutex_, &attr);
    pthread_mutexattr_destroy(&attr);
  }
  ~ShardMutex() { pthread_mutex_destroy(&mutex_); }
  ShardMutex(const ShardMutex&) = delete;
  ShardMutex& operator=(const ShardMutex&) = delete;

  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { pthread_mutex_lock(&mutex_); }
  void unlock() ABSL_UNLOCK_FUNCTION() { pthread_mutex_unlock(&mutex_); }

 private:
  pthread_mutex_t mutex_;
};

struct alignas(64) Shard {
  mutable ShardMutex mutex;
  // Token -> position in `records`. The requests live outside the hash table
  // so that its slots are small (28 bytes, against 160 with the request in
  // them): with many live tokens, an insert lands on a slot nobody touched
  // lately, and each cache line of it is a miss.
  absl::flat_hash_map<TokenChars, uint32_t, TokenCharsHash, TokenCharsEq> index
      ABSL_GUARDED_BY(mutex);
  std::vector<Record> records ABSL_GUARDED_BY(mutex);
  // The records in use, doubly linked in insertion order (with one TTL at a
  // time also expiry order), oldest at `head`. A taken token leaves the list
  // at once, wherever it is: nothing of it waits for its expiry, and the
  // links touched are those of the tokens issued just before and after it.
  std::vector<Link> links ABSL_GUARDED_BY(mutex);
  uint32_t head ABSL_GUARDED_BY(mutex) = kNoRecord;
  uint32_t tail ABSL_GUARDED_BY(mutex) = kNoRecord;
  // Positions in `records` not in use, the last freed at the back.
  std::vector<uint32_t> free_records ABSL_GUARDED_BY(mutex);
  // What the metrics count, kept here under the shard's lock instead of in
  // counters every thread updates: issue and take then touch no cache line
  // outside the shard but the in-flight count. The collector adds them up.
  uint64_t issued ABSL_GUARDED_BY(mutex) = 0;
  uint64_t taken ABSL_GUARDED_BY(mutex) = 0;
  uint64_t expired ABSL_GUARDED_BY(mutex) = 0;
};

// The shards' counts added up, as last published to the metrics.
struct Totals {
  uint64_t issued = 0;
  uint64_t taken = 0;
  uint64_t expired = 0;
  int64_t live = 0;
};

struct Metrics {
#define CRISP_METRIC_MEMBER(member, name, kind, labels, help) stats::Family& member;
  CRISP_TOKEN_CACHE_METRICS(CRISP_METRIC_MEMBER)
#undef CRISP_METRIC_MEMBER
};

Metrics declareMetrics(stats::Registry& registry) {
#define CRISP_METRIC_INIT(member, name, kind, labels, help) \
  registry.family(name, help, stats::Kind::kind, labels),
  return Metrics{CRISP_TOKEN_CACHE_METRICS(CRISP_METRIC_INIT)};
#undef CRISP_METRIC_INIT
}

}  // namespace

class TokenCache::Impl {
 public:
  Impl(const TokenCacheOptions& options, const TimeSource& time, RandomSource& random)
      : time_(time),
        random_(random),
        shard_count_(options.shards == 0 ? 1 : options.shards),
        max_in_flight_(options.max_in_flight),
        shards_(std::make_unique<Shard[]>(shard_count_)),
        ttl_(options.ttl.count()),
        registry_(options.registry != nullptr ? *options.registry : stats::registry()),
        families_(declareMetrics(registry_)),
        issued_(families_.issued.counter()),
        taken_(families_.taken.counter()),
        expired_(families_.expired.counter()),
        refused_full_(families_.refused.counter({"full"})),
        refused_random_(families_.refused.counter({"random"})),
        live_(families_.live.gauge()),
        collector_(registry_.addCollector([this] { publish(); })) {}

  // The counts so far stay in the counters; the live entries leave the gauge.
  ~Impl() {
    registry_.removeCollector(collector_);
    publish();
    live_.dec(published_.live);
  }

  absl::StatusOr<std::string> insert(session::StreamRequest&& request) {
    // The coarse clock: a precise reading cost as much as the rest of an
    // insert, and a TTL of seconds needs no finer grain than a tick.
    const MonotonicTime now = time_.coarseMonotonicTime();
    if (!reserveSlot()) {
      // Full: expired entries may still hold slots in shards nobody touched
      // lately. Drop them everywhere, then look again.
      sweepAll(now);
      if (!reserveSlot()) {
        refused_full_.inc();
        return absl::ResourceExhaustedError(kFullMessage);
      }
    }
    const MonotonicTime expire = now + std::chrono::milliseconds(ttl_.load());
    for (int attempt = 0; attempt < kMaxTokenAttempts; ++attempt) {
      std::array<uint8_t, kTokenBytes> bytes;
      if (!random_.fill(bytes.data(), bytes.size())) {
        releaseSlots(1);
        refused_random_.inc();
        return absl::UnavailableError("random source failed; no token issued");
      }
      const TokenWords words = encodeToken(bytes.data());
      const TokenKey key(words);

      Shard& shard = shardFor(key);
      size_t dropped = 0;
      bool stored = false;
      {
        std::lock_guard<ShardMutex> lock(shard.mutex);
        dropped = dropExpiredLocked(shard, now);
        // `request` is moved only once the token is known to be new: a
        // repeated one leaves it for the next attempt.
        if (shard.free_records.empty()) {
          shard.records.emplace_back();
          shard.links.emplace_back();
          shard.free_records.push_back(static_cast<uint32_t>(shard.records.size() - 1));
        }
        const uint32_t position = shard.free_records.back();
        bool fresh = false;
        shard.index.lazy_emplace(key, [&](const auto& construct) {
          fresh = true;
          construct(key.chars, position);
        });
        if (fresh) {
          shard.free_records.pop_back();
          Record& record = shard.records[position];
          record.request.emplace(std::move(request));
          record.key = key.chars;
          shard.links[position].expire = expire;
          linkLocked(shard, position);
          ++shard.issued;
          stored = true;
        }
      }
      releaseSlots(dropped);
      if (stored) {
        return tokenText(words);
      }
    }
    releaseSlots(1);
    refused_random_.inc();
    return absl::UnavailableError("random source keeps repeating tokens; no token issued");
  }

  std::optional<session::StreamRequest> consume(std::string_view token) {
    const std::optional<TokenKey> key = parseToken(token);
    if (!key) {
      return std::nullopt;
    }
    const MonotonicTime now = time_.coarseMonotonicTime();
    Shard& shard = shardFor(*key);
    std::optional<session::StreamRequest> taken;
    size_t dropped = 0;
    {
      std::lock_guard<ShardMutex> lock(shard.mutex);
      dropped = dropExpiredLocked(shard, now);
      auto it = shard.index.find(*key);
      if (it != shard.index.end()) {
        const uint32_t position = it->second;
        Record& record = shard.records[position];
        unlinkLocked(shard, position);
        // Removed whatever its expiry: a late presentation burns the token
        // too.
        if (now > shard.links[position].expire) {
          ++shard.expired;
        } else {
          ++shard.taken;
          taken.emplace(std::move(*record.request));
        }
        freeRecordLocked(shard, position);
        shard.index.erase(it);
        ++dropped;
      }
    }
    releaseSlots(dropped);
    return taken;
  }

  size_t size() const { return in_flight_.load(); }

  void setTtl(std::chrono::milliseconds ttl) { ttl_.store(ttl.count()); }
  void setMaxInFlight(uint32_t max) { max_in_flight_.store(max); }

  std::vector<size_t> shardSizes() const {
    std::vector<size_t> sizes;
    sizes.reserve(shard_count_);
    for (uint32_t i = 0; i < shard_count_; ++i) {
      std::lock_guard<ShardMutex> lock(shards_[i].mutex);
      sizes.push_back(shards_[i].index.size());
    }
    return sizes;
  }

 private:
  Shard& shardFor(const TokenKey& key) const {
    // The high half of the hash picks the shard; the table inside the shard
    // works from the low bits, so the two choices stay independent.
    const uint64_t index = ((static_cast<uint64_t>(key.hash) >> 32) * shard_count_) >> 32;
    return shards_[index];
  }

  // Takes one of the max_in_flight slots; false when none is left.
  bool reserveSlot() {
    size_t current = in_flight_.load();
    while (current < max_in_flight_.load()) {
      if (in_flight_.compare_exchange_weak(current, current + 1)) {
        return true;
      }
    }
    return false;
  }

  void releaseSlots(size_t n) {
    if (n > 0) {
      in_flight_.fetch_sub(n);
    }
  }

  // Brings the metrics up to date with the shards' counts. Runs from the
  // registry's collector (one at a time) and from the destructor.
  void publish() {
    Totals now;
    for (uint32_t i = 0; i < shard_count_; ++i) {
      std::lock_guard<ShardMutex> lock(shards_[i].mutex);
      now.issued += shards_[i].issued;
      now.taken += shards_[i].taken;
      now.expired += shards_[i].expired;
      now.live += static_cast<int64_t>(shards_[i].index.size());
    }
    std::lock_guard<std::mutex> lock(publish_mutex_);
    issued_.inc(now.issued - published_.issued);
    taken_.inc(now.taken - published_.taken);
    expired_.inc(now.expired - published_.expired);
    live_.inc(now.live - published_.live);
    published_ = now;
  }

  // Removes the oldest entries while they have expired. Returns how many it
  // removed. Stops at the first unexpired one: after a TTL cut, younger
  // entries behind it may already be expired, and consume() still refuses
  // those; they are dropped when the head gets to them.
  static size_t dropExpiredLocked(Shard& shard, MonotonicTime now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    size_t dropped = 0;
    while (shard.head != kNoRecord && now > shard.links[shard.head].expire) {
      const uint32_t position = shard.head;
      shard.index.erase(shard.records[position].key);
      unlinkLocked(shard, position);
      freeRecordLocked(shard, position);
      ++shard.expired;
      ++dropped;
    }
    return dropped;
  }

  // Appends the record at `position` to the expiry list.
  static void linkLocked(Shard& shard, uint32_t position)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    Link& link = shard.links[position];
    link.prev = shard.tail;
    link.next = kNoRecord;
    if (shard.tail != kNoRecord) {
      shard.links[shard.tail].next = position;
    } else {
      shard.head = position;
    }
    shard.tail = position;
  }

  static void unlinkLocked(Shard& shard, uint32_t position)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    const Link& link = shard.links[position];
    if (link.prev != kNoRecord) {
      shard.links[link.prev].next = link.next;
    } else {
      shard.head = link.next;
    }
    if (link.next != kNoRecord) {
      shard.links[link.next].prev = link.prev;
    } else {
      shard.tail = link.prev;
    }
  }

  // Destroys the record's request (taken or not: an expired one's memory is
  // released now rather than when the record is next used) and puts the
  // record on the free list.
  static void freeRecordLocked(Shard& shard, uint32_t position)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    Record& record = shard.records[position];
    record.request.reset();
    shard.free_records.push_back(position);
  }

  void sweepAll(MonotonicTime now) {
    for (uint32_t i = 0; i < shard_count_; ++i) {
      size_t dropped = 0;
      {
        std::lock_guard<ShardMutex> lock(shards_[i].mutex);
        dropped = dropExpiredLocked(shards_[i], now);
      }
      releaseSlots(dropped);
    }
  }

  const TimeSource& time_;
  RandomSource& random_;
  const uint32_t shard_count_;
  std::atomic<size_t> max_in_flight_;
  const std::unique_ptr<Shard[]> shards_;
  std::atomic<int64_t> ttl_;  // milliseconds
  std::atomic<size_t> in_flight_{0};

  stats::Registry& registry_;
  Metrics families_;
  stats::Counter& issued_;
  stats::Counter& taken_;
  stats::Counter& expired_;
  stats::Counter& refused_full_;
  stats::Counter& refused_random_;
  stats::Gauge& live_;
  std::mutex publish_mutex_;
  Totals published_ ABSL_GUARDED_BY(publish_mutex_);
  const stats::Registry::CollectorId collector_;
};

TokenCache::TokenCache(const TokenCacheOptions& options, const TimeSource& time,
                       RandomSource& random)
    : impl_(std::make_unique<Impl>(options, time, random)) {}

TokenCache::~TokenCache() = default;

absl::StatusOr<std::string> TokenCache::insert(session::StreamRequest request) {
  return impl_->insert(std::move(request));
}

std::optional<session::StreamRequest> TokenCache::consume(std::string_view token) {
  return impl_->consume(token);
}

size_t TokenCache::size() const { return impl_->size(); }

void TokenCache::setTtl(std::chrono::milliseconds ttl) { impl_->setTtl(ttl); }
void TokenCache::setMaxInFlight(uint32_t max) { impl_->setMaxInFlight(max); }

std::vector<size_t> TokenCache::shardSizes() const { return impl_->shardSizes(); }

}  // namespace crisp::cache
