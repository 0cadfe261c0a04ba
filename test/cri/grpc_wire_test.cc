// GrpcServer against hand-built HTTP/2 bytes on a raw unix socket: garbage,
// protocol errors and malformed gRPC framing, each next to a well-behaved client
// that must not notice.

#include <cstring>

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "source/cri/grpc_client.h"
#include "source/cri/grpc_server.h"

#include "test/cri/grpc_test_util.h"

namespace crisp::cri {
namespace {

using testing::CallRecorder;
using testing::field;
using testing::RecordingHandler;
using testing::runUntil;

constexpr uint8_t kData = 0x0;
constexpr uint8_t kHeaders = 0x1;
constexpr uint8_t kRstStream = 0x3;
constexpr uint8_t kSettings = 0x4;
constexpr uint8_t kGoaway = 0x7;
constexpr uint8_t kEndStream = 0x1;
constexpr uint8_t kEndHeaders = 0x4;

// Test-only HTTP/2 frame builder.
std::string frame(uint8_t type, uint8_t flags, uint32_t stream_id, std::string_view payload) {
  std::string out;
  const size_t n = payload.size();
  out += static_cast<char>((n >> 16) & 0xff);
  out += static_cast<char>((n >> 8) & 0xff);
  out += static_cast<char>(n & 0xff);
  out += static_cast<char>(type);
  out += static_cast<char>(flags);
  out += static_cast<char>((stream_id >> 24) & 0x7f);
  out += static_cast<char>((stream_id >> 16) & 0xff);
  out += static_cast<char>((stream_id >> 8) & 0xff);
  out += static_cast<char>(stream_id & 0xff);
  out += payload;
  return out;
}

std::string grpcMessage(uint8_t flag, uint32_t declared_length, std::string_view body) {
  std::string out;
  out += static_cast<char>(flag);
  out += static_cast<char>((declared_length >> 24) & 0xff);
  out += static_cast<char>((declared_length >> 16) & 0xff);
  out += static_cast<char>((declared_length >> 8) & 0xff);
  out += static_cast<char>(declared_length & 0xff);
  out += body;
  return out;
}

Metadata grpcRequestHeaders(const std::string& path) {
  return {{":method", "POST"},
          {":scheme", "http"},
          {":path", path},
          {":authority", "localhost"},
          {"content-type", "application/grpc"},
          {"te", "trailers"}};
}

struct Frame {
  uint8_t type;
  uint8_t flags;
  uint32_t stream_id;
  std::string payload;
  Metadata headers;  // Decoded for HEADERS frames.
};

// A raw client socket on the test loop: writes bytes as given, collects and
// parses what the server sends.
class RawClient {
 public:
  RawClient(event::Dispatcher& dispatcher, const std::string& socket_path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    nghttp2_hd_deflate_new(&deflater_, 4096);
    nghttp2_hd_inflate_new(&inflater_);
    watcher_ = std::make_unique<event::FdWatcher>(dispatcher, fd_, [this](short) { onReadable(); });
    watcher_->setEnabled(event::FdWatcher::kRead);
  }
  ~RawClient() {
    watcher_.reset();
    ::close(fd_);
    nghttp2_hd_deflate_del(deflater_);
    nghttp2_hd_inflate_del(inflater_);
  }

  bool connected() const { return connected_; }
  bool eof() const { return eof_; }
  const std::vector<Frame>& frames() const { return frames_; }

  void send(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  void sendPreface() {
    send(std::string(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN) + frame(kSettings, 0, 0, ""));
  }
  std::string headerBlock(const Metadata& headers) {
    std::vector<nghttp2_nv> nv;
    for (const auto& [n, v] : headers) {
      nv.push_back({const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(n.data())),
                    const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(v.data())), n.size(),
                    v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    std::string out(nghttp2_hd_deflate_bound(deflater_, nv.data(), nv.size()), '\0');
    const ssize_t n = nghttp2_hd_deflate_hd(deflater_, reinterpret_cast<uint8_t*>(out.data()),
                                            out.size(), nv.data(), nv.size());
    out.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return out;
  }
  // The first frame on `stream_id` that ends it (HEADERS/DATA with END_STREAM,
  // or RST_STREAM), if any.
  const Frame* streamEnd(uint32_t stream_id) const {
    for (const Frame& f : frames_) {
      if (f.stream_id == stream_id &&
          (f.type == kRstStream ||
           ((f.type == kHeaders || f.type == kData) && (f.flags & kEndStream) != 0))) {
        return &f;
      }
    }
    return nullptr;
  }
  bool has(uint8_t type) const {
    for (const Frame& f : frames_) {
      if (f.type == type) {
        return true;
      }
    }
    return false;
  }

 private:
  void onReadable() {
    char buf[16384];
    for (;;) {
      const ssize_t n = ::read(fd_, buf, sizeof(buf));
      if (n > 0) {
        in_.append(buf, static_cast<size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        eof_ = true;
        watcher_->setEnabled(0);
      }
      break;
    }
    parse();
  }

  void parse() {
    while (in_.size() >= 9) {
      const auto* p = reinterpret_cast<const uint8_t*>(in_.data());
      const size_t len = (size_t(p[0]) << 16) | (size_t(p[1]) << 8) | p[2];
      if (in_.size() < 9 + len) {
        return;
      }
      Frame f;
      f.type = p[3];
      f.flags = p[4];
      f.stream_id =
          ((uint32_t(p[5]) & 0x7f) << 24) | (uint32_t(p[6]) << 16) | (uint32_t(p[7]) << 8) | p[8];
      f.payload = in_.substr(9, len);
      if (f.type == kHeaders) {
        decodeHeaders(f);
      }
      in_.erase(0, 9 + len);
      frames_.push_back(std::move(f));
    }
  }

  void decodeHeaders(Frame& f) {
    auto* in = reinterpret_cast<const uint8_t*>(f.payload.data());
    size_t left = f.payload.size();
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      const ssize_t n = nghttp2_hd_inflate_hd2(inflater_, &nv, &flags, in, left, 1);
      if (n < 0) {
        return;
      }
      in += n;
      left -= static_cast<size_t>(n);
      if ((flags & NGHTTP2_HD_INFLATE_EMIT) != 0) {
        f.headers.emplace_back(std::string(reinterpret_cast<char*>(nv.name), nv.namelen),
                               std::string(reinterpret_cast<char*>(nv.value), nv.valuelen));
      }
      if ((flags & NGHTTP2_HD_INFLATE_FINAL) != 0) {
        nghttp2_hd_inflate_end_headers(inflater_);
        return;
      }
      if (n == 0 && left == 0) {
        return;
      }
    }
  }

  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  std::string in_;
  std::vector<Frame> frames_;
  nghttp2_hd_deflater* deflater_ = nullptr;
  nghttp2_hd_inflater* inflater_ = nullptr;
  std::unique_ptr<event::FdWatcher> watcher_;
};

class GrpcWireTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.registerUnary("/test.Echo/Unary", [](std::string request, GrpcServer::UnaryDone done) {
      done("echo:" + request);
    });
    server_.setFallback(&handler_);
    ASSERT_TRUE(server_.listenUnix(socket_, 0600).ok());
  }

  // A normal call from a well-behaved client still works.
  void expectHealthyServer() {
    GrpcClient client(dispatcher_, socket_);
    CallRecorder rec;
    auto call = client.startCall("/test.Echo/Unary", {}, std::nullopt, rec);
    call->sendMessage("ok?");
    call->halfClose();
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return rec.closed(); }));
    EXPECT_TRUE(rec.status->ok()) << *rec.status;
    EXPECT_EQ(rec.messages, std::vector<std::string>{"echo:ok?"});
  }

  // Sends one request on stream 1 and waits for the stream's end.
  const Frame* request(RawClient& raw, const Metadata& headers, const std::string& data,
                       bool end_stream_on_data = true) {
    raw.sendPreface();
    raw.send(frame(kHeaders, kEndHeaders, 1, raw.headerBlock(headers)));
    raw.send(frame(kData, end_stream_on_data ? kEndStream : 0, 1, data));
    EXPECT_TRUE(runUntil(dispatcher_, [&] { return raw.streamEnd(1) != nullptr || raw.eof(); }));
    return raw.streamEnd(1);
  }

  testing::TempDir dir_;
  const std::string socket_ = dir_.file("crisp.sock");
  event::Dispatcher dispatcher_;
  RecordingHandler handler_;
  GrpcServer server_{dispatcher_};
};

TEST_F(GrpcWireTest, GarbageBytesCloseThatConnectionOnly) {
  // A well-behaved client with a call in flight while the garbage arrives.
  GrpcClient client(dispatcher_, socket_);
  CallRecorder pending;
  auto call = client.startCall("/test.Hang/Call", {}, std::nullopt, pending);
  call->sendMessage("waiting");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return handler_.calls.size() == 1; }));

  RawClient raw(dispatcher_, socket_);
  ASSERT_TRUE(raw.connected());
  const char kGarbage[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n\x00\xff garbage";
  raw.send(std::string(kGarbage, sizeof(kGarbage) - 1));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return raw.eof(); }));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return server_.connectionCount() == 1; }));

  // The other client's call is untouched and can finish.
  EXPECT_FALSE(pending.closed());
  EXPECT_TRUE(handler_.calls[0]->call->active());
  handler_.calls[0]->call->finish(absl::OkStatus());
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return pending.closed(); }));
  EXPECT_TRUE(pending.status->ok());
  expectHealthyServer();
}

TEST_F(GrpcWireTest, ProtocolErrorGetsGoawayAndClose) {
  RawClient raw(dispatcher_, socket_);
  raw.sendPreface();
  // SETTINGS with a length that is not a multiple of 6: a connection error.
  raw.send(frame(kSettings, 0, 0, "12345"));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return raw.eof(); }));
  EXPECT_TRUE(raw.has(kGoaway));
  expectHealthyServer();
}

TEST_F(GrpcWireTest, DataOnUnopenedStreamGetsGoaway) {
  RawClient raw(dispatcher_, socket_);
  raw.sendPreface();
  raw.send(frame(kData, 0, 7, "xx"));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return raw.eof(); }));
  EXPECT_TRUE(raw.has(kGoaway));
  expectHealthyServer();
}

TEST_F(GrpcWireTest, PingFloodFromClientThatNeverReadsDoesNotHurtOthers) {
  // Each PING asks for a PING ACK; a client that never reads them must not make
  // the server buffer without bound or stall other connections.
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_.data(), socket_.size());
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::string flood =
      std::string(NGHTTP2_CLIENT_MAGIC, NGHTTP2_CLIENT_MAGIC_LEN) + frame(kSettings, 0, 0, "");
  for (int i = 0; i < 4096; ++i) {
    flood += frame(0x6, 0, 0, "12345678");  // PING
  }
  size_t sent = 0;
  for (int round = 0; round < 200 && sent < flood.size(); ++round) {
    const ssize_t n = ::send(fd, flood.data() + sent, flood.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    }
    // Let the server read (or decide to stop reading) between bursts.
    testing::settle(dispatcher_);
    if (n <= 0 && errno != EAGAIN) {
      break;  // The server gave up on this connection: fine too.
    }
  }
  expectHealthyServer();
  ::close(fd);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return server_.connectionCount() == 0; }));
}

TEST_F(GrpcWireTest, LengthPrefixBeyondBodyIsInternal) {
  RawClient raw(dispatcher_, socket_);
  const Frame* end =
      request(raw, grpcRequestHeaders("/test.Any/Call"), grpcMessage(0, 100, "only ten b"));
  ASSERT_NE(end, nullptr);
  ASSERT_EQ(end->type, kHeaders);
  EXPECT_EQ(field(end->headers, "grpc-status"), "13");
  EXPECT_NE(field(end->headers, "grpc-message").value_or("").find("inside a message"),
            std::string::npos);
  ASSERT_EQ(handler_.calls.size(), 1u);
  ASSERT_TRUE(handler_.calls[0]->cancelled.has_value());
  EXPECT_EQ(handler_.calls[0]->cancelled->code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(handler_.calls[0]->messages.empty());
  expectHealthyServer();
}

TEST_F(GrpcWireTest, CompressedFlagWithoutEncodingIsInternal) {
  RawClient raw(dispatcher_, socket_);
  const Frame* end = request(raw, grpcRequestHeaders("/test.Any/Call"), grpcMessage(1, 3, "abc"));
  ASSERT_NE(end, nullptr);
  EXPECT_EQ(field(end->headers, "grpc-status"), "13");
  EXPECT_NE(field(end->headers, "grpc-message").value_or("").find("compressed"), std::string::npos);
}

TEST_F(GrpcWireTest, UnsupportedEncodingIsUnimplemented) {
  RawClient raw(dispatcher_, socket_);
  Metadata headers = grpcRequestHeaders("/test.Any/Call");
  headers.emplace_back("grpc-encoding", "gzip");
  const Frame* end = request(raw, headers, grpcMessage(1, 3, "abc"));
  ASSERT_NE(end, nullptr);
  EXPECT_EQ(field(end->headers, ":status"), "200");
  EXPECT_EQ(field(end->headers, "grpc-status"), "12");
  EXPECT_EQ(field(end->headers, "grpc-accept-encoding"), "identity");
  EXPECT_TRUE(handler_.calls.empty());
}

TEST_F(GrpcWireTest, MalformedTimeoutIsInternal) {
  RawClient raw(dispatcher_, socket_);
  Metadata headers = grpcRequestHeaders("/test.Any/Call");
  headers.emplace_back("grpc-timeout", "soon");
  const Frame* end = request(raw, headers, grpcMessage(0, 0, ""));
  ASSERT_NE(end, nullptr);
  EXPECT_EQ(field(end->headers, "grpc-status"), "13");
  EXPECT_TRUE(handler_.calls.empty());
}

TEST_F(GrpcWireTest, NonGrpcRequestsGetHttpErrors) {
  {
    RawClient raw(dispatcher_, socket_);
    Metadata headers = grpcRequestHeaders("/test.Any/Call");
    headers[4].second = "application/json";
    const Frame* end = request(raw, headers, "{}");
    ASSERT_NE(end, nullptr);
    EXPECT_EQ(field(end->headers, ":status"), "415");
  }
  {
    RawClient raw(dispatcher_, socket_);
    Metadata headers = grpcRequestHeaders("/test.Any/Call");
    headers[0].second = "GET";
    raw.sendPreface();
    raw.send(frame(kHeaders, kEndHeaders | kEndStream, 1, raw.headerBlock(headers)));
    ASSERT_TRUE(runUntil(dispatcher_, [&] { return raw.streamEnd(1) != nullptr; }));
    EXPECT_EQ(field(raw.streamEnd(1)->headers, ":status"), "405");
  }
  EXPECT_TRUE(handler_.calls.empty());
  expectHealthyServer();
}

TEST_F(GrpcWireTest, MessageSplitAcrossManyDataFramesIsReassembled) {
  RawClient raw(dispatcher_, socket_);
  Metadata headers = grpcRequestHeaders("/test.Echo/Unary");
  raw.sendPreface();
  raw.send(frame(kHeaders, kEndHeaders, 1, raw.headerBlock(headers)));
  const std::string body = grpcMessage(0, 11, "hello world");
  for (size_t i = 0; i < body.size(); ++i) {
    raw.send(frame(kData, i + 1 == body.size() ? kEndStream : 0, 1, body.substr(i, 1)));
  }
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return raw.streamEnd(1) != nullptr; }));
  const Frame* end = raw.streamEnd(1);
  EXPECT_EQ(field(end->headers, "grpc-status"), "0");
  std::string data;
  for (const Frame& f : raw.frames()) {
    if (f.type == kData && f.stream_id == 1) {
      data += f.payload;
    }
  }
  EXPECT_EQ(data, grpcMessage(0, 16, "echo:hello world"));
}

}  // namespace
}  // namespace crisp::cri
