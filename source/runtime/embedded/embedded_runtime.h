#pragma once

// EmbeddedRuntime: a session::Runtime that runs commands as local processes,
// so that crisp serves exec and attach with no container runtime at all.
//
// Each configured container is also its own pod sandbox (same id). Its main
// process (when it has a command) is started by start() and runs on the
// runtime's own dispatcher thread; attach joins that process's stdio. Exec runs
// a new process per session with the container's working directory,
// environment and user. A main process that exits is not restarted: the
// container reports running=false from then on, and exec/attach are refused.
// A container without a command has no main process: it is running while the
// runtime runs, and only exec is possible.
//
// Port-forward (connectPort()) connects to 127.0.0.1:<port>, then [::1]:<port>,
// in the container's network namespace when one is configured
// (`network_namespace`, e.g. /run/netns/x or /proc/<pid>/ns/net; entered on a
// helper thread, see port_forward.h), else in crisp's own network.
//
// Processes get exactly the container's environment (plus PATH when it has
// none, and TERM=xterm with a tty), never crisp's. The user is switched only
// when crisp runs as root; otherwise commands run as crisp's own user.
//
// Usage:
//   EmbeddedContainerConfig c;
//   c.id = "c1";
//   c.command = {"sleep", "infinity"};
//   EmbeddedRuntime rt({c});
//   absl::Status s = rt.start();           // once, before sessions
//   ... rt.startExec(dispatcher, spec, size, callbacks) from any worker loop ...
//   rt.stop();                             // or let the destructor do it
//
// Threading: listContainers(), container(), startExec() and connectPort() may
// be called from any thread once start() returned. ExecProcess and
// PortConnection objects belong to the dispatcher passed in (see
// session::Runtime). The runtime may be
// destroyed while sessions still exist: exec sessions own their processes, and
// attach sessions then end with an error.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/common/dispatcher.h"
#include "source/session/request.h"
#include "source/session/runtime.h"

namespace crisp::runtime {

struct EmbeddedContainerConfig {
  std::string id;     // also the pod sandbox id; required, unique
  std::string name;   // defaults to id
  std::string image;  // informational; defaults to "host"
  // The main process; empty means none (exec only).
  std::vector<std::string> command;
  std::string working_dir = "/";  // absolute
  std::vector<std::string> env;   // "KEY=value"
  std::string user;               // "name", "uid", "name:group" or "uid:gid"; empty: crisp's
  bool tty = false;               // the main process gets a pty
  bool stdin = false;             // the main process's stdin is open for attach
  // The network namespace port-forward connects in (a namespace file such as
  // /run/netns/x or /proc/<pid>/ns/net); empty: crisp's own network.
  std::string network_namespace;
};

class MainHandle;
class MainProcess;
class NetnsSocketFactory;

class EmbeddedRuntime : public session::Runtime {
 public:
  // How long stop() waits after SIGTERM before SIGKILL by default.
  static constexpr std::chrono::milliseconds kDefaultStopGrace{2000};
  // How long start() waits for a main process to exec.
  static constexpr std::chrono::milliseconds kStartTimeout{5000};

  explicit EmbeddedRuntime(std::vector<EmbeddedContainerConfig> containers);
  // Stops the runtime (see stop()) if it is running.
  ~EmbeddedRuntime() override;
  EmbeddedRuntime(const EmbeddedRuntime&) = delete;
  EmbeddedRuntime& operator=(const EmbeddedRuntime&) = delete;

  // Validates the configuration (ids, working dirs, env entries, users),
  // starts the runtime's thread and every main process, and waits until each
  // one has exec'd. InvalidArgument for a bad configuration; FailedPrecondition
  // naming the container when a main process cannot be started (nothing is
  // left running then). Call once, from the owning thread.
  absl::Status start();

  // Sends SIGTERM to every main process group, SIGKILL after `grace`, waits
  // for them (one more second at most after SIGKILL), ends attached sessions
  // and stops the runtime's thread. Exec sessions are not touched; port
  // connections already made stay open, and connects still waiting for a
  // network namespace fail (their dispatchers must still exist). Blocks;
  // call from the owning thread, never from a session callback. Idempotent.
  void stop(std::chrono::milliseconds grace = kDefaultStopGrace);

  // session::Runtime
  std::vector<session::ContainerInfo> listContainers() const override;
  absl::StatusOr<session::ContainerInfo> container(const std::string& id) const override;
  absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
      event::Dispatcher& dispatcher, const session::ExecSpec& spec,
      std::optional<session::TerminalSize> initial, session::ExecCallbacks& callbacks) override;
  // Each container is its own pod sandbox: `pod_sandbox_id` is a container id.
  absl::StatusOr<std::unique_ptr<session::PortConnection>> connectPort(
      event::Dispatcher& dispatcher, const std::string& pod_sandbox_id, uint16_t port,
      session::PortCallbacks& callbacks) override;

 private:
  struct Container;

  const Container* find(const std::string& id) const;
  session::ContainerInfo infoLocked(const Container& c) const;
  absl::Status validate();
  // Host loop: spawns every main process. Returns the first failure.
  absl::Status startMainProcesses();
  // Host loop: part of stop().
  void beginShutdown(std::chrono::milliseconds grace);
  void onMainFinished(Container& c, int exit_code);
  void maybeEndShutdown();
  void endShutdown();

  std::vector<std::unique_ptr<Container>> containers_;
  const int64_t created_at_ns_;

  mutable std::mutex mutex_;
  bool started_ = false;   // guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_

  std::unique_ptr<event::Dispatcher> host_;
  std::thread host_thread_;
  // Host loop only.
  bool shutting_down_ = false;
  bool shutdown_done_ = false;
  std::unique_ptr<event::Timer> kill_timer_;
  std::unique_ptr<event::Timer> give_up_timer_;

  // Creates port-forward sockets inside network namespaces.
  std::unique_ptr<NetnsSocketFactory> netns_;
};

}  // namespace crisp::runtime
