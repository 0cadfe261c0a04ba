#pragma once

// Passthrough: a CallHandler that forwards any gRPC call, unchanged and by its
// path alone, to the upstream runtime's unix socket (containerd, CRI-O). It
// never looks at method names or message contents, so CRI methods added after
// crisp was built pass through too.
//
//   Passthrough passthrough(dispatcher, "/run/containerd/containerd.sock");
//   server.setFallback(&passthrough);   // everything crisp does not serve itself
//
// What is forwarded, in both directions and as it arrives:
// - the path; request metadata minus hop-by-hop fields (connection, te, ...),
//   grpc-encoding and grpc-accept-encoding (crisp only speaks identity, so the
//   upstream must not compress answers); grpc-timeout is re-encoded from the
//   call's deadline (the time left when the call is forwarded), so the upstream
//   sees the client's deadline;
// - request messages one by one, and the client's half-close;
// - response headers, messages, then the status (code and message) with its
//   trailing metadata, or a trailers-only answer as one;
// - cancellation: a client reset or disconnect resets the upstream stream; an
//   upstream that cannot be reached, resets the stream or dies mid-call ends the
//   client's call with UNAVAILABLE (or the code the reset maps to) and a message
//   naming it: "upstream runtime <socket>: connection refused".
// Unary, server-streaming (GetContainerEvents), client- and bidi-streaming calls
// all take the same path.
//
// Backpressure: when one side's queued bytes pass a high watermark the other
// side's HTTP/2 window stops reopening until they drain, so a slow kubelet
// throttles the runtime instead of growing crisp's memory.
//
// Rewriting: for the paths given to rewriteResponses(), each response message
// is replaced by what the rewrite returns for it (given the call's first
// request message); a rewrite that fails ends the client's call with that
// status and resets the upstream call. Errors from the upstream are never
// rewritten: they carry no message.
//
// Connections: one shared upstream HTTP/2 connection per Passthrough, and a
// Passthrough per Dispatcher (calls are multiplexed as streams; a failed or
// GOAWAYed connection is replaced on the next call). All methods run on that
// dispatcher's thread.

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "source/common/dispatcher.h"
#include "source/cri/grpc_client.h"
#include "source/cri/grpc_server.h"

namespace crisp::cri {

class Passthrough : public CallHandler {
 public:
  // `upstream_socket` is the runtime's CRI socket. Error messages name it as
  // "upstream runtime <socket>" unless `client_options.peer_name` is set.
  Passthrough(event::Dispatcher& dispatcher, std::string upstream_socket,
              GrpcClientOptions client_options = {});
  // Ends every forwarded call: the client sees UNAVAILABLE, the upstream a reset.
  ~Passthrough() override;

  void onCall(std::unique_ptr<ServerCall> call) override;

  // The new response message for `response`, the upstream's answer to
  // `request` (the call's first request message), or the status to end the
  // client's call with.
  using ResponseRewrite =
      std::function<absl::StatusOr<std::string>(const std::string& request, std::string response)>;
  // Rewrites the responses of calls on `path` from now on.
  void rewriteResponses(const std::string& path, ResponseRewrite rewrite);

  // Calls being forwarded now.
  size_t activeCalls() const { return calls_.size(); }
  const std::string& upstreamSocket() const { return client_.socketPath(); }

 private:
  class ForwardedCall;
  void release(ForwardedCall* call);

  event::Dispatcher& dispatcher_;
  GrpcClient client_;
  std::map<std::string, ResponseRewrite> rewrites_;
  std::map<ForwardedCall*, std::unique_ptr<ForwardedCall>> calls_;
};

}  // namespace crisp::cri
