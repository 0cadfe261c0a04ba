#include "test/stream/spdy_test_client.h"

#include <cerrno>
#include <csignal>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace crisp::stream::testing {

SpdyTestClient::SpdyTestClient(int fd)
    : SocketTestClient(fd), codec_(spdy::Codec::Role::kClient, *this) {}

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
  return queued();
}

bool SpdyTestClient::data(uint32_t stream_id, std::string_view payload, bool fin) {
  Buffer body;
  body.add(payload);
  spdy::Codec::encodeData(out_, stream_id, body, fin);
  return queued();
}

bool SpdyTestClient::rst(uint32_t stream_id, spdy::RstStatus status) {
  spdy::Codec::encodeRstStream(out_, stream_id, status);
  return queued();
}

bool SpdyTestClient::ping(uint32_t ping_id) {
  spdy::Codec::encodePing(out_, ping_id);
  return queued();
}

bool SpdyTestClient::goAway(uint32_t last_good_stream_id) {
  spdy::Codec::encodeGoAway(out_, last_good_stream_id, spdy::GoAwayStatus::kOk);
  return queued();
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
