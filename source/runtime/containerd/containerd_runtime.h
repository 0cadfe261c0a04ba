#pragma once

// ContainerdRuntime: the session::Runtime of cri.backend containerd. crisp
// runs exec sessions itself through containerd's task API (startExec() in
// containerd_exec.h) on the socket given as cri.upstream; attach and
// port-forward are still served by containerd's stream server, through the
// StreamServerRuntime given here.
//
// One ContainerdClient per worker dispatcher, made on that dispatcher's thread
// with its first exec session. releaseDispatcher() destroys it; the server
// calls it for each worker once the worker's loop has stopped and before the
// dispatcher goes.
//
// Threading: startExec() and the port-forward calls run on the calling
// worker's dispatcher; the client map is guarded, everything else is
// immutable.

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
#include "source/session/runtime.h"

namespace crisp::containerd {

class ContainerdRuntime : public session::Runtime {
 public:
  // `socket` is containerd's (cri.upstream). `attach_backend` (the stream
  // server runtime) must outlive this object.
  ContainerdRuntime(std::string socket, ContainerdExecOptions exec_options,
                    session::Runtime& attach_backend);
  ~ContainerdRuntime() override;

  // Makes options.fifo_dir (and missing parents) and sets it to 0700.
  static absl::Status prepareFifoDir(const std::string& path);

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

  absl::StatusOr<std::unique_ptr<session::PortConnection>> connectPort(
      event::Dispatcher& dispatcher, const std::string& pod_sandbox_id, uint16_t port,
      session::PortCallbacks& callbacks) override {
    return attach_backend_.connectPort(dispatcher, pod_sandbox_id, port, callbacks);
  }
  std::unique_ptr<session::PortForwardSession> openPortForward(
      event::Dispatcher& dispatcher, const session::PortForwardSpec& spec) override {
    return attach_backend_.openPortForward(dispatcher, spec);
  }

  // containerd calls in flight on `dispatcher` (sessions, and the kill and
  // delete of sessions closed early): a stopping worker waits for them.
  size_t activeCalls(event::Dispatcher& dispatcher);

  // Destroys the client of `dispatcher`, ending its sessions' containerd
  // calls. On the dispatcher's thread, or once its loop has stopped.
  void releaseDispatcher(event::Dispatcher& dispatcher);

 private:
  ContainerdClient& clientFor(event::Dispatcher& dispatcher);

  const std::string socket_;
  const ContainerdExecOptions exec_options_;
  session::Runtime& attach_backend_;
  std::mutex mutex_;
  std::map<event::Dispatcher*, std::unique_ptr<ContainerdClient>> clients_;
};

}  // namespace crisp::containerd
