#pragma once

// Http1Connection: one accepted connection during its HTTP/1.1 phase, shared
// by the stream server and the admin endpoint. It reads the request head from
// a Transport (a plain socket today, TLS later) under a size limit and a
// deadline, reports it to its owner, and then either writes one response and
// closes, or hands the transport over (releaseTransport()) for an upgrade.
//
// - The deadline runs from construction: a client that trickles its head
//   (one byte at a time) is closed at header_timeout all the same.
// - After a response the write side is shut down and input is read and
//   dropped until the client closes or close_linger passes, so that unread
//   request bytes do not turn the close into a reset that would destroy the
//   response before the client reads it.
// - When the head is complete, reading pauses and the bytes read past it go
//   back into the transport (Transport::unreadInput()), so whoever takes the
//   transport over reads them first.
// - Writing a response is bounded by header_timeout too: a client that does
//   not read its error is closed.
//
// Lives on one dispatcher; all methods and callbacks run on its thread. The
// owner destroys the connection after onClosed() or after release(), through
// Dispatcher::deferredDelete when inside a callback.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/http1_head_parser.h"
#include "source/stream/transport.h"
#include "source/stream/upgrade.h"

namespace crisp::stream {

struct Http1ConnectionOptions {
  // Largest request head accepted (request line, headers, final CRLF).
  size_t max_header_bytes = 16384;
  // Time from accept to a complete head, and to write a response.
  std::chrono::milliseconds header_timeout{10000};
  // How long to drain input after a response before closing.
  std::chrono::milliseconds close_linger{500};
};

class Http1Connection : private TransportCallbacks {
 public:
  enum class HeadError {
    kTooLarge,    // more than max_header_bytes without the end of the head
    kMalformed,   // not an HTTP/1.x request
    kTimeout,     // header_timeout passed first
    kPeerClosed,  // the client closed or reset before finishing the head
  };

  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    // The head is complete; what the client sent after it waits in the
    // transport, reading paused. The owner must call respond(), close() or
    // releaseTransport().
    virtual void onRequestHead(Http1Connection& connection, HttpRequest&& request) = 0;
    // The head could not be read. The owner must call respond() or close().
    virtual void onHeadError(Http1Connection& connection, HeadError error) = 0;
    // The transport is closed; the owner may now destroy the connection.
    virtual void onClosed(Http1Connection& connection) = 0;
  };

  // Takes ownership of `transport` (on `dispatcher`, not started) and starts
  // reading at once. `callbacks` must outlive the connection.
  Http1Connection(event::Dispatcher& dispatcher, TransportPtr transport, uint64_t id,
                  const Http1ConnectionOptions& options, Callbacks& callbacks);
  // Closes the transport if still owned, without calling onClosed().
  ~Http1Connection() override;
  Http1Connection(const Http1Connection&) = delete;
  Http1Connection& operator=(const Http1Connection&) = delete;

  // Writes `bytes`, then closes as described above (onClosed() follows).
  void respond(std::string bytes);
  // Closes at once (onClosed() follows, from this call).
  void close();
  // After onRequestHead(): stops the deadline and gives the transport to the
  // caller, reading paused, the bytes after the head held in it, anything
  // written through it (a 101) still queued. The caller becomes its owner
  // (setCallbacks() before returning to the loop). Null if it is gone.
  TransportPtr releaseTransport();
  // The transport, to queue the 101 before releaseTransport(). Null once
  // released or closed.
  Transport* transport() { return transport_.get(); }

  uint64_t id() const { return id_; }
  const std::string& peer() const { return peer_; }

 private:
  enum class Phase { kReadingHead, kWaitingForOwner, kWriting, kLingering, kDone };

  // TransportCallbacks
  void onTransportData(Buffer& data) override;
  void onTransportEof() override;
  void onTransportDrained() override;
  void onTransportError(const std::string& detail) override;

  void onDeadline();
  void parseHead(Buffer& data);
  void finish();

  TransportPtr transport_;
  const std::string peer_;
  const uint64_t id_;
  const Http1ConnectionOptions options_;
  Callbacks& callbacks_;
  Phase phase_ = Phase::kReadingHead;
  Http1HeadParser parser_;
  bool peer_eof_ = false;
  event::Timer deadline_;
};

// The live connections of one server on one dispatcher. Owns each until it is
// removed; removal defers the destruction to a later loop turn, since it
// usually happens inside the connection's own callback.
class Http1ConnectionSet {
 public:
  explicit Http1ConnectionSet(event::Dispatcher& dispatcher) : dispatcher_(dispatcher) {}

  Http1Connection& add(std::unique_ptr<Http1Connection> connection);
  // False if `connection` is not (or no longer) in the set.
  bool remove(Http1Connection& connection);
  size_t size() const { return connections_.size(); }

 private:
  event::Dispatcher& dispatcher_;
  std::unordered_map<Http1Connection*, std::unique_ptr<Http1Connection>> connections_;
};

}  // namespace crisp::stream
