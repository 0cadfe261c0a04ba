#include "source/stream/spdy_connection.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <sys/socket.h>

#include "source/stream/raw_socket_transport.h"

#include "test/stream/buffering_relay.h"
#include "test/stream/spdy_test_client.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;
using testing::LoopThread;
using testing::SpdyTestClient;
using Frame = SpdyTestClient::Frame;

// Records the connection's callbacks as short strings ("open 1", "data 1 5",
// "fin 1", "reset 3 5", "above", "below", "closing spdy.idle_timeout",
// "closed"). Lives on the loop; read it through LoopThread::run().
class Recorder : public SpdyConnectionCallbacks {
 public:
  bool onStreamOpen(uint32_t stream_id, const spdy::HeaderList& headers) override {
    const std::string* type = spdy::findHeader(headers, "streamtype");
    const bool refuse = type != nullptr && *type == "refuse";
    events.push_back((refuse ? "refuse " : "open ") + std::to_string(stream_id));
    return !refuse;
  }
  void onStreamData(uint32_t stream_id, Buffer& data) override {
    events.push_back("data " + std::to_string(stream_id) + " " + std::to_string(data.length()));
    received[stream_id] += data.toString();
  }
  void onStreamRemoteFin(uint32_t stream_id) override {
    events.push_back("fin " + std::to_string(stream_id));
  }
  void onStreamReset(uint32_t stream_id, spdy::RstStatus status) override {
    events.push_back("reset " + std::to_string(stream_id) + " " +
                     std::to_string(static_cast<uint32_t>(status)));
  }
  void onOutputAboveHighWatermark() override { events.push_back("above"); }
  void onOutputBelowLowWatermark() override { events.push_back("below"); }
  void onConnectionClosing(SpdyCloseReason reason, const std::string&) override {
    events.push_back(std::string("closing ") + closeReasonName(reason));
  }
  void onConnectionClosed() override { events.push_back("closed"); }

  bool has(const std::string& e) const {
    return std::find(events.begin(), events.end(), e) != events.end();
  }

  std::vector<std::string> events;
  std::map<uint32_t, std::string> received;
};

class SpdyConnectionTest : public ::testing::Test {
 protected:
  void start(const SpdyConnectionConfig& config = {}, const std::string& leftover = "",
             const std::string& pending = "") {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    startOn(fds[1], fds[0], config, leftover, pending);
  }

  // The server on `server_fd`, the test client on `client_fd`.
  void startOn(int server_fd, int client_fd, const SpdyConnectionConfig& config,
               const std::string& leftover = "", const std::string& pending = "") {
    client_ = std::make_unique<SpdyTestClient>(client_fd);
    client_fd_ = client_fd;
    loop_.run([&] {
      Buffer left;
      left.add(leftover);
      Buffer out;
      out.add(pending);
      conn_ = std::make_unique<SpdyConnection>(
          loop_.dispatcher(),
          std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd, "client",
                                               std::move(left), std::move(out)),
          7, rec_, config);
      conn_->start();
      return 0;
    });
  }

  void TearDown() override {
    loop_.stop();
    conn_.reset();
  }

  bool recorded(const std::string& e) {
    return loop_.waitUntil([&] { return rec_.has(e); });
  }
  std::vector<std::string> events() {
    return loop_.run([&] { return rec_.events; });
  }
  size_t streamCount() {
    return loop_.run([&] { return conn_->streamCount(); });
  }

  // Round trip: every frame the client sent before has been handled once the
  // server's answer to this ping arrives.
  void sync(uint32_t ping_id) {
    ASSERT_TRUE(client_->ping(ping_id));
    ASSERT_TRUE(client_->waitFor([&] {
      return client_
          ->find(
              [&](const Frame& f) { return f.type == Frame::Type::kPing && f.ping_id == ping_id; })
          .has_value();
    })) << client_->error();
  }

  int client_fd_ = -1;
  LoopThread loop_;
  Recorder rec_;
  std::unique_ptr<SpdyConnection> conn_;
  std::unique_ptr<SpdyTestClient> client_;
};

TEST_F(SpdyConnectionTest, AcceptsOddIncreasingIdsWithEmptySynReply) {
  start();
  EXPECT_EQ(client_->openStream("a"), 1u);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(1).replied; }));
  const auto reply = client_->find([](const Frame& f) { return f.type == Frame::Type::kSynReply; });
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(client_->frames()[*reply].stream_id, 1u);
  EXPECT_EQ(client_->frames()[*reply].flags, 0);
  EXPECT_TRUE(client_->frames()[*reply].headers.empty());

  ASSERT_TRUE(client_->synStream(2, {{"streamtype", "even"}}));  // server parity
  ASSERT_TRUE(client_->synStream(7, {{"streamtype", "b"}}));
  ASSERT_TRUE(client_->synStream(5, {{"streamtype", "decreasing"}}));
  ASSERT_TRUE(client_->synStream(7, {{"streamtype", "again"}}));
  sync(1);
  EXPECT_TRUE(client_->stream(7).replied);
  for (uint32_t bad : {2u, 5u}) {
    EXPECT_TRUE(client_->stream(bad).reset) << bad;
    EXPECT_EQ(client_->stream(bad).rst_status, spdy::RstStatus::kProtocolError) << bad;
  }
  EXPECT_EQ(client_->count(Frame::Type::kRst), 3u);  // 2, 5 and the second 7
  const auto ev = events();
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "open 7"), 1);
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "open 5"), 0);
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "open 2"), 0);
  // The duplicate SYN_STREAM for 7 is an error on stream 7 as well.
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "reset 7 1"), 1);
  EXPECT_EQ(streamCount(), 1u);
}

TEST_F(SpdyConnectionTest, RefusedStreamGetsRstCancelAndIsForgotten) {
  start();
  const uint32_t id = client_->openStream("refuse");
  sync(1);
  EXPECT_FALSE(client_->stream(id).replied);
  EXPECT_TRUE(client_->stream(id).reset);
  EXPECT_EQ(client_->stream(id).rst_status, spdy::RstStatus::kCancel);
  EXPECT_EQ(streamCount(), 0u);
}

TEST_F(SpdyConnectionTest, EchoesClientPingsOnly) {
  start();
  ASSERT_TRUE(client_->ping(1));
  ASSERT_TRUE(client_->ping(2));  // a server-parity id is a reply, not a request
  ASSERT_TRUE(client_->ping(0xFFFFFFFF));
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Frame::Type::kPing) == 2; }));
  sync(3);
  std::vector<uint32_t> ids;
  for (const auto& f : client_->frames()) {
    if (f.type == Frame::Type::kPing) {
      ids.push_back(f.ping_id);
    }
  }
  EXPECT_EQ(ids, (std::vector<uint32_t>{1, 0xFFFFFFFF, 3}));
  EXPECT_EQ(loop_.run([&] { return conn_->pingsReceived(); }), 4u);
}

TEST_F(SpdyConnectionTest, SplitsOutgoingDataIntoFramesOf128KiB) {
  start();
  const uint32_t id = client_->openStream("out");
  sync(1);
  std::string payload(300 * 1024, '\0');
  for (size_t i = 0; i < payload.size(); ++i) {
    payload[i] = static_cast<char>(i * 7 % 251);
  }
  EXPECT_TRUE(loop_.run([&] { return conn_->sendData(id, payload, true); }));
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(id).fin; }));
  std::vector<size_t> sizes;
  std::vector<bool> fins;
  for (const auto& f : client_->frames()) {
    if (f.type == Frame::Type::kData) {
      sizes.push_back(f.data_size);
      fins.push_back(f.fin());
    }
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{131072, 131072, 45056}));
  EXPECT_EQ(fins, (std::vector<bool>{false, false, true}));
  EXPECT_EQ(client_->stream(id).data, payload);
  // FIN'd by us only: still in the table until the client FINs too.
  EXPECT_EQ(streamCount(), 1u);
  ASSERT_TRUE(client_->data(id, "", true));
  sync(3);
  EXPECT_EQ(streamCount(), 0u);
  EXPECT_FALSE(loop_.run([&] { return conn_->sendData(id, "late", false); }));
}

TEST_F(SpdyConnectionTest, EndsOutgoingFramesAtSegmentBoundaries) {
  start();
  const uint32_t id = client_->openStream("out");
  sync(1);
  // Four separately read pieces of 40 KiB: three fit in one frame whole, the
  // fourth starts the next, and no piece is cut.
  std::string expected;
  Buffer data;
  for (int piece = 0; piece < 4; ++piece) {
    const std::string bytes(40 * 1024, static_cast<char>('a' + piece));
    Buffer segment;
    segment.add(bytes);
    data.move(segment);
    expected += bytes;
  }
  EXPECT_TRUE(loop_.run([&] { return conn_->sendData(id, data, true); }));
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(id).fin; }));
  std::vector<size_t> sizes;
  for (const auto& f : client_->frames()) {
    if (f.type == Frame::Type::kData) {
      sizes.push_back(f.data_size);
    }
  }
  EXPECT_EQ(sizes, (std::vector<size_t>{120 * 1024, 40 * 1024}));
  EXPECT_EQ(client_->stream(id).data, expected);
}

TEST_F(SpdyConnectionTest, CloseResetsUnfinishedStreamsBehindQueuedDataThenGoAway) {
  start();
  const uint32_t a = client_->openStream("a");
  const uint32_t b = client_->openStream("b");
  const uint32_t c = client_->openStream("c");
  ASSERT_TRUE(client_->data(c, "", true));  // the client is done sending on c
  sync(1);
  loop_.run([&] {
    EXPECT_TRUE(conn_->sendData(b, std::string(70000, 'x'), true));
    conn_->close();
    EXPECT_FALSE(conn_->open());
    EXPECT_FALSE(conn_->sendData(a, "refused", false));
    return 0;
  });
  ASSERT_TRUE(client_->waitForEof()) << client_->error();
  const auto& frames = client_->frames();
  const auto last_b = client_->findLast(
      [&](const Frame& f) { return f.type == Frame::Type::kData && f.stream_id == b; });
  const auto rst_a = client_->find(
      [&](const Frame& f) { return f.type == Frame::Type::kRst && f.stream_id == a; });
  const auto rst_c = client_->find(
      [&](const Frame& f) { return f.type == Frame::Type::kRst && f.stream_id == c; });
  const auto goaway = client_->find([](const Frame& f) { return f.type == Frame::Type::kGoAway; });
  ASSERT_TRUE(last_b && rst_a && rst_c && goaway);
  EXPECT_TRUE(frames[*last_b].fin());
  EXPECT_EQ(client_->stream(b).data.size(), 70000u);
  EXPECT_LT(*last_b, *rst_a);
  EXPECT_LT(*rst_a, *goaway);
  EXPECT_LT(*rst_c, *goaway);
  EXPECT_EQ(frames[*rst_a].rst_status, spdy::RstStatus::kCancel);
  EXPECT_EQ(frames[*rst_c].rst_status, spdy::RstStatus::kCancel);
  EXPECT_FALSE(client_->find(
      [&](const Frame& f) { return f.type == Frame::Type::kRst && f.stream_id == b; }));
  EXPECT_EQ(*goaway, frames.size() - 1);
  EXPECT_EQ(frames[*goaway].goaway_status, spdy::GoAwayStatus::kOk);
  EXPECT_EQ(frames[*goaway].stream_id, c);  // last stream the server saw
  // The server waits for the client's close (linger), then closes its socket.
  EXPECT_FALSE(loop_.run([&] { return rec_.has("closed"); }));
  client_->closeSocket();
  EXPECT_TRUE(recorded("closed"));
  EXPECT_FALSE(loop_.run([&] { return rec_.has("closing local"); }));  // not told for close()
}

TEST_F(SpdyConnectionTest, LingerIsBoundedWhenTheClientNeverCloses) {
  SpdyConnectionConfig config;
  config.linger_timeout = milliseconds(100);
  start(config);
  client_->openStream("a");
  sync(1);
  loop_.run([&] {
    conn_->close();
    return 0;
  });
  ASSERT_TRUE(client_->waitForEof());
  EXPECT_TRUE(recorded("closed"));
}

TEST_F(SpdyConnectionTest, ClientClosingTheSocketEndsTheConnection) {
  start();
  client_->openStream("a");
  client_->openStream("b");
  sync(1);
  EXPECT_EQ(streamCount(), 2u);
  client_->closeSocket();
  ASSERT_TRUE(recorded("closed"));
  const auto ev = events();
  const auto closing = std::find(ev.begin(), ev.end(), "closing spdy.peer_closed");
  ASSERT_NE(closing, ev.end());
  EXPECT_EQ(ev.back(), "closed");
  EXPECT_EQ(streamCount(), 0u);
}

TEST_F(SpdyConnectionTest, MalformedFramingGetsGoAwayProtocolErrorAndClose) {
  start();
  client_->openStream("a");
  sync(1);
  // A SYN_STREAM of SPDY version 2.
  ASSERT_TRUE(
      client_->raw(std::string("\x80\x02\x00\x01\x00\x00\x00\x0a", 8) + std::string(10, '\0')));
  ASSERT_TRUE(client_->waitForEof());
  ASSERT_TRUE(client_->goAwayReceived());
  EXPECT_EQ(*client_->goAwayStatus(), spdy::GoAwayStatus::kProtocolError);
  // The open stream was reset before the GOAWAY.
  EXPECT_TRUE(client_->stream(1).reset);
  client_->closeSocket();
  ASSERT_TRUE(recorded("closed"));
  EXPECT_TRUE(loop_.run([&] { return rec_.has("closing spdy.protocol_error"); }));
}

TEST_F(SpdyConnectionTest, RandomGarbageNeverCrashes) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    LoopThread loop;
    Recorder rec;
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    SpdyTestClient client(fds[0]);
    std::unique_ptr<SpdyConnection> conn;
    SpdyConnectionConfig config;
    config.linger_timeout = milliseconds(50);
    config.idle_timeout = milliseconds(100);
    loop.run([&] {
      conn = std::make_unique<SpdyConnection>(
          loop.dispatcher(), std::make_unique<RawSocketTransport>(loop.dispatcher(), fds[1], "c"),
          seed, rec, config);
      conn->start();
      return 0;
    });
    std::mt19937 rng(seed);
    std::string garbage(4096, '\0');
    for (auto& c : garbage) {
      c = static_cast<char>(rng());
    }
    client.raw(garbage);
    // Whatever the bytes mean, the connection ends (protocol error, or idle
    // timeout while waiting for a frame that never completes) and cleans up.
    EXPECT_TRUE(client.waitForEof(milliseconds(3000))) << "seed " << seed;
    client.closeSocket();
    EXPECT_TRUE(loop.waitUntil([&] { return rec.has("closed"); })) << "seed " << seed;
    EXPECT_EQ(loop.run([&] { return conn->streamCount(); }), 0u);
    loop.stop();
  }
}

TEST_F(SpdyConnectionTest, IdleTimeoutClosesWithGoAway) {
  SpdyConnectionConfig config;
  config.idle_timeout = milliseconds(200);
  config.linger_timeout = milliseconds(100);
  start(config);
  const auto began = std::chrono::steady_clock::now();
  ASSERT_TRUE(client_->waitForEof(milliseconds(3000)));
  EXPECT_GE(std::chrono::steady_clock::now() - began, milliseconds(150));
  ASSERT_TRUE(client_->goAwayReceived());
  EXPECT_EQ(*client_->goAwayStatus(), spdy::GoAwayStatus::kOk);
  ASSERT_TRUE(recorded("closed"));
  EXPECT_TRUE(loop_.run([&] { return rec_.has("closing spdy.idle_timeout"); }));
}

TEST_F(SpdyConnectionTest, FramesKeepTheIdleTimerFromFiring) {
  SpdyConnectionConfig config;
  config.idle_timeout = milliseconds(300);
  start(config);
  // Ping every 100 ms for about a second: three idle periods.
  for (uint32_t i = 0; i < 10; ++i) {
    sync(2 * i + 1);
    client_->waitFor([] { return false; }, milliseconds(100));
    ASSERT_FALSE(client_->eof()) << "closed after ping " << i;
  }
  EXPECT_FALSE(client_->goAwayReceived());
  EXPECT_TRUE(loop_.run([&] { return conn_->open(); }));
}

TEST_F(SpdyConnectionTest, OutputWatermarksAreEdgeTriggered) {
  SpdyConnectionConfig config;
  config.output_high_watermark = 64 * 1024;
  config.output_low_watermark = 16 * 1024;
  start(config);
  const uint32_t id = client_->openStream("out");
  sync(1);
  const std::string payload(1024 * 1024, 'z');
  loop_.run([&] {
    conn_->sendData(id, payload.substr(0, 512 * 1024), false);
    EXPECT_TRUE(conn_->aboveHighWatermark());
    conn_->sendData(id, payload.substr(512 * 1024), true);
    return 0;
  });
  auto ev = events();
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "above"), 1);
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "below"), 0);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(id).fin; }));
  EXPECT_EQ(client_->stream(id).data, payload);
  ASSERT_TRUE(recorded("below"));
  ev = events();
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "above"), 1);
  EXPECT_EQ(std::count(ev.begin(), ev.end(), "below"), 1);
  EXPECT_EQ(loop_.run([&] { return conn_->queuedOutputBytes(); }), 0u);
}

// B15: the transport is handed at most transport_queue_bytes at a time, so a
// PING reply waits behind that much DATA, not behind everything queued.
TEST_F(SpdyConnectionTest, PingReplyWaitsBehindAtMostTheTransportQueue) {
  SpdyConnectionConfig config;
  config.output_high_watermark = 64 * 1024 * 1024;
  config.output_low_watermark = 1024 * 1024;
  start(config);
  const uint32_t id = client_->openStream("out");
  sync(1);
  constexpr size_t kBytes = 8 * 1024 * 1024;
  const std::string payload(kBytes, 'd');
  EXPECT_TRUE(loop_.run([&] { return conn_->sendData(id, payload, true); }));
  // The client does not read: the socket fills and the rest stays queued,
  // counted here whether it sits in the connection or the transport.
  ASSERT_TRUE(loop_.waitUntil([&] { return conn_->bytesWritten() > 0; }));
  EXPECT_FALSE(
      loop_.waitUntil([&] { return conn_->queuedOutputBytes() + conn_->bytesWritten() < kBytes; },
                      milliseconds(100)));
  ASSERT_TRUE(client_->ping(5));
  ASSERT_TRUE(loop_.waitUntil([&] { return conn_->pingsReceived() == 2; }));  // after sync(1)
  const uint64_t written = loop_.run([&] { return conn_->bytesWritten(); });
  ASSERT_LT(written, kBytes / 2);

  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(id).fin; }, milliseconds(10000)));
  EXPECT_EQ(client_->stream(id).data.size(), kBytes);
  const auto pong =
      client_->find([](const Frame& f) { return f.type == Frame::Type::kPing && f.ping_id == 5; });
  ASSERT_TRUE(pong.has_value());
  size_t before = 0;
  for (size_t i = 0; i < *pong; ++i) {
    if (client_->frames()[i].type == Frame::Type::kData) {
      before += client_->frames()[i].data_size + 8;
    }
  }
  // What was in the socket already, plus at most the transport's share.
  EXPECT_LE(before, written + config.transport_queue_bytes);
  EXPECT_EQ(loop_.run([&] { return conn_->queuedOutputBytes(); }), 0u);
}

// B15 at the end of a session: once the close began (GOAWAY queued behind a
// backlog the client has not read), a client PING is still read, counted and
// answered ahead of the output left.
TEST_F(SpdyConnectionTest, PingWhileClosingIsAnsweredAheadOfTheRestOfTheOutput) {
  SpdyConnectionConfig config;
  config.output_high_watermark = 64 * 1024 * 1024;
  config.output_low_watermark = 1024 * 1024;
  start(config);
  const uint32_t id = client_->openStream("out");
  sync(1);
  constexpr size_t kBytes = 8 * 1024 * 1024;
  loop_.run([&] {
    EXPECT_TRUE(conn_->sendData(id, std::string(kBytes, 'd'), true));
    conn_->close();
    return 0;
  });
  ASSERT_TRUE(client_->ping(5));
  ASSERT_TRUE(loop_.waitUntil([&] { return conn_->pingsReceived() == 2; }))
      << "a PING sent while the connection closes was not read";
  const uint64_t written = loop_.run([&] { return conn_->bytesWritten(); });
  ASSERT_LT(written, kBytes / 2);

  ASSERT_TRUE(client_->waitForEof(milliseconds(10000))) << client_->error();
  EXPECT_EQ(client_->stream(id).data.size(), kBytes);
  const auto pong =
      client_->find([](const Frame& f) { return f.type == Frame::Type::kPing && f.ping_id == 5; });
  const auto goaway = client_->find([](const Frame& f) { return f.type == Frame::Type::kGoAway; });
  ASSERT_TRUE(pong.has_value());
  ASSERT_TRUE(goaway.has_value());
  EXPECT_LT(*pong, *goaway);
  size_t before = 0;
  for (size_t i = 0; i < *pong; ++i) {
    if (client_->frames()[i].type == Frame::Type::kData) {
      before += client_->frames()[i].data_size + 8;
    }
  }
  EXPECT_LE(before, written + config.transport_queue_bytes + config.max_data_frame_bytes);
}

// B15 through a proxy: the proxy takes all of crisp's output at once (so every
// byte looks delivered) and hands it to a client reading at 2 MB/s, which
// pings every 100 ms. crisp must not close its socket while that client is
// still reading: the proxy would then fail to forward the next PING and end
// both directions, cutting off what it still holds (over SPDY kubectl then
// exits 0 with its output cut short).
TEST_F(SpdyConnectionTest, SlowReaderBehindAProxyGetsEveryByteAndTheStatus) {
  SpdyConnectionConfig config;
  config.linger_timeout = milliseconds(300);
  testing::BufferingRelay relay(2 * 1000 * 1000);
  const int server_fd = relay.takeServerFd();
  startOn(server_fd, relay.takeClientFd(), config);
  relay.start();
  const uint32_t out = client_->openStream("stdout");
  const uint32_t error = client_->openStream("error");
  sync(1);
  constexpr size_t kBytes = 2 * 1000 * 1000;
  loop_.run([&] {
    EXPECT_TRUE(conn_->sendData(out, std::string(kBytes, 'o'), true));
    EXPECT_TRUE(conn_->sendData(error, "status", true));
    conn_->close();
    return 0;
  });
  // The proxy holds everything almost at once.
  ASSERT_TRUE(loop_.waitUntil([&] { return conn_->queuedOutputBytes() == 0; }));
  uint32_t ping_id = 3;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!client_->eof() && std::chrono::steady_clock::now() < deadline) {
    client_->ping(ping_id);
    ping_id += 2;
    client_->waitFor([] { return false; }, milliseconds(100));
  }
  EXPECT_FALSE(relay.tornDown()) << "crisp closed while the client was still reading";
  EXPECT_EQ(client_->stream(out).data.size(), kBytes);
  EXPECT_TRUE(client_->stream(out).fin);
  EXPECT_EQ(client_->stream(error).data, "status");
  EXPECT_TRUE(client_->goAwayReceived());
  // The client's PINGs while crisp waited were seen (counted), not dropped.
  EXPECT_GT(loop_.run([&] { return conn_->pingsReceived(); }), 3u);
  // The client closes; crisp closes at once.
  client_->closeSocket();
  EXPECT_TRUE(recorded("closed"));
}

// The wait for a client's close is measured from its last sign of life, but a
// client that keeps pinging and never closes is still cut off at the limit.
TEST_F(SpdyConnectionTest, ClientThatPingsButNeverClosesIsCutOffAtTheLingerLimit) {
  SpdyConnectionConfig config;
  config.linger_timeout = milliseconds(200);
  config.linger_limit = milliseconds(1500);
  start(config);
  client_->openStream("a");
  sync(1);
  loop_.run([&] {
    conn_->close();
    return 0;
  });
  ASSERT_TRUE(client_->waitForEof()) << client_->error();
  uint32_t ping_id = 3;
  const auto ping_for = [&](std::chrono::milliseconds how_long) {
    const auto end = std::chrono::steady_clock::now() + how_long;
    while (std::chrono::steady_clock::now() < end && client_->ping(ping_id)) {
      ping_id += 2;
      if (loop_.waitUntil([&] { return rec_.has("closed"); }, milliseconds(50))) {
        return;
      }
    }
  };
  // Several linger timeouts: the PINGs keep the connection open.
  ping_for(milliseconds(700));
  EXPECT_FALSE(loop_.run([&] { return rec_.has("closed"); }));
  // Pinging on, the client is cut off at the limit.
  ping_for(milliseconds(5000));
  EXPECT_TRUE(loop_.run([&] { return rec_.has("closed"); }));
}

TEST_F(SpdyConnectionTest, ClientThatFloodsPingsWithoutReadingIsNotBufferedFor) {
  SpdyConnectionConfig config;
  config.max_unread_output_bytes = 16 * 1024;
  start(config);
  // 1.2 MB of PINGs, written without blocking for as long as the socket takes
  // them; the client reads nothing meanwhile.
  Buffer pings;
  for (uint32_t id = 1; id < 200000; id += 2) {
    spdy::Codec::encodePing(pings, id);
  }
  const std::string bytes = pings.toString();
  size_t sent = 0;
  for (int idle_rounds = 0; sent < bytes.size() && idle_rounds < 20;) {
    const ssize_t n = ::send(client_fd_, bytes.data() + sent, bytes.size() - sent, MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      idle_rounds = 0;
    } else {
      ++idle_rounds;
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
  // The server stopped reading once the replies it could not write passed the
  // limit, so the client could not send everything and the replies crisp holds
  // stay small.
  EXPECT_LT(sent, bytes.size());
  const size_t held = loop_.run([&] { return conn_->queuedOutputBytes(); });
  EXPECT_LE(held, config.max_unread_output_bytes + 4096);
  // Once the client reads, every PING the server took is answered.
  const uint64_t received = loop_.run([&] { return conn_->pingsReceived(); });
  EXPECT_GT(received, 0u);
  EXPECT_TRUE(client_->waitFor([&] { return client_->count(Frame::Type::kPing) >= received; },
                               milliseconds(10000)));
}

TEST_F(SpdyConnectionTest, PauseReadingHoldsInputUntilResumed) {
  start();
  const uint32_t id = client_->openStream("in");
  sync(1);
  loop_.run([&] {
    conn_->pauseReading(true);
    return 0;
  });
  ASSERT_TRUE(client_->data(id, "held"));
  ASSERT_TRUE(client_->ping(3));
  // Nothing is read while paused: no data, no ping reply.
  EXPECT_FALSE(
      client_->waitFor([&] { return client_->count(Frame::Type::kPing) == 2; }, milliseconds(200)));
  EXPECT_FALSE(loop_.run([&] { return rec_.has("data 1 4"); }));
  loop_.run([&] {
    conn_->pauseReading(false);
    return 0;
  });
  ASSERT_TRUE(client_->waitFor([&] { return client_->count(Frame::Type::kPing) == 2; }));
  EXPECT_TRUE(loop_.run([&] { return rec_.received[1] == "held"; }));
}

TEST_F(SpdyConnectionTest, AcceptsDataFramesBeyondTheSpdyWindow) {
  start();
  const uint32_t id = client_->openStream("in");
  std::string big(3 * 1024 * 1024 + 17, 'q');
  ASSERT_TRUE(client_->data(id, big, true));  // one frame, far beyond 64 KiB
  sync(3);
  EXPECT_TRUE(loop_.run([&] { return rec_.received[id] == big && rec_.has("fin 1"); }));
  EXPECT_TRUE(loop_.run([&] { return rec_.has("data 1 " + std::to_string(big.size())); }));
}

TEST_F(SpdyConnectionTest, DataForStreamsNeverOpenedIsRejected) {
  start();
  const uint32_t id = client_->openStream("a");
  ASSERT_TRUE(client_->rst(id));
  ASSERT_TRUE(client_->data(id, "late"));  // reset a moment ago: dropped quietly
  ASSERT_TRUE(client_->data(9, "never"));  // never opened
  sync(1);
  EXPECT_TRUE(client_->stream(9).reset);
  EXPECT_EQ(client_->stream(9).rst_status, spdy::RstStatus::kInvalidStream);
  EXPECT_FALSE(client_->stream(id).reset);
  EXPECT_TRUE(loop_.run([&] { return rec_.has("reset 1 5") && rec_.received.count(1) == 0; }));
}

TEST_F(SpdyConnectionTest, DataAfterFinResetsTheStream) {
  start();
  const uint32_t id = client_->openStream("a");
  ASSERT_TRUE(client_->data(id, "x", true));
  ASSERT_TRUE(client_->data(id, "y"));
  sync(1);
  EXPECT_TRUE(client_->stream(id).reset);
  EXPECT_EQ(client_->stream(id).rst_status, spdy::RstStatus::kStreamAlreadyClosed);
  EXPECT_TRUE(loop_.run([&] { return rec_.has("reset 1 9") && rec_.received[1] == "x"; }));
  EXPECT_EQ(streamCount(), 0u);
}

TEST_F(SpdyConnectionTest, ClientGoAwayRefusesNewStreamsButKeepsOldOnes) {
  start();
  const uint32_t id = client_->openStream("a");
  ASSERT_TRUE(client_->goAway(id));
  ASSERT_TRUE(client_->data(id, "after goaway", true));
  const uint32_t late = client_->openStream("late");
  sync(1);
  EXPECT_TRUE(client_->stream(late).reset);
  EXPECT_EQ(client_->stream(late).rst_status, spdy::RstStatus::kRefusedStream);
  EXPECT_TRUE(loop_.run([&] { return rec_.received[id] == "after goaway"; }));
}

TEST_F(SpdyConnectionTest, PendingOutputGoesFirstAndLeftoverInputIsDecodedFirst) {
  // Build the client's first frames (compressed with its header context) and
  // hand them to the server as bytes already read by the HTTP layer.
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  client_ = std::make_unique<SpdyTestClient>(fds[0]);
  client_->cork();
  client_->openStream("early");
  client_->data(1, "early bytes");
  const std::string leftover = client_->takeCorked();
  client_->uncork();
  const std::string response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n";
  loop_.run([&] {
    Buffer left;
    left.add(leftover);
    Buffer out;
    out.add(response);
    conn_ = std::make_unique<SpdyConnection>(
        loop_.dispatcher(),
        std::make_unique<RawSocketTransport>(loop_.dispatcher(), fds[1], "client", std::move(left),
                                             std::move(out)),
        8, rec_, SpdyConnectionConfig{});
    conn_->start();
    return 0;
  });
  EXPECT_EQ(client_->readRawUntil("\r\n\r\n"), response);
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(1).replied; }));
  EXPECT_TRUE(loop_.run([&] { return rec_.received[1] == "early bytes"; }));
  // The header context continues across the hand-over.
  client_->openStream("next");
  ASSERT_TRUE(client_->waitFor([&] { return client_->stream(3).replied; }));
}

TEST_F(SpdyConnectionTest, StreamTableDoesNotGrowOverManyStreams) {
  start();
  constexpr int kStreams = 20000;
  constexpr int kBatch = 500;
  for (int done = 0; done < kStreams; done += kBatch) {
    client_->cork();
    for (int i = 0; i < kBatch; ++i) {
      const uint32_t id = client_->openStream("short");
      if (i % 2 == 0) {
        client_->rst(id);
      } else {
        client_->data(id, "bye", true);
      }
    }
    ASSERT_TRUE(client_->uncork()) << client_->error();
    sync(static_cast<uint32_t>(1000001 + 2 * done));
    // The server FINs its side of the streams the client FIN'd.
    const int first = done;
    loop_.run([&, first] {
      for (int i = 1; i < kBatch; i += 2) {
        conn_->sendData(static_cast<uint32_t>(2 * (first + i) + 1), "", true);
      }
      return 0;
    });
  }
  sync(1);
  EXPECT_EQ(streamCount(), 0u);
  ASSERT_TRUE(client_->waitFor(
      [&] { return client_->count(Frame::Type::kData) == static_cast<size_t>(kStreams / 2); }));
  EXPECT_EQ(client_->count(Frame::Type::kSynReply), static_cast<size_t>(kStreams));
  EXPECT_EQ(client_->count(Frame::Type::kRst), 0u);
}

}  // namespace
}  // namespace crisp::stream
