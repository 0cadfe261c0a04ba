#pragma once

// TlsTransport: a Transport doing the server side of TLS over a connected,
// non-blocking TCP socket, with OpenSSL, on an event::Dispatcher; or the
// client side, with a client context (TlsContext::loadClient()).
//
//   auto transport = std::make_unique<TlsTransport>(dispatcher, fd, "10.0.0.7:51234",
//                                                   holder.current(), options);
//   transport->setCallbacks(owner);
//   transport->start();   // the handshake runs from the loop
//
// - It owns the descriptor from construction (made non-blocking, TCP_NODELAY
//   set where it applies) and closes it on close() or destruction. It keeps
//   `context` for its whole life, whatever is reloaded meanwhile.
// - start() begins the handshake. Bytes written before it completes are
//   queued and sent after it; onTransportData() comes only after it. A
//   handshake that does not complete within options.handshake_timeout fails.
// - Reading: at most read_budget_bytes of plaintext per wake-up, delivered
//   chunk by chunk as it is decrypted (a pause takes effect between chunks).
//   Plaintext OpenSSL holds beyond the budget is read on the next loop turn,
//   not left waiting for the socket. The peer's close_notify is
//   onTransportEof(); a TCP close without it is an error ("unexpected eof
//   while reading"), since the stream may have been cut.
// - Writing: write() only queues; records go out from the loop, at most
//   write_budget_bytes of plaintext per wake-up, onTransportDrained() after
//   each that made progress. WANT_READ and WANT_WRITE from OpenSSL (on any
//   call) are waited for on the socket.
// - shutdownWrite(): once every queued byte is written, sends close_notify
//   and shuts the TCP write side; reading goes on.
// - Any failure (an alert, a verification failure, a reset, the handshake
//   timeout) closes the socket and reports onTransportError() with OpenSSL's
//   reason, e.g. "TLS handshake: tlsv1 alert unknown ca",
//   "TLS handshake: unsupported protocol", "TLS read: unexpected eof while
//   reading". A failed handshake is also logged (info) with the peer address.
// - peerIdentity() is the verified client certificate's subject as an RFC
//   2253 string ("CN=kubelet,O=system:nodes") when the context verifies
//   clients; empty otherwise or before the handshake. alpnProtocol() is the
//   protocol chosen by ALPN ("http/1.1"), empty when the client sent none.
//
// Lives on one dispatcher; create, use and destroy it on that thread.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/tls_context.h"
#include "source/stream/paused_peer_check.h"
#include "source/stream/transport.h"

typedef struct ssl_st SSL;

namespace crisp::stream {

struct TlsTransportOptions {
  // Most plaintext bytes delivered per wake-up of the loop.
  size_t read_budget_bytes = 256 * 1024;
  // Most plaintext bytes asked of one SSL_read (a record holds at most 16 KiB).
  size_t read_chunk_bytes = 16 * 1024;
  // Most plaintext bytes written per wake-up of the loop.
  size_t write_budget_bytes = 1024 * 1024;
  // Most plaintext bytes handed to one SSL_write.
  size_t write_chunk_bytes = 64 * 1024;
  // From start() to a completed handshake. The stream server uses its header
  // timeout here.
  std::chrono::milliseconds handshake_timeout{10000};
  // Client side (a context from TlsContext::loadClient()): the server name
  // sent in SNI (unless it is an address) and checked against the server's
  // certificate.
  std::string server_name;
};

class TlsTransport : public Transport {
 public:
  // Takes ownership of `fd`, a connected stream socket. Nothing is read or
  // written before start(). `context` must not be null.
  TlsTransport(event::Dispatcher& dispatcher, int fd, std::string peer_address,
               TlsContextPtr context, const TlsTransportOptions& options = {});
  ~TlsTransport() override;
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  // Transport
  void setCallbacks(TransportCallbacks& callbacks) override { callbacks_ = &callbacks; }
  void start() override;
  void write(Buffer& data) override;
  size_t queuedBytes() const override;
  size_t unacknowledgedBytes() const override;
  void pauseReading(bool paused) override;
  void failOnPeerCloseWhilePaused() override;
  void unreadInput(Buffer& data) override;
  void shutdownWrite() override;
  void close() override;
  const std::string& peerAddress() const override { return peer_address_; }
  std::string peerIdentity() const override { return peer_identity_; }
  std::string alpnProtocol() const override { return alpn_; }

  bool handshakeComplete() const { return handshake_done_; }
  // "TLSv1.3" or "TLSv1.2" after the handshake, empty before.
  const std::string& protocolVersion() const { return version_; }
  // The socket, -1 once closed. For socket options and tests; do not close it.
  int fd() const { return fd_; }
  bool closed() const { return fd_ < 0; }
  // Plaintext bytes delivered / written so far.
  uint64_t bytesRead() const { return bytes_read_; }
  uint64_t bytesWritten() const { return bytes_written_; }

  // The state of the socket BIO (see the .cc file). Internal.
  struct SocketBio {
    int fd = -1;
    bool eof = false;  // recv() returned 0
  };

 private:
  void onSocketEvent(short events);
  void onScheduled();
  void schedule();
  void onHandshakeTimeout();
  // Runs the handshake as far as it goes; true once it is complete.
  bool handshake();
  // Delivers held input, EOF, and (when `read_ssl`) what the TLS connection
  // has, within the read budget.
  void processInput(bool read_ssl);
  // Decrypts up to `max` bytes into input_. >0 bytes, 0 close_notify, -1
  // would block, -2 failed (closed and reported).
  long readChunk(size_t max);
  // Writes from the queue within the write budget; then close_notify if
  // asked and the queue is empty.
  void flush();
  void sendCloseNotify();
  void updateWatcher();
  // The reason of the failed SSL call that returned `ret`, prefixed by `what`.
  std::string sslError(const char* what, int ret);
  // Closes the socket and reports `detail` to the owner.
  void fail(const std::string& detail);

  int fd_;
  const std::string peer_address_;
  const TlsContextPtr context_;
  const TlsTransportOptions options_;
  SocketBio socket_bio_;
  SSL* ssl_ = nullptr;
  TransportCallbacks* callbacks_ = nullptr;
  event::FdWatcherPtr watcher_;
  event::TimerPtr scheduled_;
  event::TimerPtr handshake_timer_;
  std::unique_ptr<PausedPeerCheck> peer_check_;  // active while paused

  Buffer input_;   // decrypted or handed back, not yet delivered
  Buffer output_;  // queued plaintext, not yet accepted by SSL_write

  bool started_ = false;
  bool handshake_done_ = false;
  short handshake_wants_ = 0;  // FdWatcher events the handshake waits for
  bool read_paused_ = false;
  bool fail_on_peer_close_ = false;  // while paused (failOnPeerCloseWhilePaused)
  bool read_again_ = false;        // OpenSSL may hold plaintext the socket will not signal
  bool read_wants_write_ = false;  // SSL_read needs the socket writable
  bool write_blocked_ = false;     // SSL_write or SSL_shutdown needs the socket writable
  bool write_wants_read_ = false;  // SSL_write or SSL_shutdown needs the socket readable
  size_t pending_write_ = 0;       // length of an SSL_write to repeat exactly, 0 if none
  bool peer_eof_ = false;          // close_notify received
  bool eof_delivered_ = false;
  bool shutdown_requested_ = false;
  bool close_notify_sent_ = false;

  std::string peer_identity_;
  std::string alpn_;
  std::string version_;
  uint64_t bytes_read_ = 0;
  uint64_t bytes_written_ = 0;
};

}  // namespace crisp::stream
