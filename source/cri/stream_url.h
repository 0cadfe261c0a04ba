#pragma once

// The streaming requests of the CRI (Exec, Attach, PortForward) as crisp keeps
// them, and the URLs it answers with. Shared by the calls crisp answers for its
// embedded runtime (RuntimeServiceImpl) and by the ones it forwards to a
// runtime and redirects to its own stream server (StreamRedirect).

#include <atomic>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "api/runtime/v1/api.pb.h"

#include "source/cache/token_cache.h"
#include "source/session/request.h"

namespace crisp::cri {

// The request's flags and command as an ExecSpec (operation kExec / kAttach).
session::ExecSpec execSpecOf(const ::runtime::v1::ExecRequest& request);
session::ExecSpec attachSpecOf(const ::runtime::v1::AttachRequest& request);
// INVALID_ARGUMENT "invalid port N: a port must be between 1 and 65535" for a
// port outside 1-65535.
absl::StatusOr<session::PortForwardSpec> portForwardSpecOf(
    const ::runtime::v1::PortForwardRequest& request);

// Stores requests in the token cache and names the URL of each.
class StreamUrls {
 public:
  // `base_url` is the stream server's address, e.g. "http://127.0.0.1:10350/";
  // URLs are resolved against it like a relative reference "exec/<token>" (a
  // base without a trailing slash loses its last path segment, a base without
  // a path gets "/"). `cache` must outlive this object.
  StreamUrls(cache::TokenCache& cache, std::string_view base_url);

  // Inserts `request` and returns <base>exec|attach|portforward/<token>; the
  // cache's failure (RESOURCE_EXHAUSTED when full) otherwise, and UNAVAILABLE
  // once stopIssuing() was called. Thread-safe.
  absl::StatusOr<std::string> store(session::StreamRequest request);

  // From now on store() hands out no URL: it fails with UNAVAILABLE saying
  // crisp is shutting down. Thread-safe.
  void stopIssuing() { draining_.store(true, std::memory_order_relaxed); }

  const std::string& base() const { return base_url_; }

 private:
  cache::TokenCache& cache_;
  const std::string base_url_;  // ends with '/'
  std::atomic<bool> draining_{false};
};

}  // namespace crisp::cri
