#pragma once

// The Kubernetes API routes of the development API server: discovery, pods,
// namespaces and the exec/attach/portforward subresources. A request becomes
// either a finished response or a ProxyTarget: the streaming URL the runtime
// returned, to which the caller forwards the client's connection
// (stream_proxy.h), as the kubelet does.
//
// Only namespace "default" exists. Each CRI container is one pod named by the
// container's metadata name, with one container of that name.
//
// Thread-safe: handle() may run on many connection threads at once; the only
// shared state is the PodSource, which is thread-safe itself.

#include <cstdint>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "absl/strings/string_view.h"

#include "tools/devapiserver/http_message.h"
#include "tools/devapiserver/pod_source.h"

namespace crisp::devapi {

struct ApiOptions {
  // host:port the server is reachable at, as listed in serverAddressByClientCIDRs.
  std::string server_address;
  // spec.nodeName of every pod.
  std::string node_name = "crisp-dev";
  // Wall clock in Unix nanoseconds, for ages in tables. Defaults to the system clock.
  std::function<int64_t()> now_ns;
};

// The client's request is to be proxied to `url` (http://host:port/path).
struct ProxyTarget {
  std::string url;
};

using HandlerResult = std::variant<HttpResponse, ProxyTarget>;

class ApiHandler {
 public:
  // `pods` must outlive the handler.
  ApiHandler(PodSource& pods, ApiOptions options);

  // Routes one request. Never fails: errors are Status responses.
  HandlerResult handle(const HttpRequest& request);

 private:
  HandlerResult handleApiV1(const HttpRequest& request, const std::vector<std::string>& parts);
  // Lists pods as a PodList or a Table; `only_name`, when set, keeps that pod only.
  HttpResponse listPods(const HttpRequest& request, bool all_namespaces, absl::string_view ns,
                        const std::string* only_name);
  HttpResponse getPod(const HttpRequest& request, absl::string_view name);
  HandlerResult streamSubresource(const HttpRequest& request, absl::string_view name,
                                  absl::string_view subresource);
  int64_t nowNs() const;

  PodSource& pods_;
  ApiOptions options_;
  int64_t start_ns_;  // creationTimestamp of the namespace
};

// A metav1.Status failure response as the apiserver writes it, for example
// statusResponse(404, "NotFound", "pods \"x\" not found", "x", "pods").
// `name` and `kind` fill "details" when non-empty.
HttpResponse statusResponse(int code, absl::string_view reason, absl::string_view message,
                            absl::string_view name = "", absl::string_view kind = "");

// Kubernetes' short human form of a duration ("45s", "3m12s", "5h", "12d").
std::string humanDuration(int64_t seconds);

}  // namespace crisp::devapi
