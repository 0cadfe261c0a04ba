#include "source/runtime/containerd/containerd_runtime.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"
#include "source/runtime/containerd/containerd_port_forward.h"

namespace crisp::containerd {
namespace {

bool isSessionFifoName(std::string_view name) {
  return name == "stdin" || name == "stdout" || name == "stderr";
}

// Removes the FIFOs of one session directory (an open descriptor of it, taken
// without following links) and then the directory. False, with the reason in
// `why`, when it holds anything else; then nothing more is removed.
bool removeSessionDir(int parent, const std::string& name, std::string& why) {
  const int fd = ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    why = absl::StrCat("open: ", std::strerror(errno));
    return false;
  }
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    why = absl::StrCat("opendir: ", std::strerror(errno));
    ::close(fd);
    return false;
  }
  std::vector<std::string> fifos;
  bool only_fifos = true;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view entry_name = entry->d_name;
    if (entry_name == "." || entry_name == "..") {
      continue;
    }
    struct stat st {};
    if (!isSessionFifoName(entry_name) ||
        ::fstatat(fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISFIFO(st.st_mode)) {
      why = absl::StrCat("holds \"", std::string(entry_name), "\", which is not one of its FIFOs");
      only_fifos = false;
      break;
    }
    fifos.emplace_back(entry_name);
  }
  bool removed = only_fifos;
  for (size_t i = 0; removed && i < fifos.size(); ++i) {
    if (::unlinkat(fd, fifos[i].c_str(), 0) != 0 && errno != ENOENT) {
      why = absl::StrCat("unlink ", fifos[i], ": ", std::strerror(errno));
      removed = false;
    }
  }
  ::closedir(dir);
  if (removed && ::unlinkat(parent, name.c_str(), AT_REMOVEDIR) != 0) {
    why = absl::StrCat("rmdir: ", std::strerror(errno));
    removed = false;
  }
  return removed;
}

absl::Status fifoDirError(const std::string& path, const std::string& why) {
  return absl::FailedPreconditionError(
      absl::StrCat("runtime.containerd.fifo_dir: ", path, ": ", why));
}

}  // namespace

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
  absl::StatusOr<size_t> removed = removeStaleFifoDirs(path);
  if (!removed.ok()) {
    return removed.status();
  }
  if (*removed > 0) {
    CRISP_LOG(kRuntime, info,
              "runtime.containerd.fifo_dir: removed {} exec FIFO directories left in {} by an "
              "earlier crisp",
              *removed, path);
  }
  return absl::OkStatus();
}

absl::Status ContainerdRuntime::checkFifoDir(const std::string& path) {
  // The directory the FIFOs would be made in, or the nearest parent that
  // exists when it does not.
  std::string existing = path;
  struct stat st {};
  while (::stat(existing.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return fifoDirError(path, absl::StrCat("stat ", existing, ": ", std::strerror(errno)));
    }
    const size_t slash = existing.rfind('/');
    existing = slash == 0 || slash == std::string::npos ? "/" : existing.substr(0, slash);
  }
  const bool missing = existing != path;
  if (!S_ISDIR(st.st_mode)) {
    return fifoDirError(
        path, missing ? absl::StrCat(existing, " is not a directory") : "not a directory");
  }
  if (::access(existing.c_str(), W_OK | X_OK) != 0) {
    return fifoDirError(path, absl::StrCat(missing ? "cannot be made: " : "not writable: ",
                                           existing, ": ", std::strerror(errno)));
  }
  std::string scratch = absl::StrCat(existing == "/" ? "" : existing, "/.crisp-check-XXXXXX");
  if (::mkdtemp(scratch.data()) == nullptr) {
    return fifoDirError(path, absl::StrCat(missing ? "cannot be made: " : "not writable: ",
                                           "mkdir in ", existing, ": ", std::strerror(errno)));
  }
  const std::string fifo = scratch + "/stdout";
  absl::Status result;
  if (::mkfifo(fifo.c_str(), 0600) != 0) {
    result = fifoDirError(
        path, absl::StrCat("cannot hold FIFOs: mkfifo ", fifo, ": ", std::strerror(errno)));
  } else {
    ::unlink(fifo.c_str());
  }
  ::rmdir(scratch.c_str());
  return result;
}

absl::StatusOr<size_t> ContainerdRuntime::removeStaleFifoDirs(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("runtime.containerd.fifo_dir: open ", path, ": ", std::strerror(errno)));
  }
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    const int error = errno;
    ::close(fd);
    return absl::InternalError(
        absl::StrCat("runtime.containerd.fifo_dir: opendir ", path, ": ", std::strerror(error)));
  }
  // Names first, removal after: a directory is not changed while it is read.
  std::vector<std::string> candidates;
  while (const dirent* entry = ::readdir(dir)) {
    struct stat st {};
    if (ContainerdClient::isCrispExecId(entry->d_name) &&
        ::fstatat(fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      candidates.emplace_back(entry->d_name);
    }
  }
  size_t removed = 0;
  for (const std::string& name : candidates) {
    std::string why;
    if (removeSessionDir(fd, name, why)) {
      ++removed;
    } else {
      CRISP_LOG(kRuntime, warn, "runtime.containerd.fifo_dir: left {}/{} in place: {}", path, name,
                why);
    }
  }
  ::closedir(dir);
  return removed;
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

absl::StatusOr<std::unique_ptr<session::PortConnection>> ContainerdRuntime::connectPort(
    event::Dispatcher& dispatcher, const std::string& pod_sandbox_id, uint16_t port,
    session::PortCallbacks& callbacks) {
  return connectSandboxPort(dispatcher, clientFor(dispatcher), netns_, pod_sandbox_id, port,
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
