#pragma once

// Transport: an ordered, reliable byte stream in both directions, whatever
// carries it. Protocol connections (SPDY, WebSocket) sit on a Transport, never
// on a socket, so the same connection code runs over
//
//   - a plain TCP socket                       (RawSocketTransport)
//   - TLS over a TCP socket                    (TLS termination)
//   - the binary messages of a WebSocket       (the SPDY-over-WebSocket tunnel)
//   - one HTTP/2 stream                        (WebSocket over HTTP/2, RFC 8441)
//
// A Transport belongs to one dispatcher; every method and callback runs on its
// thread. Callbacks are never invoked from inside a method call of the owner
// (write(), pauseReading(), ...): they arrive from the event loop, so the owner
// may call any method from a callback, but must not destroy the transport
// there (use Dispatcher::deferredDelete).
//
// Hand-over: a transport can change owners while it runs, as the HTTP/1.1
// front does after reading a request head. The old owner pauses reading and
// gives back the bytes it read past what it used (unreadInput()); the new owner
// calls setCallbacks() and start() before control returns to the event loop.
// Bytes queued by the old owner (the 101 response) keep their place, and the
// returned input is delivered to the new owner before anything newer.

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>

#include "source/common/buffer.h"

namespace crisp::stream {

class TransportCallbacks {
 public:
  virtual ~TransportCallbacks() = default;

  // Bytes from the peer. The callee takes them all (drains `data`).
  virtual void onTransportData(Buffer& data) = 0;
  // The peer will send nothing more (TCP FIN, WebSocket close, END_STREAM).
  // Writing may continue until shutdownWrite() or close(). Comes after every
  // byte was delivered, and not while reading is paused; at most once.
  virtual void onTransportEof() = 0;
  // Bytes were written and queuedBytes() dropped; the owner may queue more.
  // Called after every write progress while bytes were queued.
  virtual void onTransportDrained() = 0;
  // The transport failed (reset, TLS alert, I/O error) and is closed: nothing
  // more can be sent or received. `detail` says what happened, for logs.
  virtual void onTransportError(const std::string& detail) = 0;
  // Progress of a Transport::readIntoPipe() transfer: `bytes` more of it are
  // in the pipe. A non-empty `pipe_error` means the pipe failed (its reader is
  // gone): the transfer is over, and the bytes it did not move are delivered
  // with onTransportData() as usual.
  virtual void onTransportPipeInput(size_t bytes, const std::string& pipe_error) {
    (void)bytes;
    (void)pipe_error;
  }
};

class Transport {
 public:
  // Closes at once, without callbacks.
  virtual ~Transport() = default;

  // Must be called before start(). Calling it again hands the transport to a
  // new owner (see "Hand-over" above): every later callback goes to it.
  virtual void setCallbacks(TransportCallbacks& callbacks) = 0;
  // Starts reading and writing. Bytes the transport already holds (read past
  // an HTTP head, say) are delivered first, from the event loop. Called again
  // by a new owner after a hand-over, it resumes reading (as
  // pauseReading(false)).
  virtual void start() = 0;

  // Queues all of `data` (drained) for the peer. Never blocks, never fails
  // synchronously: a failure arrives as onTransportError(). Bytes written
  // after shutdownWrite() or close() are dropped.
  virtual void write(Buffer& data) = 0;
  // Bytes queued and not yet handed to the layer below.
  virtual size_t queuedBytes() const = 0;
  // Zero-copy output, for transports that are a plain socket. Queues `header`
  // (drained) followed by `length` bytes that the caller promises are in the
  // pipe `pipe_fd` and that nothing else reads: they go from the pipe to the
  // socket with splice(2), never through user space. Accepted only while
  // nothing is queued; returns false, taking nothing, otherwise and on
  // transports that cannot splice (TLS, a WebSocket or HTTP/2 stream), and
  // the caller then sends the bytes as usual.
  //
  // What the socket takes at once is written inside the call (no callback is
  // invoked from it); the rest of the payload stays in the pipe and is written
  // from the loop before anything queued later, through a descriptor of the
  // pipe the transport keeps, so the caller may close its own. Until
  // pipeBytesPending() is back to 0 the caller must keep every other reader
  // away from the pipe, or the payload would not be the bytes it promised.
  // A failure arrives as onTransportError(), from the loop.
  virtual bool writeFromPipe(Buffer& header, int pipe_fd, size_t length) {
    (void)header;
    (void)pipe_fd;
    (void)length;
    return false;
  }
  // Whether writeFromPipe() can ever be accepted here (a plain socket), so
  // that a caller asks the pipe for its length only then.
  virtual bool canWriteFromPipe() const { return false; }
  // Bytes of a writeFromPipe() payload still in the pipe (counted in
  // queuedBytes() too).
  virtual size_t pipeBytesPending() const { return 0; }
  // Zero-copy input, the mirror of writeFromPipe(): the next `length` bytes
  // from the peer go from the socket into the pipe `pipe_fd` with splice(2),
  // never through user space, before anything later is read. Accepted only
  // while no input is held (unreadInput()) and no other transfer runs;
  // returns false otherwise and on transports that cannot splice (TLS, a
  // WebSocket or HTTP/2 stream), and the caller then reads the bytes as
  // usual.
  //
  // The bytes move from the loop, never inside the call, and each step is
  // reported with onTransportPipeInput(); the transport keeps a descriptor of
  // the pipe of its own until the transfer ends, so the caller may close its
  // own. While the pipe is full the socket is not read: the pipe's reader
  // holds the peer back, as a paused owner does. pauseReading() pauses the
  // transfer too. A peer's EOF or error ends it as usual.
  virtual bool readIntoPipe(int pipe_fd, size_t length) {
    (void)pipe_fd;
    (void)length;
    return false;
  }
  // The next read from the layer below takes at most `bytes`: for a caller
  // of readIntoPipe() that wants the next frame's header alone, so that the
  // payload behind it can be spliced whole. A no-op where nothing can be
  // spliced.
  virtual void limitNextRead(size_t bytes) { (void)bytes; }
  // Whether readIntoPipe() can ever be accepted here (a plain socket).
  virtual bool canReadIntoPipe() const { return false; }
  // Bytes of a readIntoPipe() transfer not yet in the pipe.
  virtual size_t pipeInputPending() const { return 0; }
  // Ends a readIntoPipe() transfer early, without a callback: the bytes it
  // did not move are read and delivered with onTransportData() as usual.
  virtual void cancelReadIntoPipe() {}
  // Bytes handed to the kernel that the peer has not acknowledged yet; 0
  // where the layer below cannot tell.
  virtual size_t unacknowledgedBytes() const { return 0; }
  // Stops (true) or resumes (false) delivering onTransportData().
  virtual void pauseReading(bool paused) = 0;
  // From now on, the peer closing the connection (FIN or reset) while reading
  // is paused ends the transport within half a second with
  // onTransportError(), rather than after the input still unread, which a
  // paused owner may never take. For owners to which the peer's close ends
  // everything anyway (a stream client): without it, a client that vanished
  // while its input was held back keeps its session until the command reads.
  // (A FIN waits behind input that fills the socket's receive buffer; a reset
  // does not.) A no-op where the layer below cannot tell (a WebSocket or
  // HTTP/2 stream carrying the bytes).
  virtual void failOnPeerCloseWhilePaused() {}
  // Puts `data` (drained) back in front of the input: it is delivered again,
  // ahead of anything newer, from the event loop while reading runs (so after
  // start() or pauseReading(false) if it does not). For a reader that took
  // more bytes than it used, such as the HTTP/1.1 head parser before a
  // hand-over.
  virtual void unreadInput(Buffer& data) = 0;
  // Ends our direction once every queued byte is written (TCP shutdown,
  // WebSocket close frame, END_STREAM). Reading goes on.
  virtual void shutdownWrite() = 0;
  // Closes both directions at once; queued bytes are dropped. No callbacks
  // follow.
  virtual void close() = 0;

  // The peer's address ("ip:port") and, with TLS and a verified client
  // certificate, its subject; for logs and audit records.
  virtual const std::string& peerAddress() const = 0;
  virtual std::string peerIdentity() const { return {}; }
  // The protocol the client chose by ALPN in a TLS handshake ("h2",
  // "http/1.1"); empty without TLS, without ALPN, or before the handshake.
  virtual std::string alpnProtocol() const { return {}; }
};

using TransportPtr = std::unique_ptr<Transport>;

// Frames for Transport::writeFromPipe(): splices up to `limit` bytes of what
// the pipe `pipe_fd` holds (FIONREAD; only the caller reads the pipe) in
// frames of at most `max_payload` bytes, each behind the header that
// `frame_header(length, header)` appends (returning false stops), while the
// transport takes each frame whole: one it took in part is finished before
// anything else goes out. Returns the payload bytes and frames taken; none
// when the transport cannot splice or holds bytes, or the pipe is empty.
struct PipeFrames {
  size_t bytes = 0;
  size_t frames = 0;
};
template <typename FrameHeader>
PipeFrames writeFramesFromPipe(Transport& transport, int pipe_fd, size_t limit, size_t max_payload,
                               FrameHeader&& frame_header) {
  PipeFrames taken;
  int available = 0;
  if (!transport.canWriteFromPipe() || transport.queuedBytes() > 0 || max_payload == 0 ||
      ::ioctl(pipe_fd, FIONREAD, &available) != 0 || available <= 0) {
    return taken;
  }
  size_t left = std::min(static_cast<size_t>(available), limit);
  while (left > 0 && transport.queuedBytes() == 0) {
    const size_t length = std::min(left, max_payload);
    Buffer header;
    if (!frame_header(length, header) || !transport.writeFromPipe(header, pipe_fd, length)) {
      break;
    }
    taken.bytes += length;
    ++taken.frames;
    left -= length;
  }
  return taken;
}

// What a TCP socket's kernel send queue holds that the peer has not
// acknowledged (SIOCOUTQ); 0 for other sockets (a unix socket's peer keeps
// what was queued for it when the sender closes) and when it cannot be told.
inline size_t unacknowledgedSocketBytes(int fd) {
  int domain = 0;
  socklen_t len = sizeof(domain);
  if (fd < 0 || ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 ||
      (domain != AF_INET && domain != AF_INET6)) {
    return 0;
  }
  int bytes = 0;
  if (::ioctl(fd, SIOCOUTQ, &bytes) != 0 || bytes < 0) {
    return 0;
  }
  return static_cast<size_t>(bytes);
}

}  // namespace crisp::stream
