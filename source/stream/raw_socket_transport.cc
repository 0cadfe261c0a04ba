#include "source/stream/raw_socket_transport.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <event2/buffer.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "source/common/pipe_write.h"

namespace crisp::stream {
namespace {

// Segments of the output queue handed to one sendmsg(2).
constexpr int kMaxIovecs = 16;

std::string errnoText(int err) { return std::string(strerror(err)); }

}  // namespace

RawSocketTransport::RawSocketTransport(event::Dispatcher& dispatcher, int fd,
                                       std::string peer_address, Buffer&& initial_input,
                                       Buffer&& initial_output,
                                       const RawSocketTransportOptions& options)
    : fd_(fd),
      peer_address_(std::move(peer_address)),
      options_(options),
      sigpipe_ignored_(sigpipeIgnored()),
      dispatcher_(dispatcher) {
  const int flags = fcntl(fd_, F_GETFL, 0);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) {
    fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  }
  // Keystrokes and small outputs of interactive sessions must not wait for
  // Nagle. Fails harmlessly on sockets that are not TCP.
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  input_.move(initial_input);
  output_.move(initial_output);
  watcher_ = std::make_unique<event::FdWatcher>(dispatcher, fd_,
                                                [this](short events) { onSocketEvent(events); });
  scheduled_ = std::make_unique<event::Timer>(dispatcher, [this] { onScheduled(); });
  peer_check_ = std::make_unique<PausedPeerCheck>(
      dispatcher, fd_, [this](const std::string& detail) { fail(detail); });
}

RawSocketTransport::~RawSocketTransport() { close(); }

void RawSocketTransport::start() {
  if (closed()) {
    return;
  }
  if (started_) {
    // A new owner after a hand-over.
    pauseReading(false);
    return;
  }
  started_ = true;
  updateWatcher();
  // Initial bytes in either direction are handled from the loop, never from
  // inside this call.
  schedule();
}

void RawSocketTransport::write(Buffer& data) {
  if (closed() || shutdown_requested_) {
    data.drain(data.length());
    return;
  }
  if (data.empty()) {
    return;
  }
  if (splice_left_ > 0) {
    output_after_.move(data);
  } else {
    output_.move(data);
  }
  if (started_ && !write_blocked_) {
    schedule();
  }
}

bool RawSocketTransport::writeFromPipe(Buffer& header, int pipe_fd, size_t length) {
  if (closed() || !started_ || shutdown_requested_ || length == 0 || queuedBytes() > 0) {
    return false;
  }
  output_.move(header);
  splice_fd_ = pipe_fd;
  splice_fd_owned_ = false;
  splice_left_ = length;
  std::string error;
  long n = 1;
  while (queuedBytes() > 0 && (n = writeStep(queuedBytes(), error)) > 0) {
  }
  if (n < 0) {
    // Reported from the loop: callbacks never run inside a call.
    pending_error_ = error;
  }
  if (splice_left_ > 0) {
    // The socket took part of the frame: the rest of its payload is written
    // from the loop, through a descriptor of our own.
    const int own = ::fcntl(pipe_fd, F_DUPFD_CLOEXEC, 0);
    if (own >= 0) {
      splice_fd_ = own;
      splice_fd_owned_ = true;
    } else {
      // No descriptor to spare: copy the rest of the payload out of the pipe
      // now, so that the frame stays whole.
      Buffer rest;
      while (rest.length() < splice_left_) {
        const int got = rest.readFrom(pipe_fd, static_cast<int>(splice_left_ - rest.length()));
        if (got <= 0 && !(got < 0 && errno == EINTR)) {
          break;
        }
      }
      if (rest.length() < splice_left_ && pending_error_.empty()) {
        pending_error_ = "splice: the pipe ended inside a frame";
      }
      endSplice();
      output_.move(rest);
    }
  }
  if (!pending_error_.empty() || (n > 0 && queuedBytes() > 0)) {
    schedule();
  } else if (queuedBytes() > 0) {
    write_blocked_ = true;
    updateWatcher();
  }
  return true;
}

bool RawSocketTransport::readIntoPipe(int pipe_fd, size_t length) {
  if (closed() || !started_ || peer_eof_ || length == 0 || pipe_in_left_ > 0 || !input_.empty()) {
    return false;
  }
  const int own = ::fcntl(pipe_fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) {
    return false;
  }
  pipe_in_fd_ = own;
  pipe_in_left_ = length;
  pipe_in_blocked_ = false;
  if (!read_paused_) {
    schedule();
  }
  return true;
}

void RawSocketTransport::cancelReadIntoPipe() {
  if (pipe_in_left_ == 0) {
    return;
  }
  endPipeInput();
  if (!closed()) {
    updateWatcher();
    if (!read_paused_) {
      schedule();
    }
  }
}

void RawSocketTransport::endPipeInput() {
  pipe_in_watcher_.reset();
  if (pipe_in_fd_ >= 0) {
    ::close(pipe_in_fd_);
  }
  pipe_in_fd_ = -1;
  pipe_in_left_ = 0;
  pipe_in_blocked_ = false;
}

size_t RawSocketTransport::queuedBytes() const {
  return output_.length() + splice_left_ + output_after_.length();
}

size_t RawSocketTransport::unacknowledgedBytes() const { return unacknowledgedSocketBytes(fd_); }

void RawSocketTransport::pauseReading(bool paused) {
  if (closed()) {
    return;
  }
  read_paused_ = paused;
  if (!started_) {
    return;
  }
  updateWatcher();
  if (!paused && (!input_.empty() || (peer_eof_ && !eof_delivered_))) {
    schedule();
  }
}

void RawSocketTransport::failOnPeerCloseWhilePaused() {
  fail_on_peer_close_ = true;
  if (started_) {
    updateWatcher();
  }
}

void RawSocketTransport::unreadInput(Buffer& data) {
  if (closed()) {
    data.drain(data.length());
    return;
  }
  if (data.empty()) {
    return;
  }
  Buffer joined;
  joined.move(data);
  joined.move(input_);
  input_ = std::move(joined);
  if (started_ && !read_paused_) {
    schedule();
  }
}

void RawSocketTransport::shutdownWrite() {
  if (closed() || shutdown_requested_) {
    return;
  }
  shutdown_requested_ = true;
  if (started_ && !write_blocked_) {
    schedule();
  }
}

void RawSocketTransport::close() {
  if (closed()) {
    return;
  }
  watcher_.reset();
  scheduled_->disable();
  peer_check_->setActive(false);
  ::close(fd_);
  fd_ = -1;
  input_.drain(input_.length());
  output_.drain(output_.length());
  endSplice();
  endPipeInput();
  output_after_.drain(output_after_.length());
}

void RawSocketTransport::endSplice() {
  if (splice_fd_owned_ && splice_fd_ >= 0) {
    ::close(splice_fd_);
  }
  splice_fd_ = -1;
  splice_fd_owned_ = false;
  splice_left_ = 0;
  splice_pipe_empty_ = false;
  splice_pipe_watcher_.reset();
}

void RawSocketTransport::schedule() {
  if (!scheduled_->enabled()) {
    scheduled_->enable(std::chrono::milliseconds(0));
  }
}

void RawSocketTransport::onScheduled() {
  if (closed() || !started_) {
    return;
  }
  if (!pending_error_.empty()) {
    fail(pending_error_);
    return;
  }
  if (!write_blocked_ && (queuedBytes() > 0 || (shutdown_requested_ && !write_shut_))) {
    flush();
    if (closed()) {
      return;
    }
  }
  // A transfer into a pipe starts from here: the socket may hold its bytes.
  processInput(pipe_in_left_ > 0 && !pipe_in_blocked_);
  if (!closed()) {
    updateWatcher();
  }
}

void RawSocketTransport::onSocketEvent(short events) {
  if ((events & event::FdWatcher::kWrite) != 0) {
    write_blocked_ = false;
    flush();
    if (closed()) {
      return;
    }
  }
  if ((events & event::FdWatcher::kRead) != 0) {
    processInput(true);
  }
  if (!closed()) {
    updateWatcher();
  }
}

void RawSocketTransport::onSplicePipeReadable() {
  splice_pipe_empty_ = false;
  write_blocked_ = false;
  flush();
  if (!closed()) {
    updateWatcher();
  }
}

void RawSocketTransport::onPipeWritable() {
  pipe_in_blocked_ = false;
  processInput(true);
  if (!closed()) {
    updateWatcher();
  }
}

void RawSocketTransport::updateWatcher() {
  if (closed()) {
    return;
  }
  short events = 0;
  const bool reading = started_ && !read_paused_ && !peer_eof_;
  if (reading && !pipe_in_blocked_) {
    events |= event::FdWatcher::kRead;
  }
  if (started_ && write_blocked_ && queuedBytes() > 0 && !splice_pipe_empty_) {
    events |= event::FdWatcher::kWrite;
  }
  watcher_->setEnabled(events);
  if (splice_pipe_empty_ && splice_fd_owned_) {
    if (splice_pipe_watcher_ == nullptr) {
      // The callback only calls a method: the watcher may be destroyed inside.
      splice_pipe_watcher_ = std::make_unique<event::FdWatcher>(
          dispatcher_, splice_fd_, [this](short) { onSplicePipeReadable(); });
    }
    splice_pipe_watcher_->setEnabled(event::FdWatcher::kRead);
  }
  if (pipe_in_blocked_) {
    if (pipe_in_watcher_ == nullptr) {
      // The callback only calls a method: the watcher may be destroyed inside.
      pipe_in_watcher_ = std::make_unique<event::FdWatcher>(dispatcher_, pipe_in_fd_,
                                                            [this](short) { onPipeWritable(); });
    }
    pipe_in_watcher_->setEnabled(reading ? event::FdWatcher::kWrite : 0);
  }
  // A full pipe holds the peer back as a pause does.
  peer_check_->setActive(started_ && (read_paused_ || pipe_in_blocked_) && fail_on_peer_close_ &&
                         !peer_eof_);
}

void RawSocketTransport::processInput(bool read_socket) {
  size_t budget = options_.read_budget_bytes;
  bool socket_may_have_more = read_socket;
  // Every condition is checked again after each callback: the owner may pause,
  // close, or hand the transport to a new owner from inside it.
  while (!closed() && started_ && !read_paused_ && callbacks_ != nullptr) {
    if (!input_.empty()) {
      Buffer chunk;
      chunk.move(input_);
      callbacks_->onTransportData(chunk);
      // The contract says the callee takes everything; what it left is dropped.
      chunk.drain(chunk.length());
      continue;
    }
    if (peer_eof_) {
      if (!eof_delivered_) {
        eof_delivered_ = true;
        updateWatcher();
        callbacks_->onTransportEof();
      }
      return;
    }
    if (!socket_may_have_more || budget == 0) {
      return;
    }
    if (pipe_in_left_ > 0) {
      if (pipe_in_blocked_) {
        return;
      }
      const long moved = spliceIn(std::min(pipe_in_left_, budget));
      if (moved > 0) {
        budget -= std::min(budget, static_cast<size_t>(moved));
        callbacks_->onTransportPipeInput(static_cast<size_t>(moved), std::string());
        continue;
      }
      if (moved == 0) {
        peer_eof_ = true;
        endPipeInput();
        continue;
      }
      if (moved == -3) {
        continue;  // the rest is read as usual
      }
      return;  // would block, or failed and closed
    }
    size_t want = std::min(options_.read_chunk_bytes, budget);
    if (read_limit_once_ > 0) {
      want = std::min(want, read_limit_once_);
      read_limit_once_ = 0;
    }
    const long n = readChunk(want);
    if (n > 0) {
      budget -= std::min(budget, static_cast<size_t>(n));
      // A short read emptied the socket's receive queue; the watcher (level
      // triggered) reports anything that arrives later.
      socket_may_have_more = static_cast<size_t>(n) == want;
      continue;
    }
    if (n == 0) {
      peer_eof_ = true;
      continue;
    }
    return;  // would block, or failed and closed
  }
}

long RawSocketTransport::readChunk(size_t max) {
  evbuffer_iovec vec[2];
  const int count = evbuffer_reserve_space(input_.raw(), static_cast<ev_ssize_t>(max), vec, 2);
  if (count <= 0) {
    fail("read: cannot reserve buffer space");
    return -2;
  }
  iovec iov[2];
  const int used = toIovecs(vec, count, max, iov);
  ssize_t n;
  do {
    n = ::readv(fd_, iov, used);
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  if (n <= 0) {
    evbuffer_commit_space(input_.raw(), vec, 0);
    if (n == 0) {
      return 0;
    }
    if (err == EAGAIN || err == EWOULDBLOCK) {
      return -1;
    }
    fail("read: " + errnoText(err));
    return -2;
  }
  size_t left = static_cast<size_t>(n);
  int filled = 0;
  for (int i = 0; i < used && left > 0; ++i) {
    vec[i].iov_len = std::min(iov[i].iov_len, left);
    left -= vec[i].iov_len;
    ++filled;
  }
  evbuffer_commit_space(input_.raw(), vec, filled);
  bytes_read_ += static_cast<uint64_t>(n);
  return static_cast<long>(n);
}

long RawSocketTransport::spliceIn(size_t max) {
  const ssize_t moved = spliceWithoutSigpipe(fd_, pipe_in_fd_, max,
                                             SPLICE_F_NONBLOCK | SPLICE_F_MOVE, sigpipe_ignored_);
  const int err = errno;
  if (moved > 0) {
    bytes_read_ += static_cast<uint64_t>(moved);
    pipe_in_left_ -= static_cast<size_t>(moved);
    if (pipe_in_left_ == 0) {
      endPipeInput();
    }
    return static_cast<long>(moved);
  }
  if (moved == 0) {
    return 0;
  }
  if (err == EAGAIN || err == EWOULDBLOCK) {
    // Either side may be the one that cannot go on: bytes waiting in the
    // socket mean the pipe is full.
    int waiting = 0;
    if (::ioctl(fd_, FIONREAD, &waiting) == 0 && waiting > 0) {
      pipe_in_blocked_ = true;
      updateWatcher();
    }
    return -1;
  }
  if (err == EPIPE) {
    // The pipe's reader is gone; the connection is fine.
    endPipeInput();
    updateWatcher();
    callbacks_->onTransportPipeInput(0, "splice: " + errnoText(err));
    return -3;
  }
  fail("read: " + errnoText(err));
  return -2;
}

long RawSocketTransport::writeStep(size_t max, std::string& error) {
  if (output_.empty() && splice_left_ > 0) {
    ssize_t moved;
    do {
      moved = ::splice(splice_fd_, nullptr, fd_, nullptr, std::min(splice_left_, max),
                       SPLICE_F_NONBLOCK);
    } while (moved < 0 && errno == EINTR);
    if (moved > 0) {
      splice_left_ -= static_cast<size_t>(moved);
      bytes_written_ += static_cast<uint64_t>(moved);
      if (splice_left_ == 0) {
        endSplice();
        output_.move(output_after_);
      }
      return static_cast<long>(moved);
    }
    if (moved < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Normally the socket is full. An empty pipe means that something
      // other than crisp read what its length promised (a process that
      // opened the same pipe): the frame is finished with the bytes the
      // pipe gets next, once it has some, as a copy would have gone on
      // without the stolen ones. Waiting for the socket meanwhile would spin.
      int in_pipe = 1;
      if (::ioctl(splice_fd_, FIONREAD, &in_pipe) == 0 && in_pipe == 0) {
        splice_pipe_empty_ = true;
      }
      return 0;
    }
    // The pipe's writers are gone before the promised payload; the frame
    // cannot be finished, so what follows it would be misread.
    error = moved == 0 ? std::string("splice: the pipe ended inside a frame")
                       : "write: " + errnoText(errno);
    return -1;
  }
  evbuffer_iovec vec[kMaxIovecs];
  const int count =
      std::min(evbuffer_peek(output_.raw(), -1, nullptr, vec, kMaxIovecs), kMaxIovecs);
  iovec iov[kMaxIovecs];
  const int used = toIovecs(vec, count, max, iov);
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = static_cast<size_t>(used);
  // A frame header ahead of a spliced payload waits for it (one segment).
  const int flags = MSG_NOSIGNAL | (splice_left_ > 0 ? MSG_MORE : 0);
  ssize_t written;
  do {
    written = ::sendmsg(fd_, &msg, flags);
    if (written < 0 && errno == ENOTSOCK) {
      written = ::writev(fd_, iov, used);
    }
  } while (written < 0 && errno == EINTR);
  if (written > 0) {
    output_.drain(static_cast<size_t>(written));
    bytes_written_ += static_cast<uint64_t>(written);
    return static_cast<long>(written);
  }
  if (written == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
    return 0;
  }
  error = "write: " + errnoText(errno);
  return -1;
}

void RawSocketTransport::flush() {
  size_t budget = options_.write_budget_bytes;
  while (!closed() && queuedBytes() > 0) {
    if (budget == 0) {
      // More next time round the loop; other connections go first.
      schedule();
      break;
    }
    std::string error;
    const long written = writeStep(budget, error);
    if (written > 0) {
      budget -= std::min(budget, static_cast<size_t>(written));
      if (callbacks_ != nullptr) {
        callbacks_->onTransportDrained();
      }
      continue;
    }
    if (written == 0) {
      write_blocked_ = true;
      break;
    }
    fail(error);
    return;
  }
  if (closed()) {
    return;
  }
  if (queuedBytes() == 0) {
    write_blocked_ = false;
    if (shutdown_requested_ && !write_shut_) {
      write_shut_ = true;
      // A peer that is already gone makes this fail; reading reports it.
      ::shutdown(fd_, SHUT_WR);
    }
  }
  updateWatcher();
}

void RawSocketTransport::fail(const std::string& detail) {
  close();
  if (callbacks_ != nullptr) {
    callbacks_->onTransportError(detail);
  }
}

}  // namespace crisp::stream
