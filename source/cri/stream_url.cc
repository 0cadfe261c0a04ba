#include "source/cri/stream_url.h"

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"

namespace crisp::cri {
namespace {

// The stream server's base URL ending with '/', resolved the way a relative
// reference "exec/<token>" is resolved against it (RFC 3986 section 5.2.3): a
// base without a path gets "/", otherwise the last path segment is dropped.
std::string resolveBase(std::string_view base) {
  const size_t scheme_end = base.find("://");
  if (scheme_end != std::string_view::npos &&
      base.find('/', scheme_end + 3) == std::string_view::npos) {
    return std::string(base) + "/";
  }
  const size_t last_slash = base.rfind('/');
  if (last_slash == std::string_view::npos) {
    return std::string(base);
  }
  return std::string(base.substr(0, last_slash + 1));
}

}  // namespace

session::ExecSpec execSpecOf(const ::runtime::v1::ExecRequest& request) {
  session::ExecSpec spec;
  spec.operation = session::Operation::kExec;
  spec.container_id = request.container_id();
  spec.command.assign(request.cmd().begin(), request.cmd().end());
  spec.tty = request.tty();
  spec.stdin = request.stdin();
  spec.stdout = request.stdout();
  spec.stderr = request.stderr();
  return spec;
}

session::ExecSpec attachSpecOf(const ::runtime::v1::AttachRequest& request) {
  session::ExecSpec spec;
  spec.operation = session::Operation::kAttach;
  spec.container_id = request.container_id();
  spec.tty = request.tty();
  spec.stdin = request.stdin();
  spec.stdout = request.stdout();
  spec.stderr = request.stderr();
  return spec;
}

absl::StatusOr<session::PortForwardSpec> portForwardSpecOf(
    const ::runtime::v1::PortForwardRequest& request) {
  session::PortForwardSpec spec;
  spec.pod_sandbox_id = request.pod_sandbox_id();
  for (int32_t port : request.port()) {
    if (port < 1 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid port ", port, ": a port must be between 1 and 65535"));
    }
    spec.ports.push_back(static_cast<uint16_t>(port));
  }
  return spec;
}

StreamUrls::StreamUrls(cache::TokenCache& cache, std::string_view base_url)
    : cache_(cache), base_url_(resolveBase(base_url)) {}

absl::StatusOr<std::string> StreamUrls::store(session::StreamRequest request) {
  const session::Operation operation = request.operation();
  if (draining_.load(std::memory_order_relaxed)) {
    return absl::UnavailableError(
        absl::StrCat("crisp is shutting down and accepts no new ", session::operationName(operation),
                     " sessions; retry on another node or after the restart"));
  }
  absl::StatusOr<std::string> token = cache_.insert(std::move(request));
  if (!token.ok()) {
    CRISP_LOG(kCri, debug, "{} request refused by the token cache: {}",
              session::operationName(operation), token.status().ToString());
    return token.status();
  }
  CRISP_LOG(kCri, debug, "{} request stored under token {}", session::operationName(operation),
            log::tokenFingerprint(*token));
  return absl::StrCat(base_url_, session::operationName(operation), "/", *token);
}

}  // namespace crisp::cri
