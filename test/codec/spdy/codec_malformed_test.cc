// Malformed and hostile input: each case must end dispatch() with a stable
// dotted reason, deliver nothing from the bad frame on, and give the same
// result however the bytes are chunked.

#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include <gtest/gtest.h>

#include "source/codec/spdy/codec.h"

#include "test/codec/spdy/frame_builder.h"
#include "test/codec/spdy/recording_callbacks.h"

namespace crisp::spdy {
namespace {

using test::Chunking;
using test::feed;
using test::feedAllWays;
using test::FeedResult;
using test::rawHeaderBlock;
using test::RecordingCallbacks;
using test::TestDeflater;
using test::u32;

using Events = std::vector<std::string>;

// A valid frame first, so that each case also shows that frames before the
// bad one are still delivered.
const std::string kPing = test::pingFrame(1);

void expectError(const std::string& bad, std::string_view reason, const Limits& limits = {}) {
  const FeedResult result = feedAllWays(kPing + bad, limits);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kInvalidArgument) << result.status;
  EXPECT_TRUE(absl::StartsWith(result.status.message(), std::string(reason) + ":"))
      << "want " << reason << ", got " << result.status;
  EXPECT_EQ(result.events, Events{"PING 1"});
}

std::string compressed(const test::RawPairs& pairs) {
  TestDeflater deflater;
  return deflater.compress(rawHeaderBlock(pairs));
}

TEST(SpdyCodecMalformedTest, RejectsOtherVersions) {
  expectError(test::controlFrame(6, 0, u32(1), /*version=*/2), "spdy.unsupported_version");
  expectError(test::controlFrame(6, 0, u32(1), /*version=*/4), "spdy.unsupported_version");
  // Unknown types are checked for version too.
  expectError(test::controlFrame(10, 0, "", /*version=*/2), "spdy.unsupported_version");
}

TEST(SpdyCodecMalformedTest, VersionErrorNeedsOnlyTheFrameHeader) {
  const FeedResult result = feed(test::controlHeader(1, 0, 1000, 2), Chunking::kWhole);
  EXPECT_TRUE(absl::StartsWith(result.status.message(),
                               "spdy.unsupported_version: control frame version 2"))
      << result.status;
}

TEST(SpdyCodecMalformedTest, RejectsOversizedControlFrameBeforeItArrives) {
  Limits limits;
  limits.max_control_frame_bytes = 1000;
  // Only the header of a SYN_STREAM one byte over the limit: no payload is
  // buffered before the error.
  const FeedResult result = feed(test::controlHeader(1, 0, 1001), Chunking::kWhole, 1, limits);
  EXPECT_TRUE(absl::StartsWith(result.status.message(), "spdy.frame_too_large")) << result.status;
  expectError(test::controlFrame(10, 0, std::string(1001, 'x')), "spdy.frame_too_large", limits);
  // Exactly at the limit is fine (an unknown type, so any payload will do).
  const FeedResult at_limit =
      feedAllWays(test::controlFrame(10, 0, std::string(1000, 'x')) + kPing, limits);
  EXPECT_TRUE(at_limit.status.ok()) << at_limit.status;
  EXPECT_EQ(at_limit.events, Events{"PING 1"});
}

TEST(SpdyCodecMalformedTest, DefaultControlLimitIs64KiB) {
  expectError(test::controlHeader(8, 0, 64 * 1024 + 1), "spdy.frame_too_large");
}

TEST(SpdyCodecMalformedTest, RejectsDataFrameOverLimit) {
  Limits limits;
  limits.max_data_frame_bytes = 1000;
  expectError(test::dataFrame(1, 0, std::string(1001, 'd')), "spdy.frame_too_large", limits);
  const FeedResult header_only = feed(test::dataHeader(1, 0, 1001), Chunking::kWhole, 1, limits);
  EXPECT_TRUE(absl::StartsWith(header_only.status.message(), "spdy.frame_too_large"))
      << header_only.status;
  const FeedResult at_limit = feedAllWays(test::dataFrame(1, 0, std::string(1000, 'd')), limits);
  EXPECT_TRUE(at_limit.status.ok()) << at_limit.status;
  EXPECT_EQ(at_limit.events, Events{"DATA 1 fin=0 len=1000"});
}

TEST(SpdyCodecMalformedTest, RejectsStreamIdZero) {
  expectError(test::dataFrame(0, 0, "x"), "spdy.invalid_stream_id");
  expectError(test::synStreamFrame(0, 0, 0, 0, compressed({{"a", "b"}})), "spdy.invalid_stream_id");
  expectError(test::synReplyFrame(0, 0, compressed({{"a", "b"}})), "spdy.invalid_stream_id");
  expectError(test::headersFrame(0, 0, compressed({{"a", "b"}})), "spdy.invalid_stream_id");
  expectError(test::rstStreamFrame(0, 1), "spdy.invalid_stream_id");
  // The reserved bit alone does not make an id.
  expectError(test::synReplyFrame(0x80000000, 0, compressed({{"a", "b"}})),
              "spdy.invalid_stream_id");
}

TEST(SpdyCodecMalformedTest, RejectsWrongFixedLengths) {
  const std::string p12(12, '\1');
  expectError(test::controlFrame(3, 0, p12.substr(0, 7)), "spdy.bad_frame_length");  // RST
  expectError(test::controlFrame(3, 0, p12.substr(0, 9)), "spdy.bad_frame_length");
  expectError(test::controlFrame(6, 0, p12.substr(0, 3)), "spdy.bad_frame_length");  // PING
  expectError(test::controlFrame(6, 0, p12.substr(0, 5)), "spdy.bad_frame_length");
  expectError(test::controlFrame(7, 0, p12.substr(0, 4)), "spdy.bad_frame_length");  // GOAWAY v2
  expectError(test::controlFrame(7, 0, p12), "spdy.bad_frame_length");
  expectError(test::controlFrame(9, 0, p12.substr(0, 4)),
              "spdy.bad_frame_length");                                // WINDOW_UPDATE
  expectError(test::controlFrame(4, 0, ""), "spdy.bad_frame_length");  // SETTINGS
  expectError(test::controlFrame(4, 0, u32(1) + p12.substr(0, 7)), "spdy.bad_frame_length");
  expectError(test::controlFrame(1, 0, p12.substr(0, 9)), "spdy.bad_frame_length");  // SYN_STREAM
  expectError(test::controlFrame(2, 0, p12.substr(0, 3)), "spdy.bad_frame_length");  // SYN_REPLY
  expectError(test::controlFrame(8, 0, ""), "spdy.bad_frame_length");                // HEADERS
}

TEST(SpdyCodecMalformedTest, LengthErrorNeedsOnlyTheFrameHeader) {
  const FeedResult result = feed(test::controlHeader(6, 0, 5), Chunking::kWhole);
  EXPECT_TRUE(absl::StartsWith(result.status.message(), "spdy.bad_frame_length: PING length 5"))
      << result.status;
}

TEST(SpdyCodecMalformedTest, RejectsSettingsCountNotMatchingLength) {
  expectError(test::controlFrame(4, 0, u32(2) + std::string(8, '\0')), "spdy.bad_frame_length");
  expectError(test::controlFrame(4, 0, u32(0) + std::string(8, '\0')), "spdy.bad_frame_length");
  expectError(test::controlFrame(4, 0, u32(0xFFFFFFFF) + std::string(8, '\0')),
              "spdy.bad_frame_length");
}

TEST(SpdyCodecMalformedTest, RejectsBadHeaderBlocks) {
  // Shorter than its count, count larger than the data, name length past the
  // end, uppercase name, empty name.
  {
    TestDeflater deflater;
    expectError(test::synStreamFrame(1, 0, 0, 0, deflater.compress(std::string(2, '\0'))),
                "spdy.bad_header_block");
  }
  {
    TestDeflater deflater;
    expectError(
        test::synStreamFrame(1, 0, 0, 0, deflater.compress(rawHeaderBlock(5, {{"a", "b"}}))),
        "spdy.bad_header_block");
  }
  {
    TestDeflater deflater;
    expectError(test::synReplyFrame(2, 0, deflater.compress(u32(1) + u32(100) + "name-too-short")),
                "spdy.bad_header_block");
  }
  expectError(test::headersFrame(1, 0, compressed({{"Content-Type", "x"}})),
              "spdy.bad_header_block");
  expectError(test::synStreamFrame(1, 0, 0, 0, compressed({{"", "x"}})), "spdy.bad_header_block");
  // An empty block (no zlib bytes at all) is not a header block either.
  expectError(test::synStreamFrame(1, 0, 0, 0, ""), "spdy.bad_header_block");
}

TEST(SpdyCodecMalformedTest, RejectsZlibGarbage) {
  expectError(test::synStreamFrame(1, 0, 0, 0, "\x78\xBB not really zlib at all"),
              "spdy.bad_header_block");
  std::mt19937 rng(2024);
  std::string noise(200, '\0');
  for (char& c : noise) {
    c = static_cast<char>(rng());
  }
  expectError(test::synReplyFrame(1, 0, noise), "spdy.bad_header_block");
}

TEST(SpdyCodecMalformedTest, RejectsZlibBombBeyondHeaderLimit) {
  Limits limits;
  limits.max_header_block_bytes = 16 * 1024;
  TestDeflater deflater;
  // 8 MiB of one byte compresses to about 8 KiB: well under the control frame
  // limit, far over the header block limit.
  const std::string bomb =
      deflater.compress(rawHeaderBlock({{"x", std::string(8u * 1024 * 1024, 'a')}}));
  ASSERT_LT(bomb.size(), limits.max_control_frame_bytes - 10);
  expectError(test::synStreamFrame(1, 0, 0, 0, bomb), "spdy.header_block_too_large", limits);
}

TEST(SpdyCodecMalformedTest, RejectsTooManyHeaderEntries) {
  Limits limits;
  limits.max_header_entries = 8;
  expectError(test::synStreamFrame(1, 0, 0, 0, compressed({{"a", std::string(8, '\0')}})),
              "spdy.header_block_too_large", limits);
}

TEST(SpdyCodecMalformedTest, ErrorIsStickyAndNothingMoreIsDelivered) {
  RecordingCallbacks callbacks;
  Codec codec(Codec::Role::kServer, callbacks);
  Buffer input;
  input.add(test::controlFrame(6, 0, u32(1), 2) + test::pingFrame(3));
  const absl::Status first = codec.dispatch(input);
  ASSERT_FALSE(first.ok());
  input.add(test::pingFrame(5));
  EXPECT_EQ(codec.dispatch(input), first);
  EXPECT_EQ(codec.dispatch(input), first);
  EXPECT_TRUE(callbacks.events.empty());
  // The bad frame and everything after it is still in the input.
  EXPECT_EQ(input.length(), 3 * kPing.size());
}

// A header block the decoder rejected leaves the zlib stream out of step, so
// nothing may be decoded after it even if it looks valid.
TEST(SpdyCodecMalformedTest, NoHeaderFrameIsDecodedAfterABadBlock) {
  TestDeflater deflater;
  std::string wire =
      test::synStreamFrame(1, 0, 0, 0, deflater.compress(rawHeaderBlock({{"A", "b"}})));
  wire += test::synStreamFrame(3, 0, 0, 0, deflater.compress(rawHeaderBlock({{"a", "b"}})));
  const FeedResult result = feedAllWays(wire);
  EXPECT_TRUE(absl::StartsWith(result.status.message(), "spdy.bad_header_block")) << result.status;
  EXPECT_TRUE(result.events.empty());
}

// Seeded random bytes, and valid sessions with random bytes flipped: the codec
// answers each with OK (waiting for more) or an error with a dotted reason,
// never a crash or hang.
TEST(SpdyCodecMalformedTest, SurvivesRandomAndCorruptedInput) {
  std::mt19937 rng(77);
  TestDeflater deflater;
  std::string valid;
  for (uint32_t i = 0; i < 20; ++i) {
    valid += test::synStreamFrame(2 * i + 1, 0, 0, 0,
                                  deflater.compress(rawHeaderBlock({{"streamtype", "data"}})));
    valid += test::dataFrame(2 * i + 1, i % 2, std::string(i * 10, 'x'));
    valid += test::pingFrame(i + 1);
  }
  Limits limits;
  limits.max_data_frame_bytes = 4096;
  for (int round = 0; round < 300; ++round) {
    std::string input;
    if (round % 2 == 0) {
      input.resize(1 + rng() % 2000);
      for (char& c : input) {
        c = static_cast<char>(rng());
      }
    } else {
      input = valid;
      for (int flips = 0; flips < 3; ++flips) {
        input[rng() % input.size()] ^= static_cast<char>(1 + rng() % 255);
      }
    }
    const FeedResult result = feed(input, Chunking::kRandom, static_cast<uint32_t>(round), limits);
    if (!result.status.ok()) {
      EXPECT_TRUE(absl::StartsWith(result.status.message(), "spdy.")) << result.status;
    }
  }
}

}  // namespace
}  // namespace crisp::spdy
