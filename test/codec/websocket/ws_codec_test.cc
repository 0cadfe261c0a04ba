#include "source/codec/websocket/ws_codec.h"

#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test/codec/websocket/ws_test_util.h"

namespace crisp::websocket {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;
using namespace ::crisp::websocket::testing;  // NOLINT(build/namespaces)

std::unique_ptr<Codec> makeCodec(CodecCallbacks& callbacks, CodecOptions options = {}) {
  absl::StatusOr<std::unique_ptr<Codec>> codec = Codec::create(options, callbacks);
  EXPECT_TRUE(codec.ok()) << codec.status();
  return std::move(*codec);
}

std::vector<ParsedFrame> outputFrames(Codec& codec) {
  std::optional<std::vector<ParsedFrame>> frames = parseFrames(codec.output().toString());
  EXPECT_TRUE(frames.has_value()) << "output ends inside a frame";
  return frames.value_or(std::vector<ParsedFrame>{});
}

std::string pattern(size_t n, uint32_t seed) {
  std::mt19937 engine(seed);
  std::string out(n, '\0');
  for (char& c : out) {
    c = static_cast<char>(engine());
  }
  return out;
}

// Decoding tests run under every feed mode: whole, byte by byte, seeded
// random chunks.
class WsCodecFeedTest : public ::testing::TestWithParam<FeedMode> {
 protected:
  RecordingCallbacks callbacks_;
  Buffer input_;
};

INSTANTIATE_TEST_SUITE_P(AllModes, WsCodecFeedTest, ::testing::ValuesIn(allFeedModes()),
                         [](const auto& info) { return feedModeName(info.param); });

TEST_P(WsCodecFeedTest, DecodesMaskedMessagesOfEveryLengthForm) {
  auto codec = makeCodec(callbacks_);
  // Around the unmasking loop's 64- and 8-byte steps as well.
  const std::vector<size_t> sizes = {0,  1,  7,  8,   9,   15,    16,    17,
                                     63, 64, 65, 125, 126, 65535, 65536, 70000};
  std::string wire = clientFrame(kOpText, "hello");
  std::vector<Event> expected = {message(MessageType::kText, "hello")};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::string payload = pattern(sizes[i], static_cast<uint32_t>(i));
    wire += clientFrame(kOpBinary, payload);
    expected.push_back(message(MessageType::kBinary, payload));
  }
  ASSERT_TRUE(feed(*codec, input_, wire, GetParam()).ok());
  EXPECT_EQ(callbacks_.events, expected);
  EXPECT_TRUE(input_.empty());
  EXPECT_TRUE(codec->output().empty());
  EXPECT_FALSE(codec->closed());
}

TEST_P(WsCodecFeedTest, ReassemblesFragmentsWithControlFramesBetween) {
  auto codec = makeCodec(callbacks_);
  const std::string wire =
      clientFrame(kOpText, "Hel", false) + clientFrame(kOpPing, "p1") +
      clientFrame(kOpContinuation, "lo ", false) + clientFrame(kOpPong, "x") +
      clientFrame(kOpContinuation, "", false) + clientFrame(kOpContinuation, "world") +
      clientFrame(kOpBinary, "\x01\x02", false) + clientFrame(kOpContinuation, "\x03");
  ASSERT_TRUE(feed(*codec, input_, wire, GetParam()).ok());
  EXPECT_THAT(callbacks_.events,
              ElementsAre(ping("p1"), pong("x"), message(MessageType::kText, "Hello world"),
                          message(MessageType::kBinary, "\x01\x02\x03")));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].opcode, kOpPong);
  EXPECT_EQ(out[0].payload, "p1");
}

TEST_P(WsCodecFeedTest, KeepsTheOrderOfBinaryFragmentsControlFramesAndText) {
  auto codec = makeCodec(callbacks_);
  const std::string big = pattern(70001, 7);
  const std::string wire =
      clientFrame(kOpPing, "p1") + clientFrame(kOpBinary, big.substr(0, 30000), false) +
      clientFrame(kOpPing, "p2") + clientFrame(kOpContinuation, big.substr(30000, 1), false) +
      clientFrame(kOpPong, "x") + clientFrame(kOpContinuation, big.substr(30001)) +
      clientFrame(kOpText, "t") + clientFrame(kOpBinary, "") + clientFrame(kOpPing, "p3");
  ASSERT_TRUE(feed(*codec, input_, wire, GetParam()).ok());
  EXPECT_THAT(callbacks_.events,
              ElementsAre(ping("p1"), ping("p2"), pong("x"), message(MessageType::kBinary, big),
                          message(MessageType::kText, "t"), message(MessageType::kBinary, ""),
                          ping("p3")));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].payload, "p1");
  EXPECT_EQ(out[1].payload, "p2");
  EXPECT_EQ(out[2].payload, "p3");
  EXPECT_TRUE(input_.empty());
}

TEST_P(WsCodecFeedTest, AnswersEachPingWithAnUnmaskedPong) {
  auto codec = makeCodec(callbacks_);
  const std::string wire = clientFrame(kOpPing, "abc") + clientFrame(kOpPing, "") +
                           clientFrame(kOpPing, std::string(125, 'z'));
  ASSERT_TRUE(feed(*codec, input_, wire, GetParam()).ok());
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 3u);
  for (const ParsedFrame& f : out) {
    EXPECT_TRUE(f.fin);
    EXPECT_FALSE(f.masked);
    EXPECT_EQ(f.opcode, kOpPong);
  }
  EXPECT_EQ(out[0].payload, "abc");
  EXPECT_EQ(out[1].payload, "");
  EXPECT_EQ(out[2].payload, std::string(125, 'z'));
}

TEST_P(WsCodecFeedTest, ClientCloseIsEchoedAndLaterInputIgnored) {
  auto codec = makeCodec(callbacks_);
  const std::string wire = clientFrame(kOpBinary, "last") +
                           clientFrame(kOpClose, closePayload(1000, "bye")) +
                           clientFrame(kOpBinary, "after close") + "\x81garbage";
  ASSERT_TRUE(feed(*codec, input_, wire, GetParam()).ok());
  EXPECT_THAT(callbacks_.events,
              ElementsAre(message(MessageType::kBinary, "last"), closeEvent(1000, "bye")));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].opcode, kOpClose);
  EXPECT_FALSE(out[0].masked);
  EXPECT_EQ(out[0].closeCode(), 1000);
  EXPECT_EQ(out[0].closeReason(), "bye");
  EXPECT_TRUE(codec->closeReceived());
  EXPECT_TRUE(codec->closeSent());
  EXPECT_TRUE(codec->closed());
  EXPECT_EQ(codec->closeCodeReceived(), 1000);
  EXPECT_EQ(codec->closeCodeSent(), 1000);
  EXPECT_TRUE(input_.empty());

  input_.add(clientFrame(kOpBinary, "more"));
  EXPECT_TRUE(codec->dispatch(input_).ok());
  EXPECT_EQ(callbacks_.events.size(), 2u);
  EXPECT_TRUE(codec->output().empty());
  const absl::Status send = codec->sendMessage(MessageType::kBinary, "x");
  EXPECT_EQ(send.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(send.message()), StartsWith("ws.closed"));
}

TEST_P(WsCodecFeedTest, CloseWithoutCodeIsReportedAs1005) {
  auto codec = makeCodec(callbacks_);
  ASSERT_TRUE(feed(*codec, input_, clientFrame(kOpClose, ""), GetParam()).ok());
  EXPECT_THAT(callbacks_.events, ElementsAre(closeEvent(kCloseNoStatus, "")));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].opcode, kOpClose);
  EXPECT_EQ(out[0].payload, "");
  EXPECT_EQ(codec->closeCodeReceived(), kCloseNoStatus);
  EXPECT_TRUE(codec->closed());
}

// wslay checks a close reason's UTF-8 per received chunk; the codec hands it
// close frames whole, so a multi-byte reason passes however TCP split it.
TEST_P(WsCodecFeedTest, CloseReasonWithMultibyteUtf8PassesUnderAnySplit) {
  auto codec = makeCodec(callbacks_);
  const std::string reason = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 done";
  ASSERT_TRUE(
      feed(*codec, input_, clientFrame(kOpClose, closePayload(4000, reason)), GetParam()).ok());
  EXPECT_THAT(callbacks_.events, ElementsAre(closeEvent(4000, reason)));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].closeCode(), 4000);
}

TEST_P(WsCodecFeedTest, ValidMultibyteTextSplitAcrossFragments) {
  auto codec = makeCodec(callbacks_);
  // "é€" split inside both characters.
  const std::string wire = clientFrame(kOpText, "\xC3", false) +
                           clientFrame(kOpContinuation, "\xA9\xE2\x82", false) +
                           clientFrame(kOpContinuation, "\xAC");
  ASSERT_TRUE(feed(*codec, input_, wire, GetParam()).ok());
  EXPECT_THAT(callbacks_.events, ElementsAre(message(MessageType::kText, "\xC3\xA9\xE2\x82\xAC")));
}

TEST_P(WsCodecFeedTest, UnmaskedClientFrameFailsWith1002) {
  auto codec = makeCodec(callbacks_);
  FrameSpec unmasked;
  unmasked.opcode = kOpText;
  unmasked.payload = "bad";
  unmasked.masked = false;
  const std::string wire = clientFrame(kOpBinary, "ok") + buildFrame(unmasked);
  const absl::Status status = feed(*codec, input_, wire, GetParam());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("ws.unmasked_client_frame"));
  EXPECT_THAT(callbacks_.events, ElementsAre(message(MessageType::kBinary, "ok")));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].opcode, kOpClose);
  EXPECT_EQ(out[0].closeCode(), kCloseProtocolError);
  EXPECT_EQ(out[0].closeReason(), "ws.unmasked_client_frame");
  EXPECT_TRUE(codec->closed());
  EXPECT_FALSE(codec->closeReceived());
  // Sticky: later calls return the same error and write nothing.
  input_.add(clientFrame(kOpBinary, "more"));
  EXPECT_EQ(codec->dispatch(input_), status);
  EXPECT_EQ(codec->sendMessage(MessageType::kBinary, "x"), status);
  EXPECT_TRUE(codec->output().empty());
}

TEST_P(WsCodecFeedTest, OversizedSingleFrameFailsWith1009BeforeBuffering) {
  CodecOptions options;
  options.max_message_bytes = 1024;
  auto codec = makeCodec(callbacks_, options);
  // Only the header of the big frame is sent: the limit is checked on it.
  const std::string big = clientFrame(kOpBinary, std::string(1025, 'b'));
  const std::string wire = clientFrame(kOpBinary, std::string(1024, 'a')) + big.substr(0, 8);
  const absl::Status status = feed(*codec, input_, wire, GetParam());
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), StartsWith("ws.message_too_big"));
  EXPECT_THAT(callbacks_.events,
              ElementsAre(message(MessageType::kBinary, std::string(1024, 'a'))));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].closeCode(), kCloseMessageTooBig);
}

TEST_P(WsCodecFeedTest, OversizedFragmentedMessageFailsWith1009) {
  CodecOptions options;
  options.max_message_bytes = 1024;
  auto codec = makeCodec(callbacks_, options);
  const std::string wire = clientFrame(kOpText, std::string(600, 'a'), false) +
                           clientFrame(kOpPing, "in between") +
                           clientFrame(kOpContinuation, std::string(424, 'b'), false) +
                           clientFrame(kOpContinuation, "c");
  const absl::Status status = feed(*codec, input_, wire, GetParam());
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(status.message()), HasSubstr("1025"));
  EXPECT_THAT(callbacks_.events, ElementsAre(ping("in between")));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].opcode, kOpPong);
  EXPECT_EQ(out[1].closeCode(), kCloseMessageTooBig);
}

TEST_P(WsCodecFeedTest, InvalidUtf8TextFailsWith1007) {
  auto codec = makeCodec(callbacks_);
  const std::string wire = clientFrame(kOpText, "fine") + clientFrame(kOpText, "a\xC3\x28z");
  const absl::Status status = feed(*codec, input_, wire, GetParam());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("ws.invalid_utf8"));
  EXPECT_THAT(callbacks_.events, ElementsAre(message(MessageType::kText, "fine")));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].closeCode(), kCloseInvalidPayload);
}

TEST_P(WsCodecFeedTest, TruncatedUtf8AtMessageEndFailsWith1007) {
  auto codec = makeCodec(callbacks_);
  const std::string wire =
      clientFrame(kOpText, "ok\xE2", false) + clientFrame(kOpContinuation, "\x82");
  const absl::Status status = feed(*codec, input_, wire, GetParam());
  EXPECT_THAT(std::string(status.message()), StartsWith("ws.invalid_utf8"));
  EXPECT_THAT(callbacks_.events, IsEmpty());
}

struct MalformedCase {
  std::string name;
  std::string wire;
  std::string reason;
  uint16_t code;
};

void PrintTo(const MalformedCase& c, std::ostream* os) { *os << c.name; }

std::vector<MalformedCase> malformedCases() {
  std::vector<MalformedCase> out;
  auto add = [&out](std::string name, FrameSpec spec, std::string reason, uint16_t code) {
    out.push_back({std::move(name), buildFrame(spec), std::move(reason), code});
  };
  FrameSpec rsv;
  rsv.rsv = 4;
  add("Rsv1", rsv, "ws.reserved_bits", 1002);
  rsv.rsv = 1;
  add("Rsv3", rsv, "ws.reserved_bits", 1002);
  FrameSpec op3;
  op3.opcode = 0x3;
  add("Opcode3", op3, "ws.unknown_opcode", 1002);
  FrameSpec opB;
  opB.opcode = 0xB;
  add("OpcodeB", opB, "ws.unknown_opcode", 1002);
  FrameSpec frag_ping;
  frag_ping.opcode = kOpPing;
  frag_ping.fin = false;
  add("FragmentedPing", frag_ping, "ws.fragmented_control_frame", 1002);
  FrameSpec long_ping;
  long_ping.opcode = kOpPing;
  long_ping.payload = std::string(126, 'p');
  add("PingOf126", long_ping, "ws.control_frame_too_long", 1002);
  FrameSpec long_close;
  long_close.opcode = kOpClose;
  long_close.payload = closePayload(1000, std::string(124, 'r'));
  add("CloseOf126", long_close, "ws.control_frame_too_long", 1002);
  FrameSpec cont;
  cont.opcode = kOpContinuation;
  add("LoneContinuation", cont, "ws.unexpected_continuation", 1002);
  FrameSpec short16;
  short16.payload = "12345";
  short16.length_bits = 16;
  add("Length5In16Bits", short16, "ws.non_minimal_length", 1002);
  FrameSpec short64;
  short64.payload = std::string(200, 'x');
  short64.length_bits = 64;
  add("Length200In64Bits", short64, "ws.non_minimal_length", 1002);
  FrameSpec msb;
  msb.length_bits = 64;
  msb.length_override = uint64_t{1} << 63;
  add("Length64Msb", msb, "ws.bad_frame_length", 1002);
  FrameSpec close1;
  close1.opcode = kOpClose;
  close1.payload = "\x03";
  add("CloseOneByte", close1, "ws.bad_close_payload", 1002);
  for (uint16_t code : {999, 1004, 1005, 1006, 1012, 1015, 2999, 5000}) {
    FrameSpec bad_code;
    bad_code.opcode = kOpClose;
    bad_code.payload = closePayload(code, "x");
    add("CloseCode" + std::to_string(code), bad_code, "ws.bad_close_code", 1002);
  }
  FrameSpec bad_reason;
  bad_reason.opcode = kOpClose;
  bad_reason.payload = closePayload(1000, "ok\xFF");
  add("CloseReasonNotUtf8", bad_reason, "ws.invalid_utf8", 1007);

  out.push_back({"DataInsideFragmentedMessage",
                 clientFrame(kOpText, "a", false) + clientFrame(kOpBinary, "b"),
                 "ws.expected_continuation", 1002});
  out.push_back({"TextInsideFragmentedMessage",
                 clientFrame(kOpBinary, "a", false) + clientFrame(kOpText, "b"),
                 "ws.expected_continuation", 1002});
  out.push_back({"ContinuationAfterFinishedMessage",
                 clientFrame(kOpText, "a") + clientFrame(kOpContinuation, "b"),
                 "ws.unexpected_continuation", 1002});
  return out;
}

class WsCodecMalformedTest : public ::testing::TestWithParam<std::tuple<MalformedCase, FeedMode>> {
};

INSTANTIATE_TEST_SUITE_P(AllCases, WsCodecMalformedTest,
                         ::testing::Combine(::testing::ValuesIn(malformedCases()),
                                            ::testing::ValuesIn(allFeedModes())),
                         [](const auto& info) {
                           return std::get<0>(info.param).name + "_" +
                                  feedModeName(std::get<1>(info.param));
                         });

TEST_P(WsCodecMalformedTest, FailsTheConnectionWithTheRightCloseCode) {
  const MalformedCase& c = std::get<0>(GetParam());
  RecordingCallbacks callbacks;
  auto codec = makeCodec(callbacks);
  Buffer input;
  const absl::Status status = feed(*codec, input, c.wire, std::get<1>(GetParam()));
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith(c.reason));
  for (const Event& e : callbacks.events) {
    EXPECT_NE(e.kind, Event::Kind::kClose) << e;
  }
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].opcode, kOpClose);
  EXPECT_EQ(out[0].closeCode(), c.code);
  EXPECT_TRUE(codec->closed());
}

TEST(WsCodecTest, ServerSendsUnmaskedFramesOfEveryLengthForm) {
  RecordingCallbacks callbacks;
  auto codec = makeCodec(callbacks);
  ASSERT_TRUE(codec->sendMessage(MessageType::kText, "hi").ok());
  ASSERT_TRUE(codec->sendMessage(MessageType::kBinary, "").ok());
  Buffer big;
  big.add(pattern(65536, 3));
  ASSERT_TRUE(codec->sendMessage(MessageType::kBinary, big).ok());
  EXPECT_TRUE(big.empty());
  ASSERT_TRUE(codec->sendMessage(MessageType::kBinary, pattern(126, 4)).ok());

  const std::string wire = codec->output().toString();
  // Exact header bytes: FIN|opcode, then the length form.
  EXPECT_EQ(wire.substr(0, 4), std::string("\x81\x02hi", 4));
  EXPECT_EQ(wire.substr(4, 2), std::string("\x82\x00", 2));
  EXPECT_EQ(wire.substr(6, 10), std::string("\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10));
  const std::optional<std::vector<ParsedFrame>> frames = parseFrames(wire);
  ASSERT_TRUE(frames.has_value());
  ASSERT_EQ(frames->size(), 4u);
  EXPECT_EQ((*frames)[2].payload, pattern(65536, 3));
  EXPECT_EQ((*frames)[3].payload, pattern(126, 4));
  EXPECT_EQ(wire.substr(6 + 10 + 65536, 4), std::string("\x82\x7E\x00\x7E", 4));
  for (const ParsedFrame& f : *frames) {
    EXPECT_FALSE(f.masked);
    EXPECT_TRUE(f.fin);
  }
}

TEST(WsCodecTest, ServerInitiatedCloseCompletesOnTheClientsReply) {
  RecordingCallbacks callbacks;
  auto codec = makeCodec(callbacks);
  ASSERT_TRUE(codec->sendClose(kCloseGoingAway, "restart").ok());
  std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].closeCode(), kCloseGoingAway);
  EXPECT_EQ(out[0].closeReason(), "restart");
  EXPECT_TRUE(codec->closeSent());
  EXPECT_FALSE(codec->closed());
  EXPECT_EQ(codec->sendMessage(MessageType::kBinary, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(codec->sendClose(kCloseNormal).code(), absl::StatusCode::kFailedPrecondition);

  // Messages still arrive until the client's close.
  Buffer input;
  input.add(clientFrame(kOpBinary, "late") + clientFrame(kOpClose, closePayload(1001)));
  ASSERT_TRUE(codec->dispatch(input).ok());
  EXPECT_THAT(callbacks.events,
              ElementsAre(message(MessageType::kBinary, "late"), closeEvent(kCloseGoingAway, "")));
  EXPECT_TRUE(codec->output().empty());  // no second close
  EXPECT_TRUE(codec->closed());
}

TEST(WsCodecTest, RefusesCloseCodesAndReasonsThatMayNotBeSent) {
  RecordingCallbacks callbacks;
  auto codec = makeCodec(callbacks);
  for (uint16_t code : {0, 999, 1004, 1005, 1006, 1012, 1015, 2000, 5000}) {
    EXPECT_EQ(codec->sendClose(code).code(), absl::StatusCode::kInvalidArgument) << code;
  }
  EXPECT_EQ(codec->sendClose(kCloseNormal, std::string(124, 'r')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(codec->output().empty());
  EXPECT_TRUE(codec->sendClose(4999, std::string(123, 'r')).ok());
  EXPECT_EQ(outputFrames(*codec).at(0).closeCode(), 4999);
}

TEST(WsCodecTest, SendsPingsUpTo125Bytes) {
  RecordingCallbacks callbacks;
  auto codec = makeCodec(callbacks);
  EXPECT_EQ(codec->sendPing(std::string(126, 'p')).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(codec->sendPing("keepalive").ok());
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].opcode, kOpPing);
  EXPECT_EQ(out[0].payload, "keepalive");
  // The peer's pong is reported.
  Buffer input;
  input.add(clientFrame(kOpPong, "keepalive"));
  ASSERT_TRUE(codec->dispatch(input).ok());
  EXPECT_THAT(callbacks.events, ElementsAre(pong("keepalive")));
}

TEST(WsCodecTest, CallbacksMaySendRepliesInOrder) {
  RecordingCallbacks callbacks;
  auto codec = makeCodec(callbacks);
  callbacks.on_message = [&codec](MessageType type, const std::string& data) {
    EXPECT_TRUE(codec->sendMessage(type, "echo:" + data).ok());
  };
  Buffer input;
  input.add(clientFrame(kOpText, "one") + clientFrame(kOpPing, "p") +
            clientFrame(kOpBinary, "two"));
  ASSERT_TRUE(codec->dispatch(input).ok());
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].payload, "echo:one");
  EXPECT_EQ(out[0].opcode, kOpText);
  EXPECT_EQ(out[1].opcode, kOpPong);
  EXPECT_EQ(out[2].payload, "echo:two");
  EXPECT_EQ(out[2].opcode, kOpBinary);
}

TEST(WsCodecTest, KeepsAnIncompleteHeaderInTheInput) {
  RecordingCallbacks callbacks;
  auto codec = makeCodec(callbacks);
  const std::string frame = clientFrame(kOpBinary, std::string(300, 'q'));
  Buffer input;
  input.add(frame.substr(0, 3));  // 16-bit length form: 8 header bytes needed
  ASSERT_TRUE(codec->dispatch(input).ok());
  EXPECT_EQ(input.length(), 3u);
  input.add(frame.substr(3));
  ASSERT_TRUE(codec->dispatch(input).ok());
  EXPECT_TRUE(input.empty());
  EXPECT_THAT(callbacks.events, ElementsAre(message(MessageType::kBinary, std::string(300, 'q'))));
}

TEST(WsCodecTest, CreateChecksOptions) {
  RecordingCallbacks callbacks;
  CodecOptions client;
  client.role = Role::kClient;
  EXPECT_EQ(Codec::create(client, callbacks).status().code(), absl::StatusCode::kInvalidArgument);
  CodecOptions zero;
  zero.max_message_bytes = 0;
  EXPECT_EQ(Codec::create(zero, callbacks).status().code(), absl::StatusCode::kInvalidArgument);
}

class WsClientTest : public ::testing::TestWithParam<FeedMode> {
 protected:
  std::unique_ptr<Codec> makeClient() {
    CodecOptions options;
    options.role = Role::kClient;
    options.random = &random_;
    return makeCodec(callbacks_, options);
  }
  FakeRandom random_{5};
  RecordingCallbacks callbacks_;
  Buffer input_;
};

INSTANTIATE_TEST_SUITE_P(AllModes, WsClientTest, ::testing::ValuesIn(allFeedModes()),
                         [](const auto& info) { return feedModeName(info.param); });

TEST_P(WsClientTest, MasksEveryFrameWithKeysFromTheRandomSource) {
  auto codec = makeClient();
  ASSERT_TRUE(codec->sendMessage(MessageType::kBinary, "payload").ok());
  ASSERT_TRUE(codec->sendPing("p").ok());
  ASSERT_TRUE(codec->sendClose(kCloseNormal, "done").ok());
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 3u);
  std::string keys;
  for (const ParsedFrame& f : out) {
    EXPECT_TRUE(f.masked);
    keys.append(reinterpret_cast<const char*>(f.mask.data()), 4);
  }
  EXPECT_EQ(keys, random_.produced);
  EXPECT_EQ(out[0].payload, "payload");
  EXPECT_EQ(out[1].payload, "p");
  EXPECT_EQ(out[2].closeCode(), kCloseNormal);
}

TEST_P(WsClientTest, MasksBufferPayloadsOfEveryLengthAndSegmentLayout) {
  auto codec = makeClient();
  RecordingCallbacks server_events;
  auto server = makeCodec(server_events);
  const std::vector<size_t> sizes = {0, 1, 3, 4, 12, 125, 126, 65535, 65536, 70001};
  std::vector<std::string> payloads;
  std::vector<Event> expected;
  for (size_t i = 0; i < sizes.size(); ++i) {
    payloads.push_back(pattern(sizes[i], static_cast<uint32_t>(40 + i)));
    expected.push_back(message(MessageType::kBinary, payloads.back()));
    // Segments of odd lengths, so the mask rotates across their boundaries.
    Buffer msg;
    for (size_t at = 0; at < payloads.back().size(); at += 1001) {
      Buffer segment;
      segment.add(payloads.back().substr(at, 1001));
      msg.move(segment);
    }
    ASSERT_TRUE(codec->sendMessage(MessageType::kBinary, msg).ok()) << sizes[i];
    EXPECT_TRUE(msg.empty());
  }
  const std::string wire = codec->output().peekString();
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), sizes.size());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_TRUE(out[i].masked);
    EXPECT_EQ(out[i].payload, payloads[i]) << sizes[i];
  }
  EXPECT_EQ(random_.produced.size(), 4 * sizes.size());
  Buffer server_in;
  ASSERT_TRUE(feed(*server, server_in, wire, GetParam()).ok());
  EXPECT_EQ(server_events.events, expected);
}

TEST_P(WsClientTest, ReadsUnmaskedServerFramesAndMasksItsPong) {
  auto codec = makeClient();
  const std::string wire = serverFrame(kOpBinary, "\x01out") + serverFrame(kOpPing, "hb");
  ASSERT_TRUE(feed(*codec, input_, wire, GetParam()).ok());
  EXPECT_THAT(callbacks_.events, ElementsAre(message(MessageType::kBinary, "\x01out"), ping("hb")));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].opcode, kOpPong);
  EXPECT_TRUE(out[0].masked);
  EXPECT_EQ(out[0].payload, "hb");
}

TEST_P(WsClientTest, MaskedServerFrameFailsWith1002) {
  auto codec = makeClient();
  const absl::Status status = feed(*codec, input_, clientFrame(kOpBinary, "x"), GetParam());
  EXPECT_THAT(std::string(status.message()), StartsWith("ws.masked_server_frame"));
  const std::vector<ParsedFrame> out = outputFrames(*codec);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].masked);
  EXPECT_EQ(out[0].closeCode(), kCloseProtocolError);
}

TEST(WsClientFailureTest, RandomSourceFailureFailsTheSend) {
  FakeRandom random;
  RecordingCallbacks callbacks;
  CodecOptions options;
  options.role = Role::kClient;
  options.random = &random;
  auto codec = makeCodec(callbacks, options);
  random.fail = true;
  const absl::Status status = codec->sendMessage(MessageType::kBinary, "x");
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(status.message()), StartsWith("ws.mask_failed"));
  EXPECT_TRUE(codec->output().empty());
  EXPECT_TRUE(codec->closed());
}

// A client-mode and a server-mode codec talking to each other: 1 MiB each
// way, then the closing handshake.
TEST(WsRoundTripTest, OneMebibyteEachWayThenClose) {
  FakeRandom random(9);
  RecordingCallbacks client_events;
  RecordingCallbacks server_events;
  CodecOptions client_options;
  client_options.role = Role::kClient;
  client_options.random = &random;
  auto client = makeCodec(client_events, client_options);
  auto server = makeCodec(server_events);
  Buffer client_in;
  Buffer server_in;
  const FeedMode chunks{FeedMode::Kind::kRandomChunks, 11};

  const std::string up = pattern(1 << 20, 21);
  const std::string down = pattern(1 << 20, 22);
  ASSERT_TRUE(client->sendMessage(MessageType::kBinary, up).ok());
  ASSERT_TRUE(pump(*client, *server, server_in, chunks).ok());
  ASSERT_EQ(server_events.events.size(), 1u);
  EXPECT_TRUE(server_events.events[0] == message(MessageType::kBinary, up));

  Buffer reply;
  reply.add(down);
  ASSERT_TRUE(server->sendMessage(MessageType::kBinary, reply).ok());
  ASSERT_TRUE(pump(*server, *client, client_in, chunks).ok());
  ASSERT_EQ(client_events.events.size(), 1u);
  EXPECT_TRUE(client_events.events[0] == message(MessageType::kBinary, down));

  ASSERT_TRUE(client->sendClose(kCloseNormal, "bye").ok());
  ASSERT_TRUE(pump(*client, *server, server_in, chunks).ok());
  EXPECT_TRUE(server->closed());
  ASSERT_TRUE(pump(*server, *client, client_in, chunks).ok());
  EXPECT_TRUE(client->closed());
  EXPECT_EQ(server_events.events.back(), closeEvent(kCloseNormal, "bye"));
  EXPECT_EQ(client_events.events.back(), closeEvent(kCloseNormal, "bye"));
}

}  // namespace
}  // namespace crisp::websocket
