#include "source/codec/spdy/dictionary.h"

#include <string>

#include "absl/strings/escaping.h"
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "source/codec/spdy/codec.h"
#include "source/common/buffer.h"

#include "test/codec/spdy/recording_callbacks.h"

namespace crisp::spdy {
namespace {

std::string sha256Hex(const uint8_t* data, size_t len) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  EXPECT_EQ(EVP_Digest(data, len, digest, &digest_len, EVP_sha256(), nullptr), 1);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), digest_len));
}

TEST(SpdyDictionaryTest, MatchesPublishedLengthAndSha256) {
  const auto& dict = headerDictionary();
  EXPECT_EQ(dict.size(), 1423u);
  EXPECT_EQ(sha256Hex(dict.data(), dict.size()),
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02");
}

TEST(SpdyDictionaryTest, Adler32IsTheDictId) {
  const auto& dict = headerDictionary();
  const uLong adler = adler32(adler32(0L, Z_NULL, 0), dict.data(), static_cast<uInt>(dict.size()));
  EXPECT_EQ(adler, 0xE3C6A7C2u);
  EXPECT_EQ(kHeaderDictionaryId, 0xE3C6A7C2u);
}

TEST(SpdyDictionaryTest, StartsWithLengthPrefixedNamesAndEndsWithValueFragments) {
  const auto& dict = headerDictionary();
  const std::string text(dict.begin(), dict.end());
  EXPECT_EQ(text.substr(0, 11), std::string("\0\0\0\x07options", 11));
  EXPECT_EQ(text.substr(text.size() - 8), "*,enq=0.");
}

// The zlib header of the first block we send names the dictionary, which is
// what a peer (Go's compress/zlib included) checks before inflating.
TEST(SpdyDictionaryTest, FirstEncodedBlockCarriesDictId) {
  test::RecordingCallbacks callbacks;
  Codec codec(Codec::Role::kServer, callbacks);
  Buffer out;
  codec.encodeSynReply(out, 1, 0, {{"streamtype", "error"}});
  const std::string frame = out.toString();
  ASSERT_GE(frame.size(), 12u + 6u);
  const std::string block = frame.substr(12);
  const uint8_t cmf = static_cast<uint8_t>(block[0]);
  const uint8_t flg = static_cast<uint8_t>(block[1]);
  EXPECT_EQ(cmf & 0x0F, 8) << "deflate";
  EXPECT_LE(cmf >> 4, 7) << "window within 32 KiB";
  EXPECT_EQ(((cmf << 8) | flg) % 31, 0) << "header check";
  EXPECT_NE(flg & 0x20, 0) << "FDICT set";
  EXPECT_EQ(block.substr(2, 4), std::string("\xE3\xC6\xA7\xC2", 4));
}

}  // namespace
}  // namespace crisp::spdy
