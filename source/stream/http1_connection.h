#pragma once

// Http1Connection: one accepted socket during its HTTP/1.1 phase, shared by
// the stream server and the admin endpoint. It reads the request head under a
// size limit and a deadline, reports it to its owner, and then either writes
// one response and closes, or hands the socket over (release()) for an
// upgrade.
//
// - The deadline runs from construction: a client that trickles its head
//   (one byte at a time) is closed at header_timeout all the same.
// - After a response the write side is shut down and input is read and
//   dropped until the client closes or close_linger passes, so that unread
//   request bytes do not turn the close into a reset that would destroy the
//   response before the client reads it.
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

class Http1Connection {
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
    // The head is complete. `leftover` holds what the client sent after it.
    // The owner must call respond(), close() or release().
    virtual void onRequestHead(Http1Connection& connection, HttpRequest&& request,
                               Buffer&& leftover) = 0;
    // The head could not be read. The owner must call respond() or close().
    virtual void onHeadError(Http1Connection& connection, HeadError error) = 0;
    // The socket is closed; the owner may now destroy the connection.
    virtual void onClosed(Http1Connection& connection) = 0;
  };

  // Takes ownership of `fd` (non-blocking) and starts reading at once.
  // `callbacks` must outlive the connection.
  Http1Connection(event::Dispatcher& dispatcher, int fd, std::string peer, uint64_t id,
                  const Http1ConnectionOptions& options, Callbacks& callbacks);
  // Closes the socket if still owned, without calling onClosed().
  ~Http1Connection();
  Http1Connection(const Http1Connection&) = delete;
  Http1Connection& operator=(const Http1Connection&) = delete;

  // Writes `bytes`, then closes as described above (onClosed() follows).
  void respond(std::string bytes);
  // Closes at once (onClosed() follows, from this call).
  void close();
  // Stops every watcher and timer and gives the socket to the caller.
  int release();

  uint64_t id() const { return id_; }
  const std::string& peer() const { return peer_; }

 private:
  enum class Phase { kReadingHead, kWriting, kLingering, kDone };

  void onEvents(short events);
  void onDeadline();
  void readHead();
  void writeOut();
  void drainInput();
  void finish();

  int fd_;
  const std::string peer_;
  const uint64_t id_;
  const Http1ConnectionOptions options_;
  Callbacks& callbacks_;
  Phase phase_ = Phase::kReadingHead;
  Http1HeadParser parser_;
  std::string output_;
  size_t output_sent_ = 0;
  event::FdWatcher watcher_;
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
