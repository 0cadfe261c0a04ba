#include "source/stream/raw_socket_transport.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test/stream/http1_test_util.h"
#include "test/stream/spdy_test_client.h"

namespace crisp::stream {
namespace {

using std::chrono::milliseconds;
using testing::LoopThread;

// What a quiet period is allowed to show (nothing) before the test moves on.
constexpr milliseconds kQuiet{150};

// Records the callbacks of one transport. Lives on the loop. It flags any
// callback that arrives while the test is inside a method of the transport
// (callbacks must come from the loop) or after the test closed it.
class Recorder : public TransportCallbacks {
 public:
  void onTransportData(Buffer& data) override {
    check();
    const size_t n = data.length();
    max_chunk = std::max(max_chunk, n);
    events.push_back("data " + std::to_string(n));
    received += data.toString();
    if (on_data) {
      on_data(*this);
    }
  }
  void onTransportEof() override {
    check();
    events.push_back("eof");
  }
  void onTransportDrained() override {
    check();
    ++drained;
    queued_at_last_drain = transport->queuedBytes();
  }
  void onTransportError(const std::string& detail) override {
    check();
    events.push_back("error");
    error = detail;
  }
  void onTransportPipeInput(size_t bytes, const std::string& pipe_error) override {
    check();
    piped += bytes;
    if (!pipe_error.empty()) {
      events.push_back("pipe error");
      error = pipe_error;
    }
    if (on_piped) {
      on_piped(*this);
    }
  }

  void check() {
    if (in_call) {
      reentrant = true;
    }
    if (closed_by_test) {
      after_close = true;
    }
  }
  size_t count(const std::string& e) const { return std::count(events.begin(), events.end(), e); }

  Transport* transport = nullptr;
  std::function<void(Recorder&)> on_data;
  std::function<void(Recorder&)> on_piped;
  std::vector<std::string> events;
  std::string received;
  size_t max_chunk = 0;
  size_t drained = 0;
  size_t queued_at_last_drain = 0;
  size_t piped = 0;
  std::string error;
  bool in_call = false;
  bool closed_by_test = false;
  bool reentrant = false;
  bool after_close = false;
};

// A connected loopback TCP pair: {client, server}.
std::pair<int, int> tcpPair() {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_EQ(::listen(listener, 1), 0);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int client = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const int server = ::accept(listener, nullptr, nullptr);
  ::close(listener);
  return {client, server};
}

class RawSocketTransportTest : public ::testing::Test {
 protected:
  // A socketpair: the test plays the peer on peer_ (blocking).
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    peer_ = fds[0];
    server_fd_ = fds[1];
  }

  void TearDown() override {
    loop_.run([&] {
      transport_.reset();
      return 0;
    });
    loop_.stop();
    if (peer_ >= 0) {
      ::close(peer_);
    }
  }

  void create(const std::string& initial_input = "", const std::string& initial_output = "",
              const RawSocketTransportOptions& options = {}) {
    loop_.run([&] {
      Buffer in;
      in.add(initial_input);
      Buffer out;
      out.add(initial_output);
      transport_ = std::make_unique<RawSocketTransport>(loop_.dispatcher(), server_fd_, "peer:1",
                                                        std::move(in), std::move(out), options);
      rec_.transport = transport_.get();
      transport_->setCallbacks(rec_);
      return 0;
    });
  }

  // Runs `fn` on the loop as a method call of the owner: a callback arriving
  // inside it is flagged.
  void call(const std::function<void(RawSocketTransport&)>& fn) {
    loop_.run([&] {
      rec_.in_call = true;
      fn(*transport_);
      rec_.in_call = false;
      return 0;
    });
  }
  void write(const std::string& bytes) {
    call([&](RawSocketTransport& t) {
      Buffer b;
      b.add(bytes);
      t.write(b);
      EXPECT_TRUE(b.empty());
    });
  }
  void start() {
    call([](RawSocketTransport& t) { t.start(); });
  }

  bool waitFor(const std::function<bool(const Recorder&)>& pred,
               milliseconds timeout = std::chrono::seconds(5)) {
    return loop_.waitUntil([&] { return pred(rec_); }, timeout);
  }
  std::string received() {
    return loop_.run([&] { return rec_.received; });
  }
  std::vector<std::string> events() {
    return loop_.run([&] { return rec_.events; });
  }
  size_t queued() {
    return loop_.run([&] { return transport_->queuedBytes(); });
  }
  void expectClean() {
    loop_.run([&] {
      EXPECT_FALSE(rec_.reentrant) << "a callback ran inside a method call";
      EXPECT_FALSE(rec_.after_close) << "a callback ran after close()";
      return 0;
    });
  }

  LoopThread loop_;
  Recorder rec_;
  std::unique_ptr<RawSocketTransport> transport_;
  int peer_ = -1;
  int server_fd_ = -1;
};

TEST_F(RawSocketTransportTest, InitialBytesGoFirstAndNothingMovesBeforeStart) {
  create("early ", "hello ");
  ASSERT_TRUE(test::sendAll(peer_, "world"));
  write("again");
  // Not started: nothing written, nothing delivered.
  EXPECT_FALSE(waitFor([](const Recorder& r) { return !r.events.empty(); }, kQuiet));
  pollfd p{peer_, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  EXPECT_EQ(queued(), 11u);

  start();
  EXPECT_EQ(test::readExactly(peer_, 11), "hello again");
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received == "early world"; })) << received();
  EXPECT_EQ(events().front(), "data 6");  // the initial input alone, first
  EXPECT_EQ(queued(), 0u);
  expectClean();
}

TEST_F(RawSocketTransportTest, LargeTransfersKeepOrderInBothDirections) {
  create();
  start();
  constexpr size_t kBytes = 8 * 1024 * 1024;
  std::string up(kBytes, '\0');
  std::string down(kBytes, '\0');
  std::mt19937 rng(7);
  for (size_t i = 0; i < kBytes; ++i) {
    up[i] = static_cast<char>(rng());
    down[i] = static_cast<char>(rng());
  }
  // The peer sends and reads at the same time, from two threads.
  std::thread sender([&] { EXPECT_TRUE(test::sendAll(peer_, up)); });
  for (size_t at = 0; at < kBytes; at += 100 * 1000) {
    write(down.substr(at, 100 * 1000));  // uneven pieces
  }
  std::string got;
  while (got.size() < kBytes) {
    auto piece = test::readExactly(peer_, std::min<size_t>(1 << 20, kBytes - got.size()));
    ASSERT_TRUE(piece.has_value()) << "after " << got.size();
    got += *piece;
  }
  sender.join();
  EXPECT_TRUE(got == down);
  ASSERT_TRUE(waitFor([&](const Recorder& r) { return r.received.size() == kBytes; }));
  EXPECT_TRUE(received() == up);
  // Reads are delivered as they are made: no chunk beyond one read(2).
  EXPECT_LE(loop_.run([&] { return rec_.max_chunk; }),
            RawSocketTransportOptions{}.read_chunk_bytes);
  expectClean();
}

TEST_F(RawSocketTransportTest, ReadChunksFollowTheOptions) {
  RawSocketTransportOptions options;
  options.read_chunk_bytes = 10;
  options.read_budget_bytes = 25;
  create("", "", options);
  start();
  const std::string text = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  ASSERT_TRUE(test::sendAll(peer_, text));
  ASSERT_TRUE(waitFor([&](const Recorder& r) { return r.received == text; }));
  EXPECT_EQ(loop_.run([&] { return rec_.max_chunk; }), 10u);
  expectClean();
}

TEST_F(RawSocketTransportTest, QueueGrowsWhileThePeerDoesNotReadAndDrainsWhenItDoes) {
  create();
  start();
  constexpr size_t kBytes = 4 * 1024 * 1024;
  const std::string payload(kBytes, 'q');
  write(payload);
  // The socket buffers take a few hundred KiB; the rest stays queued.
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.drained > 0; }));
  const size_t stuck = queued();
  EXPECT_GT(stuck, kBytes / 2);
  EXPECT_LT(stuck, kBytes);
  // Still stuck a moment later: nothing moves without the peer.
  EXPECT_FALSE(
      waitFor([&](const Recorder& r) { return r.transport->queuedBytes() < stuck; }, kQuiet));
  const size_t drained_before = loop_.run([&] { return rec_.drained; });

  auto got = test::readExactly(peer_, kBytes);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(*got == payload);
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.queued_at_last_drain == 0; }));
  EXPECT_GT(loop_.run([&] { return rec_.drained; }), drained_before);
  EXPECT_EQ(queued(), 0u);
  EXPECT_EQ(loop_.run([&] { return transport_->bytesWritten(); }), kBytes);
  expectClean();
}

// Random bytes, the same for the same seed.
std::string randomBytes(size_t bytes, uint32_t seed) {
  std::string content(bytes, '\0');
  std::mt19937 rng(seed);
  for (auto& c : content) {
    c = static_cast<char>(rng());
  }
  return content;
}

// A pipe holding `bytes`, its write end closed: {read end, content}.
std::pair<int, std::string> filledPipe(size_t bytes, uint32_t seed) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  EXPECT_GE(::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(bytes)), static_cast<int>(bytes));
  const std::string content = randomBytes(bytes, seed);
  EXPECT_EQ(::write(fds[1], content.data(), bytes), static_cast<ssize_t>(bytes));
  ::close(fds[1]);
  return {fds[0], content};
}

TEST_F(RawSocketTransportTest, SplicedPayloadTheSocketTookInPartIsFinishedBeforeLaterBytes) {
  create();
  start();
  constexpr size_t kBytes = 1024 * 1024;
  auto [pipe_fd, content] = filledPipe(kBytes, 7);
  size_t pending = 0;
  call([&, fd = pipe_fd](RawSocketTransport& t) {
    Buffer header;
    header.add("HEAD");
    ASSERT_TRUE(t.writeFromPipe(header, fd, kBytes));
    EXPECT_TRUE(header.empty());
    // The peer reads nothing yet: the socket took part of it.
    pending = t.pipeBytesPending();
    // Only one payload at a time, and only into an empty queue.
    Buffer more;
    more.add("x");
    EXPECT_FALSE(t.writeFromPipe(more, fd, 1));
    EXPECT_EQ(more.length(), 1u);
    Buffer after;
    after.add("AFTER");
    t.write(after);
  });
  // The transport keeps its own descriptor of the pipe.
  ::close(pipe_fd);
  EXPECT_GT(pending, 0u);
  EXPECT_LT(pending, kBytes);
  EXPECT_EQ(queued(), pending + 5);
  auto got = test::readExactly(peer_, 4 + kBytes + 5);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->substr(0, 4), "HEAD");
  EXPECT_TRUE(got->substr(4, kBytes) == content) << "payload differs";
  EXPECT_EQ(got->substr(4 + kBytes), "AFTER");
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.queued_at_last_drain == 0; }));
  EXPECT_EQ(loop_.run([&] { return transport_->pipeBytesPending(); }), 0u);
  EXPECT_EQ(loop_.run([&] { return transport_->bytesWritten(); }), 4 + kBytes + 5);
  expectClean();
}

TEST_F(RawSocketTransportTest, SplicingIsRefusedWithBytesQueuedAndAPipeEndingEarlyFails) {
  create();
  start();
  auto [pipe_fd, content] = filledPipe(4096, 9);
  call([&, fd = pipe_fd](RawSocketTransport& t) {
    Buffer queued_bytes;
    queued_bytes.add("q");
    t.write(queued_bytes);
    Buffer header;
    header.add("H");
    EXPECT_FALSE(t.writeFromPipe(header, fd, 10));
    EXPECT_EQ(header.length(), 1u);
  });
  EXPECT_EQ(test::readExactly(peer_, 1), "q");
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.transport->queuedBytes() == 0; }));
  // A payload promised longer than the pipe: the frame cannot be finished, so
  // the transport fails rather than let later bytes take its place.
  call([&, fd = pipe_fd](RawSocketTransport& t) {
    Buffer header;
    header.add("H");
    EXPECT_TRUE(t.writeFromPipe(header, fd, 8192));
  });
  ::close(pipe_fd);
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("error") == 1; }));
  EXPECT_EQ(loop_.run([&] { return rec_.error; }), "splice: the pipe ended inside a frame");
  auto got = test::readExactly(peer_, 1 + 4096);
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->substr(1) == content);
  expectClean();
}

TEST_F(RawSocketTransportTest, APipeEmptiedByAnotherReaderFinishesTheFrameWithItsNextBytes) {
  create();
  start();
  // The pipe holds half of what the payload promises and its writer stays
  // open, as when another process read the rest of what the length counted.
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  const std::string first = randomBytes(4096, 11);
  const std::string second = randomBytes(4096, 12);
  ASSERT_EQ(::write(fds[1], first.data(), first.size()), 4096);
  call([&, fd = fds[0]](RawSocketTransport& t) {
    Buffer header;
    header.add("H");
    ASSERT_TRUE(t.writeFromPipe(header, fd, 8192));
    Buffer after;
    after.add("AFTER");
    t.write(after);
  });
  ::close(fds[0]);
  auto got = test::readExactly(peer_, 1 + 4096);
  ASSERT_TRUE(got.has_value());
  // Waiting for the pipe is neither an error nor a reason to send later
  // bytes inside the frame.
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(loop_.run([&] { return rec_.count("error"); }), 0u);
  EXPECT_EQ(loop_.run([&] { return transport_->pipeBytesPending(); }), 4096u);
  ASSERT_EQ(::write(fds[1], second.data(), second.size()), 4096);
  auto rest = test::readExactly(peer_, 4096 + 5);
  ASSERT_TRUE(rest.has_value());
  EXPECT_TRUE(got->substr(1) + rest->substr(0, 4096) == first + second) << "payload differs";
  EXPECT_EQ(rest->substr(4096), "AFTER");
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.transport->queuedBytes() == 0; }));
  ::close(fds[1]);
  expectClean();
}

TEST_F(RawSocketTransportTest, EofComesAfterTheDataOnceAndWritingGoesOn) {
  create();
  start();
  ASSERT_TRUE(test::sendAll(peer_, "bye"));
  ASSERT_EQ(::shutdown(peer_, SHUT_WR), 0);
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("eof") == 1; }));
  EXPECT_EQ(events(), (std::vector<std::string>{"data 3", "eof"}));
  write("still here");
  EXPECT_EQ(test::readExactly(peer_, 10), "still here");
  EXPECT_FALSE(waitFor([](const Recorder& r) { return r.events.size() > 2; }, kQuiet));
  expectClean();
}

TEST_F(RawSocketTransportTest, PeerResetIsAnErrorAndClosesTheTransport) {
  auto [client, server] = tcpPair();
  ::close(server_fd_);  // the socketpair end is not used here
  server_fd_ = server;
  create();
  start();
  ASSERT_TRUE(test::sendAll(client, "x"));
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received == "x"; }));
  linger hard{1, 0};
  ASSERT_EQ(::setsockopt(client, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)), 0);
  ::close(client);  // RST
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("error") == 1; }));
  EXPECT_TRUE(loop_.run([&] { return transport_->closed(); }));
  EXPECT_NE(loop_.run([&] { return rec_.error; }).find("read: "), std::string::npos);
  // A closed transport takes writes silently and says nothing more.
  write("dropped");
  EXPECT_EQ(queued(), 0u);
  EXPECT_FALSE(waitFor([](const Recorder& r) { return r.events.size() > 2; }, kQuiet));
  expectClean();
}

TEST_F(RawSocketTransportTest, WritingToAPeerThatIsGoneIsAnErrorNotSigpipe) {
  create();
  start();
  call([](RawSocketTransport& t) { t.pauseReading(true); });  // so the EOF is not seen
  ::close(peer_);
  peer_ = -1;
  write(std::string(100000, 'w'));
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("error") == 1; }));
  EXPECT_NE(loop_.run([&] { return rec_.error; }).find("write: "), std::string::npos);
  EXPECT_EQ(loop_.run([&] { return rec_.count("eof"); }), 0u);
  expectClean();
}

TEST_F(RawSocketTransportTest, ShutdownWriteWaitsForTheQueueAndReadingGoesOn) {
  create();
  start();
  const std::string big(1024 * 1024, 's');
  call([&](RawSocketTransport& t) {
    Buffer b;
    b.add(big);
    t.write(b);
    t.shutdownWrite();
    Buffer late;
    late.add("late");
    t.write(late);  // after shutdownWrite(): dropped
    EXPECT_EQ(t.queuedBytes(), big.size());
  });
  // Every queued byte arrives, then EOF, and nothing after it.
  EXPECT_EQ(test::readUntilClose(peer_), big);
  // The other direction is still open.
  ASSERT_TRUE(test::sendAll(peer_, "more"));
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received == "more"; }));
  EXPECT_EQ(loop_.run([&] { return rec_.count("error"); }), 0u);
  expectClean();
}

TEST_F(RawSocketTransportTest, PauseHoldsDataAndEofUntilResumed) {
  create();
  start();
  call([](RawSocketTransport& t) { t.pauseReading(true); });
  ASSERT_TRUE(test::sendAll(peer_, "held"));
  ASSERT_EQ(::shutdown(peer_, SHUT_WR), 0);
  EXPECT_FALSE(waitFor([](const Recorder& r) { return !r.events.empty(); }, kQuiet));
  call([](RawSocketTransport& t) { t.pauseReading(false); });
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("eof") == 1; }));
  EXPECT_EQ(events(), (std::vector<std::string>{"data 4", "eof"}));
  expectClean();
}

TEST_F(RawSocketTransportTest, AskedToFailOnThePeersCloseAPausedTransportReportsItAtOnce) {
  create();
  call([](RawSocketTransport& t) { t.failOnPeerCloseWhilePaused(); });
  start();
  call([](RawSocketTransport& t) { t.pauseReading(true); });
  // Input while the peer is still there waits, as without the option.
  ASSERT_TRUE(test::sendAll(peer_, "held"));
  EXPECT_FALSE(waitFor([](const Recorder& r) { return !r.events.empty(); }, kQuiet));
  // Its close does not wait for the owner to take that input.
  ASSERT_EQ(::shutdown(peer_, SHUT_WR), 0);
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("error") == 1; }));
  EXPECT_EQ(events(), (std::vector<std::string>{"error"}));
  EXPECT_EQ(loop_.run([&] { return rec_.error; }),
            "the peer closed the connection while its input was held back");
  EXPECT_TRUE(loop_.run([&] { return transport_->closed(); }));
  expectClean();
}

TEST_F(RawSocketTransportTest, AskedToFailOnThePeersCloseAPausedTransportReportsAReset) {
  auto [client, server] = tcpPair();
  ::close(server_fd_);  // the socketpair end is not used here
  server_fd_ = server;
  create();
  call([](RawSocketTransport& t) { t.failOnPeerCloseWhilePaused(); });
  start();
  call([](RawSocketTransport& t) { t.pauseReading(true); });
  ASSERT_TRUE(test::sendAll(client, "held"));
  EXPECT_FALSE(waitFor([](const Recorder& r) { return !r.events.empty(); }, kQuiet));
  linger hard{1, 0};
  ASSERT_EQ(::setsockopt(client, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)), 0);
  ::close(client);  // RST
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("error") == 1; }));
  EXPECT_EQ(events(), (std::vector<std::string>{"error"}));
  EXPECT_TRUE(loop_.run([&] { return transport_->closed(); }));
  expectClean();
}

TEST_F(RawSocketTransportTest, AskedToFailOnThePeersCloseAReadingTransportStillEndsWithEof) {
  create();
  call([](RawSocketTransport& t) { t.failOnPeerCloseWhilePaused(); });
  start();
  ASSERT_TRUE(test::sendAll(peer_, "bye"));
  ASSERT_EQ(::shutdown(peer_, SHUT_WR), 0);
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("eof") == 1; }));
  EXPECT_EQ(events(), (std::vector<std::string>{"data 3", "eof"}));
  // Paused after the EOF: nothing more to report.
  call([](RawSocketTransport& t) { t.pauseReading(true); });
  EXPECT_FALSE(waitFor([](const Recorder& r) { return r.events.size() > 2; }, kQuiet));
  expectClean();
}

TEST_F(RawSocketTransportTest, PausingInsideTheDataCallbackStopsDelivery) {
  create();
  loop_.run([&] {
    rec_.on_data = [](Recorder& r) { r.transport->pauseReading(true); };
    return 0;
  });
  start();
  ASSERT_TRUE(test::sendAll(peer_, "first"));
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received == "first"; }));
  ASSERT_TRUE(test::sendAll(peer_, "second"));
  EXPECT_FALSE(waitFor([](const Recorder& r) { return r.events.size() > 1; }, kQuiet));
  loop_.run([&] {
    rec_.on_data = nullptr;
    return 0;
  });
  call([](RawSocketTransport& t) { t.pauseReading(false); });
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received == "firstsecond"; }));
  expectClean();
}

TEST_F(RawSocketTransportTest, NoCallbackAfterClose) {
  create();
  // Data and EOF wait in the socket; the owner closes on the first data.
  ASSERT_TRUE(test::sendAll(peer_, "data"));
  ASSERT_EQ(::shutdown(peer_, SHUT_WR), 0);
  loop_.run([&] {
    rec_.on_data = [](Recorder& r) {
      r.transport->close();
      r.closed_by_test = true;
    };
    return 0;
  });
  start();
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.closed_by_test; }));
  EXPECT_EQ(test::readUntilClose(peer_), "");
  EXPECT_FALSE(waitFor([](const Recorder& r) { return r.events.size() > 1; }, kQuiet));
  expectClean();
}

TEST_F(RawSocketTransportTest, CloseDropsQueuedBytesWithoutCallbacks) {
  create();
  start();
  call([&](RawSocketTransport& t) {
    Buffer b;
    b.add("never sent");
    t.write(b);
    t.close();
    rec_.closed_by_test = true;
    EXPECT_TRUE(t.closed());
    EXPECT_EQ(t.queuedBytes(), 0u);
  });
  EXPECT_EQ(test::readUntilClose(peer_), "");
  EXPECT_FALSE(
      waitFor([](const Recorder& r) { return r.drained > 0 || !r.events.empty(); }, kQuiet));
  expectClean();
}

TEST_F(RawSocketTransportTest, DestroyingClosesTheSocket) {
  create();
  start();
  write("x");
  EXPECT_EQ(test::readExactly(peer_, 1), "x");
  loop_.run([&] {
    transport_.reset();
    return 0;
  });
  EXPECT_EQ(test::readUntilClose(peer_), "");
}

// The HTTP/1.1 front's hand-over: the first owner takes the head, gives the
// rest back and passes the transport on from inside its data callback; the
// second owner reads the rest first, then what comes later.
TEST_F(RawSocketTransportTest, UnreadInputGoesToTheNextOwnerFirst) {
  Recorder second;
  create();
  loop_.run([&] {
    second.transport = transport_.get();
    rec_.on_data = [&second](Recorder& r) {
      Transport& t = *r.transport;
      t.pauseReading(true);
      Buffer rest;
      rest.add(r.received.substr(4));
      r.received.resize(4);
      t.unreadInput(rest);
      Buffer reply;
      reply.add("101 ");
      t.write(reply);
      r.on_data = nullptr;
      t.setCallbacks(second);
      t.start();
    };
    return 0;
  });
  ASSERT_TRUE(test::sendAll(peer_, "HEADbody"));
  start();
  ASSERT_TRUE(loop_.waitUntil([&] { return second.received == "body"; }));
  ASSERT_TRUE(test::sendAll(peer_, "+more"));
  ASSERT_TRUE(loop_.waitUntil([&] { return second.received == "body+more"; }));
  EXPECT_EQ(received(), "HEAD");
  EXPECT_EQ(test::readExactly(peer_, 4), "101 ");
  loop_.run([&] {
    EXPECT_FALSE(second.reentrant);
    EXPECT_EQ(rec_.events.size(), 1u);
    return 0;
  });
  expectClean();
}

TEST_F(RawSocketTransportTest, UnreadWhilePausedWaitsForResume) {
  create();
  start();
  call([](RawSocketTransport& t) {
    t.pauseReading(true);
    Buffer back;
    back.add("back");
    t.unreadInput(back);
  });
  ASSERT_TRUE(test::sendAll(peer_, "new"));
  EXPECT_FALSE(waitFor([](const Recorder& r) { return !r.events.empty(); }, kQuiet));
  call([](RawSocketTransport& t) { t.pauseReading(false); });
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received == "backnew"; }));
  expectClean();
}

// A non-blocking pipe: {read end, write end}.
std::pair<int, int> emptyPipe() {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
  return {fds[0], fds[1]};
}

// Reads the pipe until EOF (every write end closed) or `timeout`.
std::string drainPipe(int fd, milliseconds timeout = std::chrono::seconds(10)) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 50);
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n == 0) {
      break;
    }
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    }
  }
  return out;
}

class PipeInputTest : public RawSocketTransportTest {
 protected:
  // Serves a loopback TCP connection, whose peer end is peer_.
  void SetUp() override {
    auto [client, server] = tcpPair();
    peer_ = client;
    server_fd_ = server;
  }

  bool readIntoPipe(int pipe_fd, size_t length) {
    bool accepted = false;
    call([&](RawSocketTransport& t) { accepted = t.readIntoPipe(pipe_fd, length); });
    return accepted;
  }
  size_t piped() {
    return loop_.run([&] { return rec_.piped; });
  }
  // Waits until bytes went into the pipe and then none for a while: the
  // pipe is full. Returns how many it took.
  size_t waitUntilThePipeIsFull() {
    EXPECT_TRUE(waitFor([](const Recorder& r) { return r.piped > 0; }));
    size_t last = 0;
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(kQuiet);
      const size_t now = piped();
      if (now == last) {
        break;
      }
      last = now;
    }
    return last;
  }
};

TEST_F(PipeInputTest, PayloadGoesIntoThePipeInPiecesThenAReadAsLimitedFromTheCallback) {
  create();
  start();
  constexpr size_t kPayload = 300000;
  const std::string payload = randomBytes(kPayload, 11);
  auto [pipe_r, pipe_w] = emptyPipe();
  // Once the payload is in, the next read takes a frame header's 8 bytes.
  loop_.run([&] {
    rec_.on_piped = [&](Recorder& r) {
      if (r.piped == kPayload) {
        r.transport->limitNextRead(8);
      }
    };
    return 0;
  });
  ASSERT_TRUE(readIntoPipe(pipe_w, kPayload));
  // One transfer at a time.
  EXPECT_FALSE(readIntoPipe(pipe_w, 10));
  // The transport keeps its own descriptor until the payload is in: the
  // reader sees EOF right after it, so none is left behind.
  ::close(pipe_w);
  std::string from_pipe;
  std::thread reader([&, fd = pipe_r] { from_pipe = drainPipe(fd); });
  // The payload arrives in pieces that do not fall on any boundary, with the
  // next frame's header and more right behind its end in the same write.
  const std::string wire = payload + "HEADER!!" + "rest";
  for (size_t at = 0; at < wire.size();) {
    const size_t n = std::min<size_t>(wire.size() - at, 70001);
    ASSERT_TRUE(test::sendAll(peer_, wire.substr(at, n)));
    at += n;
    std::this_thread::sleep_for(milliseconds(5));
  }
  reader.join();
  ::close(pipe_r);
  EXPECT_EQ(from_pipe.size(), kPayload);
  EXPECT_TRUE(from_pipe == payload) << "the pipe's bytes differ";
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received.size() == 12; }));
  EXPECT_EQ(piped(), kPayload);
  EXPECT_EQ(received(), "HEADER!!rest");
  EXPECT_EQ(events(), (std::vector<std::string>{"data 8", "data 4"}));
  EXPECT_EQ(loop_.run([&] { return transport_->pipeInputPending(); }), 0u);
  EXPECT_EQ(loop_.run([&] { return transport_->bytesRead(); }), wire.size());
  expectClean();
}

TEST_F(PipeInputTest, AFullPipeStopsReadingTheSocketWithoutSpinningUntilItIsRead) {
  create();
  start();
  auto [pipe_r, pipe_w] = emptyPipe();
  constexpr size_t kPayload = 8 * 1024 * 1024;
  const std::string payload = randomBytes(kPayload, 12);
  ASSERT_TRUE(readIntoPipe(pipe_w, kPayload));
  ::close(pipe_w);
  std::thread sender([&] { EXPECT_TRUE(test::sendAll(peer_, payload + "after")); });
  // Nobody reads the pipe: what the transport takes is what the pipe holds
  // (its 16 slots may each hold a large piece of a socket buffer); the rest
  // waits in the kernel's socket buffers and then in the sender.
  const size_t taken = waitUntilThePipeIsFull();
  EXPECT_LT(taken, kPayload / 4);
  rusage before{};
  ::getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(milliseconds(500));
  rusage after{};
  ::getrusage(RUSAGE_SELF, &after);
  const auto cpu_us = [](const rusage& u) {
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000L + u.ru_utime.tv_usec +
           u.ru_stime.tv_usec;
  };
  EXPECT_LT(cpu_us(after) - cpu_us(before), 200000) << "the loop spins on the full pipe";
  EXPECT_EQ(piped(), taken);
  EXPECT_TRUE(loop_.run([&] { return rec_.events.empty(); }));
  // Reading the pipe lets the rest through, in order, then the bytes after.
  const std::string from_pipe = drainPipe(pipe_r, std::chrono::seconds(30));
  ::close(pipe_r);
  sender.join();
  EXPECT_EQ(from_pipe.size(), kPayload);
  EXPECT_TRUE(from_pipe == payload) << "the pipe's bytes differ";
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received == "after"; }));
  expectClean();
}

TEST_F(PipeInputTest, APeerResetWhileThePipeIsFullIsReported) {
  create();
  start();
  call([](RawSocketTransport& t) { t.failOnPeerCloseWhilePaused(); });
  auto [pipe_r, pipe_w] = emptyPipe();
  constexpr size_t kPayload = 8 * 1024 * 1024;
  ASSERT_TRUE(readIntoPipe(pipe_w, kPayload));
  ::close(pipe_w);
  // Sent from a thread until the test stops it: the socket buffers fill up.
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    const std::string chunk = randomBytes(65536, 13);
    while (!stop) {
      pollfd p{peer_, POLLOUT, 0};
      if (::poll(&p, 1, 20) == 1 &&
          ::send(peer_, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
          errno != EAGAIN) {
        break;
      }
    }
  });
  const size_t taken = waitUntilThePipeIsFull();
  EXPECT_LT(taken, kPayload / 4);
  stop = true;
  sender.join();
  linger hard{1, 0};
  ASSERT_EQ(::setsockopt(peer_, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard)), 0);
  ::close(peer_);  // RST
  peer_ = -1;
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("error") == 1; }));
  EXPECT_TRUE(loop_.run([&] { return transport_->closed(); }));
  // The transport's descriptor of the pipe went with it.
  EXPECT_EQ(drainPipe(pipe_r).size(), taken);
  ::close(pipe_r);
  expectClean();
}

TEST_F(PipeInputTest, APipeWhoseReaderIsGoneHandsTheRestBackAsDataWithoutSigpipe) {
  create();
  start();
  constexpr size_t kPayload = 100000;
  const std::string payload = randomBytes(kPayload, 14);
  auto [pipe_r, pipe_w] = emptyPipe();
  ::close(pipe_r);
  ASSERT_TRUE(readIntoPipe(pipe_w, kPayload));
  ::close(pipe_w);
  ASSERT_TRUE(test::sendAll(peer_, payload + "after"));
  ASSERT_TRUE(waitFor([&](const Recorder& r) { return r.received.size() == kPayload + 5; }));
  EXPECT_EQ(loop_.run([&] { return rec_.count("pipe error"); }), 1u);
  EXPECT_EQ(loop_.run([&] { return rec_.error; }), "splice: Broken pipe");
  EXPECT_TRUE(received() == payload + "after");
  EXPECT_EQ(piped(), 0u);
  EXPECT_FALSE(loop_.run([&] { return transport_->closed(); }));
  write("still fine");
  EXPECT_EQ(test::readExactly(peer_, 10), "still fine");
  expectClean();
}

TEST_F(PipeInputTest, ThePeersCloseInsideAPayloadIsAnEofAndACancelReturnsToData) {
  create();
  start();
  auto [pipe_r, pipe_w] = emptyPipe();
  ASSERT_TRUE(readIntoPipe(pipe_w, 10000));
  ASSERT_TRUE(test::sendAll(peer_, std::string(1000, 'a')));
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.piped == 1000; }));
  // Cancelled, the rest of the bytes come as data.
  call([](RawSocketTransport& t) { t.cancelReadIntoPipe(); });
  ASSERT_TRUE(test::sendAll(peer_, "bcd"));
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.received == "bcd"; }));
  ASSERT_TRUE(readIntoPipe(pipe_w, 10000));
  ::close(pipe_w);
  ASSERT_TRUE(test::sendAll(peer_, std::string(500, 'e')));
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.piped == 1500; }));
  ASSERT_EQ(::shutdown(peer_, SHUT_WR), 0);
  ASSERT_TRUE(waitFor([](const Recorder& r) { return r.count("eof") == 1; }));
  EXPECT_EQ(loop_.run([&] { return transport_->pipeInputPending(); }), 0u);
  // Both transfers let go of the pipe: its reader sees the end.
  EXPECT_EQ(drainPipe(pipe_r), std::string(1000, 'a') + std::string(500, 'e'));
  ::close(pipe_r);
  expectClean();
}

}  // namespace
}  // namespace crisp::stream
