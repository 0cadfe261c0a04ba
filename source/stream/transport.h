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

#include <cstddef>
#include <string>

#include "source/common/buffer.h"

namespace crisp::stream {

class TransportCallbacks {
 public:
  virtual ~TransportCallbacks() = default;

  // Bytes from the peer. The callee takes them all (drains `data`).
  virtual void onTransportData(Buffer& data) = 0;
  // The peer will send nothing more (TCP FIN, WebSocket close, END_STREAM).
  // Writing may continue until shutdownWrite() or close().
  virtual void onTransportEof() = 0;
  // Bytes were written and queuedBytes() dropped; the owner may queue more.
  // Called after every write progress while bytes were queued.
  virtual void onTransportDrained() = 0;
  // The transport failed (reset, TLS alert, I/O error) and is closed: nothing
  // more can be sent or received. `detail` says what happened, for logs.
  virtual void onTransportError(const std::string& detail) = 0;
};

class Transport {
 public:
  // Closes at once, without callbacks.
  virtual ~Transport() = default;

  // Must be called once before start().
  virtual void setCallbacks(TransportCallbacks& callbacks) = 0;
  // Starts reading and writing. Bytes the transport already holds (read past
  // an HTTP head, say) are delivered first, from the event loop.
  virtual void start() = 0;

  // Queues all of `data` (drained) for the peer. Never blocks, never fails
  // synchronously: a failure arrives as onTransportError().
  virtual void write(Buffer& data) = 0;
  // Bytes queued and not yet handed to the layer below.
  virtual size_t queuedBytes() const = 0;
  // Stops (true) or resumes (false) delivering onTransportData().
  virtual void pauseReading(bool paused) = 0;
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
};

}  // namespace crisp::stream
