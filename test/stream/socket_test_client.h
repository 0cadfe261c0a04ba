#pragma once

// SocketTestClient: the blocking socket half that the SPDY and WebSocket test
// clients share. It owns a non-blocking socket, queues outgoing bytes (sent at
// once, or held while corked), and reads with bounded waits, handing what it
// reads to the protocol client's decode().
//
// While a send blocks on a full socket the client also reads (unless
// setReadWhileWriting(false)), so a server that writes while it reads cannot
// deadlock a test.
//
// Not thread-safe; use from the test's thread only.

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "source/common/buffer.h"

namespace crisp::stream::testing {

class SocketTestClient {
 public:
  // Takes ownership of `fd` (made non-blocking).
  explicit SocketTestClient(int fd);
  virtual ~SocketTestClient();
  SocketTestClient(const SocketTestClient&) = delete;
  SocketTestClient& operator=(const SocketTestClient&) = delete;

  // Raw bytes, sent like any other write.
  bool raw(std::string_view bytes);
  void cork() { corked_ = true; }
  bool uncork();
  // Returns (and forgets) the bytes queued while corked, without sending them.
  std::string takeCorked();

  void setReadWhileWriting(bool on) { read_while_writing_ = on; }
  void setSendTimeout(std::chrono::milliseconds t) { send_timeout_ = t; }

  // Reads and decodes until `done()` holds (true), or EOF / error / timeout
  // (false, unless `done()` holds by then).
  bool waitFor(const std::function<bool()>& done,
               std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Reads until the server closes the connection.
  bool waitForEof(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Reads raw bytes (no decoding) until `delimiter` was seen; returns them,
  // delimiter included. For the HTTP response before the frames.
  std::optional<std::string> readRawUntil(
      std::string_view delimiter, std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Closes the socket now (a client that goes away).
  void closeSocket();
  // shutdown(SHUT_WR).
  void shutdownWrite();

  bool eof() const { return eof_; }
  // Non-empty when the socket or the server's framing failed.
  const std::string& error() const { return error_; }
  // The socket, for socket options; -1 once closed.
  int fd() const { return fd_; }

 protected:
  // Writes what is queued, unless corked (then true at once).
  bool queued() { return corked_ || flush(); }
  // Writes everything queued, blocking up to the send timeout.
  bool flush();
  // Reads what is available without blocking; false on EOF or error.
  bool readAvailable();
  // Decodes what is in `in_` (called after each read and at EOF).
  virtual void decode() = 0;

  int fd_;
  Buffer out_;
  Buffer in_;
  bool corked_ = false;
  bool read_while_writing_ = true;
  bool eof_ = false;
  bool decode_failed_ = false;
  std::chrono::milliseconds send_timeout_ = std::chrono::seconds(10);
  std::string error_;
};

}  // namespace crisp::stream::testing
