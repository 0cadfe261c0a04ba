#pragma once

// GrpcServer: crisp's gRPC server on a unix socket, gRPC over HTTP/2 written on
// nghttp2 (no grpc++). It accepts HTTP/2 connections, turns each request stream
// into a ServerCall and hands it to a handler chosen by the exact :path:
//
//   crisp::event::Dispatcher dispatcher;
//   crisp::cri::GrpcServer server(dispatcher);
//   server.registerUnary("/runtime.v1.RuntimeService/Exec",
//                        [](std::string request, GrpcServer::UnaryDone done) {
//                          done(std::string(response_bytes));  // or an absl::Status
//                        });
//   server.setFallback(&passthrough);          // every other path
//   absl::Status s = server.listenUnix("/run/crisp/crisp.sock", 0660);
//   dispatcher.run();
//
// Threads and lifetime: a GrpcServer, its connections and every ServerCall live
// on the one Dispatcher given at construction; all methods must be called on
// its thread (or before it runs). The only exception is a UnaryDone, which may
// be called, copied and dropped on any thread (it posts to the dispatcher).
// ServerCalls may outlive the server (they are cancelled when it goes), not the
// Dispatcher; no callback may destroy the GrpcServer.
//
// Wire behaviour (gRPC PROTOCOL-HTTP2.md): request headers must be POST with
// content-type application/grpc[+...] (else HTTP 405 / 415); grpc-timeout sets
// deadline(), and the server cancels the call (RST_STREAM CANCEL, handler told
// DEADLINE_EXCEEDED) when it passes; a message encoding other than identity is
// refused with UNIMPLEMENTED; a compressed flag without encoding or a stream
// ending inside a message gets INTERNAL; a message over the size limit gets
// RESOURCE_EXHAUSTED. Responses are headers, messages and trailers, or a
// trailers-only response when the call ends before anything was sent.
// Malformed HTTP/2 ends the connection with GOAWAY; other connections go on.
//
// Every finished call counts once in crisp_cri_calls_total{method,code}
// (grpc_metrics.h).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <sys/types.h>

#include "source/common/dispatcher.h"
#include "source/cri/grpc_common.h"

namespace crisp::cri {

namespace internal {
struct ServerStream;
class ServerConnection;
}  // namespace internal

// One incoming call, handed to a CallHandler. The handler owns it; it stays
// usable until the handler destroys it, but once the call is over (finished,
// or cancelled) every send returns false.
//
// Destroying a call that has not finished ends it with INTERNAL ("call dropped
// by the server without a status").
class ServerCall {
 public:
  // What arrives from the client. Callbacks run on the dispatcher thread,
  // possibly from inside another ServerCall method of the same call only for
  // setCallbacks() (see there). Any of them may destroy the ServerCall.
  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    // One complete request message.
    virtual void onMessage(std::string message) = 0;
    // The client finished sending (END_STREAM).
    virtual void onHalfClose() = 0;
    // The call ended without the handler's finish(): the client reset the
    // stream or disconnected (CANCELLED), the deadline passed
    // (DEADLINE_EXCEEDED), or the transport answered a framing error itself
    // (INTERNAL, RESOURCE_EXHAUSTED; the client got that status). After this,
    // nothing more is delivered and sends return false.
    virtual void onCancel(const absl::Status& reason) = 0;
  };

  ~ServerCall();
  ServerCall(const ServerCall&) = delete;
  ServerCall& operator=(const ServerCall&) = delete;

  // The request's :path, e.g. "/runtime.v1.RuntimeService/Version".
  const std::string& path() const { return path_; }
  // Every non-pseudo request header in wire order, including content-type,
  // te, user-agent and grpc-timeout.
  const Metadata& metadata() const { return metadata_; }
  // From grpc-timeout, on the steady clock; nullopt when the client set none.
  std::optional<std::chrono::steady_clock::time_point> deadline() const { return deadline_; }
  // Id of the HTTP/2 connection that carries the call (for logs).
  uint64_t connectionId() const { return connection_id_; }

  // Sets where request messages go. Messages, half-close or cancellation that
  // arrived before are delivered from inside this call. `callbacks` must
  // outlive the call or be replaced.
  void setCallbacks(Callbacks* callbacks);

  // Sends response headers (:status 200, content-type application/grpc unless
  // `headers` has one, then `headers` minus hop-by-hop, reserved and invalid
  // fields). Optional: the first message or finish() sends them. Returns false
  // when headers were already sent or the call is over.
  bool sendHeaders(const Metadata& headers = {});

  // Queues one response message. Returns false when the call is over.
  bool sendMessage(std::string_view message);

  // Ends the call with `status` (code and message; the message is
  // percent-encoded on the wire) and trailing metadata. Returns false when the
  // call was already over.
  bool finish(const absl::Status& status, const Metadata& trailers = {});

  // True until finish() or cancellation.
  bool active() const;

  // Response bytes queued but not yet handed to the socket.
  size_t bufferedBytes() const;
  // Calls `fn` once, when the queued response bytes fall to a low watermark
  // (at once if they already are). For proxies that pause their source.
  void notifyWhenDrained(std::function<void()> fn);
  // Stops (true) or restarts (false) reopening the HTTP/2 window for request
  // bytes, so that a fast client stops sending. Messages already received are
  // still delivered.
  void pauseReading(bool paused);

 private:
  friend class internal::ServerConnection;
  friend struct internal::ServerStream;
  explicit ServerCall(internal::ServerStream* stream);

  internal::ServerStream* stream_;
  Callbacks* callbacks_ = nullptr;
  // A cancellation that came before setCallbacks().
  std::optional<absl::Status> pending_cancel_;
  const std::string path_;
  const Metadata metadata_;
  const std::optional<std::chrono::steady_clock::time_point> deadline_;
  const uint64_t connection_id_;
};

// Receives every call whose path it is registered for (or every unrouted call,
// as a fallback). onCall runs on the dispatcher thread, from inside the
// connection's receive path: it must not block.
class CallHandler {
 public:
  virtual ~CallHandler() = default;
  virtual void onCall(std::unique_ptr<ServerCall> call) = 0;
};

struct GrpcServerOptions {
  // Largest request message; above it the call gets RESOURCE_EXHAUSTED.
  size_t max_message_bytes = kDefaultMaxMessageBytes;
  // SETTINGS_MAX_CONCURRENT_STREAMS per connection.
  uint32_t max_concurrent_streams = 1000;
};

class GrpcServer {
 public:
  // The result of a unary method: a serialized response message or a status
  // (whose code must not be OK).
  using UnaryDone = std::function<void(absl::StatusOr<std::string>)>;
  // A unary method: the one serialized request message and the completion.
  // `done` may be called later and from any thread; calling it after the client
  // went away does nothing. Dropping it uncalled ends the call with INTERNAL.
  using UnaryHandler = std::function<void(std::string request, UnaryDone done)>;
  // A unary method whose work can be abandoned: it returns what to run when the
  // call ends before `done` was called (the client reset the stream, went away,
  // or its deadline passed), e.g. killing the process it started. That function
  // runs on the server's dispatcher thread, at most once; it may be empty.
  using CancellableUnaryHandler =
      std::function<std::function<void()>(std::string request, UnaryDone done)>;

  explicit GrpcServer(event::Dispatcher& dispatcher, GrpcServerOptions options = {});
  // Closes the listener and every connection; open calls see onCancel
  // (CANCELLED). Removes the socket file it created.
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Listens on a unix socket at `path`: a stale socket file there is removed
  // first (any other kind of file is an error), the new one gets `mode` and,
  // when given, the group `gid`. The socket file is created accessible to its
  // owner only and opened up to `mode` once its group is set, so no other
  // user can connect in between.
  // Errors: INVALID_ARGUMENT (path too long), FAILED_PRECONDITION (a non-socket
  // file in the way), or the failing system call as UNAVAILABLE/INTERNAL.
  absl::Status listenUnix(const std::string& path, mode_t mode,
                          std::optional<uint32_t> gid = std::nullopt);

  // Graceful stop: closes the listener (removing its socket file) and sends
  // GOAWAY on every connection. Calls in flight run to their end; calls a
  // client starts after the GOAWAY are refused (its client sees UNAVAILABLE).
  // Each connection closes once its last call is over.
  void drain();

  // Routes `path` to a unary method. A unary call must carry exactly one
  // request message (else INTERNAL). Replaces an earlier route for the path.
  void registerUnary(const std::string& path, UnaryHandler handler);
  void registerCancellableUnary(const std::string& path, CancellableUnaryHandler handler);
  // Routes `path` to `handler` (not owned; must outlive the server).
  void registerHandler(const std::string& path, CallHandler& handler);
  // Receives every call with no route; nullptr (the default) answers those
  // with UNIMPLEMENTED. Not owned.
  void setFallback(CallHandler* handler);

  const std::string& socketPath() const { return socket_path_; }
  size_t connectionCount() const { return connections_.size(); }
  // Calls whose streams are open on any connection (tests, admin).
  size_t activeStreamCount() const;
  const GrpcServerOptions& options() const { return options_; }
  event::Dispatcher& dispatcher() { return dispatcher_; }

 private:
  friend class internal::ServerConnection;
  struct Route {
    CallHandler* handler = nullptr;
    std::shared_ptr<CancellableUnaryHandler> unary;
  };

  void onAcceptReady();
  void closeListener();
  void dispatch(std::unique_ptr<ServerCall> call);
  void onConnectionClosed(internal::ServerConnection* connection);

  event::Dispatcher& dispatcher_;
  const GrpcServerOptions options_;
  std::map<std::string, Route> routes_;
  CallHandler* fallback_ = nullptr;
  int listen_fd_ = -1;
  std::string socket_path_;
  ino_t socket_inode_ = 0;
  event::FdWatcherPtr accept_watcher_;
  event::TimerPtr accept_retry_timer_;
  std::map<uint64_t, std::unique_ptr<internal::ServerConnection>> connections_;
};

}  // namespace crisp::cri
