#pragma once

// The session model: what every client-side wire adapter (SPDY, WebSocket, ...)
// and every runtime backend (embedded host processes, a runtime's stream server,
// containerd's task API) agree on. An adapter turns its wire protocol into calls
// on an ExecProcess and receives ExecCallbacks; a backend implements Runtime.
// Port-forward: an adapter asks Runtime::connectPort() for one PortConnection
// per forwarded TCP connection and receives PortCallbacks.
//
// Threading: startExec() and connectPort() are called on the dispatcher that
// owns the client connection; the returned ExecProcess / PortConnection and the
// callbacks belong to that same dispatcher for their whole life. A backend that
// does blocking work (spawning, entering namespaces) does it elsewhere and
// posts results back.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/request.h"

namespace crisp::session {

struct TerminalSize {
  uint16_t width = 0;
  uint16_t height = 0;
  bool operator==(const TerminalSize& o) const { return width == o.width && height == o.height; }
};

// How an exec or attach ended.
struct ExitStatus {
  enum class Kind {
    kSuccess,      // exit code 0, or an attach that ended normally
    kNonZeroExit,  // exit_code holds the code (0-255; death by signal N is 128+N)
    kError,        // the runtime failed; message says why
    kEndedByServer,  // crisp ended the session (shutdown, idle timeout); message
                     // says why, reason and http_code go in the Status
  };
  Kind kind = Kind::kSuccess;
  int exit_code = 0;
  std::string message;
  // kEndedByServer: the Status reason ("ServiceUnavailable", "Timeout") and code.
  std::string reason;
  int http_code = 0;

  static ExitStatus success() { return {}; }
  static ExitStatus exited(int code) {
    return code == 0 ? success() : ExitStatus{Kind::kNonZeroExit, code, "", "", 0};
  }
  static ExitStatus error(std::string message) { return {Kind::kError, 0, std::move(message), "", 0}; }
  static ExitStatus endedByServer(std::string message, std::string reason, int http_code) {
    return {Kind::kEndedByServer, 0, std::move(message), std::move(reason), http_code};
  }
};

// Implemented by the client-side adapter; called by the backend on the
// session's dispatcher.
class ExecCallbacks {
 public:
  virtual ~ExecCallbacks() = default;

  // Output of the process. The callee takes the bytes (drains `data`).
  virtual void onStdout(Buffer& data) = 0;
  virtual void onStderr(Buffer& data) = 0;
  // Zero-copy stdout, offered by a backend whose stdout is a pipe that only
  // it reads (the embedded runtime without a tty), in place of reading it and
  // calling onStdout(). The callee may move up to `limit` of the bytes the
  // pipe holds straight to its client (splice(2)) and returns how many it
  // took; 0 declines, and the backend reads them and calls onStdout() as
  // usual. Taken bytes count as delivered. Bytes it took but could not move
  // yet stay in the pipe: before returning, the callee then pauses output
  // (ExecProcess::pauseOutput) and resumes only once they are moved, and the
  // backend reads nothing from the pipe while paused. The backend keeps the
  // pipe open while output is paused, but may close it once the process is
  // destroyed; a callee that still needs it keeps its own descriptor.
  virtual size_t onStdoutPipe(int pipe_fd, size_t limit) {
    (void)pipe_fd;
    (void)limit;
    return 0;
  }
  // The same for stderr, in place of onStderr(). While either stream's bytes
  // wait in their pipe, output is paused for both.
  virtual size_t onStderrPipe(int pipe_fd, size_t limit) {
    (void)pipe_fd;
    (void)limit;
    return 0;
  }
  // Called exactly once, after the last onStdout()/onStderr(): every byte of
  // output has been delivered before the status.
  virtual void onExit(const ExitStatus& status) = 0;
  // The backend's stdin queue fell below its low watermark after having been
  // above its high watermark; the adapter may read more from its client.
  virtual void onStdinDrained() = 0;
};

// Implemented by the backend: one running exec, or one attachment to a
// container's main process. Destroying it before onExit() ends the exec (its
// process group is killed) or detaches from the container (which keeps running).
class ExecProcess {
 public:
  virtual ~ExecProcess() = default;

  // Queues bytes for the process's stdin and takes them (drains `data`).
  virtual void writeStdin(Buffer& data) = 0;
  // Bytes queued for stdin and not yet accepted by the process. The adapter
  // stops reading its client above kStdinHighWatermark and resumes on
  // onStdinDrained().
  virtual size_t stdinQueuedBytes() const = 0;
  // Half-close: the process sees EOF on stdin once the queued bytes are written.
  // Output keeps flowing.
  virtual void closeStdin() = 0;
  // Zero-copy stdin: the pipe the process reads its stdin from, which the
  // adapter may then write into itself (splice(2) from its client's socket)
  // in place of writeStdin(); -1 (the default) where stdin is not a pipe
  // that only the process reads (a terminal, a remote runtime), is closed,
  // or while bytes queued by writeStdin() still wait for it, so that the
  // order holds (the backend may try to flush them inside the call). Asked
  // before each such write. Bytes written there are not counted in
  // stdinQueuedBytes(): the pipe's reader holds the writer back. The pipe
  // stays open until closeStdin() (after the queued bytes) or the end. From
  // the first call on the backend keeps the pipe at its default size:
  // splice(2) from a socket fills a pipe slot by slot, each with up to a
  // whole socket buffer fragment, so a larger pipe would take many times its
  // size from the client while the process does not read.
  virtual int stdinPipe() { return -1; }
  // Applies a terminal size (TTY sessions only; ignored otherwise).
  virtual void resize(TerminalSize size) = 0;
  // Backpressure from the client: while paused, the backend stops reading the
  // process's output (the process blocks on a full pipe) instead of buffering.
  virtual void pauseOutput(bool paused) = 0;

  static constexpr size_t kStdinHighWatermark = 1 << 20;
};

// What the runtime knows about one container.
struct ContainerInfo {
  std::string id;
  std::string name;
  std::string pod_sandbox_id;
  std::string image;
  bool running = false;
  bool tty = false;    // the main process has a terminal
  bool stdin = false;  // the main process reads stdin (attach may write to it)
  int64_t created_at_ns = 0;
  int64_t started_at_ns = 0;
  std::vector<std::string> command;
};

// Why a port connection failed (see PortCallbacks::onError()).
struct PortError {
  enum class Kind {
    kRefused,         // nothing listens on the port: the connect was refused
    kConnectFailed,   // the connection could not be made for another reason
                      // (unreachable, timed out, no network namespace, ...)
    kConnectionLost,  // the connection was made, then the pod side reset it or
                      // the socket failed (onConnected() may not have come yet)
    kRuntimeReported,  // a runtime's stream server wrote this failure on its
                       // error stream; `message` is its text, shown unchanged
  };
  Kind kind = Kind::kConnectFailed;
  // Says what happened in words a client may show, e.g.
  //   failed to connect to localhost:8080 in the network of pod sandbox
  //   "demo": 127.0.0.1:8080: connection refused; [::1]:8080: connection refused
  std::string message;
};

// Implemented by a port-forward adapter; called by the backend on the
// dispatcher passed to Runtime::connectPort(), never from inside a call the
// adapter made on the PortConnection (write(), pauseReading(), ...), so the
// adapter may call any PortConnection method here. It must not destroy the
// PortConnection inside a callback; Dispatcher::deferredDelete() it instead.
class PortCallbacks {
 public:
  virtual ~PortCallbacks() = default;

  // The connection to the port is established. Bytes written before are
  // sent from now on. Called at most once, before any onData().
  virtual void onConnected() = 0;
  // Bytes from the port. The callee takes them (drains `data`).
  virtual void onData(Buffer& data) = 0;
  // Zero-copy bytes from the port, for a backend that moves them from its
  // socket into a pipe that only it reads (the embedded runtime), as
  // ExecCallbacks::onStdoutPipe() does for stdout. canTakeDataPipe() says
  // whether onDataPipe() would take bytes now (a client on a plain socket,
  // nothing queued): the backend asks before it moves bytes into its pipe,
  // and reads them into a Buffer for onData() otherwise. onDataPipe(), in
  // place of onData(), may move up to `limit` of the bytes the pipe holds
  // straight to the client (splice(2)) and returns how many it took; 0
  // declines, and the backend reads them and calls onData(). Taken bytes
  // count as delivered. Bytes it took but could not move yet stay in the
  // pipe: before returning, the callee then pauses reading
  // (PortConnection::pauseReading) and resumes only once they are moved, and
  // the backend reads nothing from the pipe while paused. The backend closes
  // the pipe with the connection; a callee that still needs it keeps its own
  // descriptor.
  virtual bool canTakeDataPipe() const { return false; }
  virtual size_t onDataPipe(int pipe_fd, size_t limit) {
    (void)pipe_fd;
    (void)limit;
    return 0;
  }
  // The pod side half-closed (TCP FIN): no more onData(). Writing goes on.
  virtual void onRemoteEof() = 0;
  // queuedBytes() fell to PortConnection::kWriteLowWatermark or below after
  // having been above PortConnection::kWriteHighWatermark.
  virtual void onWriteDrained() = 0;
  // Both directions ended normally: onRemoteEof() was delivered and, after
  // shutdownWrite(), every queued byte was written and the write side shut.
  // The socket is closed. Nothing follows.
  virtual void onClosed() = 0;
  // The connection failed (see PortError::Kind) and is closed; queued bytes
  // are dropped. Nothing follows.
  virtual void onError(const PortError& error) = 0;
};

// One TCP connection to a port inside a pod sandbox, made by the backend.
// Belongs to the dispatcher passed to Runtime::connectPort(). Destroying it
// closes the socket at once (queued bytes are dropped) without callbacks.
class PortConnection {
 public:
  virtual ~PortConnection() = default;

  // Queues all of `data` (drained) for the port, also while still connecting.
  // Never blocks and never fails here: failures arrive as onError(). Bytes
  // written after shutdownWrite() are dropped.
  virtual void write(Buffer& data) = 0;
  // Bytes queued and not yet accepted by the socket. The adapter stops
  // reading its client above kWriteHighWatermark and resumes on
  // onWriteDrained().
  virtual size_t queuedBytes() const = 0;
  // Half-close: the port sees EOF (TCP FIN) once the queued bytes are written.
  // Reading goes on. Idempotent.
  virtual void shutdownWrite() = 0;
  // Stops (true) or resumes (false) reading from the port (and so delivering
  // onData()/onRemoteEof()); while paused the pod's sends block in TCP instead
  // of being buffered here.
  virtual void pauseReading(bool paused) = 0;

  static constexpr size_t kWriteHighWatermark = 1 << 20;
  static constexpr size_t kWriteLowWatermark = 256 * 1024;
};

// One client port-forward session as the backend sees it: every forwarded
// connection of the session is made through it, so a backend that keeps
// something per session (one connection to a runtime's stream server carrying
// each forwarded connection as a stream pair) has a place for it. Created by
// Runtime::openPortForward() and used on that dispatcher only. The adapter
// destroys its PortConnections before the session.
class PortForwardSession {
 public:
  virtual ~PortForwardSession() = default;

  // As Runtime::connectPort(), for the session's pod sandbox.
  virtual absl::StatusOr<std::unique_ptr<PortConnection>> connectPort(uint16_t port,
                                                                      PortCallbacks& callbacks) = 0;
};

class Runtime {
 public:
  virtual ~Runtime() = default;

  virtual std::vector<ContainerInfo> listContainers() const = 0;
  // NotFound when there is no such container.
  virtual absl::StatusOr<ContainerInfo> container(const std::string& id) const = 0;

  // Starts an exec (spec.operation == kExec) or attaches (kAttach). `initial`
  // is the terminal size to apply before the process runs, when known.
  // Failures known at once are returned; failures found later (a command that
  // cannot be executed) arrive as onExit() with a kError or kNonZeroExit status.
  virtual absl::StatusOr<std::unique_ptr<ExecProcess>> startExec(
      event::Dispatcher& dispatcher, const ExecSpec& spec, std::optional<TerminalSize> initial,
      ExecCallbacks& callbacks) = 0;

  // Opens a TCP connection to `port` on the loopback interface of the pod
  // sandbox's network. Called on `dispatcher`'s thread; the returned
  // connection and `callbacks` belong to that dispatcher, and `callbacks` must
  // outlive the connection. Failures known at once are returned (NotFound for
  // an unknown sandbox, FailedPrecondition when it is not running,
  // InvalidArgument for port 0); the connect itself completes later, as
  // onConnected() or onError().
  //
  // The default refuses with UNIMPLEMENTED, for backends without port-forward.
  virtual absl::StatusOr<std::unique_ptr<PortConnection>> connectPort(
      event::Dispatcher& dispatcher, const std::string& pod_sandbox_id, uint16_t port,
      PortCallbacks& callbacks) {
    (void)dispatcher;
    (void)port;
    (void)callbacks;
    return absl::UnimplementedError("port-forward to pod sandbox \"" + pod_sandbox_id +
                                    "\" is not supported by this runtime");
  }

  // Starts a client's port-forward session (`spec` as the CRI call carried
  // it). Called on `dispatcher`'s thread, once per client session, before its
  // first connection. The default makes every connection with connectPort().
  virtual std::unique_ptr<PortForwardSession> openPortForward(event::Dispatcher& dispatcher,
                                                              const PortForwardSpec& spec);
};

// The default session: each connection is a Runtime::connectPort() call.
class DirectPortForwardSession : public PortForwardSession {
 public:
  DirectPortForwardSession(Runtime& runtime, event::Dispatcher& dispatcher,
                           std::string pod_sandbox_id)
      : runtime_(runtime), dispatcher_(dispatcher), pod_sandbox_id_(std::move(pod_sandbox_id)) {}

  absl::StatusOr<std::unique_ptr<PortConnection>> connectPort(uint16_t port,
                                                              PortCallbacks& callbacks) override {
    return runtime_.connectPort(dispatcher_, pod_sandbox_id_, port, callbacks);
  }

 private:
  Runtime& runtime_;
  event::Dispatcher& dispatcher_;
  const std::string pod_sandbox_id_;
};

inline std::unique_ptr<PortForwardSession> Runtime::openPortForward(event::Dispatcher& dispatcher,
                                                                   const PortForwardSpec& spec) {
  return std::make_unique<DirectPortForwardSession>(*this, dispatcher, spec.pod_sandbox_id);
}

}  // namespace crisp::session
