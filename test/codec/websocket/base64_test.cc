#include "source/codec/websocket/base64.h"

#include <random>
#include <string>

#include <gtest/gtest.h>

namespace crisp::websocket {
namespace {

struct Vector {
  std::string plain;
  std::string encoded;
};

// RFC 4648 section 10.
const Vector kVectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

TEST(Base64Test, EncodesTheRfc4648Vectors) {
  for (const Vector& v : kVectors) {
    EXPECT_EQ(base64Encode(v.plain), v.encoded);
    Buffer out;
    out.add("x");
    base64EncodeTo(v.plain, out);
    EXPECT_EQ(out.toString(), "x" + v.encoded);
  }
}

// EVP_DecodeBlock alone would return 3 bytes for every 4 characters, padding
// included; the wrapper must return only the real bytes.
TEST(Base64Test, DecodesTheRfc4648VectorsWithoutPaddingBytes) {
  for (const Vector& v : kVectors) {
    absl::StatusOr<std::string> decoded = base64Decode(v.encoded);
    ASSERT_TRUE(decoded.ok()) << v.encoded << ": " << decoded.status();
    EXPECT_EQ(*decoded, v.plain) << v.encoded;
    Buffer out;
    ASSERT_TRUE(base64DecodeTo(v.encoded, out).ok());
    EXPECT_EQ(out.toString(), v.plain);
  }
  EXPECT_EQ(*base64Decode("UAA="), std::string("\x50\x00", 2));
  EXPECT_EQ(*base64Decode("AAAA"), std::string(3, '\0'));
}

TEST(Base64Test, RejectsWhatGoRejects) {
  const char* const bad[] = {
      "YQ",        // no padding
      "YQ=",       // short padding
      "Y===",      // three padding characters
      "====",      // only padding
      "=YQ=",      // padding first (EVP_DecodeBlock reads '=' as zero bits)
      "Y=Q=",      // padding inside
      "YQ==YQ==",  // data after padding
      " YWJ",      // leading blank (EVP_DecodeBlock trims it)
      "YWJ ",      // trailing blank
      "\tYWJ",     // leading tab
      "YWJ-",      // trailing '-' (EVP_DecodeBlock trims it)
      "-YWJ",      // leading '-'
      "YW Jj",     // inner blank
      "YWJ!",      // outside the alphabet
      "Y-_a",      // URL alphabet
      "YWJj\x80"
      "AAA",  // high byte
  };
  for (const char* text : bad) {
    absl::StatusOr<std::string> decoded = base64Decode(text);
    EXPECT_FALSE(decoded.ok()) << '"' << text << "\" decoded to " << decoded.value_or("");
    if (!decoded.ok()) {
      EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(decoded.status().message().substr(0, 14), "ws.bad_base64:");
    }
  }
  const std::string with_nul("YW\0j", 4);
  EXPECT_FALSE(base64Decode(with_nul).ok());
}

TEST(Base64Test, DecodeToLeavesTheBufferAloneOnError) {
  Buffer out;
  out.add("keep");
  EXPECT_FALSE(base64DecodeTo("YQ==YQ==", out).ok());
  EXPECT_FALSE(base64DecodeTo("YWJ!", out).ok());
  EXPECT_EQ(out.toString(), "keep");
}

TEST(Base64Test, SkipsCarriageReturnsAndLineFeedsLikeGo) {
  EXPECT_EQ(*base64Decode("YW\r\nJj"), "abc");
  EXPECT_EQ(*base64Decode("YQ=\n="), "a");
  EXPECT_EQ(*base64Decode("\nZm9v\n"), "foo");
  EXPECT_EQ(*base64Decode("\r\n"), "");
}

TEST(Base64Test, AcceptsNonZeroTrailingBitsLikeGoStdEncoding) {
  EXPECT_EQ(*base64Decode("QR=="), "A");
  EXPECT_EQ(*base64Decode("QUJ="), "AB");
}

// Larger than one EVP block (3 MiB to encode, 4 MiB to decode) so the block
// loop is crossed in both directions, with a length that needs padding.
TEST(Base64Test, RoundTripsAcrossBlockBoundaries) {
  std::mt19937 engine(17);
  std::string data((7 << 20) + 1, '\0');  // 2 mod 3: one '='
  for (char& c : data) {
    c = static_cast<char>(engine());
  }
  const std::string encoded = base64Encode(data);
  EXPECT_EQ(encoded.size(), base64EncodedLength(data.size()));
  EXPECT_EQ(encoded.substr(encoded.size() - 1), "=");
  absl::StatusOr<std::string> decoded = base64Decode(encoded);
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(*decoded == data);
  Buffer out;
  base64EncodeTo(data, out);
  EXPECT_TRUE(out.toString() == encoded);
}

}  // namespace
}  // namespace crisp::websocket
