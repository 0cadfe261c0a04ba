#include "source/codec/spdy/codec.h"

#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include <event2/buffer.h>
#include <gtest/gtest.h>

#include "source/common/buffer.h"

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
using test::TestInflater;

using Events = std::vector<std::string>;

// Frames made by hand: every type the codec knows, header blocks compressed by
// an independent zlib stream, as a peer would send them.
std::string handMadeSession() {
  TestDeflater deflater;
  std::string wire;
  wire += test::synStreamFrame(
      1, 0, 2, kFlagFin,
      deflater.compress(rawHeaderBlock({{"streamtype", "error"}, {"requestid", "0"}})));
  wire += test::synStreamFrame(3, 1, 7, kFlagUnidirectional,
                               deflater.compress(rawHeaderBlock({{"streamtype", "stdin"}})));
  wire += test::synReplyFrame(2, 0, deflater.compress(rawHeaderBlock({{"status", "200"}})));
  wire += test::headersFrame(
      3, kFlagFin, deflater.compress(rawHeaderBlock({{"x-multi", std::string("a\0b", 3)}})));
  wire += test::dataFrame(3, 0, "hello");
  wire += test::dataFrame(3, kFlagFin, "");
  wire += test::rstStreamFrame(5, 5);
  wire += test::settingsFrame(1, {{0, 4, 100}, {1, 7, 65536}});
  wire += test::pingFrame(7);
  wire += test::windowUpdateFrame(0, 4096);
  wire += test::goAwayFrame(3, 0);
  return wire;
}

const Events kHandMadeEvents = {
    R"(SYN_STREAM 1 assoc=0 pri=2 flags=0x1 {"streamtype": "error", "requestid": "0"})",
    R"(SYN_STREAM 3 assoc=1 pri=7 flags=0x2 {"streamtype": "stdin"})",
    R"(SYN_REPLY 2 flags=0x0 {"status": "200"})",
    R"(HEADERS 3 flags=0x1 {"x-multi": "a", "x-multi": "b"})",
    R"(DATA 3 fin=0 len=5 "hello")",
    R"(DATA 3 fin=1 len=0 "")",
    "RST_STREAM 5 status=5",
    "SETTINGS flags=0x1 [flags=0x0 id=4 value=100] [flags=0x1 id=7 value=65536]",
    "PING 7",
    "WINDOW_UPDATE 0 delta=4096",
    "GOAWAY last=3 status=0",
};

TEST(SpdyCodecTest, DecodesHandMadeFramesOfEveryType) {
  const FeedResult result = feedAllWays(handMadeSession());
  EXPECT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.events, kHandMadeEvents);
  EXPECT_EQ(result.left_in_input, 0u);
}

TEST(SpdyCodecTest, RandomChunksOfManySizesGiveSameCallbacks) {
  const std::string wire = handMadeSession();
  for (size_t max_chunk : {2, 3, 9, 17, 200}) {
    for (uint32_t seed = 100; seed < 120; ++seed) {
      const FeedResult result = feed(wire, Chunking::kRandom, seed, {}, max_chunk);
      ASSERT_TRUE(result.status.ok()) << result.status;
      ASSERT_EQ(result.events, kHandMadeEvents) << "seed " << seed << " max " << max_chunk;
    }
  }
}

// Every frame type through our encoder and back through a second codec, as
// two ends of one connection.
TEST(SpdyCodecTest, EveryFrameTypeRoundTrips) {
  RecordingCallbacks unused;
  Codec sender(Codec::Role::kClient, unused);
  Buffer wire;
  sender.encodeSynStream(wire, 1, 0, 3, kFlagFin, {{"StreamType", "error"}, {"port", "80"}});
  sender.encodeSynStream(wire, 0x80000003, 1, 0, kFlagUnidirectional, {});
  sender.encodeSynReply(wire, 2, kFlagFin, {{"x", "1"}, {"y", "2"}, {"X", "3"}});
  sender.encodeHeaders(wire, 3, 0, {{"trailer-ish", ""}});
  Buffer payload;
  payload.add("some bytes");
  Codec::encodeData(wire, 3, payload, false);
  EXPECT_TRUE(payload.empty());
  Codec::encodeData(wire, 3, payload, true);
  Codec::encodeRstStream(wire, 9, RstStatus::kRefusedStream);
  Codec::encodeSettings(wire, 0, {{1, 4, 1000}, {0, 7, 1 << 20}});
  Codec::encodeSettings(wire, 1, {});
  Codec::encodePing(wire, 0xFFFFFFFF);
  Codec::encodeWindowUpdate(wire, 5, 0x7FFFFFFF);
  Codec::encodeGoAway(wire, 7, GoAwayStatus::kProtocolError);

  const FeedResult result = feedAllWays(wire.toString());
  EXPECT_TRUE(result.status.ok()) << result.status;
  const Events expected = {
      R"(SYN_STREAM 1 assoc=0 pri=3 flags=0x1 {"streamtype": "error", "port": "80"})",
      R"(SYN_STREAM 3 assoc=1 pri=0 flags=0x2 {})",
      R"(SYN_REPLY 2 flags=0x1 {"x": "1", "x": "3", "y": "2"})",
      R"(HEADERS 3 flags=0x0 {"trailer-ish": ""})",
      R"(DATA 3 fin=0 len=10 "some bytes")",
      R"(DATA 3 fin=1 len=0 "")",
      "RST_STREAM 9 status=3",
      "SETTINGS flags=0x0 [flags=0x1 id=4 value=1000] [flags=0x0 id=7 value=1048576]",
      "SETTINGS flags=0x1",
      "PING 4294967295",
      "WINDOW_UPDATE 5 delta=2147483647",
      "GOAWAY last=7 status=1",
  };
  EXPECT_EQ(result.events, expected);
}

// The fixed-layout frames our encoder writes match the hand-packed bytes.
TEST(SpdyCodecTest, EncodesFixedFramesAsDraftLayout) {
  Buffer out;
  Codec::encodeRstStream(out, 9, RstStatus::kCancel);
  EXPECT_EQ(out.toString(), test::rstStreamFrame(9, 5));
  Codec::encodePing(out, 2);
  EXPECT_EQ(out.toString(), test::pingFrame(2));
  Codec::encodeGoAway(out, 5, GoAwayStatus::kOk);
  EXPECT_EQ(out.toString(), test::goAwayFrame(5, 0));
  Codec::encodeWindowUpdate(out, 1, 65536);
  EXPECT_EQ(out.toString(), test::windowUpdateFrame(1, 65536));
  Codec::encodeSettings(out, 0, {{1, 7, 1234}});
  EXPECT_EQ(out.toString(), test::settingsFrame(0, {{1, 7, 1234}}));
  Buffer data;
  data.add("abc");
  Codec::encodeData(out, 0x80000001, data, true);
  EXPECT_EQ(out.toString(), test::dataFrame(1, kFlagFin, "abc"));
}

// A header frame's fields are laid out by hand-checkable rules and its block
// is readable by an independent inflater.
TEST(SpdyCodecTest, EncodesSynStreamFieldsAndReadableBlock) {
  RecordingCallbacks unused;
  Codec codec(Codec::Role::kServer, unused);
  Buffer out;
  codec.encodeSynStream(out, 2, 1, 5, kFlagFin, {{"Port", "8080"}, {"port", "9090"}});
  const std::string frame = out.toString();
  ASSERT_GT(frame.size(), 18u);
  EXPECT_EQ(frame.substr(0, 5), std::string("\x80\x03\x00\x01\x01", 5));
  const uint32_t length = (static_cast<uint8_t>(frame[5]) << 16) |
                          (static_cast<uint8_t>(frame[6]) << 8) | static_cast<uint8_t>(frame[7]);
  EXPECT_EQ(length, frame.size() - 8);
  EXPECT_EQ(frame.substr(8, 10), test::u32(2) + test::u32(1) + std::string("\xA0\x00", 2));
  TestInflater inflater;
  std::string plain;
  ASSERT_TRUE(inflater.inflateBlock(frame.substr(18), plain));
  EXPECT_EQ(plain, rawHeaderBlock({{"port", std::string("8080\09090", 9)}}));
}

TEST(SpdyCodecTest, ManyHeaderBlocksOverOneContextInBothDirections) {
  RecordingCallbacks unused;
  Codec sender(Codec::Role::kClient, unused);
  Buffer wire;
  TestDeflater deflater;
  std::string peer_wire;
  Events expected;
  for (uint32_t i = 0; i < 400; ++i) {
    const uint32_t id = 2 * i + 1;
    const std::string port = std::to_string(1000 + i);
    sender.encodeSynStream(wire, id, 0, 0, 0, {{"streamtype", "data"}, {"port", port}});
    peer_wire += test::synStreamFrame(
        id, 0, 0, 0, deflater.compress(rawHeaderBlock({{"streamtype", "data"}, {"port", port}})));
    expected.push_back("SYN_STREAM " + std::to_string(id) + R"( assoc=0 pri=0 flags=0x0 {)" +
                       R"("streamtype": "data", "port": ")" + port + R"("})");
  }
  const FeedResult ours = feed(wire.toString(), Chunking::kRandom, 5, {}, 100);
  EXPECT_TRUE(ours.status.ok()) << ours.status;
  EXPECT_EQ(ours.events, expected);
  const FeedResult theirs = feed(peer_wire, Chunking::kRandom, 6, {}, 100);
  EXPECT_TRUE(theirs.status.ok()) << theirs.status;
  EXPECT_EQ(theirs.events, expected);
}

// Bytes written by moby/spdystream's Framer (the Go peer Kubernetes uses):
// SYN_STREAM 1 and 3 with a `streamType` header as client-go opens exec
// streams, then a SYN_REPLY with FIN and one name holding two values. Made
// with test/codec/spdy/go_peer (`capture`); the three blocks share one zlib
// stream compressed by Go's compress/zlib at BestCompression.
constexpr char kSpdystreamCapture[] =
    "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a68000000"
    "00ffff800300010000001700000003000000000000c22e555c92929907000000ffff800300020100001d00000002"
    "824ab157e8e696e6946482cbf4bc548692f27c00000000ffff";

TEST(SpdyCodecTest, DecodesFramesCapturedFromSpdystream) {
  const FeedResult result = feedAllWays(absl::HexStringToBytes(kSpdystreamCapture));
  EXPECT_TRUE(result.status.ok()) << result.status;
  const Events expected = {
      R"(SYN_STREAM 1 assoc=0 pri=0 flags=0x0 {"streamtype": "error"})",
      R"(SYN_STREAM 3 assoc=0 pri=0 flags=0x0 {"streamtype": "stdin"})",
      R"(SYN_REPLY 2 flags=0x1 {"x-multi": "one", "x-multi": "two"})",
  };
  EXPECT_EQ(result.events, expected);
}

TEST(SpdyCodecTest, PartialFrameWaitsWithoutCallback) {
  const std::string frame = test::dataFrame(1, kFlagFin, "payload");
  RecordingCallbacks callbacks;
  Codec codec(Codec::Role::kServer, callbacks);
  Buffer input;
  input.add(frame.substr(0, frame.size() - 1));
  ASSERT_TRUE(codec.dispatch(input).ok());
  EXPECT_TRUE(callbacks.events.empty());
  EXPECT_EQ(input.length(), frame.size() - 1);
  input.add(frame.substr(frame.size() - 1));
  ASSERT_TRUE(codec.dispatch(input).ok());
  EXPECT_EQ(callbacks.events, Events{R"(DATA 1 fin=1 len=7 "payload")"});
  EXPECT_TRUE(input.empty());
}

// Callbacks that ask for the payloads of one stream in pieces.
class StreamingCallbacks : public RecordingCallbacks {
 public:
  explicit StreamingCallbacks(uint32_t stream_id) : stream_id_(stream_id) {}
  bool onDataStreamed(uint32_t stream_id, uint32_t length) override {
    events.push_back("STREAMED " + std::to_string(stream_id) + " len=" + std::to_string(length));
    return stream_id == stream_id_;
  }

 private:
  const uint32_t stream_id_;
};

TEST(SpdyCodecTest, StreamedPayloadComesInPiecesAndTheCallerMayTakePartOfItItself) {
  StreamingCallbacks callbacks(3);
  Codec codec(Codec::Role::kServer, callbacks);
  const std::string first = test::dataFrame(3, kFlagFin, "abcdefghij");
  const std::string other = test::dataFrame(5, 0, "xyz");
  Buffer input;
  // The header and two payload bytes: streamed; the two bytes come at once.
  input.add(first.substr(0, 10));
  ASSERT_TRUE(codec.dispatch(input).ok());
  EXPECT_TRUE(input.empty());
  EXPECT_EQ(codec.streamedDataStream(), 3u);
  EXPECT_EQ(codec.streamedDataRemaining(), 8u);
  // Three more bytes through dispatch(), three taken by the caller, then the
  // last two with the next frame behind them.
  input.add(first.substr(10, 3));
  ASSERT_TRUE(codec.dispatch(input).ok());
  codec.skipDataPayload(3);
  EXPECT_EQ(codec.streamedDataRemaining(), 2u);
  input.add(first.substr(16) + other.substr(0, 9));
  ASSERT_TRUE(codec.dispatch(input).ok());
  EXPECT_EQ(codec.streamedDataRemaining(), 0u);
  EXPECT_EQ(codec.streamedDataStream(), 0u);
  // A partial frame on another stream waits whole.
  input.add(other.substr(9));
  ASSERT_TRUE(codec.dispatch(input).ok());
  // A payload the caller takes to its end: the FIN comes with an empty piece.
  input.add(first.substr(0, 8));
  ASSERT_TRUE(codec.dispatch(input).ok());
  codec.skipDataPayload(10);
  EXPECT_EQ(codec.streamedDataRemaining(), 0u);
  EXPECT_EQ(callbacks.events, (Events{
                                  "STREAMED 3 len=10",
                                  R"(DATA 3 fin=0 len=2 "ab")",
                                  R"(DATA 3 fin=0 len=3 "cde")",
                                  R"(DATA 3 fin=1 len=2 "ij")",
                                  "STREAMED 5 len=3",
                                  R"(DATA 5 fin=0 len=3 "xyz")",
                                  "STREAMED 3 len=10",
                                  R"(DATA 3 fin=1 len=0 "")",
                              }));
}

TEST(SpdyCodecTest, PartialHeaderFrameWaitsWithoutCallback) {
  TestDeflater deflater;
  const std::string frame =
      test::synStreamFrame(1, 0, 0, 0, deflater.compress(rawHeaderBlock({{"a", "b"}})));
  RecordingCallbacks callbacks;
  Codec codec(Codec::Role::kServer, callbacks);
  Buffer input;
  for (size_t cut : {1, 7, 8, 17, static_cast<int>(frame.size() - 1)}) {
    input.add(frame.substr(input.length(), cut - input.length()));
    ASSERT_TRUE(codec.dispatch(input).ok());
    EXPECT_TRUE(callbacks.events.empty()) << cut;
  }
  input.add(frame.substr(input.length()));
  ASSERT_TRUE(codec.dispatch(input).ok());
  EXPECT_EQ(callbacks.events.size(), 1u);
}

// The payload handed to onData is the very memory the input held: it was
// moved, not copied.
TEST(SpdyCodecTest, DataPayloadIsMovedNotCopied) {
  static const std::string payload(100000, 'p');
  struct Checker : RecordingCallbacks {
    const void* first_segment = nullptr;
    size_t length = 0;
    void onData(uint32_t, Buffer& data, bool) override {
      evbuffer_iovec vec;
      ASSERT_GE(evbuffer_peek(data.raw(), -1, nullptr, &vec, 1), 1);
      first_segment = vec.iov_base;
      length = data.length();
      // Left in the buffer on purpose: the codec must clear it for the next frame.
    }
  } callbacks;
  Codec codec(Codec::Role::kServer, callbacks);
  Buffer input;
  input.add(test::dataHeader(1, 0, static_cast<uint32_t>(payload.size())));
  ASSERT_EQ(evbuffer_add_reference(input.raw(), payload.data(), payload.size(), nullptr, nullptr),
            0);
  input.add(test::pingFrame(1));
  ASSERT_TRUE(codec.dispatch(input).ok());
  EXPECT_EQ(callbacks.first_segment, payload.data());
  EXPECT_EQ(callbacks.length, payload.size());
  EXPECT_EQ(callbacks.events, Events{"PING 1"});
  EXPECT_TRUE(input.empty());

  // The payload the callee left behind is gone before the next frame.
  callbacks.first_segment = nullptr;
  input.add(test::dataFrame(3, 0, "xy"));
  ASSERT_TRUE(codec.dispatch(input).ok());
  EXPECT_EQ(callbacks.length, 2u);
}

TEST(SpdyCodecTest, AcceptsLargestDataFrame) {
  std::string payload(0xFFFFFF, '\0');
  std::mt19937 rng(99);
  for (size_t i = 0; i < payload.size(); i += 4096) {
    payload[i] = static_cast<char>(rng());
  }
  const std::string wire = test::dataFrame(1, kFlagFin, payload) + test::pingFrame(1);
  for (Chunking chunking : {Chunking::kWhole, Chunking::kRandom}) {
    const FeedResult result = feed(wire, chunking, 3, {}, 1 << 20);
    ASSERT_TRUE(result.status.ok()) << result.status;
    ASSERT_EQ(result.events.size(), 2u);
    EXPECT_EQ(result.events[0], "DATA 1 fin=1 len=16777215");
    EXPECT_EQ(result.events[1], "PING 1");
    EXPECT_TRUE(result.payloads[0] == payload);
  }
}

TEST(SpdyCodecTest, EncodeDataSplitsPayloadBeyondWireLimit) {
  Buffer data;
  data.add(std::string(0xFFFFFF + 10, 'z'));
  Buffer wire;
  Codec::encodeData(wire, 1, data, true);
  EXPECT_TRUE(data.empty());
  const FeedResult result = feed(wire.toString(), Chunking::kWhole);
  ASSERT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.events,
            (Events{"DATA 1 fin=0 len=16777215", R"(DATA 1 fin=1 len=10 "zzzzzzzzzz")"}));
}

TEST(SpdyCodecTest, UnknownControlFrameIsSkipped) {
  // CREDENTIAL (type 10, SPDY/3 only) and an unassigned type, then a PING.
  const std::string wire = test::controlFrame(10, 0, std::string(300, 'c')) +
                           test::controlFrame(0x7777, 0xFF, "") + test::controlFrame(5, 0, "noop") +
                           test::pingFrame(9);
  const FeedResult result = feedAllWays(wire);
  EXPECT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.events, Events{"PING 9"});
  EXPECT_EQ(result.left_in_input, 0u);
}

// The top bit of a stream id field is reserved (X) in control frames; for DATA
// it is the control bit itself, so it cannot be set there.
TEST(SpdyCodecTest, ReservedBitsOfIdsAreIgnored) {
  TestDeflater deflater;
  const std::string wire =
      test::synStreamFrame(0x80000005, 0x80000001, 0, 0, deflater.compress(rawHeaderBlock({}))) +
      test::windowUpdateFrame(0x80000001, 0x80000010) + test::goAwayFrame(0x80000003, 2) +
      test::rstStreamFrame(0x80000007, 1);
  const FeedResult result = feedAllWays(wire);
  EXPECT_TRUE(result.status.ok()) << result.status;
  EXPECT_EQ(result.events,
            (Events{"SYN_STREAM 5 assoc=1 pri=0 flags=0x0 {}", "WINDOW_UPDATE 1 delta=16",
                    "GOAWAY last=3 status=2", "RST_STREAM 7 status=1"}));
}

TEST(SpdyCodecTest, DataFlagsOtherThanFinAreIgnored) {
  const FeedResult result = feedAllWays(test::dataFrame(1, 0xFE, "a"));
  EXPECT_EQ(result.events, Events{R"(DATA 1 fin=0 len=1 "a")"});
}

TEST(SpdyCodecTest, FindHeaderComparesNamesWithoutCase) {
  const HeaderList headers = {{"streamtype", "error"}, {"Port", "80"}, {"port", "81"}};
  ASSERT_NE(findHeader(headers, "StreamType"), nullptr);
  EXPECT_EQ(*findHeader(headers, "StreamType"), "error");
  EXPECT_EQ(*findHeader(headers, "port"), "80");
  EXPECT_EQ(findHeader(headers, "requestid"), nullptr);
}

TEST(SpdyCodecTest, PeerInitiatedParityFollowsRole) {
  EXPECT_TRUE(isPeerInitiated(Codec::Role::kServer, 1));
  EXPECT_FALSE(isPeerInitiated(Codec::Role::kServer, 2));
  EXPECT_TRUE(isPeerInitiated(Codec::Role::kClient, 2));
  EXPECT_FALSE(isPeerInitiated(Codec::Role::kClient, 0x7FFFFFFF));
}

}  // namespace
}  // namespace crisp::spdy
