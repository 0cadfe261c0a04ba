#pragma once

// ContainerdRuntime: the session::Runtime of cri.backend containerd. crisp
// serves exec and port-forward itself through containerd's API on the socket
// given as cri.upstream: exec sessions through the task API (startExec() in
// containerd_exec.h), each forwarded connection into the pod sandbox's network
// namespace (connectSandboxPort() in containerd_port_forward.h). Attach is
// still served by containerd's stream server, through the StreamServerRuntime
// given here.
//
// One ContainerdClient per worker dispatcher, made on that dispatcher's thread
// with its first session. releaseDispatcher() destroys it; the server calls it
// for each worker once the worker's loop has stopped and before the dispatcher
// goes. The sockets inside sandbox namespaces come from one helper thread
// shared by all workers (runtime::NetnsSocketFactory); stop() ends it.
//
// Threading: startExec() and connectPort() run on the calling worker's
// dispatcher; the client map is guarded, everything else is immutable or
// thread-safe.

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/common/dispatcher.h"
#include "source/runtime/containerd/containerd_client.h"
#include "source/runtime/containerd/containerd_exec.h"
#include "source/runtime/embedded/port_forward.h"
#include "source/session/runtime.h"

namespace crisp::containerd {

class ContainerdRuntime : public session::Runtime {
 public:
  // `socket` is containerd's (cri.upstream). `attach_backend` (the stream
  // server runtime) must outlive this object.
  ContainerdRuntime(std::string socket, ContainerdExecOptions exec_options,
                    session::Runtime& attach_backend);
  ~ContainerdRuntime() override;

  // Makes options.fifo_dir (and missing parents), sets it to 0700 and removes
  // what a crisp that was killed left there (removeStaleFifoDirs()).
  static absl::Status prepareFifoDir(const std::string& path);

  // Removes the session directories in `path` that an earlier crisp left:
  // subdirectories named like an exec id ("crisp-" and lowercase hex digits),
  // with the FIFOs "stdin", "stdout" and "stderr" in them. Nothing else is
  // touched: not other names, not symbolic links, not a session directory
  // holding anything but those FIFOs (it is left, with a warning). Returns how
  // many directories were removed. Call it before the first session starts;
  // two crisps must not share a fifo_dir.
  static absl::StatusOr<size_t> removeStaleFifoDirs(const std::string& path);

  // For --check-config: whether prepareFifoDir(path) and the sessions'
  // FIFOs can work, without leaving anything behind. `path` must be a
  // directory crisp can write in, or be missing with its nearest existing
  // parent such a directory (prepareFifoDir() makes it then); FIFOs must be
  // possible there: one is made in a temporary subdirectory (of `path`, or
  // that parent) and removed again. FAILED_PRECONDITION naming the path and
  // the reason otherwise.
  static absl::Status checkFifoDir(const std::string& path);

  // Whether `socket` serves containerd's task API: a Containers/Get of an id
  // no container has must be answered (NOT_FOUND). Blocks for at most
  // `timeout`; runs its own loop (for --check-config).
  static absl::Status probe(const std::string& socket, std::chrono::milliseconds timeout);

  std::vector<session::ContainerInfo> listContainers() const override { return {}; }
  absl::StatusOr<session::ContainerInfo> container(const std::string& id) const override {
    return attach_backend_.container(id);
  }

  // kExec through containerd's task API; kAttach by the attach backend.
  absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
      event::Dispatcher& dispatcher, const session::ExecSpec& spec,
      std::optional<session::TerminalSize> initial, session::ExecCallbacks& callbacks) override;

  // A connection to `port` on the loopback of the sandbox's network
  // namespace (connectSandboxPort()). The default openPortForward() makes one
  // such call per forwarded connection; the runtime's stream server is not
  // used.
  absl::StatusOr<std::unique_ptr<session::PortConnection>> connectPort(
      event::Dispatcher& dispatcher, const std::string& pod_sandbox_id, uint16_t port,
      session::PortCallbacks& callbacks) override;

  // containerd calls in flight on `dispatcher` (sessions, and the kill and
  // delete of sessions closed early): a stopping worker waits for them.
  size_t activeCalls(event::Dispatcher& dispatcher);

  // Destroys the client of `dispatcher`, ending its sessions' containerd
  // calls. On the dispatcher's thread, or once its loop has stopped.
  void releaseDispatcher(event::Dispatcher& dispatcher);

  // Ends the namespace helper thread: the request it serves finishes, queued
  // ones are answered as cancelled (posted to their dispatchers, which must
  // still exist; their loops may have stopped). Later port-forward
  // connections fail. The server calls it once every worker has stopped.
  void stop() { netns_.stop(); }

 private:
  ContainerdClient& clientFor(event::Dispatcher& dispatcher);

  const std::string socket_;
  const ContainerdExecOptions exec_options_;
  session::Runtime& attach_backend_;
  std::mutex mutex_;
  std::map<event::Dispatcher*, std::unique_ptr<ContainerdClient>> clients_;
  // Declared after clients_: destroyed (stopped) first, so no namespace
  // request outlives the client whose connection asked for it.
  runtime::NetnsSocketFactory netns_;
};

}  // namespace crisp::containerd
