#include "test/stream/spdy_test_client.h"

#include <cerrno>
#include <csignal>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crisp::stream::testing {
namespace {

using Clock = std::chrono::steady_clock;

int remainingMs(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

SpdyTestClient::SpdyTestClient(int fd) : fd_(fd), codec_(spdy::Codec::Role::kClient, *this) {
  // Writing to a socket the server closed must fail with EPIPE, not kill the test.
  signal(SIGPIPE, SIG_IGN);
  const int flags = fcntl(fd_, F_GETFL, 0);
  fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
}

SpdyTestClient::~SpdyTestClient() { closeSocket(); }

uint32_t SpdyTestClient::openStream(std::string_view stream_type, uint8_t flags) {
  return openStreamWithHeaders({{"streamtype", std::string(stream_type)}}, flags);
}

uint32_t SpdyTestClient::openStreamWithHeaders(const spdy::HeaderList& headers, uint8_t flags) {
  const uint32_t id = next_stream_id_;
  next_stream_id_ += 2;
  synStream(id, headers, flags);
  return id;
}

bool SpdyTestClient::synStream(uint32_t stream_id, const spdy::HeaderList& headers, uint8_t flags) {
  codec_.encodeSynStream(out_, stream_id, 0, 0, flags, headers);
  return corked_ || send();
}

bool SpdyTestClient::data(uint32_t stream_id, std::string_view payload, bool fin) {
  Buffer body;
  body.add(payload);
  spdy::Codec::encodeData(out_, stream_id, body, fin);
  return corked_ || send();
}

bool SpdyTestClient::rst(uint32_t stream_id, spdy::RstStatus status) {
  spdy::Codec::encodeRstStream(out_, stream_id, status);
  return corked_ || send();
}

bool SpdyTestClient::ping(uint32_t ping_id) {
  spdy::Codec::encodePing(out_, ping_id);
  return corked_ || send();
}

bool SpdyTestClient::goAway(uint32_t last_good_stream_id) {
  spdy::Codec::encodeGoAway(out_, last_good_stream_id, spdy::GoAwayStatus::kOk);
  return corked_ || send();
}

bool SpdyTestClient::raw(std::string_view bytes) {
  out_.add(bytes);
  return corked_ || send();
}

bool SpdyTestClient::uncork() {
  corked_ = false;
  return send();
}

std::string SpdyTestClient::takeCorked() { return out_.toString(); }

bool SpdyTestClient::send() {
  const auto deadline = Clock::now() + send_timeout_;
  while (!out_.empty()) {
    if (fd_ < 0) {
      error_ = "send on a closed socket";
      return false;
    }
    const int n = out_.writeTo(fd_);
    if (n > 0) {
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      error_ = std::string("send: ") + strerror(errno);
      return false;
    }
    pollfd p{fd_, static_cast<short>(POLLOUT | (read_while_writing_ && !eof_ ? POLLIN : 0)), 0};
    const int left = remainingMs(deadline);
    if (left == 0) {
      error_ = "send timed out";
      return false;
    }
    if (poll(&p, 1, left) < 0 && errno != EINTR) {
      error_ = std::string("poll: ") + strerror(errno);
      return false;
    }
    if ((p.revents & POLLIN) != 0 && read_while_writing_) {
      readAvailable();
    }
    if ((p.revents & (POLLERR | POLLNVAL)) != 0) {
      error_ = "socket error while sending";
      return false;
    }
  }
  return true;
}

bool SpdyTestClient::readAvailable() {
  while (fd_ >= 0 && !eof_) {
    const int n = in_.readFrom(fd_, 256 * 1024);
    if (n > 0) {
      decode();
      continue;
    }
    if (n == 0) {
      eof_ = true;
      decode();
      return false;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return true;
    }
    error_ = std::string("read: ") + strerror(errno);
    eof_ = true;
    return false;
  }
  return !eof_;
}

void SpdyTestClient::decode() {
  if (decode_failed_) {
    in_.drain(in_.length());
    return;
  }
  const absl::Status status = codec_.dispatch(in_);
  if (!status.ok()) {
    decode_failed_ = true;
    error_ = "server sent bad SPDY: " + std::string(status.message());
    in_.drain(in_.length());
  }
}

bool SpdyTestClient::waitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    if (fd_ < 0 || eof_) {
      return done();
    }
    pollfd p{fd_, POLLIN, 0};
    const int left = remainingMs(deadline);
    if (left == 0) {
      return done();
    }
    const int r = poll(&p, 1, left);
    if (r < 0 && errno != EINTR) {
      error_ = std::string("poll: ") + strerror(errno);
      return false;
    }
    if (r > 0) {
      readAvailable();
    }
  }
  return true;
}

bool SpdyTestClient::waitForEof(std::chrono::milliseconds timeout) {
  return waitFor([this] { return eof_; }, timeout);
}

std::optional<std::string> SpdyTestClient::readRawUntil(std::string_view delimiter,
                                                        std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string got;
  while (got.find(delimiter) == std::string::npos) {
    char c;
    const ssize_t n = ::read(fd_, &c, 1);  // one byte at a time: never read past the delimiter
    if (n == 1) {
      got.push_back(c);
      continue;
    }
    if (n == 0) {
      eof_ = true;
      return std::nullopt;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return std::nullopt;
    }
    pollfd p{fd_, POLLIN, 0};
    const int left = remainingMs(deadline);
    if (left == 0 || poll(&p, 1, left) <= 0) {
      return std::nullopt;
    }
  }
  return got;
}

void SpdyTestClient::closeSocket() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

void SpdyTestClient::shutdownWrite() {
  if (fd_ >= 0) {
    ::shutdown(fd_, SHUT_WR);
  }
}

const SpdyTestClient::StreamState& SpdyTestClient::stream(uint32_t stream_id) {
  return streams_[stream_id];
}

size_t SpdyTestClient::count(Frame::Type type) const {
  size_t n = 0;
  for (const auto& f : frames_) {
    if (f.type == type) {
      ++n;
    }
  }
  return n;
}

std::optional<size_t> SpdyTestClient::find(const std::function<bool(const Frame&)>& pred) const {
  for (size_t i = 0; i < frames_.size(); ++i) {
    if (pred(frames_[i])) {
      return i;
    }
  }
  return std::nullopt;
}

std::optional<size_t> SpdyTestClient::findLast(
    const std::function<bool(const Frame&)>& pred) const {
  for (size_t i = frames_.size(); i > 0; --i) {
    if (pred(frames_[i - 1])) {
      return i - 1;
    }
  }
  return std::nullopt;
}

void SpdyTestClient::onSynStream(uint32_t stream_id, uint32_t, uint8_t, uint8_t flags,
                                 spdy::HeaderList&& headers) {
  Frame f;
  f.type = Frame::Type::kSynStream;
  f.stream_id = stream_id;
  f.flags = flags;
  f.headers = std::move(headers);
  frames_.push_back(std::move(f));
}

void SpdyTestClient::onSynReply(uint32_t stream_id, uint8_t flags, spdy::HeaderList&& headers) {
  Frame f;
  f.type = Frame::Type::kSynReply;
  f.stream_id = stream_id;
  f.flags = flags;
  f.headers = std::move(headers);
  frames_.push_back(std::move(f));
  streams_[stream_id].replied = true;
}

void SpdyTestClient::onHeaders(uint32_t stream_id, uint8_t flags, spdy::HeaderList&& headers) {
  Frame f;
  f.type = Frame::Type::kHeaders;
  f.stream_id = stream_id;
  f.flags = flags;
  f.headers = std::move(headers);
  frames_.push_back(std::move(f));
}

void SpdyTestClient::onData(uint32_t stream_id, Buffer& data, bool fin) {
  Frame f;
  f.type = Frame::Type::kData;
  f.stream_id = stream_id;
  f.flags = fin ? spdy::kFlagFin : 0;
  f.data_size = data.length();
  frames_.push_back(f);
  auto& s = streams_[stream_id];
  s.data += data.toString();
  if (fin) {
    s.fin = true;
  }
}

void SpdyTestClient::onRstStream(uint32_t stream_id, spdy::RstStatus status) {
  Frame f;
  f.type = Frame::Type::kRst;
  f.stream_id = stream_id;
  f.rst_status = status;
  frames_.push_back(f);
  auto& s = streams_[stream_id];
  s.reset = true;
  s.rst_status = status;
}

void SpdyTestClient::onSettings(uint8_t flags, const std::vector<spdy::SettingsEntry>&) {
  Frame f;
  f.type = Frame::Type::kSettings;
  f.flags = flags;
  frames_.push_back(f);
}

void SpdyTestClient::onPing(uint32_t id) {
  Frame f;
  f.type = Frame::Type::kPing;
  f.ping_id = id;
  frames_.push_back(f);
}

void SpdyTestClient::onGoAway(uint32_t last_good_stream_id, spdy::GoAwayStatus status) {
  Frame f;
  f.type = Frame::Type::kGoAway;
  f.stream_id = last_good_stream_id;
  f.goaway_status = status;
  frames_.push_back(f);
  goaway_ = status;
}

void SpdyTestClient::onWindowUpdate(uint32_t stream_id, uint32_t) {
  Frame f;
  f.type = Frame::Type::kWindowUpdate;
  f.stream_id = stream_id;
  frames_.push_back(f);
}

LoopThread::LoopThread() : thread_([this] { dispatcher_.run(); }) {}

LoopThread::~LoopThread() { stop(); }

void LoopThread::stop() {
  if (thread_.joinable()) {
    dispatcher_.post([this] { dispatcher_.exit(); });
    thread_.join();
  }
}

bool LoopThread::waitUntil(std::function<bool()> pred, std::chrono::milliseconds timeout) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> fired = done->get_future();
  // The check runs on the loop, off a timer owned by the loop; the test's thread
  // only waits on the future.
  struct Poller {
    std::function<bool()> pred;
    std::shared_ptr<std::promise<void>> done;
    std::unique_ptr<event::Timer> timer;
    bool stopped = false;
  };
  auto poller = std::make_shared<Poller>();
  poller->pred = std::move(pred);
  poller->done = done;
  run([this, poller] {
    poller->timer = std::make_unique<event::Timer>(dispatcher_, [poller] {
      if (poller->stopped) {
        return;
      }
      if (poller->pred()) {
        poller->stopped = true;
        poller->done->set_value();
        return;
      }
      poller->timer->enable(std::chrono::milliseconds(1));
    });
    poller->timer->enable(std::chrono::milliseconds(0));
    return 0;
  });
  const bool ok = fired.wait_for(timeout) == std::future_status::ready;
  // Stop polling and free the timer on the loop.
  run([poller] {
    poller->stopped = true;
    poller->timer.reset();
    return 0;
  });
  return ok;
}

}  // namespace crisp::stream::testing
