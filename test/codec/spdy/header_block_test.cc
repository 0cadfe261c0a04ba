#include "source/codec/spdy/header_block.h"

#include <string>

#include "absl/strings/match.h"
#include <gtest/gtest.h>

#include "test/codec/spdy/frame_builder.h"

namespace crisp::spdy {
namespace {

using test::rawHeaderBlock;
using test::TestDeflater;
using test::TestInflater;

constexpr uint32_t kMaxBlock = 64 * 1024;
constexpr uint32_t kMaxEntries = 1024;

absl::Status decodeOne(HeaderBlockDecoder& decoder, std::string_view compressed, HeaderList& out) {
  return decoder.decode(reinterpret_cast<const uint8_t*>(compressed.data()), compressed.size(),
                        out);
}

TEST(SpdyHeaderBlockTest, EncoderLowercasesNamesAndJoinsRepeatedOnes) {
  HeaderBlockEncoder encoder;
  TestInflater inflater;
  std::string plain;
  const std::string_view block =
      encoder.encode({{"Foo", "a"}, {"bar", "x"}, {"FOO", "b"}, {"foo", ""}});
  ASSERT_TRUE(inflater.inflateBlock(block, plain));
  EXPECT_EQ(plain, rawHeaderBlock({{"foo", std::string("a\0b\0", 4)}, {"bar", "x"}}));
}

TEST(SpdyHeaderBlockTest, EncoderWritesEmptyListAsZeroCount) {
  HeaderBlockEncoder encoder;
  TestInflater inflater;
  std::string plain;
  ASSERT_TRUE(inflater.inflateBlock(encoder.encode({}), plain));
  EXPECT_EQ(plain, std::string(4, '\0'));
}

// Blocks from our encoder continue one zlib stream that an independent
// inflater, like a peer's, follows block after block.
TEST(SpdyHeaderBlockTest, IndependentInflaterFollowsManyEncodedBlocks) {
  HeaderBlockEncoder encoder;
  TestInflater inflater;
  std::string plain;
  for (int i = 0; i < 500; ++i) {
    const HeaderList headers = {{"streamtype", i % 2 == 0 ? "data" : "error"},
                                {"port", std::to_string(8000 + i)},
                                {"requestid", std::to_string(i)}};
    ASSERT_TRUE(inflater.inflateBlock(encoder.encode(headers), plain)) << "block " << i;
    ASSERT_EQ(plain, rawHeaderBlock({{"streamtype", i % 2 == 0 ? "data" : "error"},
                                     {"port", std::to_string(8000 + i)},
                                     {"requestid", std::to_string(i)}}))
        << "block " << i;
  }
}

TEST(SpdyHeaderBlockTest, LargeBlockEncodesCompletely) {
  HeaderBlockEncoder encoder;
  HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
  std::string value;
  for (int i = 0; i < 20000; ++i) {
    value += static_cast<char>('a' + (i * 7919) % 26);
  }
  HeaderList out;
  ASSERT_TRUE(decodeOne(decoder, encoder.encode({{"big", value}}), out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].second, value);
}

TEST(SpdyHeaderBlockTest, DecoderFollowsIndependentDeflaterOverManyBlocks) {
  for (int level : {0, 1, 6, 9}) {
    TestDeflater deflater(level);
    HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
    for (int i = 0; i < 300; ++i) {
      const std::string plain =
          rawHeaderBlock({{"streamtype", "stdout"}, {"x-index", std::to_string(i)}});
      HeaderList out;
      ASSERT_TRUE(decodeOne(decoder, deflater.compress(plain), out).ok())
          << "level " << level << " block " << i;
      const HeaderList expected = {{"streamtype", "stdout"}, {"x-index", std::to_string(i)}};
      ASSERT_EQ(out, expected) << "level " << level << " block " << i;
    }
  }
}

TEST(SpdyHeaderBlockTest, DecoderSplitsNulSeparatedValuesInOrder) {
  TestDeflater deflater;
  HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
  HeaderList out;
  ASSERT_TRUE(decodeOne(decoder,
                        deflater.compress(rawHeaderBlock(
                            {{"a", std::string("1\0002\0", 4)}, {"b", ""}, {"c", "3"}})),
                        out)
                  .ok());
  const HeaderList expected = {{"a", "1"}, {"a", "2"}, {"a", ""}, {"b", ""}, {"c", "3"}};
  EXPECT_EQ(out, expected);
}

TEST(SpdyHeaderBlockTest, DecoderAcceptsBlockExactlyAtLimitAndRejectsOneMore) {
  // A block of one pair "v" -> value: 4 + 4 + 1 + 4 + value bytes.
  const uint32_t limit = 1000;
  const std::string at_limit = rawHeaderBlock({{"v", std::string(limit - 13, 'x')}});
  ASSERT_EQ(at_limit.size(), limit);
  {
    TestDeflater deflater;
    HeaderBlockDecoder decoder(limit, kMaxEntries);
    HeaderList out;
    EXPECT_TRUE(decodeOne(decoder, deflater.compress(at_limit), out).ok());
  }
  {
    TestDeflater deflater;
    HeaderBlockDecoder decoder(limit, kMaxEntries);
    HeaderList out;
    const absl::Status status = decodeOne(
        decoder, deflater.compress(rawHeaderBlock({{"v", std::string(limit - 12, 'x')}})), out);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StartsWith(status.message(), "spdy.header_block_too_large")) << status;
  }
}

// 64 MiB of zeros compress to about 64 KiB; the decoder stops after the limit
// instead of inflating all of it.
TEST(SpdyHeaderBlockTest, ZlibBombStopsAtLimit) {
  TestDeflater deflater;
  const std::string bomb =
      deflater.compress(rawHeaderBlock({{"bomb", std::string(64u * 1024 * 1024, '\0')}}));
  ASSERT_LT(bomb.size(), 128u * 1024);
  HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
  HeaderList out;
  const absl::Status status = decodeOne(decoder, bomb, out);
  EXPECT_TRUE(absl::StartsWith(status.message(), "spdy.header_block_too_large")) << status;
}

TEST(SpdyHeaderBlockTest, TooManyEntriesRejected) {
  TestDeflater deflater;
  HeaderBlockDecoder decoder(kMaxBlock, 4);
  HeaderList out;
  // Four entries are fine, five are not, however they are split.
  EXPECT_TRUE(
      decodeOne(decoder,
                deflater.compress(rawHeaderBlock({{"a", std::string("1\0002\0003\0004", 7)}})), out)
          .ok());
  out.clear();
  const absl::Status status = decodeOne(
      decoder,
      deflater.compress(rawHeaderBlock(
          {{"a", std::string("1\0002", 3)}, {"b", "3"}, {"c", std::string("4\0005", 3)}})),
      out);
  EXPECT_TRUE(absl::StartsWith(status.message(), "spdy.header_block_too_large")) << status;
}

struct BadBlockCase {
  const char* name;
  std::string plain;
  const char* detail;
};

TEST(SpdyHeaderBlockTest, RejectsMalformedBlocks) {
  const BadBlockCase cases[] = {
      {"empty", "", "shorter than its pair count"},
      {"count larger than data", rawHeaderBlock(3, {{"a", "b"}}), "pair count 3"},
      {"name length past end", test::u32(1) + test::u32(50) + "abcdefgh", "name of 50 bytes"},
      {"value length past end", test::u32(1) + test::u32(1) + "a" + test::u32(9) + "xy",
       "value of 9 bytes"},
      {"missing value length", test::u32(1) + test::u32(5) + "abcde" + "xy",
       "pair 0: value length"},
      {"uppercase name", rawHeaderBlock({{"Host", "x"}}), "uppercase"},
      {"empty name", rawHeaderBlock({{"", "x"}}), "empty name"},
      {"NUL in name", rawHeaderBlock({{std::string("a\0b", 3), "x"}}), "NUL in name"},
      {"trailing bytes", rawHeaderBlock({{"a", "b"}}) + "zz", "2 bytes left"},
      {"duplicate name", rawHeaderBlock({{"a", "1"}, {"b", "2"}, {"a", "3"}}), "duplicate"},
  };
  for (const BadBlockCase& c : cases) {
    TestDeflater deflater;
    HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
    HeaderList out;
    const absl::Status status = decodeOne(decoder, deflater.compress(c.plain), out);
    EXPECT_TRUE(absl::StartsWith(status.message(), "spdy.bad_header_block")) << c.name << status;
    EXPECT_TRUE(absl::StrContains(status.message(), c.detail)) << c.name << ": " << status;
  }
}

TEST(SpdyHeaderBlockTest, RejectsZlibGarbage) {
  HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
  HeaderList out;
  const absl::Status status = decodeOne(decoder, "\x12\x34garbage that is not zlib", out);
  EXPECT_TRUE(absl::StartsWith(status.message(), "spdy.bad_header_block: zlib")) << status;
}

TEST(SpdyHeaderBlockTest, RejectsBlockWithoutOrWithOtherDictionary) {
  {
    // Compressed against a different dictionary: the DICTID does not match.
    z_stream zs{};
    ASSERT_EQ(deflateInit(&zs, 9), Z_OK);
    const char other[] = "some other dictionary";
    ASSERT_EQ(deflateSetDictionary(&zs, reinterpret_cast<const Bytef*>(other), sizeof(other)),
              Z_OK);
    std::string plain = rawHeaderBlock({{"a", "b"}});
    unsigned char out_bytes[256];
    zs.next_in = reinterpret_cast<Bytef*>(plain.data());
    zs.avail_in = static_cast<uInt>(plain.size());
    zs.next_out = out_bytes;
    zs.avail_out = sizeof(out_bytes);
    ASSERT_EQ(deflate(&zs, Z_SYNC_FLUSH), Z_OK);
    const std::string compressed(reinterpret_cast<char*>(out_bytes),
                                 sizeof(out_bytes) - zs.avail_out);
    deflateEnd(&zs);
    HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
    HeaderList out;
    const absl::Status status = decodeOne(decoder, compressed, out);
    EXPECT_TRUE(absl::StartsWith(status.message(),
                                 "spdy.bad_header_block: zlib stream asks for "
                                 "an unknown dictionary"))
        << status;
  }
  {
    // No dictionary at all is still valid zlib; such a block decodes.
    TestDeflater deflater(9, 15, /*dictionary=*/false);
    HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
    HeaderList out;
    EXPECT_TRUE(decodeOne(decoder, deflater.compress(rawHeaderBlock({{"a", "b"}})), out).ok());
  }
}

TEST(SpdyHeaderBlockTest, RejectsEndedZlibStream) {
  TestDeflater deflater;
  HeaderBlockDecoder decoder(kMaxBlock, kMaxEntries);
  HeaderList out;
  const absl::Status status =
      decodeOne(decoder, deflater.compress(rawHeaderBlock({{"a", "b"}}), Z_FINISH), out);
  EXPECT_TRUE(absl::StartsWith(status.message(), "spdy.bad_header_block: zlib stream ended"))
      << status;
}

TEST(SpdyHeaderBlockTest, HeaderNameEqualsIgnoresAsciiCaseOnly) {
  EXPECT_TRUE(headerNameEquals("Stream-Type", "stream-type"));
  EXPECT_FALSE(headerNameEquals("streamtype", "stream-type"));
  EXPECT_FALSE(headerNameEquals("a", "ab"));
  EXPECT_FALSE(headerNameEquals("a-", "a\r"));
}

}  // namespace
}  // namespace crisp::spdy
