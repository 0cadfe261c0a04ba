#include "source/stream/http1_connection.h"

#include <cerrno>

#include <sys/socket.h>
#include <unistd.h>

namespace crisp::stream {
namespace {

// One read(2) worth of request bytes. The head parser keeps no copy of them,
// so a long head is parsed in several reads.
constexpr size_t kReadChunk = 16384;
constexpr int kMaxDrainReads = 8;

}  // namespace

Http1Connection::Http1Connection(event::Dispatcher& dispatcher, int fd, std::string peer,
                                 uint64_t id, const Http1ConnectionOptions& options,
                                 Callbacks& callbacks)
    : fd_(fd),
      peer_(std::move(peer)),
      id_(id),
      options_(options),
      callbacks_(callbacks),
      parser_(options.max_header_bytes),
      watcher_(dispatcher, fd, [this](short events) { onEvents(events); }),
      deadline_(dispatcher, [this] { onDeadline(); }) {
  watcher_.setEnabled(event::FdWatcher::kRead);
  deadline_.enable(options_.header_timeout);
}

Http1Connection::~Http1Connection() {
  watcher_.setEnabled(0);
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void Http1Connection::onEvents(short events) {
  switch (phase_) {
    case Phase::kReadingHead:
      readHead();
      break;
    case Phase::kWriting:
      if ((events & event::FdWatcher::kWrite) != 0) {
        writeOut();
      }
      break;
    case Phase::kLingering:
      drainInput();
      break;
    case Phase::kDone:
      break;
  }
}

void Http1Connection::onDeadline() {
  if (phase_ == Phase::kReadingHead) {
    watcher_.setEnabled(0);
    callbacks_.onHeadError(*this, HeadError::kTimeout);
    return;
  }
  finish();
}

void Http1Connection::readHead() {
  char buf[kReadChunk];
  while (true) {
    const ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    if (n <= 0) {
      watcher_.setEnabled(0);
      deadline_.disable();
      callbacks_.onHeadError(*this, HeadError::kPeerClosed);
      return;
    }
    size_t used = 0;
    const auto state = parser_.feed(std::string_view(buf, static_cast<size_t>(n)), used);
    if (state == Http1HeadParser::State::kNeedMore) {
      continue;
    }
    watcher_.setEnabled(0);
    deadline_.disable();
    if (state == Http1HeadParser::State::kComplete) {
      Buffer leftover;
      leftover.add(buf + used, static_cast<size_t>(n) - used);
      HttpRequest request = std::move(parser_.request());
      request.peer = peer_;
      callbacks_.onRequestHead(*this, std::move(request), std::move(leftover));
    } else {
      callbacks_.onHeadError(*this, state == Http1HeadParser::State::kTooLarge
                                        ? HeadError::kTooLarge
                                        : HeadError::kMalformed);
    }
    return;
  }
}

void Http1Connection::respond(std::string bytes) {
  output_ = std::move(bytes);
  output_sent_ = 0;
  phase_ = Phase::kWriting;
  deadline_.enable(options_.header_timeout);
  writeOut();
}

void Http1Connection::writeOut() {
  while (output_sent_ < output_.size()) {
    // send() with MSG_NOSIGNAL: a client that is gone must not raise SIGPIPE.
    const ssize_t n =
        ::send(fd_, output_.data() + output_sent_, output_.size() - output_sent_, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      watcher_.setEnabled(event::FdWatcher::kWrite);
      return;
    }
    if (n < 0) {
      finish();
      return;
    }
    output_sent_ += static_cast<size_t>(n);
  }
  output_.clear();
  ::shutdown(fd_, SHUT_WR);
  phase_ = Phase::kLingering;
  watcher_.setEnabled(event::FdWatcher::kRead);
  deadline_.enable(options_.close_linger);
  drainInput();
}

void Http1Connection::drainInput() {
  char buf[kReadChunk];
  // Bounded per wake-up so that a client that keeps sending cannot hold the
  // loop; the watcher fires again and close_linger ends it anyway.
  for (int i = 0; i < kMaxDrainReads; ++i) {
    const ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n > 0) {
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    }
    finish();
    return;
  }
}

void Http1Connection::close() { finish(); }

int Http1Connection::release() {
  watcher_.setEnabled(0);
  deadline_.disable();
  phase_ = Phase::kDone;
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

void Http1Connection::finish() {
  if (fd_ < 0) {
    return;
  }
  phase_ = Phase::kDone;
  watcher_.setEnabled(0);
  deadline_.disable();
  ::close(fd_);
  fd_ = -1;
  callbacks_.onClosed(*this);
}

Http1Connection& Http1ConnectionSet::add(std::unique_ptr<Http1Connection> connection) {
  Http1Connection& ref = *connection;
  connections_.emplace(&ref, std::move(connection));
  return ref;
}

bool Http1ConnectionSet::remove(Http1Connection& connection) {
  auto it = connections_.find(&connection);
  if (it == connections_.end()) {
    return false;
  }
  dispatcher_.deferredDelete(std::move(it->second));
  connections_.erase(it);
  return true;
}

}  // namespace crisp::stream
