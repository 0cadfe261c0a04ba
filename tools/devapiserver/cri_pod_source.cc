#include "tools/devapiserver/cri_pod_source.h"

#include "absl/strings/str_cat.h"
#include "api/runtime/v1/api.pb.h"

namespace crisp::devapi {
namespace {

constexpr char kListContainers[] = "/runtime.v1.RuntimeService/ListContainers";
constexpr char kContainerStatus[] = "/runtime.v1.RuntimeService/ContainerStatus";
constexpr char kExec[] = "/runtime.v1.RuntimeService/Exec";
constexpr char kAttach[] = "/runtime.v1.RuntimeService/Attach";
constexpr char kPortForward[] = "/runtime.v1.RuntimeService/PortForward";

ContainerState stateOf(runtime::v1::ContainerState state) {
  switch (state) {
    case runtime::v1::CONTAINER_CREATED:
      return ContainerState::kCreated;
    case runtime::v1::CONTAINER_RUNNING:
      return ContainerState::kRunning;
    case runtime::v1::CONTAINER_EXITED:
      return ContainerState::kExited;
    default:
      return ContainerState::kUnknown;
  }
}

// Calls `method` with `request` and parses the reply into `response`.
template <typename Request, typename Response>
absl::Status roundTrip(const CriPodSource::UnaryCall& call, const char* method,
                       const Request& request, Response* response) {
  std::string bytes;
  if (!request.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("cannot serialize the request for ", method));
  }
  absl::StatusOr<std::string> reply = call(method, bytes);
  if (!reply.ok()) {
    return reply.status();
  }
  if (!response->ParseFromString(*reply)) {
    return absl::InternalError(
        absl::StrCat("the runtime's reply to ", method, " is not a valid message"));
  }
  return absl::OkStatus();
}

}  // namespace

CriPodSource::CriPodSource(UnaryCall call) : call_(std::move(call)) {}

absl::StatusOr<std::vector<PodInfo>> CriPodSource::listPods() {
  runtime::v1::ListContainersRequest request;
  runtime::v1::ListContainersResponse response;
  if (absl::Status s = roundTrip(call_, kListContainers, request, &response); !s.ok()) {
    return s;
  }
  std::vector<PodInfo> pods;
  pods.reserve(static_cast<size_t>(response.containers_size()));
  for (const runtime::v1::Container& c : response.containers()) {
    PodInfo pod;
    pod.name = c.metadata().name();
    pod.container_id = c.id();
    pod.sandbox_id = c.pod_sandbox_id();
    pod.image = c.image().image();
    pod.state = stateOf(c.state());
    pod.created_at_ns = c.created_at();
    pod.labels.insert(c.labels().begin(), c.labels().end());
    pod.annotations.insert(c.annotations().begin(), c.annotations().end());
    if (pod.name.empty()) {
      // Nameless containers cannot be addressed as pods; they are left out.
      continue;
    }
    if (pod.state == ContainerState::kExited) {
      // The exit code decides between Succeeded and Failed. A container removed in
      // between simply keeps exit code 0.
      runtime::v1::ContainerStatusRequest status_request;
      status_request.set_container_id(c.id());
      runtime::v1::ContainerStatusResponse status_response;
      if (roundTrip(call_, kContainerStatus, status_request, &status_response).ok()) {
        pod.exit_code = status_response.status().exit_code();
        pod.started_at_ns = status_response.status().started_at();
      }
    }
    pods.push_back(std::move(pod));
  }
  return pods;
}

absl::StatusOr<std::string> CriPodSource::exec(const std::string& container_id,
                                               const StreamOptions& options) {
  runtime::v1::ExecRequest request;
  request.set_container_id(container_id);
  for (const std::string& word : options.command) {
    request.add_cmd(word);
  }
  request.set_tty(options.tty);
  request.set_stdin(options.stdin);
  request.set_stdout(options.stdout);
  request.set_stderr(options.stderr);
  runtime::v1::ExecResponse response;
  if (absl::Status s = roundTrip(call_, kExec, request, &response); !s.ok()) {
    return s;
  }
  return response.url();
}

absl::StatusOr<std::string> CriPodSource::attach(const std::string& container_id,
                                                 const StreamOptions& options) {
  runtime::v1::AttachRequest request;
  request.set_container_id(container_id);
  request.set_stdin(options.stdin);
  request.set_tty(options.tty);
  request.set_stdout(options.stdout);
  request.set_stderr(options.stderr);
  runtime::v1::AttachResponse response;
  if (absl::Status s = roundTrip(call_, kAttach, request, &response); !s.ok()) {
    return s;
  }
  return response.url();
}

absl::StatusOr<std::string> CriPodSource::portForward(const std::string& sandbox_id,
                                                      const std::vector<int32_t>& ports) {
  runtime::v1::PortForwardRequest request;
  request.set_pod_sandbox_id(sandbox_id);
  for (const int32_t port : ports) {
    request.add_port(port);
  }
  runtime::v1::PortForwardResponse response;
  if (absl::Status s = roundTrip(call_, kPortForward, request, &response); !s.ok()) {
    return s;
  }
  return response.url();
}

}  // namespace crisp::devapi
