#include "source/cri/grpc_connection.h"

#include <cstring>

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "source/common/logger.h"

namespace crisp::cri::internal {
namespace {

constexpr size_t kReadChunk = 32 * 1024;
// Reads per readiness event, so that one busy peer cannot starve the loop.
constexpr int kReadsPerEvent = 8;
constexpr size_t kWriteChunk = 64 * 1024;

}  // namespace

void StreamSendState::notifyWhenDrained(std::function<void()> fn) {
  if (pending.length() <= kSendLowWatermark) {
    on_drained_ = nullptr;
    fn();
    return;
  }
  on_drained_ = std::move(fn);
}

Http2Connection::Http2Connection(event::Dispatcher& dispatcher, int fd, bool connecting)
    : dispatcher_(dispatcher),
      id_(log::nextId()),
      fd_(fd),
      connecting_(connecting),
      watcher_(dispatcher, fd, [this](short events) { onFdReady(events); }),
      flush_timer_(dispatcher, [this] {
        if (!pending_close_.ok()) {
          close(pending_close_);
          return;
        }
        doFlush();
      }) {}

Http2Connection::~Http2Connection() {
  watcher_.setEnabled(0);
  if (fd_ >= 0) {
    ::close(fd_);
  }
  if (session_ != nullptr) {
    nghttp2_session_del(session_);
  }
}

bool Http2Connection::start(nghttp2_session* session,
                            const std::vector<nghttp2_settings_entry>& settings) {
  session_ = session;
  int rv = nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  if (rv == 0) {
    // The connection window starts at 65535 whatever SETTINGS say; raise it.
    rv = nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kWindowBytes);
  }
  if (rv != 0) {
    closeSoon(absl::InternalError(std::string("http2 setup: ") + nghttp2_strerror(rv)));
    return false;
  }
  if (fd_ < 0) {
    return true;
  }
  if (connecting_) {
    watcher_.setEnabled(event::FdWatcher::kWrite);
  } else {
    updateInterest();
    scheduleFlush();
  }
  return true;
}

void Http2Connection::scheduleFlush() {
  if (!closed_ && !connecting_ && !flush_timer_.enabled()) {
    flush_timer_.enable(std::chrono::milliseconds(0));
  }
}

void Http2Connection::closeSoon(const absl::Status& reason) {
  if (closed_ || !pending_close_.ok()) {
    return;
  }
  pending_close_ = reason;
  flush_timer_.enable(std::chrono::milliseconds(0));
}

void Http2Connection::close(const absl::Status& reason) {
  if (closed_) {
    return;
  }
  closed_ = true;
  CRISP_CONN_LOG(kCri, debug, id_, "http2 connection closed: {}", reason.ToString());
  watcher_.setEnabled(0);
  flush_timer_.disable();
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  onClosed(reason);
}

absl::Status Http2Connection::socketError(const std::string& what, int err) {
  return absl::UnavailableError(what + ": " + std::strerror(err));
}

void Http2Connection::onFdReady(short events) {
  if (closed_) {
    return;
  }
  if (connecting_) {
    onConnectDone();
    return;
  }
  if ((events & event::FdWatcher::kRead) != 0) {
    doRead();
  }
  if (!closed_) {
    doFlush();
  }
}

void Http2Connection::onConnectDone() {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err != 0) {
    close(socketError("connect", err));
    return;
  }
  connecting_ = false;
  doFlush();
}

void Http2Connection::doRead() {
  uint8_t buf[kReadChunk];
  for (int i = 0; i < kReadsPerEvent && !closed_; ++i) {
    const ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return;
      }
      if (errno == EINTR) {
        continue;
      }
      close(socketError("read", errno));
      return;
    }
    if (n == 0) {
      close(absl::UnavailableError("connection closed by peer"));
      return;
    }
    const ssize_t rv = nghttp2_session_mem_recv(session_, buf, static_cast<size_t>(n));
    if (closed_) {
      return;
    }
    if (rv < 0) {
      // Fatal for the session. nghttp2 has queued a GOAWAY where the peer speaks
      // HTTP/2 at all; send what can go out without blocking, then close.
      CRISP_CONN_LOG(kCri, debug, id_, "http2 receive error: {}", nghttp2_strerror(rv));
      doFlush();
      close(absl::InternalError(std::string("http2: ") + nghttp2_strerror(static_cast<int>(rv))));
      return;
    }
    if (static_cast<size_t>(n) < sizeof(buf)) {
      return;
    }
    if (out_.length() >= kOutputHighWatermark) {
      return;
    }
  }
}

void Http2Connection::doFlush() {
  if (closed_ || connecting_ || fd_ < 0) {
    return;
  }
  for (;;) {
    while (out_.length() < kWriteChunk) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (closed_) {
        return;
      }
      if (n < 0) {
        close(absl::InternalError(std::string("http2 send: ") +
                                  nghttp2_strerror(static_cast<int>(n))));
        return;
      }
      if (n == 0) {
        break;
      }
      out_.add(data, static_cast<size_t>(n));
    }
    if (out_.empty()) {
      break;
    }
    const ssize_t written = sendSome();
    if (written < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        break;
      }
      if (errno == EINTR) {
        continue;
      }
      close(socketError("write", errno));
      return;
    }
    if (!out_.empty()) {
      break;  // The socket is full.
    }
  }
  notifyDrained();
  if (!closed_) {
    updateInterest();
  }
}

ssize_t Http2Connection::sendSome() {
  // sendmsg with MSG_NOSIGNAL: a peer that went away must give EPIPE, not
  // SIGPIPE for the whole process.
  constexpr int kMaxIov = 16;
  evbuffer_iovec vec[kMaxIov];
  const int n = evbuffer_peek(out_.raw(), -1, nullptr, vec, kMaxIov);
  iovec iov[kMaxIov];
  const int count = n < kMaxIov ? n : kMaxIov;
  for (int i = 0; i < count; ++i) {
    iov[i].iov_base = vec[i].iov_base;
    iov[i].iov_len = vec[i].iov_len;
  }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = static_cast<size_t>(count);
  const ssize_t written = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
  if (written > 0) {
    out_.drain(static_cast<size_t>(written));
  }
  return written;
}

void Http2Connection::updateInterest() {
  if (closed_) {
    return;
  }
  const bool want_read =
      nghttp2_session_want_read(session_) != 0 && out_.length() < kOutputHighWatermark;
  const bool want_write = !out_.empty() || nghttp2_session_want_write(session_) != 0;
  if (!want_read && !want_write) {
    // Both sides are done (GOAWAY exchanged, or the session failed).
    close(absl::UnavailableError("http2 session finished"));
    return;
  }
  short events = 0;
  if (want_read) {
    events |= event::FdWatcher::kRead;
  }
  if (!out_.empty()) {
    events |= event::FdWatcher::kWrite;
  }
  watcher_.setEnabled(events);
}

void Http2Connection::notifyDrained() {
  while (!drained_streams_.empty() && !closed_) {
    std::vector<int32_t> ids;
    ids.swap(drained_streams_);
    for (int32_t id : ids) {
      StreamSendState* state = sendStateFor(id);
      if (state != nullptr) {
        std::function<void()> fn = state->takeDrainedNotice();
        if (fn) {
          fn();  // May end the stream or queue more: nothing of `state` is used after.
        }
      }
    }
  }
}

void Http2Connection::queueSend(int32_t stream_id, StreamSendState& state) {
  if (closed_) {
    return;
  }
  if (state.deferred) {
    state.deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  scheduleFlush();
}

void Http2Connection::consumeReceived(int32_t stream_id, ReadGate& gate, size_t len) {
  nghttp2_session_consume_connection(session_, len);
  if (gate.paused) {
    gate.unconsumed += len;
  } else {
    nghttp2_session_consume_stream(session_, stream_id, len);
  }
}

void Http2Connection::setReadPaused(int32_t stream_id, ReadGate& gate, bool paused) {
  if (gate.paused == paused) {
    return;
  }
  gate.paused = paused;
  if (!paused && gate.unconsumed > 0 && !closed_) {
    nghttp2_session_consume_stream(session_, stream_id, gate.unconsumed);
    gate.unconsumed = 0;
    scheduleFlush();
  }
}

nghttp2_data_provider Http2Connection::dataProvider(StreamSendState& state) {
  nghttp2_data_provider provider;
  provider.source.ptr = &state;
  provider.read_callback = &Http2Connection::readData;
  return provider;
}

std::vector<nghttp2_nv> Http2Connection::toNv(const Metadata& headers) {
  std::vector<nghttp2_nv> nv;
  nv.reserve(headers.size());
  for (const auto& [name, value] : headers) {
    nv.push_back(nghttp2_nv{const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(name.data())),
                            const_cast<uint8_t*>(reinterpret_cast<const uint8_t*>(value.data())),
                            name.size(), value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  return nv;
}

ssize_t Http2Connection::readData(nghttp2_session* session, int32_t stream_id, uint8_t* buf,
                                  size_t length, uint32_t* data_flags, nghttp2_data_source* source,
                                  void* user_data) {
  auto* state = static_cast<StreamSendState*>(source->ptr);
  auto* self = static_cast<Http2Connection*>(user_data);
  const size_t n = state->pending.copyOut(buf, length);
  state->pending.drain(n);
  if (state->drainNoticeDue()) {
    self->drained_streams_.push_back(stream_id);
  }
  if (state->pending.empty()) {
    if (state->end) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (state->end_with_trailers) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        const std::vector<nghttp2_nv> nv = toNv(state->trailers);
        if (nghttp2_submit_trailer(session, stream_id, nv.data(), nv.size()) != 0) {
          return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
      }
    } else if (n == 0) {
      state->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

}  // namespace crisp::cri::internal
