#include "source/runtime/embedded/embedded_runtime.h"

#include <cerrno>
#include <cstring>
#include <future>
#include <set>

#include "absl/strings/str_cat.h"
#include <fcntl.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "source/common/logger.h"
#include "source/runtime/embedded/exec_session.h"
#include "source/runtime/embedded/main_process.h"
#include "source/runtime/embedded/port_forward.h"
#include "source/runtime/embedded/spawn.h"

namespace crisp::runtime {
namespace {

// Creation and start times are wall-clock facts reported to the kubelet, so
// they come from the system clock rather than the monotonic TimeSource.
int64_t wallClockNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr std::chrono::milliseconds kGiveUpAfterKill{1000};

// Empty when `path` is a network namespace file; the problem otherwise.
std::string checkNetworkNamespace(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    return absl::StrCat("network_namespace \"", path, "\" is not an absolute path");
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    return absl::StrCat("cannot open network_namespace \"", path, "\": ", std::strerror(errno));
  }
  const int type = ::ioctl(fd.get(), NS_GET_NSTYPE);
  if (type != CLONE_NEWNET) {
    return absl::StrCat("network_namespace \"", path, "\" is not a network namespace");
  }
  return "";
}

}  // namespace

struct EmbeddedRuntime::Container {
  explicit Container(EmbeddedContainerConfig c) : config(std::move(c)) {}

  EmbeddedContainerConfig config;
  std::optional<UserIds> user;  // set when processes switch to it
  std::shared_ptr<MainHandle> handle = std::make_shared<MainHandle>();
  std::unique_ptr<MainProcess> main;  // host loop only
  // Guarded by EmbeddedRuntime::mutex_.
  bool running = false;
  int64_t started_at_ns = 0;
};

EmbeddedRuntime::EmbeddedRuntime(std::vector<EmbeddedContainerConfig> containers)
    : created_at_ns_(wallClockNs()), netns_(std::make_unique<NetnsSocketFactory>()) {
  for (auto& c : containers) {
    containers_.push_back(std::make_unique<Container>(std::move(c)));
  }
}

EmbeddedRuntime::~EmbeddedRuntime() { stop(); }

absl::Status EmbeddedRuntime::validate() {
  std::set<std::string> ids;
  for (auto& c : containers_) {
    EmbeddedContainerConfig& cfg = c->config;
    if (cfg.id.empty()) {
      return absl::InvalidArgumentError("embedded container with an empty id");
    }
    if (!ids.insert(cfg.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate container id \"", cfg.id, "\""));
    }
    const std::string where = absl::StrCat("container \"", cfg.id, "\": ");
    if (cfg.working_dir.empty()) {
      cfg.working_dir = "/";
    }
    if (cfg.working_dir[0] != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "working_dir \"", cfg.working_dir, "\" is not absolute"));
    }
    if (!cfg.network_namespace.empty()) {
      if (std::string problem = checkNetworkNamespace(cfg.network_namespace); !problem.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(where, problem));
      }
    }
    if (!cfg.command.empty() && cfg.command[0].empty()) {
      return absl::InvalidArgumentError(absl::StrCat(where, "command starts with an empty word"));
    }
    for (const auto& kv : cfg.env) {
      const size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "env entry \"", kv, "\" is not KEY=value"));
      }
    }
    if (!cfg.user.empty()) {
      absl::StatusOr<UserIds> ids_or = resolveUser(cfg.user);
      if (!ids_or.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ids_or.status().message()));
      }
      if (::geteuid() == 0) {
        c->user = std::move(*ids_or);
      } else if (ids_or->uid != ::geteuid()) {
        CRISP_LOG(kRuntime, warn,
                  "container {}: user \"{}\" ignored: crisp is not root, processes run as uid {}",
                  cfg.id, cfg.user, ::geteuid());
      }
    }
  }
  return absl::OkStatus();
}

absl::Status EmbeddedRuntime::start() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (started_ || stopping_) {
      return absl::FailedPreconditionError("embedded runtime was already started");
    }
  }
  absl::Status status = validate();
  if (!status.ok()) {
    return status;
  }
  host_ = std::make_unique<event::Dispatcher>();
  host_thread_ = std::thread([this] { host_->run(); });
  for (auto& c : containers_) {
    c->handle->setHost(host_.get());
  }
  std::promise<absl::Status> started;
  std::future<absl::Status> result = started.get_future();
  host_->post([this, &started] { started.set_value(startMainProcesses()); });
  status = result.get();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    started_ = true;
  }
  if (!status.ok()) {
    stop(std::chrono::milliseconds(0));
    return status;
  }
  CRISP_LOG(kRuntime, info, "embedded runtime started with {} container(s)", containers_.size());
  return absl::OkStatus();
}

absl::Status EmbeddedRuntime::startMainProcesses() {
  for (auto& owned : containers_) {
    Container& c = *owned;
    const EmbeddedContainerConfig& cfg = c.config;
    if (cfg.command.empty()) {
      std::lock_guard<std::mutex> lock(mutex_);
      c.running = true;
      c.started_at_ns = wallClockNs();
      continue;
    }
    SpawnOptions options;
    options.argv = cfg.command;
    options.env = buildEnvironment(cfg.env, cfg.tty);
    options.working_dir = cfg.working_dir;
    options.user = c.user;
    options.tty = cfg.tty;
    options.pipe_stdin = cfg.stdin;
    options.pipe_stdout = true;
    options.pipe_stderr = true;
    absl::StatusOr<SpawnedProcess> process = spawnProcess(options);
    if (!process.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("container \"", cfg.id, "\": ", process.status().message()));
    }
    // Start-up may block: a wrong command should fail here, loudly.
    absl::Status exec_status = waitForExec(*process, kStartTimeout);
    if (!exec_status.ok()) {
      killAndWait(*process);
      return absl::FailedPreconditionError(
          absl::StrCat("container \"", cfg.id, "\": ", exec_status.message()));
    }
    const pid_t pid = process->pid;
    c.main = std::make_unique<MainProcess>(*host_, cfg.id, std::move(*process), cfg.stdin,
                                           [this, &c](int code) { onMainFinished(c, code); });
    c.handle->main = c.main.get();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      c.running = true;
      c.started_at_ns = wallClockNs();
    }
    CRISP_LOG(kRuntime, info, "container {}: main process {} started", cfg.id, pid);
  }
  return absl::OkStatus();
}

// The exit code was logged by MainProcess; a container only records that it
// no longer runs.
void EmbeddedRuntime::onMainFinished(Container& c, int /*exit_code*/) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    c.running = false;
  }
  if (shutting_down_) {
    maybeEndShutdown();
  }
}

void EmbeddedRuntime::stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || host_ == nullptr) {
      return;
    }
    stopping_ = true;
  }
  host_->post([this, grace] { beginShutdown(grace); });
  host_thread_.join();
  netns_->stop();
  for (auto& c : containers_) {
    c->handle->setHost(nullptr);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& c : containers_) {
    c->running = false;
  }
  CRISP_LOG(kRuntime, info, "embedded runtime stopped");
}

void EmbeddedRuntime::beginShutdown(std::chrono::milliseconds grace) {
  shutting_down_ = true;
  for (auto& c : containers_) {
    if (c->main != nullptr && !c->main->finished()) {
      c->main->signalGroup(SIGTERM);
    }
  }
  give_up_timer_ = std::make_unique<event::Timer>(*host_, [this] {
    CRISP_LOG(kRuntime, warn, "main processes did not end after SIGKILL; leaving them");
    endShutdown();
  });
  kill_timer_ = std::make_unique<event::Timer>(*host_, [this] {
    for (auto& c : containers_) {
      if (c->main != nullptr && !c->main->finished()) {
        CRISP_LOG(kRuntime, info, "container {}: main process {} killed", c->config.id,
                  c->main->pid());
        c->main->signalGroup(SIGKILL);
      }
    }
    give_up_timer_->enable(kGiveUpAfterKill);
  });
  kill_timer_->enable(grace);
  maybeEndShutdown();
}

void EmbeddedRuntime::maybeEndShutdown() {
  for (auto& c : containers_) {
    if (c->main != nullptr && !c->main->finished()) {
      return;
    }
  }
  // Not from inside a MainProcess callback: it is destroyed there.
  host_->post([this] { endShutdown(); });
}

void EmbeddedRuntime::endShutdown() {
  if (shutdown_done_) {
    return;
  }
  shutdown_done_ = true;
  kill_timer_->disable();
  give_up_timer_->disable();
  for (auto& c : containers_) {
    c->handle->main = nullptr;
    c->main.reset();
  }
  host_->exit();
}

const EmbeddedRuntime::Container* EmbeddedRuntime::find(const std::string& id) const {
  for (const auto& c : containers_) {
    if (c->config.id == id) {
      return c.get();
    }
  }
  return nullptr;
}

session::ContainerInfo EmbeddedRuntime::infoLocked(const Container& c) const {
  session::ContainerInfo info;
  info.id = c.config.id;
  info.name = c.config.name.empty() ? c.config.id : c.config.name;
  info.pod_sandbox_id = c.config.id;
  info.image = c.config.image.empty() ? "host" : c.config.image;
  info.running = c.running;
  info.tty = c.config.tty;
  info.stdin = c.config.stdin;
  info.created_at_ns = created_at_ns_;
  info.started_at_ns = c.started_at_ns;
  info.command = c.config.command;
  return info;
}

std::vector<session::ContainerInfo> EmbeddedRuntime::listContainers() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<session::ContainerInfo> out;
  out.reserve(containers_.size());
  for (const auto& c : containers_) {
    out.push_back(infoLocked(*c));
  }
  return out;
}

absl::StatusOr<session::ContainerInfo> EmbeddedRuntime::container(const std::string& id) const {
  const Container* c = find(id);
  if (c == nullptr) {
    return absl::NotFoundError(absl::StrCat("container \"", id, "\" not found"));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  return infoLocked(*c);
}

absl::StatusOr<std::unique_ptr<session::ExecProcess>> EmbeddedRuntime::startExec(
    event::Dispatcher& dispatcher, const session::ExecSpec& spec,
    std::optional<session::TerminalSize> initial, session::ExecCallbacks& callbacks) {
  const Container* c = find(spec.container_id);
  if (c == nullptr) {
    return absl::NotFoundError(absl::StrCat("container \"", spec.container_id, "\" not found"));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_ || stopping_) {
      return absl::FailedPreconditionError("the embedded runtime is not running");
    }
    if (!c->running) {
      return absl::FailedPreconditionError(
          absl::StrCat("container \"", spec.container_id, "\" is not running"));
    }
  }
  switch (spec.operation) {
    case session::Operation::kExec: {
      if (spec.command.empty() || spec.command[0].empty()) {
        return absl::InvalidArgumentError("exec needs a command");
      }
      SpawnOptions options;
      options.argv = spec.command;
      options.env = buildEnvironment(c->config.env, spec.tty);
      options.working_dir = c->config.working_dir;
      options.user = c->user;
      options.tty = spec.tty;
      options.initial_size = initial;
      options.pipe_stdin = spec.stdin;
      options.pipe_stdout = spec.stdout;
      options.pipe_stderr = spec.stderr;
      absl::StatusOr<SpawnedProcess> process = spawnProcess(options);
      if (!process.ok()) {
        return process.status();
      }
      return std::unique_ptr<session::ExecProcess>(
          std::make_unique<ExecSession>(dispatcher, std::move(*process), spec, callbacks));
    }
    case session::Operation::kAttach:
      if (c->config.command.empty()) {
        return absl::FailedPreconditionError(
            absl::StrCat("container \"", spec.container_id, "\" has no main process to attach to"));
      }
      return std::unique_ptr<session::ExecProcess>(std::make_unique<AttachSession>(
          dispatcher, c->handle, spec, c->config.tty, c->config.stdin, initial, callbacks));
    case session::Operation::kPortForward:
      break;
  }
  return absl::InvalidArgumentError("the embedded runtime serves exec and attach only");
}

absl::StatusOr<std::unique_ptr<session::PortConnection>> EmbeddedRuntime::connectPort(
    event::Dispatcher& dispatcher, const std::string& pod_sandbox_id, uint16_t port,
    session::PortCallbacks& callbacks) {
  const Container* c = find(pod_sandbox_id);
  if (c == nullptr) {
    return absl::NotFoundError(absl::StrCat("pod sandbox \"", pod_sandbox_id, "\" not found"));
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_ || stopping_) {
      return absl::FailedPreconditionError("the embedded runtime is not running");
    }
    if (!c->running) {
      return absl::FailedPreconditionError(
          absl::StrCat("pod sandbox \"", pod_sandbox_id, "\" is not running"));
    }
  }
  PortTarget target;
  target.pod_sandbox_id = pod_sandbox_id;
  target.network_namespace = c->config.network_namespace;
  target.port = port;
  return connectLoopbackPort(dispatcher, target, netns_.get(), callbacks);
}

}  // namespace crisp::runtime
