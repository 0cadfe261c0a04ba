#include "source/stream/stream_limits.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/admin/metrics.h"
#include "source/codec/websocket/ws_codec.h"
#include "source/stream/raw_socket_transport.h"

#include "test/stream/http1_test_util.h"

namespace crisp::stream {
namespace {

TEST(SessionLimiterTest, AdmitsUpToTheMaximumAndRefusesOneMore) {
  SessionLimiter limiter(3);
  std::vector<SessionPermit> held;
  for (int i = 0; i < 3; ++i) {
    SessionPermit p = limiter.tryAcquire();
    ASSERT_TRUE(p) << "permit " << i;
    held.push_back(std::move(p));
  }
  EXPECT_EQ(limiter.active(), 3u);
  EXPECT_FALSE(limiter.tryAcquire());
  EXPECT_EQ(limiter.active(), 3u) << "a refusal takes no slot";
  held.pop_back();
  EXPECT_EQ(limiter.active(), 2u);
  SessionPermit again = limiter.tryAcquire();
  EXPECT_TRUE(again);
  EXPECT_EQ(limiter.active(), 3u);
  EXPECT_FALSE(limiter.tryAcquire());
}

TEST(SessionLimiterTest, ZeroAdmitsNothing) {
  SessionLimiter limiter(0);
  EXPECT_FALSE(limiter.tryAcquire());
  EXPECT_EQ(limiter.active(), 0u);
}

TEST(SessionLimiterTest, PermitsReleaseExactlyOnceWhenMovedAndReset) {
  SessionLimiter limiter(2);
  SessionPermit a = limiter.tryAcquire();
  SessionPermit b = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
  EXPECT_TRUE(b);
  EXPECT_EQ(limiter.active(), 1u);
  SessionPermit c = limiter.tryAcquire();
  EXPECT_EQ(limiter.active(), 2u);
  // Assigning over a held permit gives its slot back first.
  c = std::move(b);
  EXPECT_EQ(limiter.active(), 1u);
  c.reset();
  c.reset();
  EXPECT_EQ(limiter.active(), 0u);
  SessionPermit empty;
  empty.reset();
  EXPECT_EQ(limiter.active(), 0u);
}

// Workers on several threads take and give back slots at once: the count
// never passes the maximum and ends at zero.
TEST(SessionLimiterTest, ConcurrentUseNeverPassesTheMaximum) {
  constexpr uint32_t kMax = 5;
  SessionLimiter limiter(kMax);
  std::atomic<bool> over{false};
  std::atomic<uint64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        SessionPermit p = limiter.tryAcquire();
        if (limiter.active() > kMax) {
          over = true;
        }
        if (p) {
          ++admitted;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_FALSE(over.load());
  EXPECT_GT(admitted.load(), 0u);
  EXPECT_EQ(limiter.active(), 0u);
}

// Reads what arrives on the far end of a wrapped transport.
class Sink : public TransportCallbacks {
 public:
  void onTransportData(Buffer& data) override { received += data.toString(); }
  void onTransportEof() override { eof = true; }
  void onTransportDrained() override {}
  void onTransportError(const std::string&) override { error = true; }
  std::string received;
  bool eof = false;
  bool error = false;
};

class PermitTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    client_ = fds[0];
    server_fd_ = fds[1];
  }
  void TearDown() override {
    loop_.runSync([&] { transport_.reset(); });
    ::close(client_);
  }

  void wrap(SessionPermit permit) {
    loop_.runSync([&] {
      transport_ = holdSessionPermit(
          std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd_, "10.1.2.3:4"),
          std::move(permit));
      transport_->setCallbacks(sink_);
      transport_->start();
    });
  }

  test::LoopThread loop_;
  Sink sink_;
  // Declared before the transport, which holds one of its permits and gives
  // it back when TearDown() destroys it: a limiter local to a test body would
  // be gone by then, and the release would write into a dead stack frame.
  SessionLimiter limiter_{1};
  TransportPtr transport_;
  int client_ = -1;
  int server_fd_ = -1;
};

TEST_F(PermitTransportTest, ForwardsBothWaysAndFreesTheSlotOnClose) {
  wrap(limiter_.tryAcquire());
  EXPECT_EQ(limiter_.active(), 1u);
  std::string peer;
  loop_.runSync([&] {
    peer = transport_->peerAddress();
    Buffer out;
    out.add("to client");
    transport_->write(out);
  });
  EXPECT_EQ(peer, "10.1.2.3:4");
  EXPECT_EQ(test::readExactly(client_, 9), "to client");
  ASSERT_TRUE(test::sendAll(client_, "to server"));
  std::string got;
  const auto deadline = std::chrono::steady_clock::now() + test::kClientTimeout;
  while (got.size() < 9 && std::chrono::steady_clock::now() < deadline) {
    loop_.runSync([&] { got = sink_.received; });
    std::this_thread::yield();
  }
  EXPECT_EQ(got, "to server");
  EXPECT_FALSE(limiter_.tryAcquire());
  // Closed but not yet freed (an owner's deferred delete): the slot is free.
  loop_.runSync([&] { transport_->close(); });
  EXPECT_EQ(limiter_.active(), 0u);
  EXPECT_EQ(test::readUntilClose(client_), "");
  loop_.runSync([&] { transport_.reset(); });
  EXPECT_EQ(limiter_.active(), 0u);
}

TEST_F(PermitTransportTest, ForwardsSplicingFromAPipe) {
  wrap(limiter_.tryAcquire());
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], "payload", 7), 7);
  bool accepted = false;
  bool can = false;
  loop_.runSync([&] {
    can = transport_->canWriteFromPipe();
    Buffer header;
    header.add("H:");
    accepted = transport_->writeFromPipe(header, fds[0], 7);
  });
  ::close(fds[0]);
  ::close(fds[1]);
  EXPECT_TRUE(can);
  EXPECT_TRUE(accepted);
  EXPECT_EQ(test::readExactly(client_, 9), "H:payload");
}

TEST_F(PermitTransportTest, DestroyingTheTransportFreesTheSlot) {
  wrap(limiter_.tryAcquire());
  EXPECT_EQ(limiter_.active(), 1u);
  loop_.runSync([&] { transport_.reset(); });
  EXPECT_EQ(limiter_.active(), 0u);
  EXPECT_TRUE(limiter_.tryAcquire());
}

TEST(StreamLimitsTest, DefaultFrameLimitIsTheSpdyWireLimitAndTheWebSocketDefault) {
  const spdy::Limits limits = spdyLimits(kDefaultMaxFrameBytes);
  EXPECT_EQ(limits.max_data_frame_bytes, 0xFFFFFFu);
  EXPECT_EQ(limits.max_control_frame_bytes, 64u * 1024);
  EXPECT_EQ(limits.max_header_block_bytes, spdy::Limits{}.max_header_block_bytes);
  EXPECT_EQ(kDefaultMaxFrameBytes, websocket::kDefaultMaxMessageBytes);
}

TEST(StreamLimitsTest, SmallFrameLimitAppliesToDataAndControlFrames) {
  const spdy::Limits limits = spdyLimits(4096);
  EXPECT_EQ(limits.max_data_frame_bytes, 4096u);
  EXPECT_EQ(limits.max_control_frame_bytes, 4096u);
  EXPECT_EQ(spdyLimits(0xFFFFFF).max_data_frame_bytes, 0xFFFFFFu);
  EXPECT_EQ(spdyLimits(0x1000000).max_data_frame_bytes, 0xFFFFFFu);
  EXPECT_EQ(spdyLimits(100000).max_control_frame_bytes, 64u * 1024);
}

TEST(StreamLimitsTest, CodecErrorsThatAreLimitsAreRecognised) {
  EXPECT_EQ(limitOfCodecError(absl::InvalidArgumentError(
                "spdy.frame_too_large: DATA frame of 9 bytes exceeds the limit of 8")),
            StreamLimit::kFrameBytes);
  EXPECT_EQ(limitOfCodecError(absl::ResourceExhaustedError("ws.message_too_big: message of")),
            StreamLimit::kFrameBytes);
  EXPECT_EQ(limitOfCodecError(absl::InvalidArgumentError("spdy.header_block_too_large: x")),
            StreamLimit::kHeaderBlockBytes);
  EXPECT_EQ(limitOfCodecError(absl::InvalidArgumentError("spdy.unsupported_version: 2")),
            std::nullopt);
  EXPECT_EQ(limitOfCodecError(absl::InvalidArgumentError("ws.unmasked_client_frame")),
            std::nullopt);
  EXPECT_EQ(limitOfCodecError(absl::OkStatus()), std::nullopt);
}

TEST(StreamLimitsTest, HitsAreCountedPerLimitLabel) {
  stats::Registry registry;
  countLimitHit(StreamLimit::kFrameBytes, &registry);
  countLimitHit(StreamLimit::kFrameBytes, &registry);
  countLimitHit(StreamLimit::kMaxSessions, &registry);
  EXPECT_EQ(limitHitCounter(StreamLimit::kFrameBytes, &registry).value(), 2u);
  EXPECT_EQ(limitHitCounter(StreamLimit::kMaxSessions, &registry).value(), 1u);
  EXPECT_EQ(limitHitCounter(StreamLimit::kHeaderBytes, &registry).value(), 0u);
  const std::string text = registry.renderPrometheus();
  EXPECT_NE(text.find("crisp_stream_limit_hits_total{limit=\"frame_bytes\"} 2"), std::string::npos)
      << text;
  EXPECT_NE(text.find("crisp_stream_limit_hits_total{limit=\"max_sessions\"} 1"), std::string::npos)
      << text;
  EXPECT_STREQ(streamLimitName(StreamLimit::kHeaderTimeout), "header_timeout");
  EXPECT_STREQ(streamLimitName(StreamLimit::kHeaderBlockBytes), "header_block_bytes");
  EXPECT_STREQ(streamLimitName(StreamLimit::kPortForwardPairs), "portforward_pairs");
  EXPECT_STREQ(streamLimitName(StreamLimit::kPortForwardEarlyData), "portforward_early_data");
}

// The reason label is the error's leading name; text that does not start
// with a name (a client's bytes echoed in a message, say) never becomes a
// label value.
TEST(StreamLimitsTest, ProtocolErrorReasonIsTheLeadingNameOrOther) {
  EXPECT_EQ(protocolErrorReason("ws.invalid_utf8: payload is not valid UTF-8"), "ws.invalid_utf8");
  EXPECT_EQ(protocolErrorReason("ws.channel.bad_base64: truncated"), "ws.channel.bad_base64");
  EXPECT_EQ(protocolErrorReason("spdy.bad_stream_id"), "spdy.bad_stream_id");
  EXPECT_EQ(protocolErrorReason(""), "other");
  EXPECT_EQ(protocolErrorReason("no name here: x"), "other");
  EXPECT_EQ(protocolErrorReason("nodots: x"), "other");
  EXPECT_EQ(protocolErrorReason("Ws.Upper: x"), "other");
  EXPECT_EQ(protocolErrorReason(".ws.lead: x"), "other");
  EXPECT_EQ(protocolErrorReason("ws.trail.: x"), "other");
  EXPECT_EQ(protocolErrorReason("ws.\xff: x"), "other");
  EXPECT_EQ(protocolErrorReason("ws." + std::string(100, 'a') + ": x"), "other");

  stats::Registry registry;
  countProtocolError("ws.invalid_utf8: a", &registry);
  countProtocolError(absl::InvalidArgumentError("ws.invalid_utf8: b"), &registry);
  countProtocolError("garbage \"} 1\n", &registry);
  EXPECT_EQ(protocolErrorCounter("ws.invalid_utf8", &registry).value(), 2u);
  EXPECT_EQ(protocolErrorCounter("other", &registry).value(), 1u);
  const std::string text = registry.renderPrometheus();
  EXPECT_NE(text.find("crisp_stream_protocol_errors_total{reason=\"ws.invalid_utf8\"} 2"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace crisp::stream
