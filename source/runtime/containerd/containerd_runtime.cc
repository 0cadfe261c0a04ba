#include "source/runtime/containerd/containerd_runtime.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"

namespace crisp::containerd {

ContainerdRuntime::ContainerdRuntime(std::string socket, ContainerdExecOptions exec_options,
                                     session::Runtime& attach_backend)
    : socket_(std::move(socket)),
      exec_options_(std::move(exec_options)),
      attach_backend_(attach_backend) {}

ContainerdRuntime::~ContainerdRuntime() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!clients_.empty()) {
    CRISP_LOG(kRuntime, warn, "containerd runtime destroyed with {} clients not released",
              clients_.size());
  }
}

absl::Status ContainerdRuntime::prepareFifoDir(const std::string& path) {
  // Parents as a shell's mkdir -p would make them; the directory itself 0700.
  for (size_t slash = path.find('/', 1); slash != std::string::npos;
       slash = path.find('/', slash + 1)) {
    const std::string parent = path.substr(0, slash);
    if (::mkdir(parent.c_str(), 0755) != 0 && errno != EEXIST) {
      return absl::InternalError(
          absl::StrCat("runtime.containerd.fifo_dir: mkdir ", parent, ": ", std::strerror(errno)));
    }
  }
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(
        absl::StrCat("runtime.containerd.fifo_dir: mkdir ", path, ": ", std::strerror(errno)));
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("runtime.containerd.fifo_dir: ", path, " is not a directory"));
  }
  if (::chmod(path.c_str(), 0700) != 0) {
    return absl::InternalError(
        absl::StrCat("runtime.containerd.fifo_dir: chmod ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status ContainerdRuntime::probe(const std::string& socket,
                                      std::chrono::milliseconds timeout) {
  event::Dispatcher dispatcher;
  ContainerdClientOptions options;
  options.call_timeout = timeout;
  options.peer_name = socket;
  auto client = std::make_unique<ContainerdClient>(dispatcher, socket, options);
  absl::Status result = absl::DeadlineExceededError("no answer");
  client->containerSpec("crisp-probe-of-the-task-api",
                        [&](absl::StatusOr<nlohmann::json> spec) {
                          result = spec.status();
                          dispatcher.exit();
                        });
  dispatcher.run();
  client.reset();
  if (result.ok() || result.code() == absl::StatusCode::kNotFound) {
    return absl::OkStatus();
  }
  return absl::Status(result.code(),
                      absl::StrCat("cri.backend containerd: ", socket,
                                   " does not answer containerd's API: ", result.message()));
}

ContainerdClient& ContainerdRuntime::clientFor(event::Dispatcher& dispatcher) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::unique_ptr<ContainerdClient>& client = clients_[&dispatcher];
  if (client == nullptr) {
    ContainerdClientOptions options;
    options.peer_name = socket_;
    client = std::make_unique<ContainerdClient>(dispatcher, socket_, options);
  }
  return *client;
}

absl::StatusOr<std::unique_ptr<session::ExecProcess>> ContainerdRuntime::startExec(
    event::Dispatcher& dispatcher, const session::ExecSpec& spec,
    std::optional<session::TerminalSize> initial, session::ExecCallbacks& callbacks) {
  if (spec.operation != session::Operation::kExec) {
    return attach_backend_.startExec(dispatcher, spec, initial, callbacks);
  }
  return containerd::startExec(dispatcher, clientFor(dispatcher), exec_options_, spec, initial,
                               callbacks);
}

size_t ContainerdRuntime::activeCalls(event::Dispatcher& dispatcher) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = clients_.find(&dispatcher);
  return it == clients_.end() ? 0 : it->second->activeCalls();
}

void ContainerdRuntime::releaseDispatcher(event::Dispatcher& dispatcher) {
  std::unique_ptr<ContainerdClient> client;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = clients_.find(&dispatcher);
    if (it == clients_.end()) {
      return;
    }
    client = std::move(it->second);
    clients_.erase(it);
  }
  client.reset();
}

}  // namespace crisp::containerd
