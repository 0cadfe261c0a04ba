#pragma once

// StreamRedirect: with a runtime behind crisp (cri.upstream), Exec, Attach and
// PortForward are forwarded to the runtime unchanged, and its answer names the
// runtime's own stream server. StreamRedirect keeps the request together with
// that URL in the token cache and answers with crisp's URL instead, so the
// client comes to crisp's stream server, whose backend then connects to the
// runtime's URL (source/runtime/streamserver/).
//
//   StreamRedirect redirect(cache, "http://127.0.0.1:10350/");
//   redirect.install(passthrough);
//
// The runtime's errors reach the caller unchanged (they carry no message to
// rewrite). An answer crisp cannot use fails the call: INTERNAL for an answer
// that does not decode or has no URL, the cache's RESOURCE_EXHAUSTED when it is
// full (the token is then never handed out, and the runtime's own token
// expires unused).

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "source/cache/token_cache.h"
#include "source/cri/passthrough.h"
#include "source/cri/stream_url.h"

namespace crisp::cri {

class StreamRedirect {
 public:
  // `cache` must outlive this object; `base_url` as for StreamUrls.
  StreamRedirect(cache::TokenCache& cache, std::string_view base_url);

  // Rewrites the answers of the three streaming calls that go through
  // `passthrough`. This object must outlive it.
  void install(Passthrough& passthrough);

  // The rewrite for one call: `path` is the method path, `request` and
  // `response` the serialized messages. Thread-safe.
  absl::StatusOr<std::string> rewrite(std::string_view path, const std::string& request,
                                      const std::string& response);

  // Exec answered by crisp itself, for a backend that runs exec sessions
  // without the runtime's stream server (cri.backend containerd): the
  // request's stream flags are checked as the kubelet checks them, the
  // request is kept under a token with no runtime URL, and the answer is an
  // ExecResponse with crisp's URL. Whether the container exists and runs is
  // found when the session starts, and reported to its client. Thread-safe.
  absl::StatusOr<std::string> answerExec(const std::string& request);

  // PortForward answered by crisp itself in the same way (cri.backend
  // containerd connects into the sandbox's network namespace): the kubelet's
  // checks (a pod sandbox id, ports 1-65535), the request kept under a token
  // with no runtime URL, a PortForwardResponse with crisp's URL. Whether the
  // sandbox exists and runs is found per forwarded connection and reported on
  // its error stream. Thread-safe.
  absl::StatusOr<std::string> answerPortForward(const std::string& request);

  // From now on the three calls fail with UNAVAILABLE saying crisp is
  // shutting down. Thread-safe.
  void stopIssuingStreams() { urls_.stopIssuing(); }

 private:
  StreamUrls urls_;
};

}  // namespace crisp::cri
