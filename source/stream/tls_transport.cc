#include "source/stream/tls_transport.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <event2/buffer.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/common/logger.h"

namespace crisp::stream {
namespace {

// A full TLS record of plaintext: a first queue segment at least this long is
// written in place; shorter ones are joined up to it first.
constexpr size_t kRecordBytes = 16 * 1024;

// Every reason OpenSSL queued, oldest first, each once; the queue ends empty.
std::string takeOpensslErrors() {
  std::vector<std::string> reasons;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    std::string text = reason != nullptr ? reason : absl::StrCat("error ", e);
    if (std::find(reasons.begin(), reasons.end(), text) == reasons.end()) {
      reasons.push_back(std::move(text));
    }
  }
  return absl::StrJoin(reasons, "; ");
}

// Clears what earlier calls left behind, so that SSL_get_error() and the
// error text speak of the next call only.
void beforeSslCall() {
  ERR_clear_error();
  errno = 0;
}

std::string subjectOf(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) {
    ERR_clear_error();
    return {};
  }
  std::string out;
  if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    if (len > 0) {
      out.assign(data, static_cast<size_t>(len));
    }
  }
  BIO_free(bio);
  ERR_clear_error();
  return out;
}

// The socket BIO of the transport: OpenSSL's own writes with write(2), which
// raises SIGPIPE when the peer is gone; this one sends with MSG_NOSIGNAL.
// Its data is the TlsTransport::SocketBio it was made for.
int socketBioWrite(BIO* bio, const char* data, int len) {
  auto* state = static_cast<TlsTransport::SocketBio*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do {
    n = ::send(state->fd, data, static_cast<size_t>(len), MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    BIO_set_retry_write(bio);
  }
  return static_cast<int>(n);
}

int socketBioRead(BIO* bio, char* out, int len) {
  auto* state = static_cast<TlsTransport::SocketBio*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do {
    n = ::recv(state->fd, out, static_cast<size_t>(len), 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    BIO_set_retry_read(bio);
  } else if (n == 0) {
    // OpenSSL asks (BIO_CTRL_EOF) to tell a TCP close from a failed read.
    state->eof = true;
  }
  return static_cast<int>(n);
}

long socketBioCtrl(BIO* bio, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:
      return 1;  // nothing is buffered here
    case BIO_CTRL_EOF:
      return static_cast<TlsTransport::SocketBio*>(BIO_get_data(bio))->eof ? 1 : 0;
    default:
      return 0;
  }
}

int socketBioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

// Made once, shared by every transport; never freed.
const BIO_METHOD* socketBioMethod() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "crisp socket");
    if (m != nullptr) {
      BIO_meth_set_write(m, socketBioWrite);
      BIO_meth_set_read(m, socketBioRead);
      BIO_meth_set_ctrl(m, socketBioCtrl);
      BIO_meth_set_create(m, socketBioCreate);
    }
    return m;
  }();
  return method;
}

}  // namespace

TlsTransport::TlsTransport(event::Dispatcher& dispatcher, int fd, std::string peer_address,
                           TlsContextPtr context, const TlsTransportOptions& options)
    : fd_(fd),
      peer_address_(std::move(peer_address)),
      context_(std::move(context)),
      options_(options) {
  const int flags = fcntl(fd_, F_GETFL, 0);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) {
    fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  }
  // Interactive sessions send small records; none of them may wait for Nagle.
  const int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  socket_bio_.fd = fd_;
  ERR_clear_error();
  ssl_ = SSL_new(context_->raw());
  BIO* bio = ssl_ != nullptr && socketBioMethod() != nullptr ? BIO_new(socketBioMethod()) : nullptr;
  if (bio == nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  } else {
    BIO_set_data(bio, &socket_bio_);
    // One BIO for both directions; the session owns it from here.
    SSL_set_bio(ssl_, bio, bio);
    if (context_->isClient()) {
      in6_addr address{};
      const char* name = options_.server_name.c_str();
      if (inet_pton(AF_INET, name, &address) == 1 || inet_pton(AF_INET6, name, &address) == 1) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), name);
      } else {
        SSL_set_tlsext_host_name(ssl_, name);
        SSL_set1_host(ssl_, name);
      }
      SSL_set_connect_state(ssl_);
    } else {
      SSL_set_accept_state(ssl_);
    }
  }
  // Without a session, start() reports the failure from the loop.
  watcher_ = std::make_unique<event::FdWatcher>(dispatcher, fd_,
                                                [this](short events) { onSocketEvent(events); });
  scheduled_ = std::make_unique<event::Timer>(dispatcher, [this] { onScheduled(); });
  handshake_timer_ = std::make_unique<event::Timer>(dispatcher, [this] { onHandshakeTimeout(); });
  peer_check_ = std::make_unique<PausedPeerCheck>(
      dispatcher, fd_, [this](const std::string& detail) { fail(detail); });
}

TlsTransport::~TlsTransport() { close(); }

void TlsTransport::start() {
  if (closed()) {
    return;
  }
  if (started_) {
    // A new owner after a hand-over.
    pauseReading(false);
    return;
  }
  started_ = true;
  handshake_timer_->enable(options_.handshake_timeout);
  // The handshake starts from the loop, never from inside this call.
  schedule();
}

void TlsTransport::write(Buffer& data) {
  if (closed() || shutdown_requested_) {
    data.drain(data.length());
    return;
  }
  if (data.empty()) {
    return;
  }
  output_.move(data);
  if (started_ && handshake_done_ && !write_blocked_ && !write_wants_read_) {
    schedule();
  }
}

size_t TlsTransport::queuedBytes() const { return output_.length(); }

size_t TlsTransport::unacknowledgedBytes() const { return unacknowledgedSocketBytes(fd_); }

void TlsTransport::pauseReading(bool paused) {
  if (closed()) {
    return;
  }
  read_paused_ = paused;
  if (!started_) {
    return;
  }
  updateWatcher();
  if (!paused) {
    // OpenSSL may hold decrypted bytes the socket will never signal again.
    read_again_ = true;
    schedule();
  }
}

void TlsTransport::failOnPeerCloseWhilePaused() {
  fail_on_peer_close_ = true;
  if (started_) {
    updateWatcher();
  }
}

void TlsTransport::unreadInput(Buffer& data) {
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

void TlsTransport::shutdownWrite() {
  if (closed() || shutdown_requested_) {
    return;
  }
  shutdown_requested_ = true;
  if (started_ && handshake_done_ && !write_blocked_ && !write_wants_read_) {
    schedule();
  }
}

void TlsTransport::close() {
  if (closed()) {
    return;
  }
  watcher_.reset();
  scheduled_->disable();
  handshake_timer_->disable();
  peer_check_->setActive(false);
  // No close_notify: close() ends both directions at once.
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  ::close(fd_);
  fd_ = -1;
  input_.drain(input_.length());
  output_.drain(output_.length());
}

void TlsTransport::schedule() {
  if (!scheduled_->enabled()) {
    scheduled_->enable(std::chrono::milliseconds(0));
  }
}

void TlsTransport::onHandshakeTimeout() {
  if (closed() || handshake_done_) {
    return;
  }
  fail(absl::StrCat("TLS handshake: not complete after ", options_.handshake_timeout.count(),
                    " ms"));
}

void TlsTransport::onScheduled() {
  if (closed() || !started_) {
    return;
  }
  if (!handshake_done_) {
    if (!handshake()) {
      updateWatcher();
      return;
    }
  }
  if (!write_blocked_ && !write_wants_read_ &&
      (!output_.empty() || (shutdown_requested_ && !close_notify_sent_))) {
    flush();
    if (closed()) {
      return;
    }
  }
  processInput(false);
  if (!closed()) {
    updateWatcher();
  }
}

void TlsTransport::onSocketEvent(short events) {
  const bool readable = (events & event::FdWatcher::kRead) != 0;
  const bool writable = (events & event::FdWatcher::kWrite) != 0;
  if (!handshake_done_) {
    if (!handshake()) {
      updateWatcher();
      return;
    }
    // Completed: whatever waited for it goes now.
    write_blocked_ = false;
    write_wants_read_ = false;
    flush();
    if (closed()) {
      return;
    }
    processInput(true);
    if (!closed()) {
      updateWatcher();
    }
    return;
  }
  if ((writable && write_blocked_) || (readable && write_wants_read_)) {
    write_blocked_ = false;
    write_wants_read_ = false;
    flush();
    if (closed()) {
      return;
    }
  }
  if (readable || (writable && read_wants_write_)) {
    read_wants_write_ = false;
    processInput(true);
  }
  if (!closed()) {
    updateWatcher();
  }
}

void TlsTransport::updateWatcher() {
  if (closed()) {
    return;
  }
  short events = 0;
  if (!started_) {
    events = 0;
  } else if (!handshake_done_) {
    events = handshake_wants_;
  } else {
    if (!read_paused_ && !peer_eof_) {
      events |= event::FdWatcher::kRead;
    }
    if (read_wants_write_ || write_blocked_) {
      events |= event::FdWatcher::kWrite;
    }
    if (write_wants_read_) {
      events |= event::FdWatcher::kRead;
    }
  }
  watcher_->setEnabled(events);
  peer_check_->setActive(started_ && handshake_done_ && read_paused_ && fail_on_peer_close_ &&
                         !peer_eof_);
}

bool TlsTransport::handshake() {
  if (ssl_ == nullptr) {
    fail(absl::StrCat("TLS: cannot create a session: ", takeOpensslErrors()));
    return false;
  }
  beforeSslCall();
  const int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    handshake_done_ = true;
    handshake_wants_ = 0;
    handshake_timer_->disable();
    const unsigned char* alpn = nullptr;
    unsigned int alpn_len = 0;
    SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
    alpn_.assign(reinterpret_cast<const char*>(alpn), alpn != nullptr ? alpn_len : 0);
    version_ = SSL_get_version(ssl_);
    if (context_->verifiesClients()) {
      X509* cert = SSL_get0_peer_certificate(ssl_);
      if (cert != nullptr && SSL_get_verify_result(ssl_) == X509_V_OK) {
        peer_identity_ = subjectOf(cert);
      }
    }
    // The client's first records may have come with its Finished message.
    read_again_ = true;
    return true;
  }
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_WANT_READ:
      handshake_wants_ = event::FdWatcher::kRead;
      return false;
    case SSL_ERROR_WANT_WRITE:
      handshake_wants_ = event::FdWatcher::kWrite;
      return false;
    default:
      fail(sslError("TLS handshake", ret));
      return false;
  }
}

void TlsTransport::processInput(bool read_ssl) {
  read_ssl = read_ssl || read_again_;
  read_again_ = false;
  size_t budget = options_.read_budget_bytes;
  // Every condition is checked again after each callback: the owner may pause,
  // close, or hand the transport to a new owner from inside it.
  while (!closed() && started_ && handshake_done_ && !read_paused_ && callbacks_ != nullptr) {
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
    if (!read_ssl) {
      return;
    }
    if (budget == 0) {
      // More may wait inside OpenSSL or on the socket: next loop turn, after
      // the other connections.
      read_again_ = true;
      schedule();
      return;
    }
    const long n = readChunk(std::min(options_.read_chunk_bytes, budget));
    if (n > 0) {
      budget -= std::min(budget, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      peer_eof_ = true;
      continue;
    }
    return;  // would block, or failed and closed
  }
}

long TlsTransport::readChunk(size_t max) {
  evbuffer_iovec vec;
  if (evbuffer_reserve_space(input_.raw(), static_cast<ev_ssize_t>(max), &vec, 1) != 1) {
    fail("TLS read: cannot reserve buffer space");
    return -2;
  }
  beforeSslCall();
  size_t got = 0;
  const int ret = SSL_read_ex(ssl_, vec.iov_base, std::min(vec.iov_len, max), &got);
  if (ret == 1) {
    vec.iov_len = got;
    evbuffer_commit_space(input_.raw(), &vec, 1);
    bytes_read_ += got;
    return static_cast<long>(got);
  }
  const int saved_errno = errno;
  evbuffer_commit_space(input_.raw(), &vec, 0);
  switch (SSL_get_error(ssl_, ret)) {
    case SSL_ERROR_ZERO_RETURN:
      return 0;
    case SSL_ERROR_WANT_READ:
      return -1;
    case SSL_ERROR_WANT_WRITE:
      // A post-handshake message needs an answer the socket cannot take yet.
      read_wants_write_ = true;
      return -1;
    default:
      errno = saved_errno;
      fail(sslError("TLS read", ret));
      return -2;
  }
}

void TlsTransport::flush() {
  if (!handshake_done_) {
    return;
  }
  size_t budget = options_.write_budget_bytes;
  while (!closed() && !output_.empty()) {
    if (budget == 0) {
      // More next time round the loop; other connections go first.
      schedule();
      break;
    }
    size_t len = pending_write_;
    if (len == 0) {
      // A first segment holding a full record is written where it lies;
      // shorter ones are joined to fill a record.
      evbuffer_iovec first;
      const int segments = evbuffer_peek(output_.raw(), -1, nullptr, &first, 1);
      const size_t first_len = segments > 0 ? first.iov_len : 0;
      len = first_len >= kRecordBytes ? first_len : std::min(output_.length(), kRecordBytes);
      len = std::min({len, options_.write_chunk_bytes, budget});
    }
    // A repeated SSL_write must pass the same bytes; the pointer may differ
    // (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER).
    const uint8_t* data = output_.linearize(len);
    beforeSslCall();
    size_t written = 0;
    const int ret = SSL_write_ex(ssl_, data, len, &written);
    if (ret == 1) {
      pending_write_ = 0;
      output_.drain(written);
      bytes_written_ += written;
      budget -= std::min(budget, written);
      if (callbacks_ != nullptr) {
        callbacks_->onTransportDrained();
      }
      continue;
    }
    const int err = SSL_get_error(ssl_, ret);
    if (err == SSL_ERROR_WANT_WRITE) {
      pending_write_ = len;
      write_blocked_ = true;
      break;
    }
    if (err == SSL_ERROR_WANT_READ) {
      pending_write_ = len;
      write_wants_read_ = true;
      break;
    }
    fail(sslError("TLS write", ret));
    return;
  }
  if (closed()) {
    return;
  }
  if (output_.empty() && shutdown_requested_ && !close_notify_sent_) {
    sendCloseNotify();
  }
  updateWatcher();
}

void TlsTransport::sendCloseNotify() {
  beforeSslCall();
  const int ret = SSL_shutdown(ssl_);
  if (ret < 0) {
    const int err = SSL_get_error(ssl_, ret);
    if (err == SSL_ERROR_WANT_WRITE) {
      write_blocked_ = true;
      return;
    }
    if (err == SSL_ERROR_WANT_READ) {
      write_wants_read_ = true;
      return;
    }
    // The peer is gone; reading reports it.
    ERR_clear_error();
  }
  close_notify_sent_ = true;
  write_blocked_ = false;
  write_wants_read_ = false;
  ::shutdown(fd_, SHUT_WR);
}

std::string TlsTransport::sslError(const char* what, int ret) {
  const int saved_errno = errno;
  const int err = SSL_get_error(ssl_, ret);
  std::string reason = takeOpensslErrors();
  if (err == SSL_ERROR_ZERO_RETURN) {
    reason = "the peer closed the TLS connection";
  } else if (err == SSL_ERROR_SYSCALL && reason.empty()) {
    reason = saved_errno != 0 ? std::strerror(saved_errno) : "connection closed by the peer";
  } else if (reason.empty()) {
    reason = absl::StrCat("SSL error ", err);
  }
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    absl::StrAppend(&reason, " (", X509_verify_cert_error_string(verify), ")");
  }
  return absl::StrCat(what, ": ", reason);
}

void TlsTransport::fail(const std::string& detail) {
  if (!handshake_done_) {
    CRISP_LOG(kStream, info, "TLS handshake with {} failed: {}", peer_address_, detail);
  }
  close();
  if (callbacks_ != nullptr) {
    callbacks_->onTransportError(detail);
  }
}

}  // namespace crisp::stream
