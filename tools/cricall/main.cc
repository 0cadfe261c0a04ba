// cricall: a small CRI client for crisp's tests and for people trying crisp by
// hand. It makes one call on a CRI socket and prints the answer.
//
//   cricall --socket S version
//   cricall --socket S exec [--tty] [--stdin] [--no-stdout] [--stderr] CONTAINER -- CMD...
//   cricall --socket S attach [--tty] [--stdin] [--no-stdout] [--stderr] CONTAINER
//   cricall --socket S portforward SANDBOX [PORT...]
//   cricall --socket S raw METHOD_PATH      (empty request; prints the response size)
//
// Pods and containers on a real runtime (host network unless --pod-network):
//   cricall --socket S runp [POD_FLAGS] POD                 prints the sandbox id
//   cricall --socket S create [POD_FLAGS] [--tty] [--stdin] SANDBOX POD NAME IMAGE -- CMD...
//                                                            prints the container id
//   cricall --socket S start|rm CONTAINER
//   cricall --socket S stop CONTAINER [GRACE_SECONDS]
//   cricall --socket S stopp|rmp SANDBOX
//   cricall --socket S status CONTAINER     prints "<STATE> <started_at_ns> <exit_code>"
// POD_FLAGS: --log-dir DIR (container logs go to DIR/NAME.log), --cgroup-parent PATH,
// --pod-network (the pod gets a network namespace of its own from the runtime's
// network plugin instead of the host's).
// create must be given the same POD and POD_FLAGS as runp: the runtime reads the
// pod's settings from both calls.
//
// version prints "<runtime_name> <runtime_version> <runtime_api_version>"; exec,
// attach and portforward print the stream URL. A failed call prints
// "<CODE>: <message>" on stderr and exits 1; bad arguments exit 2.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "api/runtime/v1/api.pb.h"

#include "source/cri/grpc_client.h"

namespace {

constexpr char kUsage[] =
    "usage: cricall --socket PATH version\n"
    "       cricall --socket PATH exec [--tty] [--stdin] [--no-stdout] [--stderr] CONTAINER -- "
    "CMD...\n"
    "       cricall --socket PATH attach [--tty] [--stdin] [--no-stdout] [--stderr] CONTAINER\n"
    "       cricall --socket PATH portforward SANDBOX [PORT...]\n"
    "       cricall --socket PATH raw METHOD_PATH\n"
    "       cricall --socket PATH runp [--log-dir DIR] [--cgroup-parent PATH] [--pod-network] "
    "POD\n"
    "       cricall --socket PATH create [--log-dir DIR] [--cgroup-parent PATH] [--pod-network] "
    "[--tty] "
    "[--stdin] SANDBOX POD NAME IMAGE -- CMD...\n"
    "       cricall --socket PATH start|rm|status CONTAINER\n"
    "       cricall --socket PATH stop CONTAINER [GRACE_SECONDS]\n"
    "       cricall --socket PATH stopp|rmp SANDBOX\n";

constexpr char kRuntimeService[] = "/runtime.v1.RuntimeService/";
constexpr std::chrono::seconds kTimeout{10};
// Creating a pod or container on a real runtime mounts a root filesystem and
// starts a shim; stopping one may wait for its grace period.
constexpr std::chrono::seconds kLifecycleTimeout{60};

int usage() {
  std::fputs(kUsage, stderr);
  return 2;
}

int fail(const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

// Calls `method` with `request` and parses the answer into `response`.
int call(const std::string& socket, const std::string& method,
         const google::protobuf::Message& request, google::protobuf::Message& response,
         std::chrono::milliseconds timeout = kTimeout) {
  auto bytes = crisp::cri::unaryCallBlocking(socket, kRuntimeService + method,
                                             request.SerializeAsString(), timeout);
  if (!bytes.ok()) {
    return fail(bytes.status());
  }
  if (!response.ParseFromString(*bytes)) {
    std::fprintf(stderr, "cricall: cannot parse the %s response\n", method.c_str());
    return 1;
  }
  return 0;
}

struct StreamFlags {
  bool tty = false;
  bool stdin = false;
  bool stdout = true;
  bool stderr = false;
};

// Consumes leading --flags from args[i...]; returns false on an unknown flag.
bool parseStreamFlags(const std::vector<std::string>& args, size_t& i, StreamFlags& flags) {
  for (; i < args.size() && args[i].rfind("--", 0) == 0 && args[i] != "--"; ++i) {
    if (args[i] == "--tty") {
      flags.tty = true;
    } else if (args[i] == "--stdin") {
      flags.stdin = true;
    } else if (args[i] == "--no-stdout") {
      flags.stdout = false;
    } else if (args[i] == "--stderr") {
      flags.stderr = true;
    } else {
      return false;
    }
  }
  return true;
}

struct PodFlags {
  std::string log_dir;
  std::string cgroup_parent;
  bool pod_network = false;
};

// Consumes --log-dir, --cgroup-parent, --pod-network, and for create --tty and --stdin, from
// args[i...]; returns false on an unknown flag or a missing value.
bool parsePodFlags(const std::vector<std::string>& args, size_t& i, PodFlags& pod,
                   StreamFlags* container) {
  for (; i < args.size() && args[i].rfind("--", 0) == 0 && args[i] != "--"; ++i) {
    if ((args[i] == "--log-dir" || args[i] == "--cgroup-parent") && i + 1 < args.size()) {
      (args[i] == "--log-dir" ? pod.log_dir : pod.cgroup_parent) = args[i + 1];
      ++i;
    } else if (args[i] == "--pod-network") {
      pod.pod_network = true;
    } else if (container != nullptr && args[i] == "--tty") {
      container->tty = true;
    } else if (container != nullptr && args[i] == "--stdin") {
      container->stdin = true;
    } else {
      return false;
    }
  }
  return true;
}

// Host network (no network plugin) or the pod's own, a PID namespace per
// container, IPC shared in the pod: what the kubelet sends for a hostNetwork pod
// or a pod on the cluster network.
void setNamespaces(runtime::v1::NamespaceOption& ns, const PodFlags& flags) {
  ns.set_network(flags.pod_network ? runtime::v1::POD : runtime::v1::NODE);
  ns.set_pid(runtime::v1::CONTAINER);
  ns.set_ipc(runtime::v1::POD);
}

// The pod's configuration, identical for RunPodSandbox and CreateContainer.
runtime::v1::PodSandboxConfig podConfig(const std::string& name, const PodFlags& flags) {
  runtime::v1::PodSandboxConfig config;
  config.mutable_metadata()->set_name(name);
  config.mutable_metadata()->set_uid("cricall-" + name);
  config.mutable_metadata()->set_namespace_("default");
  config.set_log_directory(flags.log_dir);
  config.mutable_labels()->insert({"io.kubernetes.pod.name", name});
  auto* linux = config.mutable_linux();
  linux->set_cgroup_parent(flags.cgroup_parent);
  setNamespaces(*linux->mutable_security_context()->mutable_namespace_options(), flags);
  return config;
}

// start, stop, rm, stopp, rmp: one id, an empty answer.
int lifecycle(const std::string& socket, const std::string& verb,
              const std::vector<std::string>& args, size_t i) {
  if (i >= args.size()) {
    return usage();
  }
  const std::string id = args[i++];
  if (verb == "stop") {
    runtime::v1::StopContainerRequest request;
    request.set_container_id(id);
    if (i < args.size()) {
      char* end = nullptr;
      const long grace = std::strtol(args[i].c_str(), &end, 10);
      if (args[i].empty() || *end != '\0' || grace < 0 || grace > 3600 || i + 1 != args.size()) {
        return usage();
      }
      request.set_timeout(grace);
    }
    runtime::v1::StopContainerResponse response;
    return call(socket, "StopContainer", request, response,
                kLifecycleTimeout + std::chrono::seconds(request.timeout()));
  }
  if (i != args.size()) {
    return usage();
  }
  if (verb == "start") {
    runtime::v1::StartContainerRequest request;
    request.set_container_id(id);
    runtime::v1::StartContainerResponse response;
    return call(socket, "StartContainer", request, response, kLifecycleTimeout);
  }
  if (verb == "rm") {
    runtime::v1::RemoveContainerRequest request;
    request.set_container_id(id);
    runtime::v1::RemoveContainerResponse response;
    return call(socket, "RemoveContainer", request, response, kLifecycleTimeout);
  }
  if (verb == "stopp") {
    runtime::v1::StopPodSandboxRequest request;
    request.set_pod_sandbox_id(id);
    runtime::v1::StopPodSandboxResponse response;
    return call(socket, "StopPodSandbox", request, response, kLifecycleTimeout);
  }
  runtime::v1::RemovePodSandboxRequest request;
  request.set_pod_sandbox_id(id);
  runtime::v1::RemovePodSandboxResponse response;
  return call(socket, "RemovePodSandbox", request, response, kLifecycleTimeout);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 3 || args[0] != "--socket") {
    return usage();
  }
  const std::string socket = args[1];
  const std::string verb = args[2];
  size_t i = 3;

  if (verb == "version" && i == args.size()) {
    runtime::v1::VersionRequest request;
    request.set_version("v1");
    runtime::v1::VersionResponse response;
    if (int rc = call(socket, "Version", request, response); rc != 0) {
      return rc;
    }
    std::printf("%s %s %s\n", response.runtime_name().c_str(),
                response.runtime_version().c_str(), response.runtime_api_version().c_str());
    return 0;
  }

  if (verb == "exec" || verb == "attach") {
    StreamFlags flags;
    if (!parseStreamFlags(args, i, flags) || i >= args.size()) {
      return usage();
    }
    const std::string container = args[i++];
    int rc;
    std::string url;
    if (verb == "exec") {
      if (i >= args.size() || args[i] != "--" || i + 1 >= args.size()) {
        return usage();
      }
      runtime::v1::ExecRequest request;
      request.set_container_id(container);
      for (++i; i < args.size(); ++i) {
        request.add_cmd(args[i]);
      }
      request.set_tty(flags.tty);
      request.set_stdin(flags.stdin);
      request.set_stdout(flags.stdout);
      request.set_stderr(flags.stderr);
      runtime::v1::ExecResponse response;
      rc = call(socket, "Exec", request, response);
      url = response.url();
    } else {
      if (i != args.size()) {
        return usage();
      }
      runtime::v1::AttachRequest request;
      request.set_container_id(container);
      request.set_tty(flags.tty);
      request.set_stdin(flags.stdin);
      request.set_stdout(flags.stdout);
      request.set_stderr(flags.stderr);
      runtime::v1::AttachResponse response;
      rc = call(socket, "Attach", request, response);
      url = response.url();
    }
    if (rc == 0) {
      std::printf("%s\n", url.c_str());
    }
    return rc;
  }

  if (verb == "portforward" && i < args.size()) {
    runtime::v1::PortForwardRequest request;
    request.set_pod_sandbox_id(args[i++]);
    for (; i < args.size(); ++i) {
      request.add_port(std::atoi(args[i].c_str()));
    }
    runtime::v1::PortForwardResponse response;
    if (int rc = call(socket, "PortForward", request, response); rc != 0) {
      return rc;
    }
    std::printf("%s\n", response.url().c_str());
    return 0;
  }

  if (verb == "runp") {
    PodFlags pod;
    if (!parsePodFlags(args, i, pod, nullptr) || i + 1 != args.size()) {
      return usage();
    }
    runtime::v1::RunPodSandboxRequest request;
    *request.mutable_config() = podConfig(args[i], pod);
    runtime::v1::RunPodSandboxResponse response;
    if (int rc = call(socket, "RunPodSandbox", request, response, kLifecycleTimeout); rc != 0) {
      return rc;
    }
    std::printf("%s\n", response.pod_sandbox_id().c_str());
    return 0;
  }

  if (verb == "create") {
    PodFlags pod;
    StreamFlags flags;
    if (!parsePodFlags(args, i, pod, &flags) || i + 5 >= args.size() || args[i + 4] != "--") {
      return usage();
    }
    runtime::v1::CreateContainerRequest request;
    request.set_pod_sandbox_id(args[i]);
    *request.mutable_sandbox_config() = podConfig(args[i + 1], pod);
    auto* config = request.mutable_config();
    const std::string& name = args[i + 2];
    config->mutable_metadata()->set_name(name);
    config->mutable_image()->set_image(args[i + 3]);
    for (i += 5; i < args.size(); ++i) {
      config->add_command(args[i]);
    }
    if (!pod.log_dir.empty()) {
      config->set_log_path(name + ".log");
    }
    config->set_tty(flags.tty);
    config->set_stdin(flags.stdin);
    setNamespaces(*config->mutable_linux()->mutable_security_context()->mutable_namespace_options(),
                  pod);
    runtime::v1::CreateContainerResponse response;
    if (int rc = call(socket, "CreateContainer", request, response, kLifecycleTimeout); rc != 0) {
      return rc;
    }
    std::printf("%s\n", response.container_id().c_str());
    return 0;
  }

  if (verb == "start" || verb == "stop" || verb == "rm" || verb == "stopp" || verb == "rmp") {
    return lifecycle(socket, verb, args, i);
  }

  if (verb == "status" && i + 1 == args.size()) {
    runtime::v1::ContainerStatusRequest request;
    request.set_container_id(args[i]);
    runtime::v1::ContainerStatusResponse response;
    if (int rc = call(socket, "ContainerStatus", request, response); rc != 0) {
      return rc;
    }
    const auto& status = response.status();
    std::printf("%s %lld %d\n", runtime::v1::ContainerState_Name(status.state()).c_str(),
                static_cast<long long>(status.started_at()), status.exit_code());
    return 0;
  }

  if (verb == "raw" && i + 1 == args.size()) {
    auto bytes = crisp::cri::unaryCallBlocking(socket, args[i], "", kTimeout);
    if (!bytes.ok()) {
      return fail(bytes.status());
    }
    std::printf("%zu\n", bytes->size());
    return 0;
  }
  return usage();
}
