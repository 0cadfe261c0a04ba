#include "source/cri/grpc_common.h"

#include <random>

#include <gtest/gtest.h>

#include "source/cri/grpc_metrics.h"

namespace crisp::cri {
namespace {

using std::chrono::nanoseconds;

std::string framed(const std::vector<std::string>& messages) {
  Buffer b;
  for (const auto& m : messages) {
    appendGrpcMessage(b, m);
  }
  return b.toString();
}

// Feeds `bytes` in chunks chosen by `next_chunk` and returns the messages.
std::vector<std::string> decodeInChunks(const std::string& bytes,
                                        const std::function<size_t(size_t left)>& next_chunk,
                                        absl::Status* status_out = nullptr) {
  GrpcMessageDecoder decoder(1024);
  std::vector<std::string> out;
  absl::Status status;
  size_t pos = 0;
  while (pos < bytes.size() && status.ok()) {
    const size_t n = std::min(next_chunk(bytes.size() - pos), bytes.size() - pos);
    status = decoder.decode(reinterpret_cast<const uint8_t*>(bytes.data()) + pos, n, out);
    pos += n;
  }
  if (status.ok()) {
    status = decoder.finish();
  }
  if (status_out != nullptr) {
    *status_out = status;
  }
  return out;
}

TEST(GrpcMessageDecoderTest, SplitsMessagesWholeByteByByteAndInRandomChunks) {
  const std::vector<std::string> messages = {"", "a", std::string(300, 'x'), "last one",
                                             std::string(1024, '\0')};
  const std::string bytes = framed(messages);
  absl::Status status;
  EXPECT_EQ(decodeInChunks(
                bytes, [](size_t left) { return left; }, &status),
            messages);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(decodeInChunks(
                bytes, [](size_t) { return 1; }, &status),
            messages);
  EXPECT_TRUE(status.ok()) << status;
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    EXPECT_EQ(decodeInChunks(
                  bytes, [&](size_t) { return 1 + rng() % 40; }, &status),
              messages)
        << "seed " << seed;
    EXPECT_TRUE(status.ok()) << status;
  }
}

TEST(GrpcMessageDecoderTest, AcceptsMessageAtLimitAndRejectsOnePastIt) {
  absl::Status status;
  EXPECT_EQ(decodeInChunks(
                framed({std::string(1024, 'a')}), [](size_t l) { return l; }, &status)
                .size(),
            1u);
  EXPECT_TRUE(status.ok());

  // Rejected as soon as the prefix is seen, before any body byte arrives.
  GrpcMessageDecoder decoder(1024);
  std::vector<std::string> out;
  const uint8_t prefix[] = {0, 0, 0, 0x04, 0x01};  // 1025
  status = decoder.decode(prefix, sizeof(prefix), out);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(status.message().find("1025"), std::string::npos);
  // It stays failed.
  const uint8_t more[] = {0, 0, 0, 0, 0};
  EXPECT_EQ(decoder.decode(more, sizeof(more), out).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(out.empty());
}

TEST(GrpcMessageDecoderTest, RejectsCompressedFlagWithoutEncoding) {
  GrpcMessageDecoder decoder;
  std::vector<std::string> out;
  const uint8_t bytes[] = {1, 0, 0, 0, 1, 'x'};
  const absl::Status status = decoder.decode(bytes, sizeof(bytes), out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(out.empty());

  GrpcMessageDecoder bad_flag;
  const uint8_t flag2[] = {2, 0, 0, 0, 0};
  EXPECT_EQ(bad_flag.decode(flag2, sizeof(flag2), out).code(), absl::StatusCode::kInternal);
}

TEST(GrpcMessageDecoderTest, StreamEndingInsideMessageIsInternal) {
  std::string bytes = framed({"complete", "cut short"});
  bytes.resize(bytes.size() - 3);
  absl::Status status;
  const auto messages = decodeInChunks(
      bytes, [](size_t l) { return l; }, &status);
  EXPECT_EQ(messages, std::vector<std::string>{"complete"});
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);

  // Only part of a prefix.
  GrpcMessageDecoder decoder;
  std::vector<std::string> out;
  const uint8_t partial[] = {0, 0};
  EXPECT_TRUE(decoder.decode(partial, sizeof(partial), out).ok());
  EXPECT_EQ(decoder.finish().code(), absl::StatusCode::kInternal);
}

TEST(GrpcMessageTest, PercentEncodingMatchesGrpcRules) {
  EXPECT_EQ(percentEncodeGrpcMessage("plain text, ok: 1/2"), "plain text, ok: 1/2");
  EXPECT_EQ(percentEncodeGrpcMessage("100%"), "100%25");
  EXPECT_EQ(percentEncodeGrpcMessage("a\nb\r"), "a%0Ab%0D");
  EXPECT_EQ(percentEncodeGrpcMessage("\xc3\xa9t\xc3\xa9"), "%C3%A9t%C3%A9");
  EXPECT_EQ(percentEncodeGrpcMessage(std::string("\0\x7f", 2)), "%00%7F");

  for (const std::string s : {"", "100% done", "line\nbreak", "\xe2\x9c\x93 caf\xc3\xa9", "%%%"}) {
    EXPECT_EQ(percentDecodeGrpcMessage(percentEncodeGrpcMessage(s)), s);
  }
  // Lower-case hex decodes; broken escapes are kept as they are.
  EXPECT_EQ(percentDecodeGrpcMessage("%c3%a9"), "\xc3\xa9");
  EXPECT_EQ(percentDecodeGrpcMessage("50%"), "50%");
  EXPECT_EQ(percentDecodeGrpcMessage("%zz%4"), "%zz%4");
}

TEST(GrpcTimeoutTest, ParsesEveryUnitAndRejectsMalformed) {
  EXPECT_EQ(parseGrpcTimeout("1H"), nanoseconds(3600LL * 1000000000));
  EXPECT_EQ(parseGrpcTimeout("2M"), nanoseconds(120LL * 1000000000));
  EXPECT_EQ(parseGrpcTimeout("10S"), nanoseconds(10LL * 1000000000));
  EXPECT_EQ(parseGrpcTimeout("250m"), nanoseconds(250LL * 1000000));
  EXPECT_EQ(parseGrpcTimeout("7u"), nanoseconds(7000));
  EXPECT_EQ(parseGrpcTimeout("99999999n"), nanoseconds(99999999));
  for (const char* bad : {"", "S", "10", "10s", "123456789S", "-1S", "1.5S", " 1S", "1SS"}) {
    EXPECT_FALSE(parseGrpcTimeout(bad).has_value()) << bad;
  }
}

TEST(GrpcTimeoutTest, FormatsWithAtMostEightDigitsAndRoundTrips) {
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(5)), "5n");
  EXPECT_EQ(formatGrpcTimeout(std::chrono::milliseconds(1500)), "1500000u");
  EXPECT_EQ(formatGrpcTimeout(std::chrono::seconds(2)), "2000000u");
  EXPECT_EQ(formatGrpcTimeout(std::chrono::seconds(120)), "120000m");
  EXPECT_EQ(formatGrpcTimeout(std::chrono::hours(24 * 365)), "31536000S");
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(0)), "1n");
  EXPECT_EQ(formatGrpcTimeout(nanoseconds(-5)), "1n");
  for (int64_t ns : {1LL, 999LL, 123456789LL, 4000000000LL, 86400LL * 1000000000}) {
    const std::string s = formatGrpcTimeout(nanoseconds(ns));
    ASSERT_LE(s.size(), 9u) << s;
    const auto back = parseGrpcTimeout(s);
    ASSERT_TRUE(back.has_value()) << s;
    // Never shorter than asked, and less than one unit longer.
    EXPECT_GE(back->count(), ns) << s;
  }
}

TEST(GrpcStatusTest, CodeNamesAndMappings) {
  EXPECT_EQ(grpcCodeName(absl::StatusCode::kOk), "OK");
  EXPECT_EQ(grpcCodeName(absl::StatusCode::kNotFound), "NOT_FOUND");
  EXPECT_EQ(grpcCodeName(absl::StatusCode::kUnauthenticated), "UNAUTHENTICATED");
  EXPECT_EQ(grpcCodeName(static_cast<absl::StatusCode>(99)), "UNKNOWN");
  EXPECT_EQ(grpcCodeFromNumber(5), absl::StatusCode::kNotFound);
  EXPECT_EQ(grpcCodeFromNumber(17), absl::StatusCode::kUnknown);
  EXPECT_EQ(grpcCodeFromNumber(-1), absl::StatusCode::kUnknown);
  EXPECT_EQ(grpcCodeFromHttpStatus(404), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(grpcCodeFromHttpStatus(503), absl::StatusCode::kUnavailable);
  EXPECT_EQ(grpcCodeFromHttpStatus(500), absl::StatusCode::kUnknown);
  EXPECT_EQ(grpcCodeFromHttp2Error(0x7), absl::StatusCode::kUnavailable);  // REFUSED_STREAM
  EXPECT_EQ(grpcCodeFromHttp2Error(0x8), absl::StatusCode::kCancelled);
  EXPECT_EQ(grpcCodeFromHttp2Error(0x1), absl::StatusCode::kInternal);
}

TEST(GrpcHeadersTest, HopByHopAndValidity) {
  for (const char* h :
       {":path", "connection", "te", "transfer-encoding", "upgrade", "keep-alive"}) {
    EXPECT_TRUE(isHopByHopHeader(h)) << h;
  }
  for (const char* h : {"content-type", "user-agent", "grpc-timeout", "x-trace-bin"}) {
    EXPECT_FALSE(isHopByHopHeader(h)) << h;
  }
  EXPECT_TRUE(isValidHeaderField("x-id", "abc 123"));
  EXPECT_FALSE(isValidHeaderField("X-Id", "abc"));
  EXPECT_FALSE(isValidHeaderField("x-id", "a\r\nb"));
  EXPECT_FALSE(isValidHeaderField("", "a"));
}

TEST(CriMetricsTest, MethodLabelIsShortForCriAndBoundedForJunk) {
  EXPECT_EQ(callMetricMethod("/runtime.v1.RuntimeService/Version"), "Version");
  EXPECT_EQ(callMetricMethod("/runtime.v1.ImageService/PullImage"), "PullImage");
  EXPECT_EQ(callMetricMethod("/other.Service/Call"), "/other.Service/Call");
  EXPECT_EQ(callMetricMethod("/runtime.v1.RuntimeService/"), "invalid");
  EXPECT_EQ(callMetricMethod("no-slash"), "invalid");
  EXPECT_EQ(callMetricMethod("/a/b\xff"), "invalid");
  EXPECT_EQ(callMetricMethod("/" + std::string(200, 'a') + "/b"), "invalid");

  auto& counter = criMetrics().calls_total.counter({"Version", "NOT_FOUND"});
  const uint64_t before = counter.value();
  recordCall("/runtime.v1.RuntimeService/Version", absl::StatusCode::kNotFound);
  EXPECT_EQ(counter.value(), before + 1);
  EXPECT_NE(stats::registry().renderPrometheus().find(
                "crisp_cri_calls_total{method=\"Version\",code=\"NOT_FOUND\"}"),
            std::string::npos);
}

}  // namespace
}  // namespace crisp::cri
