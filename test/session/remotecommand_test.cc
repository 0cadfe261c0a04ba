#include "source/session/remotecommand.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace crisp::session {
namespace {

using V = RemoteCommandVersion;

ExecSpec execSpec(std::vector<std::string> command, bool tty, bool in, bool out, bool err) {
  ExecSpec spec;
  spec.operation = Operation::kExec;
  spec.container_id = "ctr";
  spec.command = std::move(command);
  spec.tty = tty;
  spec.stdin = in;
  spec.stdout = out;
  spec.stderr = err;
  return spec;
}

ExecSpec attachSpec() {
  ExecSpec spec = execSpec({}, false, true, true, true);
  spec.operation = Operation::kAttach;
  return spec;
}

TEST(RemoteCommandTest, ProtocolTokensRoundTrip) {
  EXPECT_STREQ(remoteCommandProtocol(V::kV1), "channel.k8s.io");
  EXPECT_STREQ(remoteCommandProtocol(V::kV2), "v2.channel.k8s.io");
  EXPECT_STREQ(remoteCommandProtocol(V::kV3), "v3.channel.k8s.io");
  EXPECT_STREQ(remoteCommandProtocol(V::kV4), "v4.channel.k8s.io");
  EXPECT_STREQ(remoteCommandProtocol(V::kV5), "v5.channel.k8s.io");
  for (auto v : {V::kV1, V::kV2, V::kV3, V::kV4, V::kV5}) {
    EXPECT_EQ(parseRemoteCommandProtocol(remoteCommandProtocol(v)), v);
  }
  EXPECT_FALSE(parseRemoteCommandProtocol("portforward.k8s.io").has_value());
  EXPECT_FALSE(parseRemoteCommandProtocol("V4.channel.k8s.io").has_value());
  EXPECT_FALSE(parseRemoteCommandProtocol("").has_value());
}

TEST(RemoteCommandTest, StreamTypesParseIgnoringCase) {
  EXPECT_EQ(parseStreamType("error"), StreamType::kError);
  EXPECT_EQ(parseStreamType("STDIN"), StreamType::kStdin);
  EXPECT_EQ(parseStreamType("StdOut"), StreamType::kStdout);
  EXPECT_EQ(parseStreamType("stderr"), StreamType::kStderr);
  EXPECT_EQ(parseStreamType("Resize"), StreamType::kResize);
  EXPECT_FALSE(parseStreamType("data").has_value());
  EXPECT_FALSE(parseStreamType("").has_value());
  EXPECT_FALSE(parseStreamType("stdout ").has_value());
  EXPECT_FALSE(parseStreamType("stdou").has_value());
}

TEST(RemoteCommandTest, ExpectedStreamsWithoutTty) {
  const auto all = execSpec({"ls"}, false, true, true, true);
  for (auto v : {V::kV1, V::kV2, V::kV3, V::kV4, V::kV5}) {
    EXPECT_EQ(expectedStreams(v, all).toString(), "error,stdin,stdout,stderr");
    EXPECT_EQ(expectedStreams(v, all).size(), 4u);
  }
  EXPECT_EQ(expectedStreams(V::kV4, execSpec({"ls"}, false, false, true, false)).toString(),
            "error,stdout");
  EXPECT_EQ(expectedStreams(V::kV4, execSpec({"ls"}, false, false, false, true)).toString(),
            "error,stderr");
  EXPECT_EQ(expectedStreams(V::kV4, execSpec({"ls"}, false, true, false, false)).toString(),
            "error,stdin");
}

TEST(RemoteCommandTest, TtyDropsStderrAndAddsResizeFromV3) {
  const auto tty = execSpec({"sh"}, true, true, true, true);
  EXPECT_EQ(expectedStreams(V::kV1, tty).toString(), "error,stdin,stdout");
  EXPECT_EQ(expectedStreams(V::kV2, tty).toString(), "error,stdin,stdout");
  EXPECT_EQ(expectedStreams(V::kV3, tty).toString(), "error,stdin,stdout,resize");
  EXPECT_EQ(expectedStreams(V::kV4, tty).toString(), "error,stdin,stdout,resize");
  EXPECT_EQ(expectedStreams(V::kV5, tty).toString(), "error,stdin,stdout,resize");
  EXPECT_FALSE(expectedStreams(V::kV4, tty).contains(StreamType::kStderr));
}

TEST(RemoteCommandTest, StreamSetOperations) {
  StreamSet a;
  EXPECT_TRUE(a.empty());
  a.add(StreamType::kStdout);
  a.add(StreamType::kError);
  a.add(StreamType::kError);
  EXPECT_EQ(a.size(), 2u);
  StreamSet b;
  b.add(StreamType::kError);
  EXPECT_TRUE(a.containsAll(b));
  EXPECT_FALSE(b.containsAll(a));
  b.add(StreamType::kStdout);
  EXPECT_EQ(a, b);
  b.remove(StreamType::kStdout);
  EXPECT_NE(a, b);
  EXPECT_EQ(b.toString(), "error");
}

TEST(RemoteCommandTest, V4SuccessIsExactJson) {
  const auto spec = execSpec({"true"}, false, false, true, true);
  EXPECT_EQ(errorStreamPayload(V::kV4, spec, ExitStatus::success()),
            R"({"metadata":{},"status":"Success"})");
  EXPECT_EQ(errorStreamPayload(V::kV4, spec, ExitStatus::exited(0)),
            R"({"metadata":{},"status":"Success"})");
  EXPECT_EQ(errorStreamPayload(V::kV5, spec, ExitStatus::success()),
            R"({"metadata":{},"status":"Success"})");
}

TEST(RemoteCommandTest, V4NonZeroExitIsExactJson) {
  const auto spec = execSpec({"sh", "-c", "exit 3"}, false, true, true, true);
  EXPECT_EQ(
      errorStreamPayload(V::kV4, spec, ExitStatus::exited(3)),
      R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: )"
      R"(error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode",)"
      R"("details":{"causes":[{"reason":"ExitCode","message":"3"}]}})");
  const auto five = execSpec({"sh", "-c", "exit 5"}, false, false, true, true);
  EXPECT_EQ(
      errorStreamPayload(V::kV5, five, ExitStatus::exited(5)),
      R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: )"
      R"(error executing command [sh -c exit 5], exit code 5","reason":"NonZeroExitCode",)"
      R"("details":{"causes":[{"reason":"ExitCode","message":"5"}]}})");
}

TEST(RemoteCommandTest, ExitCodesUpTo255CarriedUnchanged) {
  const auto spec = execSpec({"sh", "-c", "kill -9 $$"}, false, false, true, true);
  for (int code : {1, 126, 127, 137, 255}) {
    const std::string payload = errorStreamPayload(V::kV4, spec, ExitStatus::exited(code));
    const std::string cause =
        R"("causes":[{"reason":"ExitCode","message":")" + std::to_string(code) + R"("}])";
    EXPECT_NE(payload.find(cause), std::string::npos) << payload;
    EXPECT_NE(payload.find(R"("reason":"NonZeroExitCode")"), std::string::npos) << payload;
  }
}

TEST(RemoteCommandTest, ExitCodeOutsideByteIsInternalError) {
  const auto spec = execSpec({"x"}, false, false, true, false);
  EXPECT_EQ(errorStreamPayload(V::kV4, spec,
                               ExitStatus{ExitStatus::Kind::kNonZeroExit, 256, "", "", 0}),
            R"({"metadata":{},"status":"Failure","message":"Internal error occurred: error )"
            R"(executing command in container: process exited with code 256","reason":)"
            R"("InternalError","details":{"causes":[{"message":"error executing command in )"
            R"(container: process exited with code 256"}]},"code":500})");
  const std::string negative =
      errorStreamPayload(V::kV4, spec, ExitStatus{ExitStatus::Kind::kNonZeroExit, -1, "", "", 0});
  EXPECT_NE(negative.find(R"("reason":"InternalError")"), std::string::npos) << negative;
}

// A session crisp ends (shutdown, idle timeout) is a Failure the client shows
// as it stands, for exec and attach alike; v1-v3 get the text alone.
TEST(RemoteCommandTest, EndedByServerIsAFailureWithItsOwnReason) {
  const ExitStatus status =
      ExitStatus::endedByServer("crisp is shutting down", "ServiceUnavailable", 503);
  for (auto op : {session::Operation::kExec, session::Operation::kAttach}) {
    auto spec = execSpec({"sh"}, true, true, true, false);
    spec.operation = op;
    EXPECT_EQ(errorStreamPayload(V::kV4, spec, status),
              R"({"metadata":{},"status":"Failure","message":"crisp is shutting down",)"
              R"("reason":"ServiceUnavailable","details":{"causes":[{"message":)"
              R"("crisp is shutting down"}]},"code":503})");
    EXPECT_EQ(errorStreamPayload(V::kV2, spec, status), "crisp is shutting down");
  }
}

TEST(RemoteCommandTest, BackendTextReplacesDefaultExitText) {
  const auto spec = execSpec({"x"}, false, false, true, false);
  ExitStatus status{ExitStatus::Kind::kNonZeroExit, 2, "exec failed: <no> & \"so\"", "", 0};
  EXPECT_EQ(nonZeroExitMessage(spec, status),
            "command terminated with non-zero exit code: exec failed: <no> & \"so\"");
  EXPECT_EQ(errorStreamPayload(V::kV4, spec, status),
            R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero )"
            R"(exit code: exec failed: \u003cno\u003e \u0026 \"so\"","reason":"NonZeroExitCode",)"
            R"("details":{"causes":[{"reason":"ExitCode","message":"2"}]}})");
}

TEST(RemoteCommandTest, V4ExecInternalErrorIsExactJson) {
  const auto spec = execSpec({"/no/such/binary"}, false, false, true, true);
  EXPECT_EQ(
      errorStreamPayload(V::kV4, spec, ExitStatus::error("exec: \"/no/such/binary\": not found")),
      R"({"metadata":{},"status":"Failure","message":"Internal error occurred: error )"
      R"(executing command in container: exec: \"/no/such/binary\": not found",)"
      R"("reason":"InternalError","details":{"causes":[{"message":"error executing )"
      R"(command in container: exec: \"/no/such/binary\": not found"}]},"code":500})");
}

TEST(RemoteCommandTest, V4AttachInternalErrorUsesAttachPrefix) {
  EXPECT_EQ(errorStreamPayload(V::kV4, attachSpec(), ExitStatus::error("container is gone")),
            R"({"metadata":{},"status":"Failure","message":"Internal error occurred: error )"
            R"(attaching to container: container is gone","reason":"InternalError","details":)"
            R"({"causes":[{"message":"error attaching to container: container is gone"}]},)"
            R"("code":500})");
}

TEST(RemoteCommandTest, AttachNeverReportsExitCode) {
  EXPECT_EQ(errorStreamPayload(V::kV4, attachSpec(), ExitStatus::exited(7)),
            R"({"metadata":{},"status":"Success"})");
  EXPECT_EQ(errorStreamPayload(V::kV2, attachSpec(), ExitStatus::exited(7)), "");
}

TEST(RemoteCommandTest, PreV4IsPlainTextOnFailureOnly) {
  const auto spec = execSpec({"sh", "-c", "exit 3"}, false, true, true, true);
  for (auto v : {V::kV1, V::kV2, V::kV3}) {
    EXPECT_EQ(errorStreamPayload(v, spec, ExitStatus::success()), "");
    EXPECT_EQ(errorStreamPayload(v, spec, ExitStatus::exited(3)),
              "command terminated with non-zero exit code: error executing command "
              "[sh -c exit 3], exit code 3");
    EXPECT_EQ(errorStreamPayload(v, spec, ExitStatus::error("no <such> file")),
              "Internal error occurred: error executing command in container: no <such> file");
  }
}

std::string jsonString(std::string_view s) {
  std::string out;
  appendJsonString(out, s);
  return out;
}

TEST(RemoteCommandTest, JsonStringEscapesLikeGo) {
  EXPECT_EQ(jsonString(""), R"("")");
  EXPECT_EQ(jsonString("plain text 123 /:"), R"("plain text 123 /:")");
  EXPECT_EQ(jsonString("\"quoted\" back\\slash"), R"("\"quoted\" back\\slash")");
  EXPECT_EQ(jsonString("<a href='x'>&amp;</a>"),
            R"("\u003ca href='x'\u003e\u0026amp;\u003c/a\u003e")");
  EXPECT_EQ(jsonString("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(jsonString(std::string("\x00\x01\x1f\x7f", 4)), "\"\\u0000\\u0001\\u001f\x7f\"");
  EXPECT_EQ(jsonString("\x1b[0m"), R"("\u001b[0m")");
}

TEST(RemoteCommandTest, JsonStringKeepsValidUtf8AndReplacesInvalidBytes) {
  EXPECT_EQ(jsonString("caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac"),
            "\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac\"");
  // U+2028 and U+2029 are escaped; U+2027 is not.
  EXPECT_EQ(jsonString("a\xe2\x80\xa8"
                       "b\xe2\x80\xa9"
                       "c\xe2\x80\xa7"),
            "\"a\\u2028b\\u2029c\xe2\x80\xa7\"");
  EXPECT_EQ(jsonString("\xff"), R"("\ufffd")");
  // Overlong encoding of '/', a surrogate, a truncated sequence, a lone
  // continuation byte, a code point above U+10FFFF: one replacement per byte.
  EXPECT_EQ(jsonString("\xc0\xaf"), R"("\ufffd\ufffd")");
  EXPECT_EQ(jsonString("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");
  EXPECT_EQ(jsonString("x\xe2\x82"), R"("x\ufffd\ufffd")");
  EXPECT_EQ(jsonString("\x80"), R"("\ufffd")");
  EXPECT_EQ(jsonString("\xf4\x90\x80\x80"), R"("\ufffd\ufffd\ufffd\ufffd")");
  EXPECT_EQ(jsonString("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\"");
}

// Feeds `input` in the chunking given and collects the decoded sizes; returns
// the first error status seen.
struct DecodeResult {
  std::vector<TerminalSize> sizes;
  absl::Status status;
};

DecodeResult decodeChunks(const std::vector<std::string>& chunks, size_t max = 4096) {
  ResizeDecoder decoder(max);
  DecodeResult result;
  for (const auto& chunk : chunks) {
    absl::Status s = decoder.feed(chunk, [&](TerminalSize t) { result.sizes.push_back(t); });
    if (!s.ok() && result.status.ok()) {
      result.status = s;
    }
  }
  return result;
}

std::vector<DecodeResult> decodeAllWays(const std::string& input) {
  std::vector<DecodeResult> out;
  out.push_back(decodeChunks({input}));
  std::vector<std::string> bytes;
  for (char c : input) {
    bytes.emplace_back(1, c);
  }
  out.push_back(decodeChunks(bytes));
  for (uint32_t seed : {1u, 7u, 42u, 1234u}) {
    std::mt19937 rng(seed);
    std::vector<std::string> chunks;
    size_t pos = 0;
    while (pos < input.size()) {
      const size_t n = std::uniform_int_distribution<size_t>(1, 9)(rng);
      chunks.push_back(input.substr(pos, n));
      pos += n;
    }
    out.push_back(decodeChunks(chunks));
  }
  return out;
}

TerminalSize ts(uint16_t w, uint16_t h) { return TerminalSize{w, h}; }

TEST(ResizeDecoderTest, DecodesEncoderOutputInAnyChunking) {
  const std::string input =
      "{\"Width\":80,\"Height\":24}\n{\"Width\":120,\"Height\":40}\n{\"Width\":1,\"Height\":1}\n";
  for (const auto& r : decodeAllWays(input)) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    ASSERT_EQ(r.sizes.size(), 3u);
    EXPECT_EQ(r.sizes[0], ts(80, 24));
    EXPECT_EQ(r.sizes[1], ts(120, 40));
    EXPECT_EQ(r.sizes[2], ts(1, 1));
  }
}

TEST(ResizeDecoderTest, ConcatenatedDocumentsAndWhitespace) {
  const std::string input =
      "  {\"Width\":80,\"Height\":24}{\"Height\":50,\"Width\":200}\r\n\t{ \"Width\" : 10 , "
      "\"Height\" : 20 }   ";
  for (const auto& r : decodeAllWays(input)) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    ASSERT_EQ(r.sizes.size(), 3u);
    EXPECT_EQ(r.sizes[0], ts(80, 24));
    EXPECT_EQ(r.sizes[1], ts(200, 50));
    EXPECT_EQ(r.sizes[2], ts(10, 20));
  }
}

TEST(ResizeDecoderTest, FieldNamesIgnoreCaseAndEscapesAndUnknownFieldsAreSkipped) {
  const std::string input =
      R"({"width":81,"HEIGHT":25})"
      R"({"W\u0069dth":82,"Height":26,"extra":{"a":[1,2.5e3,"x\"}",true,false,null,{}]},"z":-1})"
      R"({"Width":null,"Height":9})"
      R"({"Width":7,"Width":8,"Height":9})";
  for (const auto& r : decodeAllWays(input)) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    ASSERT_EQ(r.sizes.size(), 3u);
    EXPECT_EQ(r.sizes[0], ts(81, 25));
    EXPECT_EQ(r.sizes[1], ts(82, 26));
    // {"Width":null,...} leaves the width 0: consumed, not reported.
    EXPECT_EQ(r.sizes[2], ts(8, 9));
  }
}

TEST(ResizeDecoderTest, ZeroSizesAndNullDocumentsAreNotReported) {
  const std::string input =
      "{}\nnull\n{\"Width\":0,\"Height\":24}\n{\"Width\":65535,\"Height\":1}\n";
  for (const auto& r : decodeAllWays(input)) {
    EXPECT_TRUE(r.status.ok()) << r.status;
    ASSERT_EQ(r.sizes.size(), 1u);
    EXPECT_EQ(r.sizes[0], ts(65535, 1));
  }
}

TEST(ResizeDecoderTest, StopsAtFirstBadDocument) {
  const std::vector<std::string> bad_documents = {
      R"({"Width":"80","Height":24})",  // string, not a number
      R"({"Width":-1,"Height":24})",
      R"({"Width":80.0,"Height":24})",
      R"({"Width":8e1,"Height":24})",
      R"({"Width":65536,"Height":24})",
      R"({"Width":true,"Height":24})",
      R"({"Width":{},"Height":24})",
      R"({"Width":80 "Height":24})",
      R"({"Width":080,"Height":24})",
      R"({Width:80})",
      R"({"Width":80,})",
      R"({"a":[1,],"Width":80})",
      R"({"a":[,1],"Width":80})",
      R"({"a":[1 2],"Width":80})",
      R"({"a":{"b":1,},"Width":80})",
      R"({"a":{"b" 1},"Width":80})",
      R"({"a":"\x"})",
      "{\"a\":\"tab\there\"}",
      R"([{"Width":80,"Height":24}])",
      R"("text")",
      "42 ",
      "nulL",
      "}",
  };
  for (const auto& bad : bad_documents) {
    const std::string input =
        "{\"Width\":80,\"Height\":24}\n" + bad + "\n{\"Width\":100,\"Height\":50}\n";
    for (const auto& r : decodeAllWays(input)) {
      EXPECT_FALSE(r.status.ok()) << bad;
      ASSERT_EQ(r.sizes.size(), 1u) << bad;
      EXPECT_EQ(r.sizes[0], ts(80, 24)) << bad;
    }
  }
}

TEST(ResizeDecoderTest, FeedAfterFailureIsIgnored) {
  ResizeDecoder decoder;
  std::vector<TerminalSize> sizes;
  auto on = [&](TerminalSize t) { sizes.push_back(t); };
  EXPECT_TRUE(decoder.feed("{\"Width\":80,", on).ok());
  EXPECT_EQ(decoder.bufferedBytes(), 12u);
  EXPECT_FALSE(decoder.feed("\"Height\":x}", on).ok());
  EXPECT_TRUE(decoder.failed());
  EXPECT_EQ(decoder.bufferedBytes(), 0u);
  EXPECT_TRUE(decoder.feed("{\"Width\":80,\"Height\":24}", on).ok());
  EXPECT_TRUE(sizes.empty());
}

TEST(ResizeDecoderTest, IncompleteDocumentWaitsForMoreInput) {
  ResizeDecoder decoder;
  std::vector<TerminalSize> sizes;
  auto on = [&](TerminalSize t) { sizes.push_back(t); };
  // "24" might continue ("240"), so the document is complete only at '}'.
  EXPECT_TRUE(decoder.feed("{\"Width\":80,\"Height\":24", on).ok());
  EXPECT_TRUE(sizes.empty());
  EXPECT_TRUE(decoder.feed("0}", on).ok());
  ASSERT_EQ(sizes.size(), 1u);
  EXPECT_EQ(sizes[0], ts(80, 240));
  EXPECT_FALSE(decoder.failed());
}

TEST(ResizeDecoderTest, BufferIsBounded) {
  // A document within the bound is fine, one byte past it fails.
  const std::string head = "{\"Width\":80,\"Height\":24,\"pad\":\"";
  const std::string tail = "\"}";
  const size_t max = 256;
  const std::string fits = head + std::string(max - head.size() - tail.size(), 'x') + tail;
  ASSERT_EQ(fits.size(), max);
  auto ok = decodeChunks({fits.substr(0, 100), fits.substr(100)}, max);
  EXPECT_TRUE(ok.status.ok()) << ok.status;
  ASSERT_EQ(ok.sizes.size(), 1u);

  const std::string too_big = head + std::string(max - head.size() - tail.size() + 1, 'x') + tail;
  auto bad = decodeChunks({too_big.substr(0, 100), too_big.substr(100)}, max);
  EXPECT_FALSE(bad.status.ok());
  EXPECT_TRUE(bad.sizes.empty());

  // A never-ending document is cut off at the bound, fed however.
  ResizeDecoder decoder(max);
  absl::Status status;
  size_t fed = 0;
  for (int i = 0; i < 1000 && status.ok(); ++i) {
    status = decoder.feed(i == 0 ? "{\"a\":\"" : "yyyyyyyy", [](TerminalSize) {});
    fed += 8;
    EXPECT_LE(decoder.bufferedBytes(), max + 1);
  }
  EXPECT_FALSE(status.ok());
  EXPECT_LE(fed, max + 16);
}

TEST(ResizeDecoderTest, DeepNestingFails) {
  std::string deep = "{\"a\":";
  for (int i = 0; i < ResizeDecoder::kMaxDepth + 1; ++i) {
    deep += "[";
  }
  auto r = decodeChunks({deep});
  EXPECT_FALSE(r.status.ok());
  std::string shallow = "{\"a\":[[[[1]]]],\"Width\":3,\"Height\":4}";
  auto r2 = decodeChunks({shallow});
  EXPECT_TRUE(r2.status.ok()) << r2.status;
  ASSERT_EQ(r2.sizes.size(), 1u);
  EXPECT_EQ(r2.sizes[0], ts(3, 4));
}

TEST(SessionMetricsTest, FamiliesAreRegisteredOnce) {
  auto& m = SessionMetrics::get();
  EXPECT_EQ(&m, &SessionMetrics::get());
  EXPECT_EQ(m.sessions_active.name(), "crisp_sessions_active");
  EXPECT_EQ(m.sessions_active.kind(), stats::Kind::kGauge);
  EXPECT_EQ(m.sessions_total.name(), "crisp_sessions_total");
  EXPECT_EQ(m.session_bytes_total.name(), "crisp_session_bytes_total");
  EXPECT_EQ(m.session_timeouts_total.name(), "crisp_session_timeouts_total");
  const uint64_t before = m.bytes_in.value();
  m.bytes_in.inc(5);
  EXPECT_EQ(m.session_bytes_total.counter({"in"}).value(), before + 5);
  m.creation_timeouts.inc();
  const std::string text = stats::registry().renderPrometheus();
  EXPECT_NE(text.find("crisp_session_timeouts_total{kind=\"creation\"}"), std::string::npos)
      << text;
}

}  // namespace
}  // namespace crisp::session
