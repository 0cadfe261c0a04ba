#include "source/stream/ws_connection.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/stream/raw_socket_transport.h"

#include "test/stream/buffering_relay.h"
#include "test/stream/spdy_test_client.h"
#include "test/stream/ws_test_client.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;
using testing::LoopThread;
using testing::rawFrame;
using testing::WsTestClient;
using websocket::MessageType;
using Event = WsTestClient::Event;

constexpr uint8_t kOpText = 0x1;
constexpr uint8_t kOpBinary = 0x2;
constexpr uint8_t kOpContinuation = 0x0;

// The connection's owner: records what it hears, on the loop thread; the test
// reads it through LoopThread::run().
class Owner : public WsConnectionCallbacks {
 public:
  struct Message {
    MessageType type;
    std::string data;
  };

  void onMessage(MessageType type, Buffer& payload) override {
    messages.push_back({type, payload.toString()});
    if (echo && connection != nullptr) {
      connection->sendMessage(type, messages.back().data);
    }
  }
  void onOutputAboveHighWatermark() override { watermarks.push_back(true); }
  void onOutputBelowLowWatermark() override { watermarks.push_back(false); }
  void onConnectionClosing(WsCloseReason reason, const std::string& detail) override {
    closing.push_back(reason);
    closing_detail = detail;
  }
  void onConnectionClosed() override { ++closed; }

  WsConnection* connection = nullptr;
  bool echo = false;
  std::vector<Message> messages;
  std::vector<bool> watermarks;
  std::vector<WsCloseReason> closing;
  std::string closing_detail;
  int closed = 0;
};

class WsConnectionTest : public ::testing::Test {
 protected:
  static WsConnectionConfig testConfig() {
    WsConnectionConfig config;
    config.close_timeout = milliseconds(300);
    config.linger_timeout = milliseconds(300);
    return config;
  }

  void start(const WsConnectionConfig& config = testConfig(), std::string leftover = {}) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    startOn(fds[1], fds[0], config, std::move(leftover));
  }

  // The server on `server_fd`, the test client on `client_fd`.
  void startOn(int server_fd, int client_fd, const WsConnectionConfig& config,
               std::string leftover = {}) {
    client_ = std::make_unique<WsTestClient>(client_fd);
    const bool ok = loop_.run([&] {
      Buffer input;
      input.add(leftover);
      auto transport = std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd,
                                                            "socketpair", std::move(input));
      auto created =
          WsConnection::create(loop_.dispatcher(), std::move(transport), 7, owner_, config);
      if (!created.ok()) {
        return false;
      }
      connection_ = std::move(created).value();
      owner_.connection = connection_.get();
      connection_->start();
      return true;
    });
    ASSERT_TRUE(ok);
  }

  void TearDown() override {
    loop_.stop();
    connection_.reset();
  }

  template <class F>
  auto onLoop(F&& f) {
    return loop_.run(std::forward<F>(f));
  }

  size_t messageCount() {
    return onLoop([&] { return owner_.messages.size(); });
  }

  bool closedOnce() {
    return loop_.waitUntil([&] { return owner_.closed == 1; });
  }

  LoopThread loop_;
  Owner owner_;  // loop thread only
  std::unique_ptr<WsConnection> connection_;
  std::unique_ptr<WsTestClient> client_;
};

TEST_F(WsConnectionTest, MessagesFlowBothWaysWholeAndFragmented) {
  owner_.echo = true;
  start();
  ASSERT_TRUE(client_->send(MessageType::kBinary, std::string("\x00\x01\xff", 3)));
  ASSERT_TRUE(client_->send(MessageType::kText, "hello"));
  // A message in three fragments, written one byte at a time.
  const std::string fragmented = rawFrame(kOpBinary, "ab", true, false) +
                                 rawFrame(kOpContinuation, "cd", true, false) +
                                 rawFrame(kOpContinuation, "ef", true, true);
  for (char c : fragmented) {
    ASSERT_TRUE(client_->raw(std::string(1, c)));
  }
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Event::Kind::kMessage) == 3; }));
  const auto& events = client_->events();
  EXPECT_EQ(events[0].type, MessageType::kBinary);
  EXPECT_EQ(events[0].channel, 0);
  EXPECT_EQ(events[0].data, std::string("\x01\xff", 2));
  EXPECT_EQ(events[1].type, MessageType::kText);
  EXPECT_EQ(events[2].type, MessageType::kBinary);
  EXPECT_EQ(static_cast<char>(events[2].channel), 'a');
  EXPECT_EQ(events[2].data, "bcdef");
  EXPECT_EQ(onLoop([&] { return connection_->messagesReceived(); }), 3u);
}

TEST_F(WsConnectionTest, LeftoverBytesAreDeliveredFirst) {
  start(testConfig(), rawFrame(kOpBinary, "early"));
  ASSERT_TRUE(client_->send(MessageType::kBinary, "late"));
  ASSERT_TRUE(loop_.waitUntil([&] { return owner_.messages.size() == 2; }));
  onLoop([&] {
    EXPECT_EQ(owner_.messages[0].data, "early");
    EXPECT_EQ(owner_.messages[1].data, "late");
    return 0;
  });
}

TEST_F(WsConnectionTest, PingIsAnsweredWithTheSamePayload) {
  start();
  ASSERT_TRUE(client_->ping("are you there"));
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Event::Kind::kPong) == 1; }));
  EXPECT_EQ(client_->events().back().data, "are you there");
  EXPECT_EQ(onLoop([&] { return connection_->pingsReceived(); }), 1u);
  EXPECT_EQ(messageCount(), 0u);
}

TEST_F(WsConnectionTest, KeepalivePingsTheClient) {
  WsConnectionConfig config = testConfig();
  config.keepalive_interval = milliseconds(50);
  start(config);
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Event::Kind::kPing) >= 3; }));
  // The client's codec answered each one.
  EXPECT_TRUE(loop_.waitUntil([&] { return connection_->pongsReceived() >= 3; }));
  EXPECT_TRUE(onLoop([&] { return connection_->open(); }));
}

TEST_F(WsConnectionTest, ClientPingsKeepAnIdleConnectionOpenAndSilenceClosesIt) {
  WsConnectionConfig config = testConfig();
  config.idle_timeout = milliseconds(300);
  start(config);
  const auto began = std::chrono::steady_clock::now();
  // Pings every 100 ms for well past the idle timeout.
  auto silent = began;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(client_->ping("k"));
    silent = std::chrono::steady_clock::now();
    EXPECT_FALSE(client_->waitFor([&] { return client_->closeReceived(); }, milliseconds(100)));
  }
  EXPECT_GE(std::chrono::steady_clock::now() - began, milliseconds(700));
  EXPECT_TRUE(onLoop([&] { return connection_->open(); }));
  // Silence since the last ping: closed with 1001 and the reason.
  ASSERT_TRUE(client_->waitFor([&] { return client_->closeReceived(); }, milliseconds(2000)));
  EXPECT_GE(std::chrono::steady_clock::now() - silent, milliseconds(250));
  EXPECT_EQ(client_->closeCode(), websocket::kCloseGoingAway);
  EXPECT_EQ(client_->closeReason(), "ws.idle_timeout");
  ASSERT_TRUE(client_->waitForEof());
  ASSERT_TRUE(closedOnce());
  onLoop([&] {
    EXPECT_EQ(owner_.closing, std::vector<WsCloseReason>{WsCloseReason::kIdleTimeout});
    return 0;
  });
}

TEST_F(WsConnectionTest, LocalCloseWaitsForTheClientsCloseThenEnds) {
  start();
  const bool sent = onLoop([&] {
    const bool first = connection_->sendMessage(MessageType::kBinary, "last words");
    connection_->close(websocket::kCloseNormal);
    // Nothing is sent after the close.
    return first && !connection_->sendMessage(MessageType::kBinary, "too late");
  });
  EXPECT_TRUE(sent);
  ASSERT_TRUE(client_->waitForEof());
  ASSERT_EQ(client_->events().size(), 2u);
  EXPECT_EQ(client_->events()[0].data, "ast words");  // channel byte 'l'
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  ASSERT_TRUE(closedOnce());
  onLoop([&] {
    EXPECT_EQ(connection_->closeCodeSent(), websocket::kCloseNormal);
    // The client's automatic reply arrived before the transport closed.
    EXPECT_EQ(connection_->closeCodeReceived(), websocket::kCloseNormal);
    EXPECT_TRUE(owner_.closing.empty());  // a local close is not reported
    return 0;
  });
}

TEST_F(WsConnectionTest, LocalCloseGivesUpOnAClientThatNeverAnswers) {
  start();
  client_->setAutoReply(false);
  const auto began = std::chrono::steady_clock::now();
  onLoop([&] {
    connection_->close(websocket::kCloseNormal);
    return 0;
  });
  ASSERT_TRUE(client_->waitFor([&] { return client_->closeReceived(); }));
  // The write side ends after the close timeout; the transport after the linger.
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  const auto took = std::chrono::steady_clock::now() - began;
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, milliseconds(2500));
  EXPECT_TRUE(closedOnce());
  EXPECT_EQ(onLoop([&] { return connection_->closeCodeReceived(); }), websocket::kCloseAbnormal);
}

TEST_F(WsConnectionTest, ClientCloseIsEchoedAndReported) {
  start();
  ASSERT_TRUE(client_->close(4000, "bye"));
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_EQ(client_->closeCode(), 4000);  // echoed
  ASSERT_TRUE(closedOnce());
  onLoop([&] {
    EXPECT_EQ(owner_.closing, std::vector<WsCloseReason>{WsCloseReason::kPeerClose});
    EXPECT_FALSE(connection_->sendMessage(MessageType::kBinary, "x"));
    return 0;
  });
}

TEST_F(WsConnectionTest, ClientVanishingIsReportedAsEof) {
  start();
  ASSERT_TRUE(client_->send(MessageType::kBinary, "x"));
  ASSERT_TRUE(loop_.waitUntil([&] { return owner_.messages.size() == 1; }));
  client_->closeSocket();
  ASSERT_TRUE(closedOnce());
  onLoop([&] {
    EXPECT_EQ(owner_.closing, std::vector<WsCloseReason>{WsCloseReason::kPeerEof});
    return 0;
  });
}

struct BadInputCase {
  const char* name;
  std::string bytes;
  uint16_t code;
  const char* reason;  // on the wire
  const char* detail;  // what the owner hears first
};

TEST_F(WsConnectionTest, ProtocolErrorsCloseWithTheCodecsCodeAndReason) {
  const std::vector<BadInputCase> cases = {
      {"unmasked", rawFrame(kOpBinary, "plain", /*masked=*/false), websocket::kCloseProtocolError,
       "ws.unmasked_client_frame", "ws.unmasked_client_frame"},
      {"oversized", rawFrame(kOpBinary, std::string(2000, 'x')), websocket::kCloseMessageTooBig,
       "ws.message_too_big", "ws.message_too_big"},
      {"announced_huge", rawFrame(kOpBinary, "", true, true, uint64_t{1} << 40),
       websocket::kCloseMessageTooBig, "ws.message_too_big", "ws.message_too_big"},
      // wslay writes this close itself, without a reason.
      {"bad_utf8", rawFrame(kOpText, "\xc3\x28"), websocket::kCloseInvalidPayload, "",
       "ws.invalid_utf8"},
      {"reserved_opcode", rawFrame(0x3, "x"), websocket::kCloseProtocolError, "ws.unknown_opcode",
       "ws.unknown_opcode"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    LoopThread loop;
    Owner owner;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    WsTestClient client(fds[0]);
    std::unique_ptr<WsConnection> connection;
    WsConnectionConfig config = testConfig();
    config.max_message_bytes = 1024;
    loop.run([&] {
      auto transport =
          std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "socketpair");
      connection =
          WsConnection::create(loop.dispatcher(), std::move(transport), 9, owner, config).value();
      connection->start();
      return 0;
    });
    // A good message first: it is delivered, the bad frame then ends it all.
    ASSERT_TRUE(client.send(MessageType::kBinary, "fine"));
    ASSERT_TRUE(client.raw(c.bytes));
    ASSERT_TRUE(client.waitForEof());
    EXPECT_EQ(client.closeCode(), c.code);
    EXPECT_EQ(client.closeReason(), c.reason);
    ASSERT_TRUE(loop.waitUntil([&] { return owner.closed == 1; }));
    loop.run([&] {
      EXPECT_EQ(owner.messages.size(), 1u);
      EXPECT_EQ(owner.closing, std::vector<WsCloseReason>{WsCloseReason::kProtocolError});
      EXPECT_EQ(owner.closing_detail.rfind(c.detail, 0), 0u) << owner.closing_detail;
      return 0;
    });
    loop.stop();
  }
}

TEST_F(WsConnectionTest, WatermarksFollowTheClientsReading) {
  WsConnectionConfig config = testConfig();
  config.output_high_watermark = 256 * 1024;
  config.output_low_watermark = 64 * 1024;
  start(config);
  // Fill until the owner is told to pause (the client reads nothing).
  const std::string chunk(16 * 1024, 'z');
  ASSERT_TRUE(loop_.waitUntil([&] {
    if (owner_.watermarks.empty()) {
      connection_->sendMessage(MessageType::kBinary, chunk);
    }
    return !owner_.watermarks.empty();
  }));
  const size_t queued = onLoop([&] { return connection_->queuedOutputBytes(); });
  EXPECT_GT(queued, 256u * 1024);
  EXPECT_TRUE(onLoop([&] { return connection_->aboveHighWatermark(); }));
  // The client reads: the owner hears it may go on.
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Event::Kind::kMessage) > 10; }));
  ASSERT_TRUE(loop_.waitUntil([&] { return owner_.watermarks.size() == 2; }));
  onLoop([&] {
    EXPECT_EQ(owner_.watermarks, (std::vector<bool>{true, false}));
    return 0;
  });
}

// A client that pings without reading: reading stops once the pong queue is
// past its bound, so crisp's memory stays flat.
TEST_F(WsConnectionTest, PingFloodWithoutReadingStaysBounded) {
  WsConnectionConfig config = testConfig();
  config.output_high_watermark = 64 * 1024;
  config.output_low_watermark = 16 * 1024;
  config.max_queued_output = 256 * 1024;
  start(config);
  client_->setReadWhileWriting(false);
  const std::string payload(125, 'p');
  const std::string frame = rawFrame(0x9, payload);
  std::string batch;
  for (int i = 0; i < 1000; ++i) {
    batch += frame;
  }
  // Up to 13 MB of pings: the client's writes block once the server stops
  // reading and both socket buffers are full.
  client_->setSendTimeout(milliseconds(300));
  bool blocked = false;
  size_t pings_sent = 0;
  for (int i = 0; i < 100 && !blocked; ++i) {
    blocked = !client_->raw(batch);
    pings_sent += 1000;
  }
  EXPECT_TRUE(blocked) << "the server read 13 MB of pings without writing a pong";
  const size_t queued = onLoop([&] { return connection_->queuedOutputBytes(); });
  // Reading stopped with a backlog still queued (not merely because the
  // socket was full), and the queue is within the bound plus at most one read
  // burst of pings turned into pongs.
  EXPECT_GT(queued, 64u * 1024);
  EXPECT_LE(queued, 256u * 1024 + 300 * 1024);
  EXPECT_TRUE(onLoop([&] { return connection_->open(); }));
  // Once the client reads, the server reads again and answers the rest.
  EXPECT_TRUE(
      client_->waitFor([&] { return client_->count(Event::Kind::kPong) >= pings_sent - 1000; },
                       milliseconds(10000)));
}

// B15 over WebSocket: with megabytes of messages queued for a client that
// does not read, its ping is still read, and the pong overtakes the queued
// messages (behind at most what the socket and the transport already hold).
TEST_F(WsConnectionTest, PongGoesAheadOfQueuedMessagesWhileTheClientDoesNotRead) {
  WsConnectionConfig config = testConfig();
  config.output_high_watermark = 64 * 1024 * 1024;
  config.output_low_watermark = 1024 * 1024;
  start(config);
  constexpr size_t kMessageBytes = 64 * 1024;
  constexpr size_t kMessages = 128;  // 8 MiB
  const size_t total = onLoop([&] {
    for (size_t i = 0; i < kMessages; ++i) {
      EXPECT_TRUE(connection_->sendMessage(MessageType::kBinary,
                                           "\x01" + std::string(kMessageBytes - 1, 'm')));
    }
    return connection_->queuedOutputBytes();
  });
  ASSERT_TRUE(client_->ping("keepalive"));
  ASSERT_TRUE(loop_.waitUntil([&] { return connection_->pingsReceived() == 1; }))
      << "a ping behind a backlog was not read";
  const size_t queued = onLoop([&] { return connection_->queuedOutputBytes(); });
  ASSERT_GT(queued, total / 2);
  const size_t written = total > queued ? total - queued : 0;

  ASSERT_TRUE(client_->waitFor([&] { return client_->channelMessages(1) == kMessages; },
                               milliseconds(10000)));
  const auto pong = client_->find([](const Event& e) { return e.kind == Event::Kind::kPong; });
  ASSERT_TRUE(pong.has_value());
  size_t before = 0;
  for (size_t i = 0; i < *pong; ++i) {
    if (client_->events()[i].kind == Event::Kind::kMessage) {
      before += kMessageBytes + 10;  // payload and frame header
    }
  }
  EXPECT_LE(before, written + config.transport_queue_bytes + kMessageBytes + 10);
  EXPECT_EQ(client_->channelData(1).size(), kMessages * (kMessageBytes - 1));
}

// B15 through a proxy: the proxy takes all of crisp's output at once (every
// byte looks delivered) and hands it to a client reading at 2 MB/s, which
// pings every 100 ms. crisp must wait for that client's close frame while it
// still reads, not close its socket: the proxy would fail to forward the next
// ping and end both directions (kubectl: close 1006, abnormal closure).
TEST_F(WsConnectionTest, SlowReaderBehindAProxyGetsEveryMessageAndTheClose) {
  WsConnectionConfig config = testConfig();  // close and linger timeouts of 300 ms
  testing::BufferingRelay relay(2 * 1000 * 1000);
  const int server_fd = relay.takeServerFd();
  startOn(server_fd, relay.takeClientFd(), config);
  relay.start();
  constexpr size_t kMessageBytes = 50 * 1000;
  constexpr size_t kMessages = 40;  // 2 MB
  onLoop([&] {
    for (size_t i = 0; i < kMessages; ++i) {
      EXPECT_TRUE(connection_->sendMessage(MessageType::kBinary,
                                           "\x01" + std::string(kMessageBytes - 1, 'o')));
    }
    connection_->close(websocket::kCloseNormal);
    return 0;
  });
  ASSERT_TRUE(loop_.waitUntil([&] { return connection_->queuedOutputBytes() == 0; }));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!client_->eof() && std::chrono::steady_clock::now() < deadline) {
    client_->ping("alive");
    client_->waitFor([] { return false; }, milliseconds(100));
  }
  EXPECT_FALSE(relay.tornDown()) << "crisp closed while the client was still reading";
  EXPECT_EQ(client_->channelData(1).size(), kMessages * (kMessageBytes - 1));
  ASSERT_TRUE(client_->closeReceived());
  EXPECT_EQ(client_->closeCode(), websocket::kCloseNormal);
  EXPECT_EQ(onLoop([&] { return connection_->closeCodeReceived(); }), websocket::kCloseNormal);
  client_->closeSocket();
  EXPECT_TRUE(closedOnce());
}

TEST_F(WsConnectionTest, PausedReadingHoldsMessagesBack) {
  start();
  onLoop([&] {
    connection_->pauseReading(true);
    return 0;
  });
  ASSERT_TRUE(client_->send(MessageType::kBinary, "held"));
  EXPECT_FALSE(loop_.waitUntil([&] { return !owner_.messages.empty(); }, milliseconds(200)));
  onLoop([&] {
    connection_->pauseReading(false);
    return 0;
  });
  EXPECT_TRUE(loop_.waitUntil([&] { return owner_.messages.size() == 1; }));
}

TEST_F(WsConnectionTest, ErrorClosesAreOnlyReportedOnce) {
  start();
  ASSERT_TRUE(client_->raw(rawFrame(kOpBinary, "a", false) + rawFrame(kOpBinary, "b", false)));
  client_->closeSocket();
  ASSERT_TRUE(closedOnce());
  EXPECT_FALSE(loop_.waitUntil([&] { return owner_.closed > 1; }, milliseconds(100)));
  onLoop([&] {
    EXPECT_EQ(owner_.closing.size(), 1u);
    return 0;
  });
}

}  // namespace
}  // namespace crisp::stream
