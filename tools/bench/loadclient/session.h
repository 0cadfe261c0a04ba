#pragma once

// Client sessions of the load client: one stream URL, one TCP connection, one
// protocol (SPDY remotecommand v4, WebSocket v5 exec, SPDY or WebSocket
// port-forward), driven on an event::Dispatcher with crisp's own transport and
// codecs, so thousands of them can run on one thread.
//
// A session upgrades, opens its streams, optionally sends `send_bytes` of
// zeros (stdin, or the client side of a forwarded connection) in pieces of
// `send_chunk`, counts what the server sends on stdout (or the forwarded
// connection), and ends when the server ends the session: after the exit
// status for exec (ok when it says Success), after the data stream's end for
// port-forward. Every byte count and time is kept for the caller.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"

namespace crisp::bench {

using Clock = std::chrono::steady_clock;

struct Url {
  std::string host;
  uint16_t port = 0;
  std::string target;  // path and query
};

// Parses "http://host:port/path"; false when it is not one.
bool parseUrl(const std::string& url, Url& out);

enum class Protocol {
  kSpdyExec,         // SPDY/3.1, v4.channel.k8s.io
  kWsExec,           // WebSocket, v5.channel.k8s.io
  kSpdyPortForward,  // SPDY/3.1, portforward.k8s.io
  kWsPortForward,    // WebSocket, v4.channel.k8s.io
};

bool parseProtocol(const std::string& name, bool port_forward, Protocol& out);

struct SessionOptions {
  Protocol protocol = Protocol::kSpdyExec;
  // Exec: open a stdin stream. Implied by send_bytes > 0.
  bool stdin = false;
  // Bytes sent to the server after the streams are open, then a half-close.
  uint64_t send_bytes = 0;
  size_t send_chunk = 64 * 1024;
  // Port-forward: the remote port (SPDY headers).
  uint16_t port = 0;
};

class Session;

class SessionObserver {
 public:
  virtual ~SessionObserver() = default;
  // Every stream the session asked for was accepted (SPDY: all SYN_REPLYs;
  // WebSocket: the upgrade).
  virtual void onSessionReady(Session& session) { (void)session; }
  virtual void onFirstByte(Session& session) { (void)session; }
  // The session ended; `ok` and detail() say how. Called once. The session may
  // be destroyed from here with Dispatcher::deferredDelete.
  virtual void onSessionDone(Session& session) = 0;
};

class Session {
 public:
  virtual ~Session() = default;

  // Connects (a blocking connect on loopback), sends the upgrade and starts.
  // A failure is reported through onSessionDone from the loop.
  virtual void start(const Url& url) = 0;
  // Closes the connection at once, without a callback.
  virtual void abort() = 0;

  bool done() const { return done_; }
  bool ok() const { return ok_; }
  const std::string& detail() const { return detail_; }
  uint64_t bytesReceived() const { return bytes_received_; }
  uint64_t bytesSent() const { return bytes_sent_; }
  Clock::time_point firstByteAt() const { return first_byte_at_; }
  Clock::time_point doneAt() const { return done_at_; }
  uint64_t tag = 0;

 protected:
  bool done_ = false;
  bool ok_ = false;
  std::string detail_;
  uint64_t bytes_received_ = 0;
  uint64_t bytes_sent_ = 0;
  Clock::time_point first_byte_at_{};
  Clock::time_point done_at_{};
};

std::unique_ptr<Session> makeSession(event::Dispatcher& dispatcher, SessionObserver& observer,
                                     const SessionOptions& options);

// A blocking TCP connect to host:port (numeric IPv4 or IPv6). -1 with errno set.
int connectTcp(const std::string& host, uint16_t port);

}  // namespace crisp::bench
