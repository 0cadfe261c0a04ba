#include "source/stream/http1_head_parser.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace crisp::stream {
namespace {

using State = Http1HeadParser::State;

struct FeedResult {
  State state = State::kNeedMore;
  std::string rest;  // bytes after the head, on kComplete
  HttpRequest request;
};

// Feeds `input` in the given chunk sizes (the last chunk takes what is left)
// and stops at the first state other than kNeedMore.
FeedResult feedInChunks(const std::string& input, const std::vector<size_t>& sizes,
                        size_t limit = 16384) {
  Http1HeadParser parser(limit);
  FeedResult out;
  size_t pos = 0;
  size_t i = 0;
  while (pos < input.size()) {
    const size_t len =
        i < sizes.size() ? std::min(sizes[i], input.size() - pos) : input.size() - pos;
    ++i;
    size_t used = 0;
    out.state = parser.feed(std::string_view(input).substr(pos, len), used);
    EXPECT_LE(used, len);
    if (out.state != State::kNeedMore) {
      out.rest = input.substr(pos + used);
      break;
    }
    EXPECT_EQ(used, len) << "kNeedMore must consume its whole chunk";
    pos += len;
  }
  if (out.state == State::kComplete) {
    out.request = std::move(parser.request());
  }
  return out;
}

FeedResult feedWhole(const std::string& input, size_t limit = 16384) {
  return feedInChunks(input, {input.size()}, limit);
}

FeedResult feedByteByByte(const std::string& input, size_t limit = 16384) {
  return feedInChunks(input, std::vector<size_t>(input.size(), 1), limit);
}

FeedResult feedRandomChunks(const std::string& input, uint32_t seed, size_t limit = 16384) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> dist(1, 40);
  std::vector<size_t> sizes;
  for (size_t total = 0; total < input.size();) {
    sizes.push_back(dist(rng));
    total += sizes.back();
  }
  return feedInChunks(input, sizes, limit);
}

const std::string kUpgradeHead =
    "POST /exec/AbCd-_12?command=ls&stdout=1 HTTP/1.1\r\n"
    "Host: 127.0.0.1:10010\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    "X-Stream-Protocol-Version: v3.channel.k8s.io\r\n"
    "Content-Length: 0\r\n"
    "\r\n";
const std::string kSpdyBytes("\x80\x03\x00\x01\x00\x00\x00\x0a\x00\x00\x00\x01", 12);

void expectUpgradeHead(const FeedResult& r) {
  ASSERT_EQ(r.state, State::kComplete);
  EXPECT_EQ(r.request.method, "POST");
  EXPECT_EQ(r.request.path, "/exec/AbCd-_12");
  EXPECT_EQ(r.request.query, "command=ls&stdout=1");
  ASSERT_EQ(r.request.headers.size(), 6u);
  EXPECT_EQ(r.request.headers[0], (std::pair<std::string, std::string>("Host", "127.0.0.1:10010")));
  EXPECT_EQ(r.request.headers[3].first, "X-Stream-Protocol-Version");
  EXPECT_EQ(r.request.headers[3].second, "v4.channel.k8s.io");
  EXPECT_EQ(r.request.headers[4].second, "v3.channel.k8s.io");
  EXPECT_EQ(r.rest, kSpdyBytes);
}

TEST(Http1HeadParserTest, ParsesHeadWholeAndLeavesWhatFollows) {
  expectUpgradeHead(feedWhole(kUpgradeHead + kSpdyBytes));
}

TEST(Http1HeadParserTest, ParsesHeadByteByByte) {
  expectUpgradeHead(feedByteByByte(kUpgradeHead + kSpdyBytes));
}

TEST(Http1HeadParserTest, ParsesHeadInSeededRandomChunks) {
  for (uint32_t seed = 1; seed <= 50; ++seed) {
    SCOPED_TRACE(seed);
    expectUpgradeHead(feedRandomChunks(kUpgradeHead + kSpdyBytes, seed));
  }
}

TEST(Http1HeadParserTest, StopsAtHeadEvenWithoutUpgradeAndWithABody) {
  // A plain POST announcing a body: the body is not part of the head.
  const std::string head = "POST /exec/tok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n";
  for (const auto& r : {feedWhole(head + "hello"), feedByteByByte(head + "hello")}) {
    ASSERT_EQ(r.state, State::kComplete);
    EXPECT_EQ(r.rest, "hello");
  }
  const std::string chunked =
      "POST /exec/tok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
  const auto r = feedWhole(chunked);
  ASSERT_EQ(r.state, State::kComplete);
  EXPECT_EQ(r.rest, "5\r\nhello\r\n");
}

TEST(Http1HeadParserTest, KeepsHeaderNameCaseTrimsValuesAndKeepsEmptyValues) {
  const auto r = feedByteByByte(
      "GET /attach/t HTTP/1.1\r\nx-stream-protocol-version:   v2.channel.k8s.io  \r\n"
      "X-Empty:\r\nUPGRADE: spdy/3.1\r\n\r\n");
  ASSERT_EQ(r.state, State::kComplete);
  ASSERT_EQ(r.request.headers.size(), 3u);
  EXPECT_EQ(r.request.headers[0].first, "x-stream-protocol-version");
  EXPECT_EQ(r.request.headers[0].second, "v2.channel.k8s.io");
  EXPECT_EQ(r.request.headers[1].first, "X-Empty");
  EXPECT_EQ(r.request.headers[1].second, "");
  EXPECT_EQ(r.request.headers[2].first, "UPGRADE");
  EXPECT_EQ(r.request.headers[2].second, "spdy/3.1");
  EXPECT_TRUE(r.request.query.empty());
}

TEST(Http1HeadParserTest, AcceptsAbsoluteFormTarget) {
  const auto r = feedWhole("GET http://127.0.0.1:5/exec/tok?a=b HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(r.state, State::kComplete);
  EXPECT_EQ(r.request.path, "/exec/tok");
  EXPECT_EQ(r.request.query, "a=b");
}

TEST(Http1HeadParserTest, HeadOfExactlyTheLimitIsAcceptedOneMoreIsTooLarge) {
  const std::string prefix = "GET /exec/tok HTTP/1.1\r\nX-Pad: ";
  const std::string suffix = "\r\n\r\n";
  const size_t limit = 1024;
  const std::string at_limit =
      prefix + std::string(limit - prefix.size() - suffix.size(), 'a') + suffix;
  ASSERT_EQ(at_limit.size(), limit);
  const std::string past_limit =
      prefix + std::string(limit + 1 - prefix.size() - suffix.size(), 'a') + suffix;
  for (uint32_t seed = 1; seed <= 10; ++seed) {
    EXPECT_EQ(feedRandomChunks(at_limit + "next", seed, limit).state, State::kComplete);
    EXPECT_EQ(feedRandomChunks(past_limit, seed, limit).state, State::kTooLarge);
  }
  const auto ok = feedWhole(at_limit + "next", limit);
  ASSERT_EQ(ok.state, State::kComplete);
  EXPECT_EQ(ok.rest, "next");
  EXPECT_EQ(feedByteByByte(past_limit, limit).state, State::kTooLarge);
}

TEST(Http1HeadParserTest, EndlessHeadIsTooLargeWithoutReadingPastTheLimit) {
  Http1HeadParser parser(100);
  const std::string junk = "GET / HTTP/1.1\r\nX: " + std::string(1000, 'a');
  size_t used = 0;
  EXPECT_EQ(parser.feed(junk, used), State::kTooLarge);
  EXPECT_LE(used, 101u);
  EXPECT_EQ(parser.feed("\r\n\r\n", used), State::kTooLarge);
  EXPECT_EQ(used, 0u);
}

TEST(Http1HeadParserTest, RejectsWhatIsNotAnHttp1Request) {
  for (const std::string& input : {
           std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
           std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11),
           std::string("GET /exec/tok HTTP/1.1\r\nBad Header\r\n\r\n"),
           std::string("GET /exec/tok HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
           // NUL in a value, which http-parser alone lets through (found by
           // the http1_head fuzzer).
           std::string("GET /exec/tok HTTP/1.1\r\nX-Stream-Protocol-Version:\0v4\r\n\r\n", 57),
           std::string("GET /exec/tok HTTP/1.1\r\nUpgrade: a\0b\r\n\r\n", 40),
       }) {
    SCOPED_TRACE(input);
    Http1HeadParser parser(16384);
    size_t used = 0;
    EXPECT_EQ(parser.feed(input, used), State::kMalformed);
    EXPECT_FALSE(parser.error().empty());
    EXPECT_EQ(feedByteByByte(input).state, State::kMalformed);
  }
}

}  // namespace
}  // namespace crisp::stream
