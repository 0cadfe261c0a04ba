#pragma once

// Port-forward for the embedded runtime: TCP connections to a port on the
// loopback interface of a pod sandbox's network, as session::PortConnection.
//
// - Where: 127.0.0.1:<port> first and, when that fails, [::1]:<port> (a
//   server may listen on one family only; the kubelet's runtimes try the same
//   two addresses). Loopback only: a port-forward reaches what the pod serves
//   on localhost, never another host.
// - Network namespace: when the target names one (a path such as
//   /run/netns/x or /proc/<pid>/ns/net), the sockets must be created inside
//   it. NetnsSocketFactory does that on a thread of its own: setns() into the
//   namespace, socket() for both families, setns() back, and the descriptors
//   are posted to the connection's dispatcher. Sockets keep the namespace they
//   were created in, so connecting, reading and writing then happen on the
//   dispatcher like any other socket. Without a namespace the sockets are
//   created on the dispatcher's thread, in crisp's own network.
// - Connecting is non-blocking and bounded by kConnectTimeout.
// - Error texts name the port, the sandbox and what each address answered:
//     failed to connect to localhost:8080 in the network of pod sandbox
//     "demo": 127.0.0.1:8080: connection refused; [::1]:8080: connection
//     refused
//   and, for a connection the application reset later (PortError
//   kConnectionLost):
//     connection to localhost:8080 in the network of pod sandbox "demo"
//     lost: read: connection reset by peer
//
// Usage (normally through EmbeddedRuntime::connectPort()):
//   NetnsSocketFactory factory;             // outlives the connections' requests
//   auto conn = connectLoopbackPort(dispatcher, {"demo", "/run/netns/demo", 8080},
//                                   &factory, callbacks);
//   ... callbacks.onConnected(), onData(), ...; conn->write(bytes); ...
//
// Threading: a connection lives on its dispatcher (see session::PortConnection).
// NetnsSocketFactory::create() may be called from any thread.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/common/dispatcher.h"
#include "source/runtime/embedded/unique_fd.h"
#include "source/session/runtime.h"

namespace crisp::runtime {

// What to connect to.
struct PortTarget {
  std::string pod_sandbox_id;     // for error texts and logs
  std::string network_namespace;  // a namespace file; empty: crisp's own network
  uint16_t port = 0;
};

// A non-blocking IPv4 and IPv6 stream socket created in one network namespace.
// Either may be invalid when its family is not available there.
struct LoopbackSockets {
  UniqueFd v4;
  UniqueFd v6;
};

// Creates loopback sockets inside other network namespaces, on one helper
// thread started on first use. Requests are served in order.
class NetnsSocketFactory {
 public:
  // Receives the sockets, or an error naming the namespace. Runs on the
  // helper thread (or, after stop(), on the caller's): post to a dispatcher.
  using Done = std::function<void(absl::StatusOr<LoopbackSockets>)>;

  NetnsSocketFactory() = default;
  // stop().
  ~NetnsSocketFactory();
  NetnsSocketFactory(const NetnsSocketFactory&) = delete;
  NetnsSocketFactory& operator=(const NetnsSocketFactory&) = delete;

  // Thread-safe. Queues a request for sockets in the namespace at
  // `namespace_path`; `done` is called exactly once.
  void create(const std::string& namespace_path, Done done);

  // Finishes the request in progress, answers the queued ones with
  // Cancelled, and joins the helper thread. Later create() calls are answered
  // with Cancelled at once. Idempotent; do not call from `done`.
  void stop();

  // Requests served so far (tests).
  uint64_t served() const;

 private:
  struct Request {
    std::string path;
    Done done;
  };

  void run();

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Request> queue_;  // guarded by mutex_
  bool stopping_ = false;      // guarded by mutex_
  uint64_t served_ = 0;        // guarded by mutex_
  std::thread thread_;
};

// Makes sockets inside the namespace at `namespace_path` on the calling thread
// (which must be one that may change namespaces: it is moved into the target
// and back). Exposed for tests; NetnsSocketFactory calls it.
absl::StatusOr<LoopbackSockets> makeSocketsInNamespace(const std::string& namespace_path);

// Starts connecting to `target`. `netns` is required when the target names a
// namespace and must outlive the request (EmbeddedRuntime::stop() waits for
// it). Returns an error only for failures known at once (a socket that cannot
// be created, port 0); everything else arrives through `callbacks`.
absl::StatusOr<std::unique_ptr<session::PortConnection>> connectLoopbackPort(
    event::Dispatcher& dispatcher, const PortTarget& target, NetnsSocketFactory* netns,
    session::PortCallbacks& callbacks);

// The longest a connect may take, over both addresses.
inline constexpr std::chrono::milliseconds kConnectTimeout{30000};

}  // namespace crisp::runtime
