#pragma once

// Port-forward for the containerd-direct backend: a TCP connection to a port
// on the loopback interface of a pod sandbox's network namespace, found
// through containerd's own API rather than through the CRI plugin's stream
// server.
//
// For each connection:
//   1. ContainerdClient::sandboxNetwork(): Containers/Get and Tasks/Get of the
//      sandbox, giving its namespace file (the CNI namespace its OCI spec
//      names, else /proc/<pid>/ns/net of its running task);
//   2. connectLoopbackPort() (source/runtime/embedded/port_forward.h) with that
//      namespace: NetnsSocketFactory makes the sockets inside it, then
//      127.0.0.1:<port> and [::1]:<port> are tried on the dispatcher.
// The namespace is looked up afresh for every connection: two unary calls on
// the client's open HTTP/2 connection, against a cache that would have to
// notice a sandbox whose task (and so namespace) was recreated.
//
// The connection is returned at once. Until the lookup has answered it keeps
// what the caller writes (and shutdownWrite(), pauseReading()) and hands them
// on to the socket connection; queuedBytes() counts them meanwhile. A failed
// lookup arrives as PortCallbacks::onError(kConnectFailed) with a text in the
// form of the embedded runtime's:
//   failed to connect to localhost:8080 in the network of pod sandbox "x":
//   pod sandbox "x" not found
//   ... : pod sandbox "x" is not running (its task is stopped)
//   ... : cannot open network namespace "/var/run/netns/cni-...": no such
//         file or directory
// and a refused port as kRefused, naming what each address answered.
// Destroying the connection, also during the lookup, ends it without
// callbacks.
//
// Needs: crisp in the host's pid namespace (for /proc/<pid>/ns/net) with
// CAP_SYS_ADMIN (setns), as for the embedded runtime's namespaces.
//
// Threading and lifetime: everything on `dispatcher`, which must be the
// client's. `client` and `netns` must outlive the connection; `callbacks`
// as session::PortCallbacks says.

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

#include "source/common/dispatcher.h"
#include "source/runtime/containerd/containerd_client.h"
#include "source/runtime/embedded/port_forward.h"
#include "source/session/runtime.h"

namespace crisp::containerd {

// Connects to `port` on the loopback of pod sandbox `pod_sandbox_id`'s network
// namespace. Returns an error only for port 0 (INVALID_ARGUMENT); everything
// else arrives through `callbacks`.
absl::StatusOr<std::unique_ptr<session::PortConnection>> connectSandboxPort(
    event::Dispatcher& dispatcher, ContainerdClient& client, runtime::NetnsSocketFactory& netns,
    const std::string& pod_sandbox_id, uint16_t port, session::PortCallbacks& callbacks);

}  // namespace crisp::containerd
