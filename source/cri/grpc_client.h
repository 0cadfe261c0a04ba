#pragma once

// GrpcClient: a gRPC client over HTTP/2 (nghttp2) on a unix socket, driven by a
// crisp Dispatcher. It speaks to the upstream runtime for the passthrough and to
// crisp's own server in tests and tools.
//
//   GrpcClient client(dispatcher, "/run/containerd/containerd.sock");
//   std::unique_ptr<ClientCall> call = client.startCall(
//       "/runtime.v1.RuntimeService/Version", metadata, deadline, callbacks);
//   call->sendMessage(request_bytes);
//   call->halfClose();
//   // callbacks: onHeaders (optional), onMessage per response message, then
//   // exactly one onClose(status, trailing metadata).
//
// Connections: one HTTP/2 connection at a time, opened on the first call and
// shared by every call after it (HTTP/2 multiplexes them). When it fails or the
// server sends GOAWAY, the next call opens a new one, so a restarted server is
// picked up without any reconnect logic in the caller. Calls never wait for a
// connection to come back: a call on a failed connection ends with UNAVAILABLE
// and a message that names the peer and the cause, e.g.
// "upstream runtime /run/containerd/containerd.sock: connection refused".
//
// Threads and lifetime: a GrpcClient and its calls live on the Dispatcher given
// at construction; every method and callback runs on its thread. Calls may
// outlive the client (they end with UNAVAILABLE when it goes), but neither may
// outlive the Dispatcher, and a callback must not destroy the GrpcClient.
//
// Status mapping (PROTOCOL-HTTP2.md): grpc-status/grpc-message from trailers (or
// a trailers-only response), grpc-message percent-decoded; a non-200 :status
// maps like gRPC's http-grpc-status-mapping; RST_STREAM from the server maps
// REFUSED_STREAM to UNAVAILABLE, CANCEL to CANCELLED, others to INTERNAL; a
// stream that ends without grpc-status is INTERNAL; a response message over the
// size limit is RESOURCE_EXHAUSTED (and the stream is reset); the deadline
// passing is DEADLINE_EXCEEDED (and the stream is reset with CANCEL).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/common/dispatcher.h"
#include "source/cri/grpc_common.h"

namespace crisp::cri {

namespace internal {
struct ClientStream;
class ClientConnection;
}  // namespace internal

class GrpcClient;

// One outgoing call. Owned by the caller; destroying an open call resets its
// stream (CANCEL) without any callback.
class ClientCall {
 public:
  // Callbacks run on the dispatcher thread, never from inside a ClientCall or
  // GrpcClient method. Any of them may destroy the ClientCall.
  class Callbacks {
   public:
    virtual ~Callbacks() = default;
    // Response headers (not called for a trailers-only response). `headers` are
    // the non-pseudo fields in wire order, content-type included.
    virtual void onHeaders(const Metadata& headers) { (void)headers; }
    // One complete response message.
    virtual void onMessage(std::string message) = 0;
    // The call is over: its status and trailing metadata (non-pseudo trailer
    // fields other than grpc-status and grpc-message). Called exactly once,
    // unless the caller cancel()ed or destroyed the call first.
    virtual void onClose(const absl::Status& status, const Metadata& trailers) = 0;
  };

  ~ClientCall();
  ClientCall(const ClientCall&) = delete;
  ClientCall& operator=(const ClientCall&) = delete;

  // Queues one request message. Returns false after halfClose() or the end of
  // the call.
  bool sendMessage(std::string_view message);
  // Ends the request side (END_STREAM after the queued messages). Returns false
  // when already done or the call is over.
  bool halfClose();
  // Resets the stream with CANCEL. No callback follows.
  void cancel();
  // True until onClose was delivered (or is about to be) or cancel().
  bool active() const;

  // Request bytes queued but not yet handed to the socket.
  size_t bufferedBytes() const;
  // Calls `fn` once, when the queued request bytes fall to a low watermark (at
  // once if they already are).
  void notifyWhenDrained(std::function<void()> fn);
  // Stops (true) or restarts (false) reopening the HTTP/2 window for response
  // bytes, so that a fast server stops sending.
  void pauseReading(bool paused);

 private:
  friend class GrpcClient;
  friend class internal::ClientConnection;
  ClientCall(event::Dispatcher& dispatcher, Callbacks& callbacks);
  // Delivers onClose on the next loop iteration (failures found while starting).
  void failSoon(const absl::Status& status);

  internal::ClientStream* stream_ = nullptr;
  Callbacks& callbacks_;
  bool done_ = false;
  absl::Status pending_failure_;
  event::Timer failure_timer_;
};

struct GrpcClientOptions {
  // Names the peer in error messages; the socket path when empty.
  std::string peer_name;
  // Largest response message; above it the call ends with RESOURCE_EXHAUSTED.
  size_t max_message_bytes = kDefaultMaxMessageBytes;
  // :authority of every request.
  std::string authority = "localhost";
  // user-agent, unless the call's metadata has one.
  std::string user_agent = "crisp-grpc/1";
};

class GrpcClient {
 public:
  // `socket_path` is the server's unix socket. Nothing connects until the first
  // call.
  GrpcClient(event::Dispatcher& dispatcher, std::string socket_path,
             GrpcClientOptions options = {});
  // Closes every connection; calls still open get onClose(UNAVAILABLE).
  ~GrpcClient();
  GrpcClient(const GrpcClient&) = delete;
  GrpcClient& operator=(const GrpcClient&) = delete;

  // Starts a call on `path` ("/pkg.Service/Method"). Request headers are
  // :method POST, :scheme http, :path, :authority, te: trailers, content-type
  // (application/grpc unless `metadata` has one), grpc-timeout from `deadline`
  // (remaining time, when set), user-agent, then `metadata` minus hop-by-hop
  // fields, grpc-timeout, and invalid fields. `callbacks` must outlive the call.
  // Never fails synchronously: errors arrive through onClose.
  std::unique_ptr<ClientCall> startCall(
      const std::string& path, const Metadata& metadata,
      std::optional<std::chrono::steady_clock::time_point> deadline,
      ClientCall::Callbacks& callbacks);

  const std::string& socketPath() const { return socket_path_; }
  const std::string& peerName() const { return options_.peer_name; }
  // Open HTTP/2 connections (tests).
  size_t connectionCount() const;

 private:
  friend class internal::ClientConnection;
  void onConnectionClosed(internal::ClientConnection* connection);
  internal::ClientConnection& connection();

  event::Dispatcher& dispatcher_;
  const std::string socket_path_;
  GrpcClientOptions options_;
  bool shutting_down_ = false;
  std::unique_ptr<internal::ClientConnection> active_;
  std::vector<std::unique_ptr<internal::ClientConnection>> draining_;
};

// Makes one unary call and waits for its result, on a private Dispatcher run on
// the calling thread: connects to `socket_path`, sends `request` (serialized
// message bytes) to `method_path` with `metadata`, and returns the serialized
// response message or the call's status.
//
// For tests and command-line tools only: it blocks the calling thread for up to
// `timeout` (which is also sent as grpc-timeout) and opens one connection per
// call. Never call it on the dispatcher thread of the server it talks to (that
// server could not answer; the call would end with DEADLINE_EXCEEDED).
// Results: the response bytes; the server's status (code, decoded message);
// UNAVAILABLE naming the socket when it cannot connect; DEADLINE_EXCEEDED after
// `timeout`; INTERNAL when an OK response carries no message or several.
absl::StatusOr<std::string> unaryCallBlocking(const std::string& socket_path,
                                              const std::string& method_path,
                                              std::string_view request,
                                              std::chrono::milliseconds timeout,
                                              const Metadata& metadata = {});

}  // namespace crisp::cri
