#pragma once

// ContainerdClient: containerd's own gRPC API (Containers and Tasks services,
// api/containerd/...) on its unix socket, asynchronous on a crisp Dispatcher.
// It runs extra processes ("execs") in running containers the way the CRI
// plugin does: the process spec is the container's own OCI process (env, cwd,
// user, capabilities, rlimits, ...) with the request's args and terminal.
//
//   ContainerdClient client(dispatcher, "/run/containerd/containerd.sock");
//   client.exec({.container_id = id, .exec_id = ContainerdClient::newExecId(),
//                .args = {"ls"}, .stdout_path = fifo}, [](absl::StatusOr<uint32_t> pid) {});
//   client.wait(id, exec_id, [](absl::StatusOr<ProcessExit> exit) {});
//
// stdio: containerd's shim opens the paths given to exec() itself (FIFOs made
// by the caller, or empty for none). The caller opens its ends before exec():
// output FIFOs for reading (O_RDONLY|O_NONBLOCK), the stdin FIFO so that it
// stays open (O_RDWR); the shim sees stdin's end only after every writer closed
// and closeStdin() was called. With terminal=true there is one output (stdout).
// Without a terminal the runc shim copies stdout and stderr together: either
// all three paths are empty (the process gets /dev/null) or both outputs are
// given (a caller that wants no stderr still drains one). The shim also holds
// a read end of each output FIFO itself, so its writes never fail for want of
// a reader; a caller that stops reading stalls the process, not the shim.
//
// Every call carries the namespace as the `containerd-namespace` header. Errors
// keep containerd's gRPC code and message, prefixed with the method, e.g.
// NOT_FOUND "containerd Containers/Get: container \"x\" in namespace \"k8s.io\":
// not found". A socket that cannot be reached is UNAVAILABLE naming it.
//
// Calls have a deadline (options.call_timeout; options.process_timeout for
// the process calls of exec(), kill() and deleteProcess()) except wait(), which
// lasts as long as the process: the HTTP/2 stream simply stays open, and
// containerd answers it when the process exits (or with an error when the task
// goes).
//
// Threads and lifetime: everything runs on the dispatcher's thread, callbacks
// included (never from inside a ContainerdClient method). Destroying the client
// cancels its calls without callbacks; cancel(id) does so for one call. A
// callback may destroy the client.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include <nlohmann/json.hpp>

#include "source/common/dispatcher.h"
#include "source/cri/grpc_client.h"

namespace crisp::containerd {

// The namespace of the containers the CRI plugin creates.
inline constexpr char kCriNamespace[] = "k8s.io";
inline constexpr char kNamespaceHeader[] = "containerd-namespace";
inline constexpr char kProcessTypeUrl[] =
    "types.containerd.io/opencontainers/runtime-spec/1/Process";
// containerd's identifier rule (identifiers.Validate): at most 76 characters,
// letters and digits joined by '.', '_' or '-'.
inline constexpr size_t kMaxIdentifierLength = 76;

struct ContainerdClientOptions {
  std::string namespace_name = kCriNamespace;
  // Deadline of every call but wait() and those below.
  std::chrono::milliseconds call_timeout{30000};
  // Deadline of exec()'s Tasks/Exec, Tasks/Start and its cleanup, and of
  // kill() and deleteProcess(): kubelet's default runtime-request-timeout. A
  // loaded shim can take tens of seconds to start a process that then runs.
  std::chrono::milliseconds process_timeout{120000};
  // Names the peer in connection errors; the socket path when empty.
  std::string peer_name;
};

struct ExecRequest {
  std::string container_id;
  // Unique in the container; see newExecId().
  std::string exec_id;
  std::vector<std::string> args;
  bool terminal = false;
  // FIFO paths the shim opens; empty for none. stderr must be empty with a
  // terminal, and given with stdout without one (see above).
  std::string stdin_path;
  std::string stdout_path;
  std::string stderr_path;
};

struct ProcessExit {
  // As containerd reports it: the exit code, or 128 + the signal's number for a
  // process ended by a signal.
  uint32_t exit_status = 0;
  absl::Time exited_at;
};

// A task of the namespace as Tasks/List reports it.
struct TaskSummary {
  std::string container_id;
  uint32_t pid = 0;
  bool running = false;
};

// Where a pod sandbox's network is (see ContainerdClient::sandboxNetwork()).
struct SandboxNetwork {
  // The host pid of the sandbox's task (its pause process).
  uint32_t pid = 0;
  // The network namespace file to enter; see sandboxNamespacePath().
  std::string namespace_path;
};

// The CRI plugin's label telling its sandboxes ("sandbox") from its
// containers ("container").
inline constexpr char kKindLabel[] = "io.cri-containerd.kind";

// The network namespace file of a sandbox whose task runs as `pid`: the path
// its OCI spec gives the "network" entry of linux.namespaces (the CRI plugin
// names the namespace it made for the pod's network, /var/run/netns/cni-...),
// else /proc/<pid>/ns/net (a namespace runc made without a path, or, for a
// host-network pod whose spec has no entry, the host's namespace).
std::string sandboxNamespacePath(const nlohmann::json& spec, uint32_t pid);

// Builds an exec's OCI process (runtime-spec Process, JSON) from a container's
// OCI spec: the container's process with `args` and `terminal` replaced, TERM
// set when there is a terminal and none is set, and no console size (resize
// sets it). INVALID_ARGUMENT when the spec has no process object or `args` is
// empty.
absl::StatusOr<nlohmann::json> execProcessSpec(const nlohmann::json& container_spec,
                                               const std::vector<std::string>& args,
                                               bool terminal);

// True when `id` passes containerd's identifier rule.
bool validIdentifier(std::string_view id);

class ContainerdClient {
 public:
  using CallId = uint64_t;
  using DoneCallback = std::function<void(const absl::Status&)>;
  using SpecCallback = std::function<void(absl::StatusOr<nlohmann::json>)>;
  using PidCallback = std::function<void(absl::StatusOr<uint32_t>)>;
  using ExitCallback = std::function<void(absl::StatusOr<ProcessExit>)>;
  using NetworkCallback = std::function<void(absl::StatusOr<SandboxNetwork>)>;
  using TasksCallback = std::function<void(absl::StatusOr<std::vector<TaskSummary>>)>;
  using ExecIdsCallback = std::function<void(absl::StatusOr<std::vector<std::string>>)>;

  ContainerdClient(event::Dispatcher& dispatcher, std::string socket_path,
                   ContainerdClientOptions options = {});
  ~ContainerdClient();
  ContainerdClient(const ContainerdClient&) = delete;
  ContainerdClient& operator=(const ContainerdClient&) = delete;

  // A fresh exec id: "crisp-" and 24 random hex digits.
  static std::string newExecId();
  // Whether `id` has the form of newExecId()'s ids ("crisp-" and lowercase hex
  // digits): an exec some crisp made.
  static bool isCrispExecId(std::string_view id);

  // Containers/Get: the container's OCI spec, parsed. INTERNAL when the record
  // holds no spec or its JSON does not parse.
  CallId containerSpec(const std::string& container_id, SpecCallback done);

  // Containers/Get, Tasks/Exec, Tasks/Start: the process runs, `done` gets its
  // host pid. Only the CRI plugin's containers (kKindLabel "container") take
  // execs: a pod sandbox or a record without the label is NOT_FOUND, as the
  // CRI plugin answers. When Start fails (a deadline included) the process may
  // run anyway: it gets SIGKILL (Tasks/Kill; when that succeeds, Tasks/Wait for
  // its end) and is deleted (Tasks/DeleteProcess) before `done` gets Start's
  // error. The returned id cancels whichever step is in flight.
  CallId exec(const ExecRequest& request, PidCallback done);

  // Tasks/ResizePty: the terminal of a process started with terminal=true.
  CallId resize(const std::string& container_id, const std::string& exec_id, uint32_t width,
                uint32_t height, DoneCallback done);
  // Tasks/CloseIO(stdin): the shim closes its end of the stdin FIFO.
  CallId closeStdin(const std::string& container_id, const std::string& exec_id,
                    DoneCallback done);
  // Tasks/Kill of one exec (all=false) or, with an empty exec_id, of the task.
  CallId kill(const std::string& container_id, const std::string& exec_id, uint32_t signal,
              DoneCallback done);
  // Tasks/Wait: answers when the process has exited. No deadline.
  CallId wait(const std::string& container_id, const std::string& exec_id, ExitCallback done);
  // Tasks/DeleteProcess: frees an exited exec; `done` gets its exit.
  CallId deleteProcess(const std::string& container_id, const std::string& exec_id,
                       ExitCallback done);

  // Tasks/List: every task of the namespace.
  CallId listTasks(TasksCallback done);
  // Tasks/ListPids: the exec ids of the execs whose processes run in the
  // container's task, as the shim names them (the runc shim names an exec's
  // own process; processes it started are listed without a name and left out
  // here). An exec that has exited but was not deleted is not listed.
  CallId listExecs(const std::string& container_id, ExecIdsCallback done);

  // Containers/Get then Tasks/Get of pod sandbox `sandbox_id`: its task's pid
  // and network namespace file. Asked afresh each time: a sandbox whose task
  // was recreated has a new pid and may have a new namespace. Errors, with
  // texts that name the sandbox:
  //   NOT_FOUND            no such container, or it is one of the CRI plugin's
  //                        containers rather than a sandbox (kKindLabel);
  //   FAILED_PRECONDITION  the sandbox has no task or its task is not running;
  //   others               containerd's (unreachable, deadline, ...).
  CallId sandboxNetwork(const std::string& sandbox_id, NetworkCallback done);

  // Ends a call without its callback (no-op for a finished or unknown id).
  void cancel(CallId id);
  // Calls in flight (tests).
  size_t activeCalls() const { return calls_.size() + refusals_.size(); }

 private:
  class UnaryCall;
  struct ExecFlow;
  struct NetworkFlow;
  using ResponseCallback = std::function<void(absl::StatusOr<std::string>)>;

  // Sends one request message on `method` ("Service/Method" under
  // containerd.services.*) and reports the single response message.
  enum class Deadline { kNone, kCall, kProcess };
  CallId call(const std::string& method, const std::string& request, Deadline deadline,
              ResponseCallback done);
  CallId callAs(CallId id, const std::string& method, const std::string& request,
                Deadline deadline, ResponseCallback done);
  void finished(CallId id);
  void execStep(const std::shared_ptr<ExecFlow>& flow, absl::StatusOr<std::string> previous);
  void networkStep(const std::shared_ptr<NetworkFlow>& flow, absl::StatusOr<std::string> previous);

  event::Dispatcher& dispatcher_;
  ContainerdClientOptions options_;
  // Deleted from the loop rather than with this object: a callback that
  // destroys the client runs inside the gRPC client's frame processing.
  std::unique_ptr<cri::GrpcClient> grpc_;
  CallId next_id_ = 1;
  std::unordered_map<CallId, std::unique_ptr<UnaryCall>> calls_;
  // Requests refused before any call; their callbacks run on the next loop
  // iteration unless cancelled first.
  std::unordered_map<CallId, std::unique_ptr<event::Timer>> refusals_;
};

}  // namespace crisp::containerd
