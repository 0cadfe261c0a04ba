#include "source/cache/token_cache.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

#include "source/admin/metrics.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crisp::cache {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using ::testing::HasSubstr;

class FakeTimeSource : public TimeSource {
 public:
  MonotonicTime monotonicTime() const override {
    return MonotonicTime(nanoseconds(now_ns_.load()));
  }
  void advance(nanoseconds d) { now_ns_.fetch_add(d.count()); }

 private:
  std::atomic<int64_t> now_ns_{1'000'000'000};
};

// Deterministic: a counter run through splitmix64, so every test run issues the
// same tokens. Can be told to fail, or to repeat one fixed pattern.
class FakeRandomSource : public RandomSource {
 public:
  bool fill(void* out, size_t len) override {
    if (fail_.load()) {
      return false;
    }
    auto* p = static_cast<uint8_t*>(out);
    if (fixed_.load()) {
      for (size_t i = 0; i < len; ++i) {
        p[i] = static_cast<uint8_t>(i);
      }
      return true;
    }
    for (size_t i = 0; i < len; i += 8) {
      uint64_t z = counter_.fetch_add(0x9e3779b97f4a7c15ULL) + 0x9e3779b97f4a7c15ULL;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      z ^= z >> 31;
      std::memcpy(p + i, &z, std::min<size_t>(8, len - i));
    }
    std::lock_guard<std::mutex> lock(last_mutex_);
    last_.assign(p, p + len);
    return true;
  }

  // The bytes of the last successful fill.
  std::string last() {
    std::lock_guard<std::mutex> lock(last_mutex_);
    return last_;
  }

  void setFail(bool fail) { fail_.store(fail); }
  void setFixed(bool fixed) { fixed_.store(fixed); }

 private:
  std::atomic<uint64_t> counter_{42};
  std::atomic<bool> fail_{false};
  std::atomic<bool> fixed_{false};
  std::mutex last_mutex_;
  std::string last_;
};

session::StreamRequest execRequest(const std::string& container_id) {
  session::ExecSpec spec;
  spec.container_id = container_id;
  spec.command = {"/bin/sh", "-c", "true"};
  spec.stdout = true;
  return session::StreamRequest{spec};
}

std::string containerOf(const session::StreamRequest& request) {
  return std::get<session::ExecSpec>(request.spec).container_id;
}

class TokenCacheTest : public ::testing::Test {
 protected:
  TokenCache makeCache(milliseconds ttl, uint32_t shards, uint32_t max_in_flight) {
    TokenCacheOptions options;
    options.ttl = ttl;
    options.shards = shards;
    options.max_in_flight = max_in_flight;
    options.registry = &registry_;
    return TokenCache(options, time_, random_);
  }

  // The sample line of `metric` as the admin endpoint renders it.
  bool hasSample(const std::string& sample) {
    const std::string text = registry_.renderPrometheus();
    return text.find("\n" + sample + "\n") != std::string::npos;
  }

  stats::Registry registry_;
  FakeTimeSource time_;
  FakeRandomSource random_;
};

// Two caches on one registry add up; a cache that goes away keeps what it
// counted and takes its live entries out of the gauge.
TEST_F(TokenCacheTest, CachesSharingARegistryAddUpAndADestroyedOneLeavesItsCounts) {
  TokenCache first = makeCache(milliseconds(60000), 4, 10);
  ASSERT_TRUE(first.insert(execRequest("c1")).ok());
  {
    TokenCache second = makeCache(milliseconds(60000), 2, 10);
    absl::StatusOr<std::string> taken = second.insert(execRequest("c2"));
    ASSERT_TRUE(taken.ok());
    ASSERT_TRUE(second.insert(execRequest("c3")).ok());
    ASSERT_TRUE(second.consume(*taken).has_value());
    EXPECT_TRUE(hasSample("crisp_tokens_issued_total 3"));
    EXPECT_TRUE(hasSample("crisp_tokens_taken_total 1"));
    EXPECT_TRUE(hasSample("crisp_tokens_live 2"));
  }
  EXPECT_TRUE(hasSample("crisp_tokens_issued_total 3"));
  EXPECT_TRUE(hasSample("crisp_tokens_taken_total 1"));
  EXPECT_TRUE(hasSample("crisp_tokens_live 1"));
}

TEST_F(TokenCacheTest, ReturnsTheStoredRequestOnce) {
  TokenCache cache = makeCache(milliseconds(60000), 4, 10);
  absl::StatusOr<std::string> token = cache.insert(execRequest("c1"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(cache.size(), 1u);

  std::optional<session::StreamRequest> got = cache.consume(*token);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(containerOf(*got), "c1");
  const auto& spec = std::get<session::ExecSpec>(got->spec);
  EXPECT_EQ(spec.command, (std::vector<std::string>{"/bin/sh", "-c", "true"}));
  EXPECT_TRUE(spec.stdout);
  EXPECT_FALSE(spec.stdin);
  EXPECT_EQ(cache.size(), 0u);

  EXPECT_FALSE(cache.consume(*token).has_value());
  EXPECT_TRUE(hasSample("crisp_tokens_issued_total 1"));
  EXPECT_TRUE(hasSample("crisp_tokens_taken_total 1"));
  EXPECT_TRUE(hasSample("crisp_tokens_live 0"));
}

TEST_F(TokenCacheTest, PortForwardRequestsKeepTheirPorts) {
  TokenCache cache = makeCache(milliseconds(60000), 1, 10);
  session::PortForwardSpec spec;
  spec.pod_sandbox_id = "sandbox";
  spec.ports = {80, 8080};
  absl::StatusOr<std::string> token = cache.insert(session::StreamRequest{spec});
  ASSERT_TRUE(token.ok());
  std::optional<session::StreamRequest> got = cache.consume(*token);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->operation(), session::Operation::kPortForward);
  EXPECT_EQ(std::get<session::PortForwardSpec>(got->spec).ports, (std::vector<uint16_t>{80, 8080}));
}

TEST_F(TokenCacheTest, TokenIsBase64UrlOfSixteenRandomBytes) {
  TokenCache cache = makeCache(milliseconds(60000), 16, 10);
  random_.setFixed(true);  // bytes 00 01 02 ... 0f
  absl::StatusOr<std::string> token = cache.insert(execRequest("c"));
  ASSERT_TRUE(token.ok());
  // RFC 4648 section 5 encoding of 000102030405060708090a0b0c0d0e0f, no padding.
  EXPECT_EQ(*token, "AAECAwQFBgcICQoLDA0ODw");
}

TEST_F(TokenCacheTest, EveryTokenIsBase64UrlOfTheBytesDrawnForIt) {
  TokenCache cache = makeCache(milliseconds(60000), 16, 1000);
  for (int i = 0; i < 500; ++i) {
    absl::StatusOr<std::string> token = cache.insert(execRequest("c"));
    ASSERT_TRUE(token.ok());
    const std::string bytes = random_.last();
    ASSERT_EQ(bytes.size(), 16u);
    EXPECT_EQ(*token, absl::WebSafeBase64Escape(bytes)) << "draw " << i;
    // The same token presented as text finds its entry.
    EXPECT_EQ(containerOf(*cache.consume(std::string(*token))), "c");
  }
}

TEST_F(TokenCacheTest, TokensHaveFixedLengthAndUrlSafeAlphabet) {
  TokenCache cache = makeCache(milliseconds(60000), 16, 5000);
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {
    absl::StatusOr<std::string> token = cache.insert(execRequest("c"));
    ASSERT_TRUE(token.ok());
    ASSERT_EQ(token->size(), kTokenLength);
    EXPECT_EQ(token->find_first_not_of(
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
              std::string::npos)
        << *token;
    EXPECT_TRUE(seen.insert(*token).second) << "duplicate token " << *token;
  }
}

TEST_F(TokenCacheTest, MalformedTokensAreNotFoundAndDoNotBurnTheRealOne) {
  TokenCache cache = makeCache(milliseconds(60000), 4, 10);
  absl::StatusOr<std::string> token = cache.insert(execRequest("c"));
  ASSERT_TRUE(token.ok());
  const std::string& t = *token;

  EXPECT_FALSE(cache.consume("").has_value());
  EXPECT_FALSE(cache.consume(t.substr(0, kTokenLength - 1)).has_value());
  EXPECT_FALSE(cache.consume(t + "A").has_value());
  EXPECT_FALSE(cache.consume(t + "=").has_value());
  for (char bad : {'+', '/', '=', '.', '%', ' ', '\0', '\xff'}) {
    std::string mutated = t;
    mutated[5] = bad;
    EXPECT_FALSE(cache.consume(mutated).has_value());
  }
  std::string other = t;
  other[kTokenLength - 1] = other[kTokenLength - 1] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(cache.consume(other).has_value());

  EXPECT_EQ(cache.size(), 1u);
  EXPECT_TRUE(cache.consume(t).has_value());
}

TEST_F(TokenCacheTest, ValidUntilExactlyTheTtlAndExpiredOneNanosecondLater) {
  TokenCache cache = makeCache(milliseconds(60000), 4, 10);
  absl::StatusOr<std::string> at_boundary = cache.insert(execRequest("a"));
  absl::StatusOr<std::string> past_boundary = cache.insert(execRequest("b"));
  ASSERT_TRUE(at_boundary.ok());
  ASSERT_TRUE(past_boundary.ok());

  time_.advance(milliseconds(60000));
  EXPECT_TRUE(cache.consume(*at_boundary).has_value());  // now == expire: still valid
  time_.advance(nanoseconds(1));
  EXPECT_FALSE(cache.consume(*past_boundary).has_value());  // now > expire
}

TEST_F(TokenCacheTest, ExpiredTokenIsBurntByItsFirstPresentation) {
  TokenCache cache = makeCache(milliseconds(1000), 1, 10);
  absl::StatusOr<std::string> token = cache.insert(execRequest("a"));
  ASSERT_TRUE(token.ok());
  time_.advance(milliseconds(1001));
  EXPECT_EQ(cache.size(), 1u);  // nothing drops it without a visit
  EXPECT_FALSE(cache.consume(*token).has_value());
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_FALSE(cache.consume(*token).has_value());
  EXPECT_TRUE(hasSample("crisp_tokens_expired_total 1"));
  EXPECT_TRUE(hasSample("crisp_tokens_taken_total 0"));
  EXPECT_TRUE(hasSample("crisp_tokens_live 0"));
}

TEST_F(TokenCacheTest, TakenTokensWaitingInTheQueueAreNotCountedAsExpiredOrFreedTwice) {
  // One shard, so all three share one expiry queue; b is taken while a, in
  // front of it, is live, so b's queue item outlives b.
  TokenCache cache = makeCache(milliseconds(1000), 1, 2);
  absl::StatusOr<std::string> a = cache.insert(execRequest("a"));
  absl::StatusOr<std::string> b = cache.insert(execRequest("b"));
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(cache.consume(*b).has_value());
  time_.advance(milliseconds(1001));
  // Both items are now past their expiry; only a held an entry (and a slot).
  absl::StatusOr<std::string> c = cache.insert(execRequest("c"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_TRUE(hasSample("crisp_tokens_expired_total 1"));
  EXPECT_TRUE(hasSample("crisp_tokens_taken_total 1"));
  EXPECT_TRUE(hasSample("crisp_tokens_live 1"));
  // Exactly one slot is free next to c: a second insert fits, a third does not.
  EXPECT_TRUE(cache.insert(execRequest("d")).ok());
  EXPECT_EQ(cache.insert(execRequest("e")).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(containerOf(*cache.consume(*c)), "c");
}

TEST_F(TokenCacheTest, ATakenTokensPlaceGoesToTheNextOneAndTheOldTokenStaysBurnt) {
  TokenCache cache = makeCache(milliseconds(1000), 1, 10);
  absl::StatusOr<std::string> a = cache.insert(execRequest("a"));
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(containerOf(*cache.consume(*a)), "a");
  // b is stored where a was.
  absl::StatusOr<std::string> b = cache.insert(execRequest("b"));
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(cache.consume(*a).has_value());
  EXPECT_EQ(containerOf(*cache.consume(*b)), "b");
  EXPECT_FALSE(cache.consume(*b).has_value());
  EXPECT_EQ(cache.size(), 0u);
}

TEST_F(TokenCacheTest, AnEntryInATakenTokensPlaceKeepsItsOwnExpiry) {
  // One shard. a is taken behind `front`, which stays; b then takes a's
  // place with a later expiry. When a's time comes, b must stay.
  TokenCache cache = makeCache(milliseconds(1000), 1, 10);
  absl::StatusOr<std::string> front = cache.insert(execRequest("front"));
  absl::StatusOr<std::string> a = cache.insert(execRequest("a"));
  ASSERT_TRUE(front.ok() && a.ok());
  ASSERT_EQ(containerOf(*cache.consume(*a)), "a");
  time_.advance(milliseconds(500));
  absl::StatusOr<std::string> b = cache.insert(execRequest("b"));
  ASSERT_TRUE(b.ok());
  time_.advance(milliseconds(501));  // front and a's item are due; b is not
  absl::StatusOr<std::string> c = cache.insert(execRequest("c"));
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(hasSample("crisp_tokens_expired_total 1"));
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(containerOf(*cache.consume(*b)), "b");
  EXPECT_EQ(containerOf(*cache.consume(*c)), "c");
  EXPECT_FALSE(cache.consume(*front).has_value());
}

TEST_F(TokenCacheTest, ExpiredEntriesLeaveTheirPlacesToNewOnes) {
  // Many rounds of tokens that all expire unused: each round's inserts drop
  // the last round's, and every live token still finds its own request.
  TokenCache cache = makeCache(milliseconds(1000), 2, 64);
  std::vector<std::string> previous;
  for (int round = 0; round < 50; ++round) {
    if (round > 0) {
      time_.advance(milliseconds(1001));
    }
    std::vector<std::string> tokens;
    for (int i = 0; i < 40; ++i) {
      absl::StatusOr<std::string> token =
          cache.insert(execRequest(absl::StrCat(round, "/", i)));
      ASSERT_TRUE(token.ok()) << token.status();
      tokens.push_back(*token);
    }
    for (const std::string& old : previous) {
      ASSERT_FALSE(cache.consume(old).has_value());
    }
    ASSERT_EQ(cache.size(), 40u);
    previous = tokens;
  }
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(containerOf(*cache.consume(previous[i])), absl::StrCat(49, "/", i));
  }
  EXPECT_TRUE(hasSample("crisp_tokens_expired_total 1960"));
}

TEST_F(TokenCacheTest, TokensTakenAtTheHeadMiddleAndTailLeaveTheOthersToExpire) {
  TokenCache cache = makeCache(milliseconds(1000), 1, 10);
  std::vector<std::string> tokens;
  for (const char* id : {"a", "b", "c", "d", "e"}) {
    absl::StatusOr<std::string> token = cache.insert(execRequest(id));
    ASSERT_TRUE(token.ok());
    tokens.push_back(*token);
  }
  EXPECT_EQ(containerOf(*cache.consume(tokens[2])), "c");
  EXPECT_EQ(containerOf(*cache.consume(tokens[0])), "a");
  EXPECT_EQ(containerOf(*cache.consume(tokens[4])), "e");
  time_.advance(milliseconds(1001));
  absl::StatusOr<std::string> f = cache.insert(execRequest("f"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_TRUE(hasSample("crisp_tokens_expired_total 2"));
  EXPECT_TRUE(hasSample("crisp_tokens_taken_total 3"));
  EXPECT_FALSE(cache.consume(tokens[1]).has_value());
  EXPECT_FALSE(cache.consume(tokens[3]).has_value());
  EXPECT_EQ(containerOf(*cache.consume(*f)), "f");
}

TEST_F(TokenCacheTest, ManyTokensInOneShardEachFindTheirOwnRequest) {
  // Enough tokens in one shard for its index to grow several times; taking
  // half and issuing as many again reuses records freed in the middle of the
  // record array and of the expiry list.
  constexpr int kTokens = 5000;
  TokenCache cache = makeCache(milliseconds(60000), 1, 2 * kTokens);
  std::map<std::string, std::string> live;  // token -> container id
  for (int i = 0; i < kTokens; ++i) {
    const std::string id = absl::StrCat("first/", i);
    absl::StatusOr<std::string> token = cache.insert(execRequest(id));
    ASSERT_TRUE(token.ok()) << token.status();
    live[*token] = id;
  }
  std::vector<std::string> taken;
  int i = 0;
  for (auto it = live.begin(); it != live.end(); ++i) {
    if (i % 2 == 0) {
      ASSERT_EQ(containerOf(*cache.consume(it->first)), it->second);
      taken.push_back(it->first);
      it = live.erase(it);
    } else {
      ++it;
    }
  }
  for (int j = 0; j < kTokens / 2; ++j) {
    const std::string id = absl::StrCat("second/", j);
    absl::StatusOr<std::string> token = cache.insert(execRequest(id));
    ASSERT_TRUE(token.ok()) << token.status();
    live[*token] = id;
  }
  EXPECT_EQ(cache.size(), live.size());
  for (const std::string& token : taken) {
    EXPECT_FALSE(cache.consume(token).has_value());
  }
  for (const auto& [token, id] : live) {
    std::optional<session::StreamRequest> got = cache.consume(token);
    ASSERT_TRUE(got.has_value()) << id;
    EXPECT_EQ(containerOf(*got), id);
  }
  EXPECT_EQ(cache.size(), 0u);
  for (const auto& [token, id] : live) {
    EXPECT_FALSE(cache.consume(token).has_value()) << id;
  }
}

TEST_F(TokenCacheTest, ExpiredEntriesAreDroppedLazilyByLaterInserts) {
  TokenCache cache = makeCache(milliseconds(1000), 1, 100);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(cache.insert(execRequest("old")).ok());
  }
  time_.advance(milliseconds(1001));
  ASSERT_TRUE(cache.insert(execRequest("new")).ok());
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_TRUE(hasSample("crisp_tokens_expired_total 5"));
  EXPECT_TRUE(hasSample("crisp_tokens_live 1"));
}

TEST_F(TokenCacheTest, FullCacheRefusesUntilAConsume) {
  TokenCache cache = makeCache(milliseconds(60000), 4, 3);
  std::vector<std::string> tokens;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::string> token = cache.insert(execRequest("c"));
    ASSERT_TRUE(token.ok());
    tokens.push_back(*token);
  }
  absl::StatusOr<std::string> refused = cache.insert(execRequest("c"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.status().message(), "maximum number of in-flight requests exceeded");
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_TRUE(hasSample("crisp_tokens_refused_total{reason=\"full\"} 1"));

  ASSERT_TRUE(cache.consume(tokens[1]).has_value());
  EXPECT_TRUE(cache.insert(execRequest("c")).ok());
  EXPECT_FALSE(cache.insert(execRequest("c")).ok());
  EXPECT_TRUE(hasSample("crisp_tokens_refused_total{reason=\"full\"} 2"));
}

TEST_F(TokenCacheTest, FullCacheAcceptsAgainOnceEntriesExpire) {
  // Many shards: the expired entries sit in shards the new token may not hit.
  TokenCache cache = makeCache(milliseconds(1000), 64, 8);
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(cache.insert(execRequest("c")).ok());
  }
  EXPECT_EQ(cache.insert(execRequest("c")).status().code(), absl::StatusCode::kResourceExhausted);
  time_.advance(milliseconds(1000));
  EXPECT_EQ(cache.insert(execRequest("c")).status().code(),
            absl::StatusCode::kResourceExhausted);  // not yet expired at the boundary
  time_.advance(nanoseconds(1));
  absl::StatusOr<std::string> token = cache.insert(execRequest("fresh"));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_TRUE(hasSample("crisp_tokens_expired_total 8"));
  EXPECT_EQ(containerOf(*cache.consume(*token)), "fresh");
}

TEST_F(TokenCacheTest, RandomFailureIsUnavailableAndHoldsNoSlot) {
  TokenCache cache = makeCache(milliseconds(60000), 4, 1);
  random_.setFail(true);
  absl::StatusOr<std::string> token = cache.insert(execRequest("c"));
  ASSERT_FALSE(token.ok());
  EXPECT_EQ(token.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_TRUE(hasSample("crisp_tokens_refused_total{reason=\"random\"} 1"));
  EXPECT_TRUE(hasSample("crisp_tokens_issued_total 0"));

  random_.setFail(false);
  EXPECT_TRUE(cache.insert(execRequest("c")).ok());  // the single slot was given back
}

TEST_F(TokenCacheTest, RepeatingRandomSourceIsUnavailableAfterRetries) {
  TokenCache cache = makeCache(milliseconds(60000), 4, 10);
  random_.setFixed(true);
  ASSERT_TRUE(cache.insert(execRequest("first")).ok());
  absl::StatusOr<std::string> second = cache.insert(execRequest("second"));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("repeating"));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_TRUE(hasSample("crisp_tokens_refused_total{reason=\"random\"} 1"));
  // The first entry was not overwritten.
  EXPECT_EQ(containerOf(*cache.consume("AAECAwQFBgcICQoLDA0ODw")), "first");
}

TEST_F(TokenCacheTest, SetTtlAppliesToLaterInserts) {
  TokenCache cache = makeCache(milliseconds(60000), 4, 10);
  absl::StatusOr<std::string> long_lived = cache.insert(execRequest("long"));
  cache.setTtl(milliseconds(500));
  absl::StatusOr<std::string> short_lived = cache.insert(execRequest("short"));
  absl::StatusOr<std::string> short_lived2 = cache.insert(execRequest("short2"));
  ASSERT_TRUE(long_lived.ok() && short_lived.ok() && short_lived2.ok());

  time_.advance(milliseconds(500));
  EXPECT_TRUE(cache.consume(*short_lived2).has_value());
  time_.advance(milliseconds(1));
  EXPECT_FALSE(cache.consume(*short_lived).has_value());
  EXPECT_TRUE(cache.consume(*long_lived).has_value());
}

TEST_F(TokenCacheTest, ShardsShareTheLoadEvenly) {
  constexpr uint32_t kShards = 16;
  constexpr int kTokens = 16000;
  TokenCache cache = makeCache(milliseconds(60000), kShards, kTokens);
  for (int i = 0; i < kTokens; ++i) {
    ASSERT_TRUE(cache.insert(execRequest("c")).ok());
  }
  std::vector<size_t> sizes = cache.shardSizes();
  ASSERT_EQ(sizes.size(), kShards);
  size_t total = 0;
  for (size_t s : sizes) {
    total += s;
    // Expected 1000 per shard, standard deviation about 31.
    EXPECT_GT(s, 850u);
    EXPECT_LT(s, 1150u);
  }
  EXPECT_EQ(total, static_cast<size_t>(kTokens));
}

TEST_F(TokenCacheTest, ZeroShardsMeansOne) {
  TokenCache cache = makeCache(milliseconds(60000), 0, 10);
  absl::StatusOr<std::string> token = cache.insert(execRequest("c"));
  ASSERT_TRUE(token.ok());
  EXPECT_EQ(cache.shardSizes(), std::vector<size_t>{1});
  EXPECT_TRUE(cache.consume(*token).has_value());
}

TEST_F(TokenCacheTest, OutOfOrderConsumesKeepWorking) {
  // Tokens taken newest first leave stale items behind the oldest live one;
  // the cache must stay correct through many such rounds.
  TokenCache cache = makeCache(milliseconds(60000), 1, 1000);
  absl::StatusOr<std::string> anchor = cache.insert(execRequest("anchor"));
  ASSERT_TRUE(anchor.ok());
  for (int round = 0; round < 200; ++round) {
    std::vector<std::string> tokens;
    for (int i = 0; i < 20; ++i) {
      absl::StatusOr<std::string> token = cache.insert(execRequest(std::to_string(i)));
      ASSERT_TRUE(token.ok());
      tokens.push_back(*token);
    }
    for (int i = 19; i >= 0; --i) {
      std::optional<session::StreamRequest> got = cache.consume(tokens[i]);
      ASSERT_TRUE(got.has_value());
      ASSERT_EQ(containerOf(*got), std::to_string(i));
    }
  }
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(containerOf(*cache.consume(*anchor)), "anchor");
}

TEST_F(TokenCacheTest, LiveGaugeFollowsTheCacheAndItsDestruction) {
  {
    TokenCache cache = makeCache(milliseconds(60000), 4, 10);
    ASSERT_TRUE(cache.insert(execRequest("a")).ok());
    ASSERT_TRUE(cache.insert(execRequest("b")).ok());
    EXPECT_TRUE(hasSample("crisp_tokens_live 2"));
  }
  EXPECT_TRUE(hasSample("crisp_tokens_live 0"));
}

TEST_F(TokenCacheTest, TwoThreadsIssuingAtOnceGetExactlyMaxInFlightTokens) {
  constexpr uint32_t kMaxInFlight = 500;
  constexpr int kAttemptsPerThread = 2000;
  for (int round = 0; round < 5; ++round) {
    TokenCache cache = makeCache(milliseconds(60000), 16, kMaxInFlight);
    std::atomic<int> issued{0};
    std::atomic<int> refused{0};
    std::atomic<bool> go{false};
    auto issue = [&] {
      while (!go.load()) {
      }
      for (int i = 0; i < kAttemptsPerThread; ++i) {
        absl::StatusOr<std::string> token = cache.insert(execRequest("c"));
        if (token.ok()) {
          issued.fetch_add(1);
        } else {
          EXPECT_EQ(token.status().code(), absl::StatusCode::kResourceExhausted);
          refused.fetch_add(1);
        }
      }
    };
    std::thread first(issue);
    std::thread second(issue);
    go.store(true);
    first.join();
    second.join();
    // Never one more than the limit, and no refusal while there was room.
    EXPECT_EQ(issued.load(), static_cast<int>(kMaxInFlight));
    EXPECT_EQ(refused.load(), 2 * kAttemptsPerThread - static_cast<int>(kMaxInFlight));
    EXPECT_EQ(cache.size(), kMaxInFlight);
    size_t stored = 0;
    for (size_t n : cache.shardSizes()) {
      stored += n;
    }
    EXPECT_EQ(stored, kMaxInFlight);
  }
}

TEST_F(TokenCacheTest, TwoThreadsPresentingOneTokenGetItOnceBetweenThem) {
  // One shard, so the record a take frees is the one a racing insert reuses:
  // the new token must get its own request, and the old one none.
  TokenCache cache = makeCache(milliseconds(60000), 1, 4);
  for (int round = 0; round < 300; ++round) {
    absl::StatusOr<std::string> token = cache.insert(execRequest("old"));
    ASSERT_TRUE(token.ok());
    std::atomic<int> winners{0};
    std::atomic<int> started{0};
    absl::StatusOr<std::string> fresh;
    auto present = [&] {
      started.fetch_add(1);
      while (started.load() < 3) {
        std::this_thread::yield();
      }
      std::optional<session::StreamRequest> got = cache.consume(*token);
      if (got.has_value()) {
        EXPECT_EQ(containerOf(*got), "old");
        winners.fetch_add(1);
      }
    };
    std::thread first(present);
    std::thread second(present);
    std::thread inserter([&] {
      started.fetch_add(1);
      while (started.load() < 3) {
        std::this_thread::yield();
      }
      fresh = cache.insert(execRequest("new"));
    });
    first.join();
    second.join();
    inserter.join();
    ASSERT_EQ(winners.load(), 1) << "round " << round;
    ASSERT_TRUE(fresh.ok());
    EXPECT_FALSE(cache.consume(*token).has_value());
    ASSERT_EQ(containerOf(*cache.consume(*fresh)), "new");
    ASSERT_EQ(cache.size(), 0u);
  }
}

TEST_F(TokenCacheTest, ConcurrentInsertAndConsumeTakeEachTokenExactlyOnce) {
  constexpr int kProducers = 3;
  constexpr int kConsumers = 3;
  constexpr int kPerProducer = 3000;
  constexpr uint32_t kMaxInFlight = 64;
  TokenCache cache = makeCache(milliseconds(60000), 8, kMaxInFlight);

  std::mutex mutex;
  std::vector<std::string> pending;  // tokens issued, not yet handed to a consumer
  std::vector<std::string> done;     // tokens consumed once, for replay attempts
  std::atomic<int> produced{0};
  std::atomic<int> taken{0};
  std::atomic<int> replays_accepted{0};
  std::atomic<int> over_limit{0};
  std::vector<std::vector<std::string>> seen(kConsumers);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);

  std::vector<std::thread> threads;
  for (int p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer;) {
        if (std::chrono::steady_clock::now() > deadline) {
          return;
        }
        absl::StatusOr<std::string> token =
            cache.insert(execRequest(std::to_string(p) + "/" + std::to_string(i)));
        if (!token.ok()) {
          if (token.status().code() != absl::StatusCode::kResourceExhausted) {
            ADD_FAILURE() << token.status();
            return;
          }
          std::this_thread::yield();  // full: the consumers make room
          continue;
        }
        if (cache.size() > kMaxInFlight) {
          over_limit.fetch_add(1);
        }
        {
          std::lock_guard<std::mutex> lock(mutex);
          pending.push_back(*token);
        }
        produced.fetch_add(1);
        ++i;
      }
    });
  }
  for (int c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      while (taken.load() < kProducers * kPerProducer) {
        if (std::chrono::steady_clock::now() > deadline) {
          return;
        }
        std::string token;
        std::string replay;
        {
          std::lock_guard<std::mutex> lock(mutex);
          if (!pending.empty()) {
            token = std::move(pending.back());
            pending.pop_back();
          }
          if (!done.empty()) {
            replay = done[done.size() / 2];
          }
        }
        if (!replay.empty() && cache.consume(replay).has_value()) {
          replays_accepted.fetch_add(1);
        }
        if (token.empty()) {
          std::this_thread::yield();
          continue;
        }
        std::optional<session::StreamRequest> got = cache.consume(token);
        if (!got.has_value()) {
          ADD_FAILURE() << "fresh token not found";
          continue;
        }
        seen[c].push_back(containerOf(*got));
        taken.fetch_add(1);
        std::lock_guard<std::mutex> lock(mutex);
        done.push_back(std::move(token));
      }
    });
  }
  for (std::thread& t : threads) {
    t.join();
  }

  ASSERT_EQ(taken.load(), kProducers * kPerProducer) << "timed out";
  EXPECT_EQ(replays_accepted.load(), 0);
  EXPECT_EQ(over_limit.load(), 0);
  EXPECT_EQ(cache.size(), 0u);
  std::set<std::string> all;
  for (const auto& list : seen) {
    for (const std::string& id : list) {
      EXPECT_TRUE(all.insert(id).second) << "taken twice: " << id;
    }
  }
  EXPECT_EQ(all.size(), static_cast<size_t>(kProducers * kPerProducer));
  EXPECT_TRUE(hasSample("crisp_tokens_issued_total " + std::to_string(kProducers * kPerProducer)));
  EXPECT_TRUE(hasSample("crisp_tokens_taken_total " + std::to_string(kProducers * kPerProducer)));
  EXPECT_TRUE(hasSample("crisp_tokens_live 0"));
}

}  // namespace
}  // namespace crisp::cache
