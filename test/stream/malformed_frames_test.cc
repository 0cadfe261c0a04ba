// Malformed and oversized input at the connection level, SPDY/3.1 and
// WebSocket (RFC 6455), each sent whole and byte by byte:
//
// - stream.max_frame_bytes: a SPDY frame or a WebSocket message of exactly
//   the limit is served, one byte more closes the connection with the
//   codec's error (GOAWAY PROTOCOL_ERROR, close 1009) and is counted in
//   crisp_stream_limit_hits_total{limit="frame_bytes"}.
// - every other framing violation closes the connection the way its
//   protocol asks (GOAWAY PROTOCOL_ERROR; a close frame with the RFC 6455
//   code and the error's name as the reason) and is counted under that name
//   in crisp_stream_protocol_errors_total{reason}.
// - what the protocols allow (masked fragments with a ping between them, a
//   UTF-8 sequence split across fragments) is delivered, not refused.

#include <cstdint>
#include <map>
#include <ostream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "source/stream/raw_socket_transport.h"
#include "source/stream/spdy_connection.h"
#include "source/stream/stream_limits.h"
#include "source/stream/ws_connection.h"

#include "test/stream/spdy_test_client.h"
#include "test/stream/ws_test_client.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;
using testing::LoopThread;
using testing::rawFrame;
using testing::SpdyTestClient;
using testing::WsTestClient;
using Frame = SpdyTestClient::Frame;

constexpr uint32_t kLimit = 64 * 1024;
constexpr uint8_t kOpContinuation = 0x0;
constexpr uint8_t kOpText = 0x1;
constexpr uint8_t kOpBinary = 0x2;
constexpr uint8_t kOpClose = 0x8;
constexpr uint8_t kOpPing = 0x9;

uint64_t frameLimitHits() { return limitHitCounter(StreamLimit::kFrameBytes).value(); }
uint64_t protocolErrors(const std::string& reason) {
  return protocolErrorCounter(reason).value();
}

// One malformed input: its bytes and the name it is refused and counted under.
struct MalformedCase {
  std::string name;  // test name
  std::string bytes;
  std::string reason;
  uint16_t ws_close_code = 0;  // WebSocket only
  // WebSocket: the close frame names the reason. wslay writes the 1007 close
  // for invalid UTF-8 itself, without one.
  bool reason_on_wire = true;
};

// Runs every case twice: the bytes in one write, then one byte per write.
struct MalformedParam {
  MalformedCase c;
  bool byte_by_byte = false;
};

std::ostream& operator<<(std::ostream& os, const MalformedParam& p) {
  return os << p.c.name << (p.byte_by_byte ? "/byte_by_byte" : "/whole");
}

std::vector<MalformedParam> bothWays(const std::vector<MalformedCase>& cases) {
  std::vector<MalformedParam> out;
  for (const auto& c : cases) {
    out.push_back({c, false});
    out.push_back({c, true});
  }
  return out;
}

std::string paramName(const ::testing::TestParamInfo<MalformedParam>& info) {
  return info.param.c.name + (info.param.byte_by_byte ? "_ByteByByte" : "_Whole");
}

// Sends `bytes` in one write or one byte per write. Stops early when the
// server closed before all of them were written: it had seen enough.
template <typename Client>
void sendMalformed(Client& client, const std::string& bytes, bool byte_by_byte) {
  if (!byte_by_byte) {
    client.raw(bytes);
    return;
  }
  for (char c : bytes) {
    if (!client.raw(std::string(1, c))) {
      return;
    }
  }
}

// A SPDY control frame header: version 3, `type`, no flags, `length`.
std::string controlHeader(uint16_t type, uint32_t length) {
  return std::string{static_cast<char>(0x80),
                     0x03,
                     static_cast<char>(type >> 8),
                     static_cast<char>(type & 0xFF),
                     0x00,
                     static_cast<char>((length >> 16) & 0xFF),
                     static_cast<char>((length >> 8) & 0xFF),
                     static_cast<char>(length & 0xFF)};
}

// A DATA frame header: stream `id`, no flags, `length`.
std::string dataHeader(uint32_t id, uint32_t length) {
  return std::string{static_cast<char>((id >> 24) & 0x7F),
                     static_cast<char>((id >> 16) & 0xFF),
                     static_cast<char>((id >> 8) & 0xFF),
                     static_cast<char>(id & 0xFF),
                     0x00,
                     static_cast<char>((length >> 16) & 0xFF),
                     static_cast<char>((length >> 8) & 0xFF),
                     static_cast<char>(length & 0xFF)};
}

// The SPDY connection's owner: accepts every stream, keeps what arrives.
class SpdyOwner : public SpdyConnectionCallbacks {
 public:
  bool onStreamOpen(uint32_t, const spdy::HeaderList&) override { return true; }
  void onStreamData(uint32_t stream_id, Buffer& data) override {
    received[stream_id] += data.toString();
  }
  void onStreamRemoteFin(uint32_t) override {}
  void onStreamReset(uint32_t, spdy::RstStatus) override {}
  void onOutputAboveHighWatermark() override {}
  void onOutputBelowLowWatermark() override {}
  void onConnectionClosing(SpdyCloseReason reason, const std::string& detail) override {
    closing.push_back(reason);
    closing_detail = detail;
  }
  void onConnectionClosed() override { ++closed; }

  std::map<uint32_t, std::string> received;
  std::vector<SpdyCloseReason> closing;
  std::string closing_detail;
  int closed = 0;
};

class SpdyFrameLimitTest : public ::testing::Test {
 protected:
  void start(uint32_t max_frame_bytes) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = std::make_unique<SpdyTestClient>(fds[0]);
    const int server_fd = fds[1];
    SpdyConnectionConfig config;
    config.codec_limits = spdyLimits(max_frame_bytes);
    config.linger_timeout = milliseconds(200);
    loop_.run([&] {
      conn_ = std::make_unique<SpdyConnection>(
          loop_.dispatcher(),
          std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd, "client"), 7, owner_,
          config);
      conn_->start();
      return 0;
    });
  }

  void TearDown() override {
    loop_.stop();
    conn_.reset();
  }

  // Every frame sent before was handled once the answer to this ping is here.
  bool sync(uint32_t ping_id) {
    return client_->ping(ping_id) && client_->waitFor([&] {
      return client_
          ->find(
              [&](const Frame& f) { return f.type == Frame::Type::kPing && f.ping_id == ping_id; })
          .has_value();
    });
  }

  // The connection ended on a framing error: GOAWAY PROTOCOL_ERROR, the
  // socket closed, the owner told why.
  void expectClosedOnFrameLimit() {
    ASSERT_TRUE(client_->waitForEof());
    EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kProtocolError);
    const auto closing = loop_.run([&] { return owner_.closing; });
    EXPECT_EQ(closing, std::vector<SpdyCloseReason>{SpdyCloseReason::kProtocolError});
    const std::string detail = loop_.run([&] { return owner_.closing_detail; });
    EXPECT_EQ(detail.rfind("spdy.frame_too_large", 0), 0u) << detail;
  }

  LoopThread loop_;
  SpdyOwner owner_;
  std::unique_ptr<SpdyConnection> conn_;
  std::unique_ptr<SpdyTestClient> client_;
};

TEST_F(SpdyFrameLimitTest, DataFrameOfExactlyTheLimitIsDelivered) {
  const uint64_t before = frameLimitHits();
  start(kLimit);
  const uint32_t id = client_->openStream("stdin");
  const std::string payload(kLimit, 'd');
  ASSERT_TRUE(client_->data(id, payload));
  ASSERT_TRUE(sync(1));
  EXPECT_EQ(loop_.run([&] { return owner_.received[id].size(); }), size_t{kLimit});
  EXPECT_FALSE(client_->goAwayReceived());
  EXPECT_EQ(frameLimitHits(), before);
}

TEST_F(SpdyFrameLimitTest, DataFrameOneBytePastTheLimitClosesAndIsCounted) {
  const uint64_t before = frameLimitHits();
  start(kLimit);
  const uint32_t id = client_->openStream("stdin");
  ASSERT_TRUE(client_->data(id, std::string(kLimit + 1, 'd')));
  expectClosedOnFrameLimit();
  EXPECT_TRUE(loop_.run([&] { return owner_.received[id].empty(); }));
  EXPECT_EQ(frameLimitHits(), before + 1);
}

// Only the frame header is needed to refuse the frame: sent byte by byte,
// without any payload, it still ends the connection.
TEST_F(SpdyFrameLimitTest, OversizedDataHeaderAloneIsRefusedByteByByte) {
  const uint64_t before = frameLimitHits();
  start(kLimit);
  const uint32_t id = client_->openStream("stdin");
  ASSERT_TRUE(sync(1));
  for (char c : dataHeader(id, kLimit + 1)) {
    ASSERT_TRUE(client_->raw(std::string(1, c)));
  }
  expectClosedOnFrameLimit();
  EXPECT_EQ(frameLimitHits(), before + 1);
}

// Control frames: an unknown type (CREDENTIAL, 10) is skipped, but only if
// it fits the control frame limit (the smaller of max_frame_bytes and 64 KiB).
TEST_F(SpdyFrameLimitTest, ControlFrameAtTheLimitIsSkippedOnePastCloses) {
  const uint64_t before = frameLimitHits();
  start(4096);
  ASSERT_TRUE(client_->raw(controlHeader(10, 4096) + std::string(4096, '\0')));
  ASSERT_TRUE(sync(1));
  EXPECT_FALSE(client_->goAwayReceived());
  EXPECT_EQ(frameLimitHits(), before);
  ASSERT_TRUE(client_->raw(controlHeader(10, 4097) + std::string(4097, '\0')));
  expectClosedOnFrameLimit();
  EXPECT_EQ(frameLimitHits(), before + 1);
}

// The default limit is the wire's own: 16 MiB - 1 of DATA passes.
TEST_F(SpdyFrameLimitTest, DefaultLimitTakesTheLargestDataFrameTheWireAllows) {
  const uint64_t before = frameLimitHits();
  start(kDefaultMaxFrameBytes);
  const uint32_t id = client_->openStream("stdin");
  ASSERT_TRUE(client_->data(id, std::string(0xFFFFFF, 'x')));
  ASSERT_TRUE(sync(1));
  EXPECT_EQ(loop_.run([&] { return owner_.received[id].size(); }), size_t{0xFFFFFF});
  EXPECT_EQ(frameLimitHits(), before);
}

// A 32-bit big-endian word.
std::string word(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>((v >> 16) & 0xFF),
                     static_cast<char>((v >> 8) & 0xFF), static_cast<char>(v & 0xFF)};
}

class SpdyMalformedTest : public SpdyFrameLimitTest,
                          public ::testing::WithParamInterface<MalformedParam> {};

TEST_P(SpdyMalformedTest, ClosesWithGoAwayAndCountsTheReason) {
  const MalformedParam& p = GetParam();
  const uint64_t before = protocolErrors(p.c.reason);
  start(kLimit);
  ASSERT_TRUE(sync(1));
  sendMalformed(*client_, p.c.bytes, p.byte_by_byte);
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->goAwayStatus(), spdy::GoAwayStatus::kProtocolError);
  EXPECT_EQ(loop_.run([&] { return owner_.closing; }),
            std::vector<SpdyCloseReason>{SpdyCloseReason::kProtocolError});
  const std::string detail = loop_.run([&] { return owner_.closing_detail; });
  EXPECT_EQ(detail.rfind(p.c.reason + ":", 0), 0u) << detail;
  EXPECT_EQ(protocolErrors(p.c.reason), before + 1);
}

INSTANTIATE_TEST_SUITE_P(
    Frames, SpdyMalformedTest,
    ::testing::ValuesIn(bothWays({
        // A PING of SPDY/2.
        {"Version2", std::string("\x80\x02\x00\x06\x00\x00\x00\x04", 8) + word(1),
         "spdy.unsupported_version"},
        {"PingOfFiveBytes", controlHeader(6, 5) + word(1) + "x", "spdy.bad_frame_length"},
        {"SettingsCountMismatch", controlHeader(4, 12) + word(2) + word(0) + word(0),
         "spdy.bad_frame_length"},
        // SYN_STREAM for stream 1 whose header block is not zlib at all.
        {"HeaderBlockNotZlib",
         controlHeader(1, 18) + word(1) + word(0) + std::string(2, '\0') + "garbage!",
         "spdy.bad_header_block"},
        {"DataOnStreamZero", dataHeader(0, 1) + "x", "spdy.invalid_stream_id"},
        {"RstStreamZero", controlHeader(3, 8) + word(0) + word(1), "spdy.invalid_stream_id"},
    })),
    paramName);

// A stream id the client may not use (even: server-initiated) is a stream
// error, not a connection error: the stream is reset, the connection goes on,
// and the violation is counted.
TEST_F(SpdyFrameLimitTest, EvenStreamIdIsResetAndCounted) {
  const uint64_t before = protocolErrors("spdy.bad_stream_id");
  start(kLimit);
  ASSERT_TRUE(client_->synStream(2, {{"streamtype", "stdin"}}));
  ASSERT_TRUE(sync(1));
  EXPECT_TRUE(client_->stream(2).reset);
  EXPECT_EQ(client_->stream(2).rst_status, spdy::RstStatus::kProtocolError);
  EXPECT_FALSE(client_->goAwayReceived());
  EXPECT_EQ(protocolErrors("spdy.bad_stream_id"), before + 1);
  // The connection still takes streams.
  const uint32_t id = client_->openStream("stdin");
  ASSERT_TRUE(client_->data(id, "after"));
  ASSERT_TRUE(sync(3));
  EXPECT_EQ(loop_.run([&] { return owner_.received[id]; }), "after");
}

// The WebSocket connection's owner: keeps the messages and the close reason.
class WsOwner : public WsConnectionCallbacks {
 public:
  void onMessage(websocket::MessageType, Buffer& payload) override {
    sizes.push_back(payload.length());
  }
  void onOutputAboveHighWatermark() override {}
  void onOutputBelowLowWatermark() override {}
  void onConnectionClosing(WsCloseReason reason, const std::string& detail) override {
    closing.push_back(reason);
    closing_detail = detail;
  }
  void onConnectionClosed() override { ++closed; }

  std::vector<size_t> sizes;
  std::vector<WsCloseReason> closing;
  std::string closing_detail;
  int closed = 0;
};

class WsFrameLimitTest : public ::testing::Test {
 protected:
  void start(uint64_t max_message_bytes) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = std::make_unique<WsTestClient>(fds[0]);
    const int server_fd = fds[1];
    WsConnectionConfig config;
    config.max_message_bytes = max_message_bytes;
    config.close_timeout = milliseconds(300);
    config.linger_timeout = milliseconds(300);
    const bool ok = loop_.run([&] {
      auto created = WsConnection::create(
          loop_.dispatcher(),
          std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd, "client"), 7, owner_,
          config);
      if (!created.ok()) {
        return false;
      }
      conn_ = std::move(created).value();
      conn_->start();
      return true;
    });
    ASSERT_TRUE(ok);
  }

  void TearDown() override {
    loop_.stop();
    conn_.reset();
  }

  bool delivered(size_t count) {
    return loop_.waitUntil([&] { return owner_.sizes.size() >= count; });
  }

  void expectClosedWith1009() {
    ASSERT_TRUE(client_->waitFor([&] { return client_->closeReceived(); }));
    EXPECT_EQ(client_->closeCode(), websocket::kCloseMessageTooBig);
    EXPECT_EQ(client_->closeReason(), "ws.message_too_big");
    const auto closing = loop_.run([&] { return owner_.closing; });
    EXPECT_EQ(closing, std::vector<WsCloseReason>{WsCloseReason::kProtocolError});
  }

  LoopThread loop_;
  WsOwner owner_;
  std::unique_ptr<WsConnection> conn_;
  std::unique_ptr<WsTestClient> client_;
};

TEST_F(WsFrameLimitTest, MessageOfExactlyTheLimitIsDelivered) {
  const uint64_t before = frameLimitHits();
  start(kLimit);
  ASSERT_TRUE(client_->send(websocket::MessageType::kBinary, std::string(kLimit, 'm')));
  ASSERT_TRUE(delivered(1));
  EXPECT_EQ(loop_.run([&] { return owner_.sizes; }), std::vector<size_t>{kLimit});
  // Fragments that add up to the limit are one message of the limit.
  ASSERT_TRUE(client_->raw(rawFrame(kOpBinary, std::string(40000, 'a'), true, false) +
                           rawFrame(kOpContinuation, std::string(kLimit - 40000, 'b'))));
  ASSERT_TRUE(delivered(2));
  EXPECT_EQ(loop_.run([&] { return owner_.sizes; }), (std::vector<size_t>{kLimit, kLimit}));
  EXPECT_FALSE(client_->closeReceived());
  EXPECT_EQ(frameLimitHits(), before);
}

TEST_F(WsFrameLimitTest, MessageOneBytePastTheLimitClosesWith1009AndIsCounted) {
  const uint64_t before = frameLimitHits();
  const uint64_t errors_before = protocolErrors("ws.message_too_big");
  start(kLimit);
  ASSERT_TRUE(client_->send(websocket::MessageType::kBinary, std::string(kLimit + 1, 'm')));
  expectClosedWith1009();
  EXPECT_TRUE(loop_.run([&] { return owner_.sizes.empty(); }));
  EXPECT_EQ(frameLimitHits(), before + 1);
  EXPECT_EQ(protocolErrors("ws.message_too_big"), errors_before + 1);
}

TEST_F(WsFrameLimitTest, FragmentsAddingUpToOnePastTheLimitCloseWith1009) {
  const uint64_t before = frameLimitHits();
  start(kLimit);
  ASSERT_TRUE(client_->raw(rawFrame(kOpBinary, std::string(40000, 'a'), true, false)));
  ASSERT_TRUE(client_->raw(rawFrame(kOpContinuation, std::string(kLimit + 1 - 40000, 'b'))));
  expectClosedWith1009();
  EXPECT_EQ(frameLimitHits(), before + 1);
}


class WsMalformedTest : public WsFrameLimitTest,
                        public ::testing::WithParamInterface<MalformedParam> {};

TEST_P(WsMalformedTest, ClosesWithTheRfcCodeAndCountsTheReason) {
  const MalformedParam& p = GetParam();
  const uint64_t before = protocolErrors(p.c.reason);
  start(kLimit);
  sendMalformed(*client_, p.c.bytes, p.byte_by_byte);
  ASSERT_TRUE(client_->waitFor([&] { return client_->closeReceived(); }));
  EXPECT_EQ(client_->closeCode(), p.c.ws_close_code);
  EXPECT_EQ(client_->closeReason(), p.c.reason_on_wire ? p.c.reason : "");
  EXPECT_EQ(loop_.run([&] { return owner_.closing; }),
            std::vector<WsCloseReason>{WsCloseReason::kProtocolError});
  EXPECT_EQ(loop_.run([&] { return owner_.closing_detail; }).rfind(p.c.reason + ":", 0), 0u);
  EXPECT_TRUE(loop_.run([&] { return owner_.sizes.empty(); }));
  EXPECT_EQ(protocolErrors(p.c.reason), before + 1);
  // The close handshake ends with the connection closed, not left open.
  client_->close(websocket::kCloseNormal);
  EXPECT_TRUE(client_->waitForEof());
}

std::string withRsv1(std::string frame) {
  frame[0] = static_cast<char>(frame[0] | 0x40);
  return frame;
}

INSTANTIATE_TEST_SUITE_P(
    Frames, WsMalformedTest,
    ::testing::ValuesIn(bothWays({
        {"UnmaskedClientFrame", rawFrame(kOpBinary, "abc", false), "ws.unmasked_client_frame",
         websocket::kCloseProtocolError},
        {"ReservedBit", withRsv1(rawFrame(kOpBinary, "abc")), "ws.reserved_bits",
         websocket::kCloseProtocolError},
        {"UnknownOpcode", rawFrame(0x3, "abc"), "ws.unknown_opcode",
         websocket::kCloseProtocolError},
        {"FragmentedPing", rawFrame(kOpPing, "p", true, false), "ws.fragmented_control_frame",
         websocket::kCloseProtocolError},
        {"PingOf126Bytes", rawFrame(kOpPing, std::string(126, 'p')), "ws.control_frame_too_long",
         websocket::kCloseProtocolError},
        {"ContinuationFirst", rawFrame(kOpContinuation, "x"), "ws.unexpected_continuation",
         websocket::kCloseProtocolError},
        {"NewMessageInsideFragmented",
         rawFrame(kOpBinary, "a", true, false) + rawFrame(kOpBinary, "b"),
         "ws.expected_continuation", websocket::kCloseProtocolError},
        {"NonMinimalLength", rawFrame(kOpBinary, "hello", true, true, 5), "ws.non_minimal_length",
         websocket::kCloseProtocolError},
        {"InvalidUtf8Text", rawFrame(kOpText, "\xc3\x28"), "ws.invalid_utf8",
         websocket::kCloseInvalidPayload, false},
        {"InvalidUtf8AcrossFragments",
         rawFrame(kOpText, "ok\xe2\x82", true, false) + rawFrame(kOpContinuation, "\x28"),
         "ws.invalid_utf8", websocket::kCloseInvalidPayload, false},
        {"OneByteClosePayload", rawFrame(kOpClose, "\x03"), "ws.bad_close_payload",
         websocket::kCloseProtocolError},
        {"CloseCode1005", rawFrame(kOpClose, "\x03\xed"), "ws.bad_close_code",
         websocket::kCloseProtocolError},
    })),
    paramName);

// What RFC 6455 allows is served: a masked message in three fragments with a
// ping between them arrives whole (the ping is answered), and a text message
// whose UTF-8 sequence is split across fragments is valid.
TEST_F(WsFrameLimitTest, FragmentsWithAPingBetweenAndSplitUtf8AreDelivered) {
  const uint64_t before = protocolErrors("ws.invalid_utf8");
  start(kLimit);
  ASSERT_TRUE(client_->raw(rawFrame(kOpBinary, "one ", true, false) + rawFrame(kOpPing, "p") +
                           rawFrame(kOpContinuation, "two ", true, false) +
                           rawFrame(kOpContinuation, "three")));
  ASSERT_TRUE(client_->raw(rawFrame(kOpText, "caf\xc3", true, false) +
                           rawFrame(kOpContinuation, "\xa9")));
  ASSERT_TRUE(delivered(2));
  EXPECT_EQ(loop_.run([&] { return owner_.sizes; }), (std::vector<size_t>{13, 5}));
  ASSERT_TRUE(
      client_->waitFor([&] { return client_->count(WsTestClient::Event::Kind::kPong) == 1; }));
  EXPECT_FALSE(client_->closeReceived());
  EXPECT_EQ(protocolErrors("ws.invalid_utf8"), before);
}

}  // namespace
}  // namespace crisp::stream
