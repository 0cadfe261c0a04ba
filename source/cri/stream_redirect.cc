#include "source/cri/stream_redirect.h"

#include "absl/strings/str_cat.h"
#include "api/runtime/v1/api.pb.h"

#include "source/common/logger.h"

namespace crisp::cri {
namespace {

constexpr char kExecPath[] = "/runtime.v1.RuntimeService/Exec";
constexpr char kAttachPath[] = "/runtime.v1.RuntimeService/Attach";
constexpr char kPortForwardPath[] = "/runtime.v1.RuntimeService/PortForward";

template <class Message>
absl::StatusOr<Message> decodeMessage(const std::string& bytes, const char* what) {
  Message message;
  if (!message.ParseFromString(bytes)) {
    return absl::InternalError(absl::StrCat("cannot decode the ", what, " as ",
                                            Message::descriptor()->full_name()));
  }
  return message;
}

// Stores `spec` with the runtime's URL from `response` and returns `response`
// with crisp's URL in its place.
template <class Response, class Spec>
absl::StatusOr<std::string> redirect(StreamUrls& urls, const std::string& response_bytes,
                                     Spec spec) {
  absl::StatusOr<Response> response = decodeMessage<Response>(response_bytes, "runtime's answer");
  if (!response.ok()) {
    return response.status();
  }
  if (response->url().empty()) {
    return absl::InternalError(absl::StrCat("the runtime's ", Response::descriptor()->name(),
                                            " carries no stream URL"));
  }
  spec.upstream_url = response->url();
  absl::StatusOr<std::string> url = urls.store(session::StreamRequest{std::move(spec)});
  if (!url.ok()) {
    return url.status();
  }
  CRISP_LOG(kCri, debug, "{} redirected from the runtime's stream server {}",
            Response::descriptor()->name(), response->url());
  response->set_url(std::move(url).value());
  std::string out;
  if (!response->SerializeToString(&out)) {
    return absl::InternalError(absl::StrCat("cannot encode ", Response::descriptor()->name()));
  }
  return out;
}

}  // namespace

StreamRedirect::StreamRedirect(cache::TokenCache& cache, std::string_view base_url)
    : urls_(cache, base_url) {}

void StreamRedirect::install(Passthrough& passthrough) {
  for (const char* path : {kExecPath, kAttachPath, kPortForwardPath}) {
    passthrough.rewriteResponses(path, [this, path](const std::string& request,
                                                    std::string response) {
      return rewrite(path, request, response);
    });
  }
}

absl::StatusOr<std::string> StreamRedirect::answerExec(const std::string& request) {
  absl::StatusOr<::runtime::v1::ExecRequest> r =
      decodeMessage<::runtime::v1::ExecRequest>(request, "request");
  if (!r.ok()) {
    return absl::InvalidArgumentError(r.status().message());
  }
  // The kubelet's order and texts, as for the embedded runtime.
  if (r->container_id().empty()) {
    return absl::InvalidArgumentError("missing required container_id");
  }
  if (r->tty() && r->stderr()) {
    return absl::InvalidArgumentError("tty and stderr cannot both be true");
  }
  if (!r->stdin() && !r->stdout() && !r->stderr()) {
    return absl::InvalidArgumentError("one of stdin, stdout, or stderr must be set");
  }
  if (r->cmd().empty()) {
    return absl::InvalidArgumentError("missing required cmd");
  }
  absl::StatusOr<std::string> url = urls_.store(session::StreamRequest{execSpecOf(*r)});
  if (!url.ok()) {
    return url.status();
  }
  ::runtime::v1::ExecResponse response;
  response.set_url(std::move(url).value());
  std::string out;
  if (!response.SerializeToString(&out)) {
    return absl::InternalError("cannot encode ExecResponse");
  }
  return out;
}

absl::StatusOr<std::string> StreamRedirect::answerPortForward(const std::string& request) {
  absl::StatusOr<::runtime::v1::PortForwardRequest> r =
      decodeMessage<::runtime::v1::PortForwardRequest>(request, "request");
  if (!r.ok()) {
    return absl::InvalidArgumentError(r.status().message());
  }
  if (r->pod_sandbox_id().empty()) {
    return absl::InvalidArgumentError("missing required pod_sandbox_id");
  }
  absl::StatusOr<session::PortForwardSpec> spec = portForwardSpecOf(*r);
  if (!spec.ok()) {
    return spec.status();
  }
  absl::StatusOr<std::string> url = urls_.store(session::StreamRequest{std::move(*spec)});
  if (!url.ok()) {
    return url.status();
  }
  ::runtime::v1::PortForwardResponse response;
  response.set_url(std::move(url).value());
  std::string out;
  if (!response.SerializeToString(&out)) {
    return absl::InternalError("cannot encode PortForwardResponse");
  }
  return out;
}

absl::StatusOr<std::string> StreamRedirect::rewrite(std::string_view path,
                                                    const std::string& request,
                                                    const std::string& response) {
  using namespace ::runtime::v1;  // NOLINT(build/namespaces): message names only
  if (path == kExecPath) {
    absl::StatusOr<ExecRequest> r = decodeMessage<ExecRequest>(request, "request");
    if (!r.ok()) {
      return r.status();
    }
    return redirect<ExecResponse>(urls_, response, execSpecOf(*r));
  }
  if (path == kAttachPath) {
    absl::StatusOr<AttachRequest> r = decodeMessage<AttachRequest>(request, "request");
    if (!r.ok()) {
      return r.status();
    }
    return redirect<AttachResponse>(urls_, response, attachSpecOf(*r));
  }
  if (path == kPortForwardPath) {
    absl::StatusOr<PortForwardRequest> r = decodeMessage<PortForwardRequest>(request, "request");
    if (!r.ok()) {
      return r.status();
    }
    absl::StatusOr<session::PortForwardSpec> spec = portForwardSpecOf(*r);
    if (!spec.ok()) {
      return spec.status();
    }
    return redirect<PortForwardResponse>(urls_, response, std::move(*spec));
  }
  return response;
}

}  // namespace crisp::cri
