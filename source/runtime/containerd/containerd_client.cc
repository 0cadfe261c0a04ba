#include "source/runtime/containerd/containerd_client.h"

#include <sys/random.h>

#include <cerrno>
#include <csignal>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "api/containerd/runc/options/oci.pb.h"
#include "api/containerd/services/containers/v1/containers.pb.h"
#include "api/containerd/services/tasks/v1/tasks.pb.h"
#include "api/containerd/types/task/task.pb.h"
#include "source/common/logger.h"

namespace crisp::containerd {

namespace containers_v1 = ::containerd::services::containers::v1;
namespace tasks_v1 = ::containerd::services::tasks::v1;

namespace {

// The message the runc shim puts in a ListPids entry of an exec's process.
constexpr std::string_view kProcessDetailsType = "containerd.runc.v1.ProcessDetails";

// The terminal type the CRI plugin gives execs with a TTY.
constexpr char kDefaultTerm[] = "TERM=xterm";

std::string methodPath(const std::string& method) {
  // "Containers/Get" -> "/containerd.services.containers.v1.Containers/Get"
  const std::string service = method.substr(0, method.find('/'));
  return absl::StrCat("/containerd.services.", absl::AsciiStrToLower(service), ".v1.", method);
}

absl::Time toTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

template <class Message>
absl::StatusOr<Message> parseResponse(const char* method, const std::string& bytes) {
  Message message;
  if (!message.ParseFromString(bytes)) {
    return absl::InternalError(
        absl::StrCat("containerd ", method, ": response does not parse as ",
                     message.GetTypeName()));
  }
  return message;
}

// A call's response callback that parses the message as Response and hands
// `done` the message or the error.
template <class Response>
std::function<void(absl::StatusOr<std::string>)> parsedAs(
    const char* method, std::function<void(absl::StatusOr<Response>)> done) {
  return [method, done = std::move(done)](absl::StatusOr<std::string> bytes) {
    if (!bytes.ok()) {
      done(bytes.status());
      return;
    }
    done(parseResponse<Response>(method, *bytes));
  };
}

// `done` with the exit a WaitResponse or DeleteResponse reports.
template <class Response>
std::function<void(absl::StatusOr<Response>)> exitOf(ContainerdClient::ExitCallback done) {
  return [done = std::move(done)](absl::StatusOr<Response> response) {
    if (!response.ok()) {
      done(response.status());
      return;
    }
    done(ProcessExit{response->exit_status(), toTime(response->exited_at())});
  };
}

// The CRI plugin's kind of a container record (kKindLabel), empty without.
std::string criKind(const containers_v1::GetContainerResponse& response) {
  const auto& labels = response.container().labels();
  const auto kind = labels.find(kKindLabel);
  return kind == labels.end() ? std::string() : kind->second;
}

// The OCI spec of a Containers/Get response.
absl::StatusOr<nlohmann::json> specFromResponse(const std::string& bytes) {
  auto response = parseResponse<containers_v1::GetContainerResponse>("Containers/Get", bytes);
  if (!response.ok()) {
    return response.status();
  }
  const auto& container = response->container();
  if (!container.has_spec() || container.spec().value().empty()) {
    return absl::InternalError(
        absl::StrCat("containerd Containers/Get: container ", container.id(), " has no spec"));
  }
  nlohmann::json spec = nlohmann::json::parse(container.spec().value(), nullptr,
                                              /*allow_exceptions=*/false);
  if (spec.is_discarded() || !spec.is_object()) {
    return absl::InternalError(absl::StrCat("containerd Containers/Get: the spec of ",
                                            container.id(), " is not a JSON object (",
                                            container.spec().type_url(), ")"));
  }
  return spec;
}

}  // namespace

bool validIdentifier(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdentifierLength) {
    return false;
  }
  bool after_separator = true;  // no separator first, none doubled
  for (char c : id) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c))) {
      after_separator = false;
    } else if (c == '.' || c == '_' || c == '-') {
      if (after_separator) {
        return false;
      }
      after_separator = true;
    } else {
      return false;
    }
  }
  return !after_separator;
}

std::string sandboxNamespacePath(const nlohmann::json& spec, uint32_t pid) {
  const auto linux_it = spec.find("linux");
  if (linux_it != spec.end() && linux_it->is_object()) {
    const auto namespaces = linux_it->find("namespaces");
    if (namespaces != linux_it->end() && namespaces->is_array()) {
      for (const auto& ns : *namespaces) {
        if (!ns.is_object() || ns.value("type", nlohmann::json()) != "network") {
          continue;
        }
        const auto path = ns.find("path");
        if (path != ns.end() && path->is_string() && !path->get_ref<const std::string&>().empty()) {
          return path->get<std::string>();
        }
      }
    }
  }
  return absl::StrCat("/proc/", pid, "/ns/net");
}

absl::StatusOr<nlohmann::json> execProcessSpec(const nlohmann::json& container_spec,
                                               const std::vector<std::string>& args,
                                               bool terminal) {
  if (args.empty()) {
    return absl::InvalidArgumentError("exec: no command");
  }
  auto it = container_spec.find("process");
  if (it == container_spec.end() || !it->is_object()) {
    return absl::InvalidArgumentError("container spec has no process");
  }
  nlohmann::json process = *it;
  process["args"] = args;
  process["terminal"] = terminal;
  process.erase("consoleSize");
  // Windows only; a Linux shim refuses a process carrying both.
  process.erase("commandLine");
  if (terminal) {
    nlohmann::json& env = process["env"];
    if (!env.is_array()) {
      env = nlohmann::json::array();
    }
    bool has_term = false;
    for (const auto& entry : env) {
      if (entry.is_string() && entry.get_ref<const std::string&>().rfind("TERM=", 0) == 0) {
        has_term = true;
      }
    }
    if (!has_term) {
      env.push_back(kDefaultTerm);
    }
  }
  return process;
}

// One unary call: a single request message, a single response message.
class ContainerdClient::UnaryCall : public cri::ClientCall::Callbacks {
 public:
  UnaryCall(ContainerdClient& owner, CallId id, std::string method, ResponseCallback done)
      : owner_(owner), id_(id), method_(std::move(method)), done_(std::move(done)) {}

  void start(const std::string& request, Deadline kind) {
    std::optional<std::chrono::steady_clock::time_point> deadline;
    if (kind != Deadline::kNone) {
      deadline = std::chrono::steady_clock::now() + (kind == Deadline::kProcess
                                                         ? owner_.options_.process_timeout
                                                         : owner_.options_.call_timeout);
    }
    call_ = owner_.grpc_->startCall(methodPath(method_),
                                   {{kNamespaceHeader, owner_.options_.namespace_name}},
                                   deadline, *this);
    call_->sendMessage(request);
    call_->halfClose();
  }

  void onMessage(std::string message) override {
    ++messages_;
    response_ = std::move(message);
  }

  void onClose(const absl::Status& status, const cri::Metadata&) override {
    absl::StatusOr<std::string> result;
    if (!status.ok()) {
      result = absl::Status(status.code(),
                            absl::StrCat("containerd ", method_, ": ", status.message()));
    } else if (messages_ != 1) {
      result = absl::InternalError(absl::StrCat("containerd ", method_, ": ", messages_,
                                                " response messages, expected one"));
    } else {
      result = std::move(response_);
    }
    ResponseCallback done = std::move(done_);
    ContainerdClient& owner = owner_;
    const CallId id = id_;
    // Destroys this; nothing of it is touched after.
    owner.finished(id);
    done(std::move(result));
  }

 private:
  ContainerdClient& owner_;
  const CallId id_;
  const std::string method_;
  ResponseCallback done_;
  std::unique_ptr<cri::ClientCall> call_;
  std::string response_;
  size_t messages_ = 0;
};

// The steps of exec(): Get, Exec, Start (and Kill, Wait, DeleteProcess when
// Start fails).
struct ContainerdClient::ExecFlow {
  enum class Step { kGet, kExec, kStart, kKill, kWaitKilled, kCleanup };
  CallId id;
  ExecRequest request;
  PidCallback done;
  Step step = Step::kGet;
  absl::Status start_error;
};

// The steps of sandboxNetwork(): Containers/Get, Tasks/Get.
struct ContainerdClient::NetworkFlow {
  enum class Step { kContainer, kTask };
  CallId id;
  std::string sandbox_id;
  NetworkCallback done;
  Step step = Step::kContainer;
  nlohmann::json spec;
};

ContainerdClient::ContainerdClient(event::Dispatcher& dispatcher, std::string socket_path,
                                   ContainerdClientOptions options)
    : dispatcher_(dispatcher),
      options_(std::move(options)),
      grpc_(std::make_unique<cri::GrpcClient>(dispatcher, std::move(socket_path), [this] {
        cri::GrpcClientOptions grpc_options;
        grpc_options.peer_name =
            options_.peer_name.empty() ? "containerd" : options_.peer_name;
        return grpc_options;
      }())) {}

ContainerdClient::~ContainerdClient() {
  // Calls first: each resets its stream on the still-open connection.
  calls_.clear();
  refusals_.clear();
  dispatcher_.deferredDelete(std::move(grpc_));
}

std::string ContainerdClient::newExecId() {
  unsigned char bytes[12];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno != EINTR) {
      // getrandom(2) without flags only fails before the kernel's pool is
      // ready at boot; a clock-seeded id is unique enough within a container.
      const uint64_t t = absl::ToUnixNanos(absl::Now());
      return absl::StrCat("crisp-", absl::Hex(t, absl::kZeroPad16));
    }
    got += n > 0 ? static_cast<size_t>(n) : 0;
  }
  return absl::StrCat(
      "crisp-", absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(bytes), sizeof(bytes))));
}

bool ContainerdClient::isCrispExecId(std::string_view id) {
  constexpr std::string_view kPrefix = "crisp-";
  if (id.size() <= kPrefix.size() || id.substr(0, kPrefix.size()) != kPrefix) {
    return false;
  }
  for (char c : id.substr(kPrefix.size())) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

ContainerdClient::CallId ContainerdClient::call(const std::string& method,
                                                const std::string& request, Deadline deadline,
                                                ResponseCallback done) {
  return callAs(next_id_++, method, request, deadline, std::move(done));
}

ContainerdClient::CallId ContainerdClient::callAs(CallId id, const std::string& method,
                                                  const std::string& request,
                                                  Deadline deadline, ResponseCallback done) {
  auto unary = std::make_unique<UnaryCall>(*this, id, method, std::move(done));
  UnaryCall* raw = unary.get();
  calls_[id] = std::move(unary);
  raw->start(request, deadline);
  return id;
}

void ContainerdClient::finished(CallId id) {
  auto it = calls_.find(id);
  if (it != calls_.end()) {
    // The call is inside its own onClose: free it once that has returned.
    dispatcher_.deferredDelete(std::move(it->second));
    calls_.erase(it);
  }
}

void ContainerdClient::cancel(CallId id) {
  calls_.erase(id);
  refusals_.erase(id);
}

ContainerdClient::CallId ContainerdClient::containerSpec(const std::string& container_id,
                                                         SpecCallback done) {
  containers_v1::GetContainerRequest request;
  request.set_id(container_id);
  return call("Containers/Get", request.SerializeAsString(), Deadline::kCall,
              [done = std::move(done)](absl::StatusOr<std::string> bytes) {
                if (!bytes.ok()) {
                  done(bytes.status());
                  return;
                }
                done(specFromResponse(*bytes));
              });
}

ContainerdClient::CallId ContainerdClient::exec(const ExecRequest& request, PidCallback done) {
  auto flow = std::make_shared<ExecFlow>();
  flow->id = next_id_++;
  flow->request = request;
  flow->done = std::move(done);
  absl::Status invalid;
  if (!validIdentifier(request.exec_id)) {
    invalid = absl::InvalidArgumentError(
        absl::StrCat("exec id \"", absl::CEscape(request.exec_id),
                     "\" is not a containerd identifier (letters and digits joined by . _ -, "
                     "at most ", kMaxIdentifierLength, " characters)"));
  } else if (request.args.empty()) {
    invalid = absl::InvalidArgumentError("exec: no command");
  } else if (request.terminal && !request.stderr_path.empty()) {
    invalid = absl::InvalidArgumentError("exec: a terminal has no separate stderr");
  } else if (!request.terminal &&
             (!request.stdin_path.empty() || !request.stdout_path.empty() ||
              !request.stderr_path.empty()) &&
             (request.stdout_path.empty() || request.stderr_path.empty())) {
    invalid = absl::InvalidArgumentError(
        "exec: without a terminal, containerd's runc shim needs both stdout and stderr "
        "paths once any stdio path is given");
  }
  if (!invalid.ok()) {
    // Reported like any call result: from the loop, never from inside exec().
    const CallId id = flow->id;
    auto timer = std::make_unique<event::Timer>(dispatcher_, [this, id, flow, invalid] {
      auto it = refusals_.find(id);
      if (it != refusals_.end()) {
        dispatcher_.deferredDelete(std::move(it->second));
        refusals_.erase(it);
      }
      flow->done(invalid);
    });
    timer->enable(std::chrono::milliseconds(0));
    refusals_[id] = std::move(timer);
    return id;
  }
  containers_v1::GetContainerRequest get;
  get.set_id(request.container_id);
  callAs(flow->id, "Containers/Get", get.SerializeAsString(), Deadline::kCall,
         [this, flow](absl::StatusOr<std::string> bytes) { execStep(flow, std::move(bytes)); });
  return flow->id;
}

void ContainerdClient::execStep(const std::shared_ptr<ExecFlow>& flow,
                                absl::StatusOr<std::string> previous) {
  const ExecRequest& req = flow->request;
  auto next = [this, flow](const char* method, const std::string& bytes) {
    callAs(flow->id, method, bytes, Deadline::kProcess,
           [this, flow](absl::StatusOr<std::string> result) { execStep(flow, std::move(result)); });
  };
  switch (flow->step) {
    case ExecFlow::Step::kGet: {
      if (!previous.ok()) {
        flow->done(previous.status());
        return;
      }
      auto record =
          parseResponse<containers_v1::GetContainerResponse>("Containers/Get", *previous);
      if (!record.ok()) {
        flow->done(record.status());
        return;
      }
      const std::string kind = criKind(*record);
      if (kind != "container") {
        // The CRI plugin keeps only its containers in its store; it answers
        // NOT_FOUND for a sandbox's id and for records it did not make.
        flow->done(absl::NotFoundError(absl::StrCat(
            "container \"", req.container_id, "\" not found (",
            kind.empty() ? absl::StrCat("it has no ", kKindLabel, " label") : "it is a pod sandbox",
            "; only the CRI plugin's containers take execs)")));
        return;
      }
      auto spec = specFromResponse(*previous);
      if (!spec.ok()) {
        flow->done(spec.status());
        return;
      }
      auto process = execProcessSpec(*spec, req.args, req.terminal);
      if (!process.ok()) {
        flow->done(absl::Status(process.status().code(),
                                absl::StrCat("container ", req.container_id, ": ",
                                             process.status().message())));
        return;
      }
      tasks_v1::ExecProcessRequest exec;
      exec.set_container_id(req.container_id);
      exec.set_exec_id(req.exec_id);
      exec.set_stdin(req.stdin_path);
      exec.set_stdout(req.stdout_path);
      exec.set_stderr(req.stderr_path);
      exec.set_terminal(req.terminal);
      exec.mutable_spec()->set_type_url(kProcessTypeUrl);
      exec.mutable_spec()->set_value(process->dump());
      flow->step = ExecFlow::Step::kExec;
      next("Tasks/Exec", exec.SerializeAsString());
      return;
    }
    case ExecFlow::Step::kExec: {
      if (!previous.ok()) {
        flow->done(previous.status());
        return;
      }
      tasks_v1::StartRequest start;
      start.set_container_id(req.container_id);
      start.set_exec_id(req.exec_id);
      flow->step = ExecFlow::Step::kStart;
      next("Tasks/Start", start.SerializeAsString());
      return;
    }
    case ExecFlow::Step::kStart: {
      if (previous.ok()) {
        auto response = parseResponse<tasks_v1::StartResponse>("Tasks/Start", *previous);
        if (response.ok()) {
          flow->done(response->pid());
          return;
        }
        previous = response.status();
      }
      // Start may have failed only here (a deadline while a loaded shim still
      // started it): the process may run. Kill it; a process that never ran
      // or already ended makes Kill fail, and needs no waiting for.
      flow->start_error = previous.status();
      tasks_v1::KillRequest kill;
      kill.set_container_id(req.container_id);
      kill.set_exec_id(req.exec_id);
      kill.set_signal(SIGKILL);
      flow->step = ExecFlow::Step::kKill;
      next("Tasks/Kill", kill.SerializeAsString());
      return;
    }
    case ExecFlow::Step::kKill:
      if (previous.ok()) {
        // Killed: DeleteProcess refuses a process until it has ended.
        tasks_v1::WaitRequest wait;
        wait.set_container_id(req.container_id);
        wait.set_exec_id(req.exec_id);
        flow->step = ExecFlow::Step::kWaitKilled;
        next("Tasks/Wait", wait.SerializeAsString());
        return;
      }
      [[fallthrough]];
    case ExecFlow::Step::kWaitKilled: {
      if (!previous.ok()) {
        CRISP_LOG(kRuntime, debug, "containerd: exec {} in {} after a failed start: {}",
                  req.exec_id, req.container_id, previous.status().ToString());
      }
      tasks_v1::DeleteProcessRequest del;
      del.set_container_id(req.container_id);
      del.set_exec_id(req.exec_id);
      flow->step = ExecFlow::Step::kCleanup;
      next("Tasks/DeleteProcess", del.SerializeAsString());
      return;
    }
    case ExecFlow::Step::kCleanup:
      if (!previous.ok()) {
        CRISP_LOG(kRuntime, warn, "containerd: exec {} in {} not deleted after a failed start: {}",
                  req.exec_id, req.container_id, previous.status().ToString());
      }
      flow->done(flow->start_error);
      return;
  }
}

ContainerdClient::CallId ContainerdClient::listTasks(TasksCallback done) {
  tasks_v1::ListTasksRequest request;
  return call(
      "Tasks/List", request.SerializeAsString(), Deadline::kCall,
      parsedAs<tasks_v1::ListTasksResponse>(
          "Tasks/List",
          [done = std::move(done)](absl::StatusOr<tasks_v1::ListTasksResponse> response) {
            if (!response.ok()) {
              done(response.status());
              return;
            }
            std::vector<TaskSummary> tasks;
            for (const auto& task : response->tasks()) {
              tasks.push_back({task.container_id().empty() ? task.id() : task.container_id(),
                               task.pid(), task.status() == ::containerd::v1::types::RUNNING});
            }
            done(std::move(tasks));
          }));
}

ContainerdClient::CallId ContainerdClient::listExecs(const std::string& container_id,
                                                     ExecIdsCallback done) {
  tasks_v1::ListPidsRequest request;
  request.set_container_id(container_id);
  return call(
      "Tasks/ListPids", request.SerializeAsString(), Deadline::kCall,
      parsedAs<tasks_v1::ListPidsResponse>(
          "Tasks/ListPids",
          [done = std::move(done)](absl::StatusOr<tasks_v1::ListPidsResponse> response) {
            if (!response.ok()) {
              done(response.status());
              return;
            }
            std::vector<std::string> exec_ids;
            for (const auto& process : response->processes()) {
              // The type URL is the bare message name from containerd's
              // typeurl; a prefixed form ("host/name") is read the same way.
              const std::string& type_url = process.info().type_url();
              const size_t slash = type_url.rfind('/');
              const std::string_view type = slash == std::string::npos
                                                ? std::string_view(type_url)
                                                : std::string_view(type_url).substr(slash + 1);
              ::containerd::runc::v1::ProcessDetails details;
              if (type != kProcessDetailsType || !details.ParseFromString(process.info().value()) ||
                  details.exec_id().empty()) {
                continue;
              }
              exec_ids.push_back(details.exec_id());
            }
            done(std::move(exec_ids));
          }));
}

ContainerdClient::CallId ContainerdClient::sandboxNetwork(const std::string& sandbox_id,
                                                          NetworkCallback done) {
  auto flow = std::make_shared<NetworkFlow>();
  flow->id = next_id_++;
  flow->sandbox_id = sandbox_id;
  flow->done = std::move(done);
  containers_v1::GetContainerRequest get;
  get.set_id(sandbox_id);
  callAs(flow->id, "Containers/Get", get.SerializeAsString(), Deadline::kCall,
         [this, flow](absl::StatusOr<std::string> bytes) { networkStep(flow, std::move(bytes)); });
  return flow->id;
}

void ContainerdClient::networkStep(const std::shared_ptr<NetworkFlow>& flow,
                                   absl::StatusOr<std::string> previous) {
  const std::string quoted = absl::StrCat("\"", flow->sandbox_id, "\"");
  switch (flow->step) {
    case NetworkFlow::Step::kContainer: {
      if (previous.status().code() == absl::StatusCode::kNotFound) {
        flow->done(absl::NotFoundError(absl::StrCat("pod sandbox ", quoted, " not found")));
        return;
      }
      if (!previous.ok()) {
        flow->done(previous.status());
        return;
      }
      auto response =
          parseResponse<containers_v1::GetContainerResponse>("Containers/Get", *previous);
      if (!response.ok()) {
        flow->done(response.status());
        return;
      }
      const std::string kind = criKind(*response);
      if (!kind.empty() && kind != "sandbox") {
        flow->done(absl::NotFoundError(absl::StrCat("pod sandbox ", quoted, " not found (",
                                                    quoted, " is a ", kind,
                                                    ", not a pod sandbox)")));
        return;
      }
      auto spec = specFromResponse(*previous);
      if (!spec.ok()) {
        flow->done(spec.status());
        return;
      }
      flow->spec = std::move(*spec);
      tasks_v1::GetRequest task;
      task.set_container_id(flow->sandbox_id);
      flow->step = NetworkFlow::Step::kTask;
      callAs(
          flow->id, "Tasks/Get", task.SerializeAsString(), Deadline::kCall,
          [this, flow](absl::StatusOr<std::string> bytes) { networkStep(flow, std::move(bytes)); });
      return;
    }
    case NetworkFlow::Step::kTask: {
      if (previous.status().code() == absl::StatusCode::kNotFound) {
        flow->done(absl::FailedPreconditionError(
            absl::StrCat("pod sandbox ", quoted, " is not running (it has no task)")));
        return;
      }
      if (!previous.ok()) {
        flow->done(previous.status());
        return;
      }
      auto response = parseResponse<tasks_v1::GetResponse>("Tasks/Get", *previous);
      if (!response.ok()) {
        flow->done(response.status());
        return;
      }
      const auto& process = response->process();
      if (process.status() != ::containerd::v1::types::RUNNING || process.pid() == 0) {
        flow->done(absl::FailedPreconditionError(absl::StrCat(
            "pod sandbox ", quoted, " is not running (its task is ",
            absl::AsciiStrToLower(::containerd::v1::types::Status_Name(process.status())), ")")));
        return;
      }
      flow->done(SandboxNetwork{process.pid(), sandboxNamespacePath(flow->spec, process.pid())});
      return;
    }
  }
}

ContainerdClient::CallId ContainerdClient::resize(const std::string& container_id,
                                                  const std::string& exec_id, uint32_t width,
                                                  uint32_t height, DoneCallback done) {
  tasks_v1::ResizePtyRequest request;
  request.set_container_id(container_id);
  request.set_exec_id(exec_id);
  request.set_width(width);
  request.set_height(height);
  return call("Tasks/ResizePty", request.SerializeAsString(), Deadline::kCall,
              [done = std::move(done)](absl::StatusOr<std::string> r) { done(r.status()); });
}

ContainerdClient::CallId ContainerdClient::closeStdin(const std::string& container_id,
                                                      const std::string& exec_id,
                                                      DoneCallback done) {
  tasks_v1::CloseIORequest request;
  request.set_container_id(container_id);
  request.set_exec_id(exec_id);
  request.set_stdin(true);
  return call("Tasks/CloseIO", request.SerializeAsString(), Deadline::kCall,
              [done = std::move(done)](absl::StatusOr<std::string> r) { done(r.status()); });
}

ContainerdClient::CallId ContainerdClient::kill(const std::string& container_id,
                                                const std::string& exec_id, uint32_t signal,
                                                DoneCallback done) {
  tasks_v1::KillRequest request;
  request.set_container_id(container_id);
  request.set_exec_id(exec_id);
  request.set_signal(signal);
  request.set_all(false);
  return call("Tasks/Kill", request.SerializeAsString(), Deadline::kProcess,
              [done = std::move(done)](absl::StatusOr<std::string> r) { done(r.status()); });
}

ContainerdClient::CallId ContainerdClient::wait(const std::string& container_id,
                                                const std::string& exec_id, ExitCallback done) {
  tasks_v1::WaitRequest request;
  request.set_container_id(container_id);
  request.set_exec_id(exec_id);
  return call("Tasks/Wait", request.SerializeAsString(), Deadline::kNone,
              parsedAs<tasks_v1::WaitResponse>("Tasks/Wait",
                                               exitOf<tasks_v1::WaitResponse>(std::move(done))));
}

ContainerdClient::CallId ContainerdClient::deleteProcess(const std::string& container_id,
                                                         const std::string& exec_id,
                                                         ExitCallback done) {
  tasks_v1::DeleteProcessRequest request;
  request.set_container_id(container_id);
  request.set_exec_id(exec_id);
  return call("Tasks/DeleteProcess", request.SerializeAsString(), Deadline::kProcess,
              parsedAs<tasks_v1::DeleteResponse>(
                  "Tasks/DeleteProcess", exitOf<tasks_v1::DeleteResponse>(std::move(done))));
}

}  // namespace crisp::containerd
