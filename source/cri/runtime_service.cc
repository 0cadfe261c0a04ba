#include "source/cri/runtime_service.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include "source/common/buffer.h"
#include "source/common/logger.h"

namespace crisp::cri {
namespace {

constexpr std::string_view kRuntimeServicePrefix = "/runtime.v1.RuntimeService/";

// Longest ExecSync timeout honoured as given (about 31 years); longer ones are
// clamped so that the conversion to a timer duration cannot overflow.
constexpr int64_t kMaxExecSyncTimeoutSeconds = int64_t{1} << 30;

enum class Method {
  kVersion,
  kStatus,
  kListContainers,
  kContainerStatus,
  kExecSync,
  kExec,
  kAttach,
  kPortForward,
};

std::optional<Method> methodOf(std::string_view path) {
  if (path.substr(0, kRuntimeServicePrefix.size()) != kRuntimeServicePrefix) {
    return std::nullopt;
  }
  const std::string_view name = path.substr(kRuntimeServicePrefix.size());
  static constexpr std::pair<std::string_view, Method> kMethods[] = {
      {"Version", Method::kVersion},
      {"Status", Method::kStatus},
      {"ListContainers", Method::kListContainers},
      {"ContainerStatus", Method::kContainerStatus},
      {"ExecSync", Method::kExecSync},
      {"Exec", Method::kExec},
      {"Attach", Method::kAttach},
      {"PortForward", Method::kPortForward},
  };
  for (const auto& [method_name, method] : kMethods) {
    if (name == method_name) {
      return method;
    }
  }
  return std::nullopt;
}

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

runtime::v1::ContainerState stateOf(const session::ContainerInfo& c) {
  if (c.running) {
    return ::runtime::v1::CONTAINER_RUNNING;
  }
  // A container that has started and no longer runs has exited; one that never
  // started is still in the created state.
  return c.started_at_ns != 0 ? ::runtime::v1::CONTAINER_EXITED : ::runtime::v1::CONTAINER_CREATED;
}

bool matches(const ::runtime::v1::ContainerFilter& filter, const session::ContainerInfo& c) {
  if (!filter.id().empty() && filter.id() != c.id) {
    return false;
  }
  if (filter.has_state() && filter.state().state() != stateOf(c)) {
    return false;
  }
  if (!filter.pod_sandbox_id().empty() && filter.pod_sandbox_id() != c.pod_sandbox_id) {
    return false;
  }
  // Every selector entry must be among the container's labels, and embedded
  // containers have none.
  return filter.label_selector().empty();
}

void fillImage(const session::ContainerInfo& c, ::runtime::v1::ImageSpec* image) {
  image->set_image(c.image);
}

absl::Status validateStreamFlags(const std::string& container_id, bool tty, bool stdin, bool stdout,
                                 bool stderr, const char* none_set_text) {
  // The kubelet's streaming server checks in this order and with these texts;
  // clients and tests match them.
  if (container_id.empty()) {
    return absl::InvalidArgumentError("missing required container_id");
  }
  if (tty && stderr) {
    // With a terminal there is one output stream; stderr cannot be separate.
    return absl::InvalidArgumentError("tty and stderr cannot both be true");
  }
  if (!stdin && !stdout && !stderr) {
    return absl::InvalidArgumentError(none_set_text);
  }
  return absl::OkStatus();
}

template <class Response>
absl::StatusOr<std::string> encode(const absl::StatusOr<Response>& response) {
  if (!response.ok()) {
    return response.status();
  }
  std::string bytes;
  if (!response->SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("cannot encode ", Response::descriptor()->full_name()));
  }
  return bytes;
}

template <class Request>
absl::StatusOr<Request> decode(const std::string& bytes) {
  Request request;
  if (!request.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot decode request as ", Request::descriptor()->full_name()));
  }
  return request;
}

// Decodes, runs a synchronous method and encodes, reporting to `done`.
template <class Request, class Response>
void unary(const std::string& bytes, const RuntimeServiceImpl::Done& done,
           const std::function<absl::StatusOr<Response>(const Request&)>& fn) {
  absl::StatusOr<Request> request = decode<Request>(bytes);
  if (!request.ok()) {
    done(request.status());
    return;
  }
  done(encode(fn(*request)));
}

}  // namespace

std::string unimplementedMessage(std::string_view method_path) {
  return std::string("crisp's embedded runtime does not implement ") + std::string(method_path);
}

// One running ExecSync: collects the output of the process, enforces the
// timeout and reports once. Owned by the service's call table until it
// finishes, then handed to the dispatcher for deferred deletion, because it
// finishes from inside the process's or the timer's callback.
class RuntimeServiceImpl::ExecSyncCall : public session::ExecCallbacks {
 public:
  ExecSyncCall(RuntimeServiceImpl& parent, event::Dispatcher& dispatcher, std::string container_id,
               int64_t timeout_seconds, ExecSyncDone done)
      : parent_(parent),
        dispatcher_(dispatcher),
        container_id_(std::move(container_id)),
        timeout_seconds_(std::min(timeout_seconds, kMaxExecSyncTimeoutSeconds)),
        done_(std::move(done)) {}

  void start(const session::ExecSpec& spec) {
    absl::StatusOr<std::unique_ptr<session::ExecProcess>> process =
        parent_.runtime_.startExec(dispatcher_, spec, std::nullopt, *this);
    if (!process.ok()) {
      finish(absl::Status(process.status().code(), absl::StrCat("failed to exec in container: ",
                                                                process.status().message())));
      return;
    }
    process_ = std::move(*process);
    if (finished_) {
      // onExit() arrived from inside startExec().
      return;
    }
    // The command gets no input: it sees end of file on stdin at once.
    process_->closeStdin();
    if (timeout_seconds_ > 0) {
      timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { onTimeout(); });
      timer_->enable(std::chrono::seconds(timeout_seconds_));
    }
  }

  // session::ExecCallbacks
  void onStdout(Buffer& data) override { collect(data, stdout_); }
  void onStderr(Buffer& data) override { collect(data, stderr_); }
  void onExit(const session::ExitStatus& status) override {
    if (status.kind == session::ExitStatus::Kind::kError) {
      finish(absl::UnknownError(absl::StrCat("failed to exec in container: ", status.message)));
      return;
    }
    ::runtime::v1::ExecSyncResponse response;
    response.set_stdout(std::move(stdout_));
    response.set_stderr(std::move(stderr_));
    response.set_exit_code(status.kind == session::ExitStatus::Kind::kSuccess ? 0
                                                                              : status.exit_code);
    finish(std::move(response));
  }
  void onStdinDrained() override {}

 private:
  void collect(Buffer& data, std::string& out) {
    const size_t room = kExecSyncOutputLimit - std::min(out.size(), kExecSyncOutputLimit);
    const size_t take = std::min(room, data.length());
    if (take > 0) {
      const size_t old_size = out.size();
      out.resize(old_size + take);
      data.copyOut(out.data() + old_size, take);
    }
    if (take < data.length() && !truncated_) {
      truncated_ = true;
      CRISP_LOG(kCri, debug, "ExecSync in container {}: output beyond {} bytes discarded",
                container_id_, kExecSyncOutputLimit);
    }
    // Bytes past the limit are dropped, not left to block the process.
    data.drain(data.length());
  }

  void onTimeout() {
    CRISP_LOG(kCri, debug, "ExecSync in container {} timed out after {}s; killing it",
              container_id_, timeout_seconds_);
    // Destroying the process before its exit kills its process group; no
    // callback arrives after that.
    process_.reset();
    finish(absl::DeadlineExceededError(
        absl::StrCat("failed to exec in container: timeout ", timeout_seconds_, "s exceeded")));
  }

  void finish(absl::StatusOr<::runtime::v1::ExecSyncResponse> result) {
    if (finished_) {
      return;
    }
    finished_ = true;
    if (timer_ != nullptr) {
      timer_->disable();
    }
    ExecSyncDone done = std::move(done_);
    dispatcher_.deferredDelete(parent_.releaseCall(this));
    // `this` stays alive until the dispatcher's next deletion pass.
    done(std::move(result));
  }

  RuntimeServiceImpl& parent_;
  event::Dispatcher& dispatcher_;
  const std::string container_id_;
  const int64_t timeout_seconds_;
  ExecSyncDone done_;
  std::unique_ptr<session::ExecProcess> process_;
  event::TimerPtr timer_;
  std::string stdout_;
  std::string stderr_;
  bool truncated_ = false;
  bool finished_ = false;
};

RuntimeServiceImpl::RuntimeServiceImpl(session::Runtime& runtime, cache::TokenCache& cache,
                                       std::string_view stream_base_url)
    : runtime_(runtime), cache_(cache), base_url_(resolveBase(stream_base_url)) {}

RuntimeServiceImpl::~RuntimeServiceImpl() = default;

bool RuntimeServiceImpl::implements(std::string_view method_path) {
  return methodOf(method_path).has_value();
}

bool RuntimeServiceImpl::handle(const std::string& method_path, const std::string& request_bytes,
                                event::Dispatcher& dispatcher, Done done,
                                std::function<void()>* cancel) {
  if (!implements(method_path)) {
    return false;
  }
  if (dispatcher.isThreadSafe()) {
    const uint64_t running = dispatch(method_path, request_bytes, dispatcher, std::move(done));
    if (running != 0 && cancel != nullptr) {
      *cancel = [this, running] { cancelExecSync(running); };
    }
  } else {
    dispatcher.post([this, method_path, request_bytes, &dispatcher, done = std::move(done)] {
      dispatch(method_path, request_bytes, dispatcher, done);
    });
  }
  return true;
}

uint64_t RuntimeServiceImpl::dispatch(const std::string& method_path,
                                      const std::string& request_bytes,
                                      event::Dispatcher& dispatcher, Done done) {
  using namespace ::runtime::v1;  // NOLINT(build/namespaces): message names only
  switch (*methodOf(method_path)) {
    case Method::kVersion:
      unary<VersionRequest, VersionResponse>(request_bytes, done,
                                             [this](const auto& r) { return version(r); });
      return 0;
    case Method::kStatus:
      unary<StatusRequest, StatusResponse>(request_bytes, done,
                                           [this](const auto& r) { return status(r); });
      return 0;
    case Method::kListContainers:
      unary<ListContainersRequest, ListContainersResponse>(
          request_bytes, done, [this](const auto& r) { return listContainers(r); });
      return 0;
    case Method::kContainerStatus:
      unary<ContainerStatusRequest, ContainerStatusResponse>(
          request_bytes, done, [this](const auto& r) { return containerStatus(r); });
      return 0;
    case Method::kExec:
      unary<ExecRequest, ExecResponse>(request_bytes, done,
                                       [this](const auto& r) { return exec(r); });
      return 0;
    case Method::kAttach:
      unary<AttachRequest, AttachResponse>(request_bytes, done,
                                           [this](const auto& r) { return attach(r); });
      return 0;
    case Method::kPortForward:
      unary<PortForwardRequest, PortForwardResponse>(
          request_bytes, done, [this](const auto& r) { return portForward(r); });
      return 0;
    case Method::kExecSync: {
      absl::StatusOr<ExecSyncRequest> request = decode<ExecSyncRequest>(request_bytes);
      if (!request.ok()) {
        done(request.status());
        return 0;
      }
      return execSync(dispatcher, *request, [done](absl::StatusOr<ExecSyncResponse> response) {
        done(encode(response));
      });
    }
  }
  return 0;
}

absl::StatusOr<::runtime::v1::VersionResponse> RuntimeServiceImpl::version(
    const ::runtime::v1::VersionRequest&) {
  ::runtime::v1::VersionResponse response;
  response.set_version(kKubeletApiVersion);
  response.set_runtime_name(kRuntimeName);
  response.set_runtime_version(kCrispVersion);
  response.set_runtime_api_version(kRuntimeApiVersion);
  return response;
}

absl::StatusOr<::runtime::v1::StatusResponse> RuntimeServiceImpl::status(
    const ::runtime::v1::StatusRequest&) {
  ::runtime::v1::StatusResponse response;
  // The kubelet needs exactly these two condition types to be true before it
  // considers the node ready.
  for (const char* type : {"RuntimeReady", "NetworkReady"}) {
    ::runtime::v1::RuntimeCondition* condition = response.mutable_status()->add_conditions();
    condition->set_type(type);
    condition->set_status(true);
  }
  return response;
}

absl::StatusOr<::runtime::v1::ListContainersResponse> RuntimeServiceImpl::listContainers(
    const ::runtime::v1::ListContainersRequest& request) {
  ::runtime::v1::ListContainersResponse response;
  for (const session::ContainerInfo& c : runtime_.listContainers()) {
    if (!matches(request.filter(), c)) {
      continue;
    }
    ::runtime::v1::Container* out = response.add_containers();
    out->set_id(c.id);
    out->set_pod_sandbox_id(c.pod_sandbox_id);
    out->mutable_metadata()->set_name(c.name);
    out->mutable_metadata()->set_attempt(0);
    fillImage(c, out->mutable_image());
    out->set_image_ref(c.image);
    out->set_state(stateOf(c));
    out->set_created_at(c.created_at_ns);
  }
  return response;
}

absl::StatusOr<::runtime::v1::ContainerStatusResponse> RuntimeServiceImpl::containerStatus(
    const ::runtime::v1::ContainerStatusRequest& request) {
  if (request.container_id().empty()) {
    return absl::InvalidArgumentError("missing required container_id");
  }
  absl::StatusOr<session::ContainerInfo> c = runtime_.container(request.container_id());
  if (absl::IsNotFound(c.status())) {
    return absl::NotFoundError(
        absl::StrCat("container \"", request.container_id(), "\" not found"));
  }
  if (!c.ok()) {
    return c.status();
  }
  ::runtime::v1::ContainerStatusResponse response;
  ::runtime::v1::ContainerStatus* status = response.mutable_status();
  status->set_id(c->id);
  status->mutable_metadata()->set_name(c->name);
  status->mutable_metadata()->set_attempt(0);
  status->set_state(stateOf(*c));
  status->set_created_at(c->created_at_ns);
  status->set_started_at(c->started_at_ns);
  fillImage(*c, status->mutable_image());
  status->set_image_ref(c->image);
  return response;
}

absl::StatusOr<session::ContainerInfo> RuntimeServiceImpl::runningContainer(const std::string& id) {
  absl::StatusOr<session::ContainerInfo> c = runtime_.container(id);
  if (absl::IsNotFound(c.status())) {
    return absl::NotFoundError(absl::StrCat("container \"", id, "\" not found"));
  }
  if (!c.ok()) {
    return c.status();
  }
  if (!c->running) {
    return absl::FailedPreconditionError(
        absl::StrCat("container \"", id, "\" is in ",
                     ::runtime::v1::ContainerState_Name(stateOf(*c)), " state"));
  }
  return c;
}

absl::StatusOr<std::string> RuntimeServiceImpl::streamUrl(session::StreamRequest request) {
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

absl::StatusOr<::runtime::v1::ExecResponse> RuntimeServiceImpl::exec(
    const ::runtime::v1::ExecRequest& request) {
  absl::Status valid =
      validateStreamFlags(request.container_id(), request.tty(), request.stdin(), request.stdout(),
                          request.stderr(), "one of stdin, stdout, or stderr must be set");
  if (!valid.ok()) {
    return valid;
  }
  absl::StatusOr<session::ContainerInfo> container = runningContainer(request.container_id());
  if (!container.ok()) {
    return container.status();
  }
  session::ExecSpec spec;
  spec.operation = session::Operation::kExec;
  spec.container_id = request.container_id();
  spec.command.assign(request.cmd().begin(), request.cmd().end());
  spec.tty = request.tty();
  spec.stdin = request.stdin();
  spec.stdout = request.stdout();
  spec.stderr = request.stderr();
  absl::StatusOr<std::string> url = streamUrl(session::StreamRequest{std::move(spec)});
  if (!url.ok()) {
    return url.status();
  }
  ::runtime::v1::ExecResponse response;
  response.set_url(std::move(*url));
  return response;
}

absl::StatusOr<::runtime::v1::AttachResponse> RuntimeServiceImpl::attach(
    const ::runtime::v1::AttachRequest& request) {
  absl::Status valid =
      validateStreamFlags(request.container_id(), request.tty(), request.stdin(), request.stdout(),
                          request.stderr(), "one of stdin, stdout, and stderr must be set");
  if (!valid.ok()) {
    return valid;
  }
  absl::StatusOr<session::ContainerInfo> container = runningContainer(request.container_id());
  if (!container.ok()) {
    return container.status();
  }
  session::ExecSpec spec;
  spec.operation = session::Operation::kAttach;
  spec.container_id = request.container_id();
  spec.tty = request.tty();
  spec.stdin = request.stdin();
  spec.stdout = request.stdout();
  spec.stderr = request.stderr();
  absl::StatusOr<std::string> url = streamUrl(session::StreamRequest{std::move(spec)});
  if (!url.ok()) {
    return url.status();
  }
  ::runtime::v1::AttachResponse response;
  response.set_url(std::move(*url));
  return response;
}

absl::StatusOr<::runtime::v1::PortForwardResponse> RuntimeServiceImpl::portForward(
    const ::runtime::v1::PortForwardRequest& request) {
  const std::string& sandbox = request.pod_sandbox_id();
  if (sandbox.empty()) {
    return absl::InvalidArgumentError("missing required pod_sandbox_id");
  }
  session::PortForwardSpec spec;
  spec.pod_sandbox_id = sandbox;
  for (int32_t port : request.port()) {
    if (port < 1 || port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid port ", port, ": a port must be between 1 and 65535"));
    }
    spec.ports.push_back(static_cast<uint16_t>(port));
  }
  bool known = false;
  bool running = false;
  for (const session::ContainerInfo& c : runtime_.listContainers()) {
    if (c.id == sandbox || c.pod_sandbox_id == sandbox) {
      known = true;
      running = running || c.running;
    }
  }
  if (!known) {
    return absl::NotFoundError(absl::StrCat("pod sandbox \"", sandbox, "\" not found"));
  }
  if (!running) {
    // Its network namespace is held by a running process; nothing to forward into.
    return absl::FailedPreconditionError(
        absl::StrCat("pod sandbox \"", sandbox, "\" is not running"));
  }
  absl::StatusOr<std::string> url = streamUrl(session::StreamRequest{std::move(spec)});
  if (!url.ok()) {
    return url.status();
  }
  ::runtime::v1::PortForwardResponse response;
  response.set_url(std::move(*url));
  return response;
}

uint64_t RuntimeServiceImpl::execSync(event::Dispatcher& dispatcher,
                                      const ::runtime::v1::ExecSyncRequest& request,
                                      ExecSyncDone done) {
  if (request.container_id().empty()) {
    done(absl::InvalidArgumentError("missing required container_id"));
    return 0;
  }
  if (request.cmd().empty()) {
    done(absl::InvalidArgumentError("missing required cmd"));
    return 0;
  }
  if (request.timeout() < 0) {
    done(absl::InvalidArgumentError(
        absl::StrCat("invalid timeout ", request.timeout(), ": must not be negative")));
    return 0;
  }
  absl::StatusOr<session::ContainerInfo> container = runningContainer(request.container_id());
  if (!container.ok()) {
    done(container.status());
    return 0;
  }
  session::ExecSpec spec;
  spec.operation = session::Operation::kExec;
  spec.container_id = request.container_id();
  spec.command.assign(request.cmd().begin(), request.cmd().end());
  spec.stdout = true;
  spec.stderr = true;

  const uint64_t id = next_call_id_.fetch_add(1, std::memory_order_relaxed);
  auto call = std::make_unique<ExecSyncCall>(*this, dispatcher, request.container_id(),
                                             request.timeout(), std::move(done));
  ExecSyncCall* raw = call.get();
  {
    std::lock_guard<std::mutex> lock(calls_mutex_);
    call_ids_[raw] = id;
    calls_.emplace(raw, std::move(call));
  }
  raw->start(spec);
  std::lock_guard<std::mutex> lock(calls_mutex_);
  return calls_.count(raw) != 0 && call_ids_[raw] == id ? id : 0;
}

void RuntimeServiceImpl::cancelExecSync(uint64_t id) {
  std::unique_ptr<ExecSyncCall> abandoned;
  {
    std::lock_guard<std::mutex> lock(calls_mutex_);
    for (auto it = call_ids_.begin(); it != call_ids_.end(); ++it) {
      if (it->second == id) {
        auto call = calls_.find(it->first);
        if (call != calls_.end()) {
          abandoned = std::move(call->second);
          calls_.erase(call);
        }
        call_ids_.erase(it);
        break;
      }
    }
  }
  if (abandoned != nullptr) {
    CRISP_LOG(kCri, debug, "ExecSync cancelled by its client; killing the command");
  }
  // Destroying the call ends its process group; its `done` is never called.
}

size_t RuntimeServiceImpl::execSyncInFlight() const {
  std::lock_guard<std::mutex> lock(calls_mutex_);
  return calls_.size();
}

std::unique_ptr<RuntimeServiceImpl::ExecSyncCall> RuntimeServiceImpl::releaseCall(
    ExecSyncCall* call) {
  std::lock_guard<std::mutex> lock(calls_mutex_);
  auto it = calls_.find(call);
  if (it == calls_.end()) {
    return nullptr;
  }
  std::unique_ptr<ExecSyncCall> owned = std::move(it->second);
  calls_.erase(it);
  call_ids_.erase(call);
  return owned;
}

}  // namespace crisp::cri
