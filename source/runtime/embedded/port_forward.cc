#include "source/runtime/embedded/port_forward.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "source/common/buffer.h"
#include "source/common/logger.h"

namespace crisp::runtime {
namespace {

using session::PortError;

// Bytes asked of one read(2), and reads per readiness event, so that one busy
// connection cannot hold the loop for long.
constexpr int kReadChunkBytes = 64 * 1024;
constexpr int kMaxReadsPerEvent = 4;
// Bytes written per readiness event, for the same reason.
constexpr size_t kWriteBudgetBytes = 1024 * 1024;
constexpr int kMaxIovecs = 16;
// The pipe the socket's bytes are spliced through when the client can take
// them from a pipe. The default 64 KiB (16 slots, one per page or socket
// buffer fragment) is less than one 128 KiB frame; 256 KiB lets one splice
// fill two. Only a connection that moves bulk (a splice of kBulkSpliceBytes
// or more) gets one: the pipe pages of a user are limited
// (fs.pipe-user-pages-soft), and an interactive connection needs few.
constexpr int kSplicePipeBytes = 256 * 1024;
constexpr ssize_t kBulkSpliceBytes = 16 * 1024;

// strerror() text in lower case ("connection refused"), the way Go-based
// runtimes print errno values, so texts read alike whichever runtime made them.
std::string errnoText(int err) {
  std::string text = std::strerror(err);
  if (!text.empty()) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

UniqueFd newStreamSocket(int family) {
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.valid()) {
    // Forwarded protocols are often interactive; Nagle would delay them.
    const int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return fd;
}

// Both families, in the calling thread's network namespace.
absl::StatusOr<LoopbackSockets> makeLoopbackSockets() {
  LoopbackSockets sockets;
  sockets.v4 = newStreamSocket(AF_INET);
  const int v4_errno = errno;
  sockets.v6 = newStreamSocket(AF_INET6);
  if (!sockets.v4.valid() && !sockets.v6.valid()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create a socket: ", errnoText(v4_errno)));
  }
  return sockets;
}

class SocketPortConnection : public session::PortConnection {
 public:
  SocketPortConnection(event::Dispatcher& dispatcher, PortTarget target,
                       session::PortCallbacks& callbacks)
      : dispatcher_(dispatcher),
        target_(std::move(target)),
        callbacks_(callbacks),
        connect_timer_(dispatcher_, [this] { onConnectTimeout(); }),
        deferred_error_(dispatcher_, [this] { deliverError(); }),
        pipe_resume_(dispatcher_, [this] { onPipeResume(); }) {}

  ~SocketPortConnection() override {
    watcher_.reset();
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }

  std::weak_ptr<char> alive() const { return alive_; }

  // Starts connecting with sockets made in the right namespace. Called from
  // the owner's context (connectLoopbackPort) or from a posted task.
  void begin(LoopbackSockets sockets, bool from_loop) {
    if (sockets.v4.valid()) {
      addAttempt(std::move(sockets.v4), AF_INET);
    }
    if (sockets.v6.valid()) {
      addAttempt(std::move(sockets.v6), AF_INET6);
    }
    state_ = State::kConnecting;
    connect_timer_.enable(kConnectTimeout);
    startNextAttempt(from_loop);
  }

  // The sockets from the namespace helper (a posted task).
  void onSockets(absl::StatusOr<LoopbackSockets> sockets) {
    if (state_ != State::kWaitingForSockets) {
      return;
    }
    if (!sockets.ok()) {
      fail(PortError::Kind::kConnectFailed,
           connectFailureText(std::string(sockets.status().message())), true);
      return;
    }
    begin(std::move(*sockets), true);
  }

  // session::PortConnection
  void write(Buffer& data) override {
    if (state_ == State::kDone || shutdown_requested_) {
      data.drain(data.length());
      return;
    }
    out_.move(data);
    if (!above_high_ && out_.length() > kWriteHighWatermark) {
      above_high_ = true;
    }
    updateWatcher();
  }

  size_t queuedBytes() const override { return out_.length(); }

  void shutdownWrite() override {
    if (shutdown_requested_ || state_ == State::kDone) {
      return;
    }
    shutdown_requested_ = true;
    updateWatcher();
  }

  void pauseReading(bool paused) override {
    if (read_paused_ == paused) {
      return;
    }
    read_paused_ = paused;
    if (!paused && pipe_bytes_ > 0 && state_ == State::kConnected) {
      // Bytes left in the pipe while paused: the socket may have nothing
      // new to report, so they are offered again from the loop.
      pipe_resume_.enable(std::chrono::milliseconds(0));
    }
    updateWatcher();
  }

 private:
  enum class State { kWaitingForSockets, kConnecting, kConnected, kDone };

  struct Attempt {
    UniqueFd fd;
    sockaddr_storage address{};
    socklen_t address_length = 0;
    std::string label;  // "127.0.0.1:8080", "[::1]:8080"
    int error = 0;
  };

  void addAttempt(UniqueFd fd, int family) {
    Attempt a;
    a.fd = std::move(fd);
    if (family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&a.address);
      in->sin_family = AF_INET;
      in->sin_port = htons(target_.port);
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      a.address_length = sizeof(sockaddr_in);
      a.label = absl::StrCat("127.0.0.1:", target_.port);
    } else {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.address);
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(target_.port);
      in6->sin6_addr = in6addr_loopback;
      a.address_length = sizeof(sockaddr_in6);
      a.label = absl::StrCat("[::1]:", target_.port);
    }
    attempts_.push_back(std::move(a));
  }

  // Connects the next address; when none is left, reports the failure (at
  // once when running from the loop, else from the loop's next iteration).
  void startNextAttempt(bool from_loop) {
    while (next_attempt_ < attempts_.size()) {
      Attempt& a = attempts_[next_attempt_];
      const int rc =
          ::connect(a.fd.get(), reinterpret_cast<const sockaddr*>(&a.address), a.address_length);
      if (rc == 0 || errno == EINPROGRESS) {
        // Success or not is known when the socket turns writable, even when
        // connect() already succeeded: callbacks only come from the loop.
        fd_ = a.fd.release();
        watcher_ = std::make_unique<event::FdWatcher>(dispatcher_, fd_,
                                                      [this](short events) { onEvent(events); });
        watcher_->setEnabled(event::FdWatcher::kWrite);
        return;
      }
      a.error = errno;
      a.fd.reset();
      ++next_attempt_;
    }
    PortError::Kind kind = PortError::Kind::kConnectFailed;
    std::vector<std::string> parts;
    for (const Attempt& a : attempts_) {
      if (a.error == ECONNREFUSED) {
        kind = PortError::Kind::kRefused;
      }
      parts.push_back(absl::StrCat(a.label, ": ", a.error != 0 ? errnoText(a.error) : "not tried"));
    }
    fail(kind, connectFailureText(absl::StrJoin(parts, "; ")), from_loop);
  }

  std::string connectFailureText(const std::string& detail) const {
    return absl::StrCat("failed to connect to localhost:", target_.port,
                        " in the network of pod sandbox \"", target_.pod_sandbox_id,
                        "\": ", detail);
  }

  void onEvent(short events) {
    if (state_ == State::kConnecting) {
      onConnectDone();
      return;
    }
    if (state_ != State::kConnected) {
      return;
    }
    if ((events & event::FdWatcher::kWrite) != 0) {
      flush();
    }
    if (state_ == State::kConnected && (events & event::FdWatcher::kRead) != 0) {
      onReadable();
    }
    if (state_ == State::kConnected) {
      updateWatcher();
    }
  }

  void onConnectDone() {
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
      err = errno;
    }
    if (err == ECONNRESET || err == EPIPE) {
      // The port accepted and reset the connection before we looked: it was
      // made, so this is a lost connection, not a failed connect.
      connect_timer_.disable();
      fail(PortError::Kind::kConnectionLost, lostText("connect", err), true);
      return;
    }
    if (err != 0) {
      attempts_[next_attempt_].error = err;
      watcher_.reset();
      ::close(fd_);
      fd_ = -1;
      ++next_attempt_;
      startNextAttempt(true);
      return;
    }
    connect_timer_.disable();
    state_ = State::kConnected;
    connected_label_ = attempts_[next_attempt_].label;
    attempts_.clear();  // closes the socket of the address not needed
    CRISP_LOG(kRuntime, trace, "pod sandbox {}: connected to {}", target_.pod_sandbox_id,
              connected_label_);
    callbacks_.onConnected();
    if (state_ == State::kConnected) {
      updateWatcher();
    }
  }

  void onConnectTimeout() {
    if (state_ != State::kConnecting) {
      return;
    }
    if (next_attempt_ < attempts_.size()) {
      attempts_[next_attempt_].error = ETIMEDOUT;
    }
    fail(PortError::Kind::kConnectFailed,
         connectFailureText(absl::StrCat("no answer within ", kConnectTimeout.count(), " ms")),
         true);
  }

  std::string lostText(const char* operation, int err) const {
    return absl::StrCat("connection to localhost:", target_.port,
                        " in the network of pod sandbox \"", target_.pod_sandbox_id,
                        "\" lost: ", operation, ": ", errnoText(err));
  }

  void onReadable() {
    for (int i = 0; i < kMaxReadsPerEvent && !read_paused_ && !read_eof_; ++i) {
      if (pipe_bytes_ > 0) {
        // Left from an earlier event: they go before anything newer.
        if (!deliverPipe()) {
          return;
        }
        continue;
      }
      const bool via_pipe = callbacks_.canTakeDataPipe() && openPipe();
      const int want = via_pipe ? pipe_capacity_ : kReadChunkBytes;
      Buffer in;
      const ssize_t n = via_pipe
                            ? ::splice(fd_, nullptr, pipe_write_.get(), nullptr,
                                       static_cast<size_t>(want), SPLICE_F_NONBLOCK | SPLICE_F_MOVE)
                            : in.readFrom(fd_, want);
      if (n > 0) {
        if (via_pipe) {
          pipe_bytes_ = static_cast<size_t>(n);
          if (n >= kBulkSpliceBytes && !pipe_enlarged_) {
            enlargePipe();
          }
          if (!deliverPipe()) {
            return;
          }
        } else {
          callbacks_.onData(in);
        }
        if (state_ != State::kConnected || n < want) {
          // Closed from the callback, or a short read emptied the socket (the
          // watcher reports what arrives later).
          return;
        }
        continue;
      }
      if (n == 0) {
        read_eof_ = true;
        callbacks_.onRemoteEof();
        maybeClosed();
        return;
      }
      const int err = errno;
      if (err == EINTR) {
        continue;
      }
      if (err == EAGAIN || err == EWOULDBLOCK) {
        return;
      }
      fail(PortError::Kind::kConnectionLost, lostText("read", err), true);
      return;
    }
  }

  // The pipe for splicing the socket's bytes, made on first use. False when
  // none can be made (the descriptor limit): the bytes are read instead.
  bool openPipe() {
    if (pipe_read_.valid()) {
      return true;
    }
    if (pipe_failed_) {
      return false;
    }
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
      pipe_failed_ = true;
      return false;
    }
    pipe_read_.reset(fds[0]);
    pipe_write_.reset(fds[1]);
    const int size = ::fcntl(fds[1], F_GETPIPE_SZ);
    pipe_capacity_ = size > 0 ? size : kReadChunkBytes;
    return true;
  }

  void enlargePipe() {
    pipe_enlarged_ = true;
    // Refused past the user's pipe page allowance: the pipe stays as it is.
    const int size = ::fcntl(pipe_write_.get(), F_SETPIPE_SZ, kSplicePipeBytes);
    if (size > 0) {
      pipe_capacity_ = size;
    }
  }

  // Offers the pipe's bytes to the callee; what it declines is read out and
  // delivered with onData(). Returns whether reading may go on: false when
  // the connection ended in a callback or bytes wait in the pipe until
  // reading resumes.
  bool deliverPipe() {
    const size_t taken = callbacks_.onDataPipe(pipe_read_.get(), pipe_bytes_);
    if (state_ != State::kConnected) {
      return false;
    }
    pipe_bytes_ -= std::min(taken, pipe_bytes_);
    if (pipe_bytes_ == 0) {
      return true;
    }
    if (read_paused_) {
      // Some of the bytes taken may still be on their way out of the pipe:
      // nothing is read from it until reading resumes.
      return false;
    }
    Buffer in;
    while (pipe_bytes_ > 0) {
      const int n = in.readFrom(pipe_read_.get(), static_cast<int>(pipe_bytes_));
      if (n > 0) {
        pipe_bytes_ -= static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) {
        continue;
      }
      // Not expected: only this connection reads the pipe, and it holds
      // pipe_bytes_.
      fail(PortError::Kind::kConnectionLost, lostText("read", n < 0 ? errno : EIO), true);
      return false;
    }
    callbacks_.onData(in);
    return state_ == State::kConnected;
  }

  void onPipeResume() {
    if (state_ != State::kConnected || read_paused_ || pipe_bytes_ == 0) {
      return;
    }
    if (deliverPipe() && state_ == State::kConnected) {
      updateWatcher();
    }
  }

  void flush() {
    size_t budget = kWriteBudgetBytes;
    while (!out_.empty() && budget > 0) {
      evbuffer_iovec vec[kMaxIovecs];
      const int n_vec =
          evbuffer_peek(out_.raw(), static_cast<ev_ssize_t>(budget), nullptr, vec, kMaxIovecs);
      const int count = std::min(n_vec, kMaxIovecs);
      iovec iov[kMaxIovecs];
      size_t total = 0;
      for (int i = 0; i < count; ++i) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = std::min(vec[i].iov_len, budget - total);
        total += iov[i].iov_len;
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<size_t>(count);
      const ssize_t written = ::sendmsg(fd_, &msg, MSG_NOSIGNAL);
      if (written > 0) {
        out_.drain(static_cast<size_t>(written));
        budget -= std::min(budget, static_cast<size_t>(written));
        continue;
      }
      const int err = errno;
      if (written < 0 && err == EINTR) {
        continue;
      }
      if (written < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
        break;
      }
      fail(PortError::Kind::kConnectionLost, lostText("write", err), true);
      return;
    }
    if (above_high_ && out_.length() <= kWriteLowWatermark) {
      above_high_ = false;
      callbacks_.onWriteDrained();
      if (state_ != State::kConnected) {
        return;
      }
    }
    if (out_.empty() && shutdown_requested_ && !write_shut_) {
      ::shutdown(fd_, SHUT_WR);
      write_shut_ = true;
      maybeClosed();
    }
  }

  void maybeClosed() {
    if (state_ != State::kConnected || !read_eof_ || !write_shut_) {
      return;
    }
    state_ = State::kDone;
    closeSocket();
    callbacks_.onClosed();
  }

  void updateWatcher() {
    if (state_ != State::kConnected || watcher_ == nullptr) {
      return;
    }
    short events = 0;
    if (!read_paused_ && !read_eof_) {
      events |= event::FdWatcher::kRead;
    }
    if (!out_.empty() || (shutdown_requested_ && !write_shut_)) {
      events |= event::FdWatcher::kWrite;
    }
    watcher_->setEnabled(events);
  }

  // Ends the connection with an error: now (from the loop) or on the loop's
  // next iteration (from a call of the owner).
  void fail(PortError::Kind kind, std::string message, bool from_loop) {
    if (state_ == State::kDone) {
      return;
    }
    state_ = State::kDone;
    connect_timer_.disable();
    closeSocket();
    attempts_.clear();
    out_.drain(out_.length());
    error_ = PortError{kind, std::move(message)};
    if (from_loop) {
      deliverError();
    } else {
      deferred_error_.enable(std::chrono::milliseconds(0));
    }
  }

  void deliverError() {
    CRISP_LOG(kRuntime, debug, "pod sandbox {}: {}", target_.pod_sandbox_id, error_.message);
    callbacks_.onError(error_);
  }

  void closeSocket() {
    watcher_.reset();
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    pipe_resume_.disable();
    pipe_read_.reset();
    pipe_write_.reset();
    pipe_bytes_ = 0;
  }

  event::Dispatcher& dispatcher_;
  const PortTarget target_;
  session::PortCallbacks& callbacks_;
  std::shared_ptr<char> alive_ = std::make_shared<char>(0);
  event::Timer connect_timer_;
  event::Timer deferred_error_;
  event::Timer pipe_resume_;
  State state_ = State::kWaitingForSockets;

  std::vector<Attempt> attempts_;
  size_t next_attempt_ = 0;
  std::string connected_label_;
  int fd_ = -1;
  event::FdWatcherPtr watcher_;

  Buffer out_;
  bool above_high_ = false;
  bool shutdown_requested_ = false;
  bool write_shut_ = false;
  bool read_paused_ = false;
  bool read_eof_ = false;
  PortError error_;

  // The splice pipe (openPipe()) and the bytes in it not yet delivered.
  UniqueFd pipe_read_;
  UniqueFd pipe_write_;
  int pipe_capacity_ = 0;
  size_t pipe_bytes_ = 0;
  bool pipe_failed_ = false;
  bool pipe_enlarged_ = false;
};

}  // namespace

// NetnsSocketFactory

NetnsSocketFactory::~NetnsSocketFactory() { stop(); }

void NetnsSocketFactory::create(const std::string& namespace_path, Done done) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_) {
      queue_.push_back(Request{namespace_path, std::move(done)});
      if (!thread_.joinable()) {
        thread_ = std::thread([this] { run(); });
      }
      wake_.notify_one();
      return;
    }
  }
  done(absl::CancelledError("the runtime is stopping"));
}

void NetnsSocketFactory::stop() {
  std::deque<Request> cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ && !thread_.joinable()) {
      return;
    }
    stopping_ = true;
    cancelled.swap(queue_);
    wake_.notify_one();
  }
  if (thread_.joinable()) {
    thread_.join();
  }
  for (Request& r : cancelled) {
    r.done(absl::CancelledError("the runtime is stopping"));
  }
}

uint64_t NetnsSocketFactory::served() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return served_;
}

void NetnsSocketFactory::run() {
  while (true) {
    Request request;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) {
        return;
      }
      request = std::move(queue_.front());
      queue_.pop_front();
    }
    absl::StatusOr<LoopbackSockets> sockets = makeSocketsInNamespace(request.path);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++served_;
    }
    request.done(std::move(sockets));
  }
}

absl::StatusOr<LoopbackSockets> makeSocketsInNamespace(const std::string& namespace_path) {
  UniqueFd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own.valid()) {
    return absl::InternalError(
        absl::StrCat("cannot open crisp's own network namespace: ", errnoText(errno)));
  }
  UniqueFd target(::open(namespace_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!target.valid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open network namespace \"", namespace_path, "\": ", errnoText(errno)));
  }
  if (::setns(target.get(), CLONE_NEWNET) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("cannot enter network namespace \"",
                                                      namespace_path, "\": ", errnoText(errno)));
  }
  absl::StatusOr<LoopbackSockets> sockets = makeLoopbackSockets();
  if (::setns(own.get(), CLONE_NEWNET) != 0) {
    // Not expected to happen (we just left it). The thread stays in the pod's
    // namespace; every request enters its own namespace anyway, so the only
    // harm is that this thread keeps that namespace alive.
    CRISP_LOG(kRuntime, error, "cannot return to crisp's network namespace from \"{}\": {}",
              namespace_path, errnoText(errno));
  }
  return sockets;
}

absl::StatusOr<std::unique_ptr<session::PortConnection>> connectLoopbackPort(
    event::Dispatcher& dispatcher, const PortTarget& target, NetnsSocketFactory* netns,
    session::PortCallbacks& callbacks) {
  if (target.port == 0) {
    return absl::InvalidArgumentError("port 0 cannot be forwarded");
  }
  auto connection = std::make_unique<SocketPortConnection>(dispatcher, target, callbacks);
  if (target.network_namespace.empty()) {
    absl::StatusOr<LoopbackSockets> sockets = makeLoopbackSockets();
    if (!sockets.ok()) {
      return sockets.status();
    }
    connection->begin(std::move(*sockets), false);
    return std::unique_ptr<session::PortConnection>(std::move(connection));
  }
  if (netns == nullptr) {
    return absl::FailedPreconditionError("no helper to enter network namespaces");
  }
  std::weak_ptr<char> alive = connection->alive();
  SocketPortConnection* raw = connection.get();
  netns->create(
      target.network_namespace, [&dispatcher, alive, raw](absl::StatusOr<LoopbackSockets> sockets) {
        // std::function needs a copyable task; the descriptors travel in a
        // shared_ptr and are closed with it when the connection is gone.
        auto shared = std::make_shared<absl::StatusOr<LoopbackSockets>>(std::move(sockets));
        dispatcher.post([alive, raw, shared] {
          if (!alive.expired()) {
            raw->onSockets(std::move(*shared));
          }
        });
      });
  return std::unique_ptr<session::PortConnection>(std::move(connection));
}

}  // namespace crisp::runtime
