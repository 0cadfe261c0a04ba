#pragma once

// portforward: the wire-independent rules of Kubernetes port-forward, shared by
// every client-side adapter (SPDY stream pairs, WebSocket channels).
//
// - parsePort(): a port as the kubelet accepts it (decimal, 1-65535).
// - PortStreamType: the two stream roles of a forwarded connection.
// - The exact texts clients see on an error stream: forwardingError() for a
//   connection the runtime could not make, streamTimeoutError() for a pair
//   whose partner never came, duplicateStreamError() for a second stream of a
//   kind already in the pair.
// - writesErrorText(): which runtime failures are reported on the error
//   stream (and so end a kubectl session) and which only end the one
//   forwarded connection.
// - PortForwardMetrics: the component's metric list.
//
// Everything here is pure and thread-safe.
//
// Typical use by an adapter:
//   absl::StatusOr<uint16_t> port = parsePort(header_value);
//   if (!port.ok()) { refuse the stream; }
//   ... runtime.connectPort(...) -> onError(e):
//   if (writesErrorText(e.kind)) {
//     write forwardingError(*port, sandbox, e.message) on the error stream;
//   }

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

#include "source/admin/metrics.h"
#include "source/session/runtime.h"

namespace crisp::session {

// The value of a `port` header (or query parameter) as the kubelet parses it:
// decimal digits only (leading zeros allowed, no sign, no spaces), at most
// 65535, and not 0. InvalidArgument with the kubelet's reason otherwise:
//   "port" header is required
//   unable to parse "x" as a port: <why>
//   port "0" must be > 0
absl::StatusOr<uint16_t> parsePort(std::string_view value);

// The role of a stream in a forwarded connection (SPDY `streamType` header).
enum class PortStreamType { kError, kData };

// "error" or "data".
const char* portStreamTypeName(PortStreamType t);

// Exact, case-sensitive match of "error" or "data" (as the kubelet compares).
std::optional<PortStreamType> parsePortStreamType(std::string_view value);

// The error-stream text for a connection the runtime could not make, as the
// kubelet's server writes it (the pod uid is empty in the CRI server):
//   error forwarding port 8080 to pod <pod_sandbox_id>, uid : <error>
std::string forwardingError(uint16_t port, std::string_view pod_sandbox_id, std::string_view error);

// The error-stream text for a runtime failure: forwardingError() of its
// message, or the message unchanged when a runtime's stream server wrote it
// (PortError::Kind::kRuntimeReported), since that text is complete already.
std::string portErrorText(uint16_t port, std::string_view pod_sandbox_id, const PortError& error);

// The error-stream text when a pair's partner stream did not arrive within the
// creation timeout: (conn=<connection>, request=<request_id>) timed out waiting for streams
std::string streamTimeoutError(std::string_view connection, std::string_view request_id);

// The error-stream text for a second stream of a kind the pair already has:
//   error processing stream for request <request_id>: error stream already assigned
std::string duplicateStreamError(std::string_view request_id, PortStreamType type);

// True when a runtime failure of this kind is written on the error stream.
//
// kRefused and kConnectFailed: yes, as the kubelet does. A kubectl client then
// ends its whole port-forward session ("lost connection to pod"), which is
// also what it does behind a kubelet.
//
// kConnectionLost: no. The connection was made and the application in the pod
// reset it (or the socket failed later); that ends this one forwarded
// connection like a close, and the client's other connections go on. Every
// kubectl (1.27 to 1.35 at least) closes the whole SPDY connection on any
// error-stream text, so reporting a reset there would let one application
// reset take down every forward.
bool writesErrorText(PortError::Kind kind);

// How a forwarded connection's connect ended, the `result` metric label:
// "ok", "refused" or "error".
enum class PortConnectResult { kOk, kRefused, kError };
const char* portConnectResultName(PortConnectResult r);
// The result for a runtime failure: kRefused for PortError::kRefused, else kError.
PortConnectResult connectResultOf(PortError::Kind kind);

// The port-forward metrics, declared in one place. Sessions themselves are
// counted in SessionMetrics with operation="portforward".
#define CRISP_PORTFORWARD_METRICS(COUNTER, GAUGE)                                         \
  COUNTER(connections_total, "crisp_portforward_connections_total",                       \
          "Forwarded connections by how their connect ended: ok, refused (nothing "       \
          "listens on the port), error (any other failure, including an unknown sandbox " \
          "or a namespace that cannot be entered).",                                      \
          (std::vector<std::string>{"result"}))                                           \
  GAUGE(connections_active, "crisp_portforward_connections_active",                       \
        "Forwarded connections (stream pairs) now open, connecting or waiting for their " \
        "partner stream.",                                                                \
        (std::vector<std::string>{}))                                                     \
  COUNTER(spliced_bytes_total, "crisp_portforward_spliced_bytes_total",                   \
          "Bytes from pods to clients moved from the pod's socket to the client's with "  \
          "splice(2), never copied through crisp (plain TCP clients of the embedded and " \
          "containerd runtimes); the rest are copied.",                                   \
          (std::vector<std::string>{}))

struct PortForwardMetrics {
#define CRISP_PORTFORWARD_METRIC_FIELD(field, name, help, labels) stats::Family& field;
  CRISP_PORTFORWARD_METRICS(CRISP_PORTFORWARD_METRIC_FIELD, CRISP_PORTFORWARD_METRIC_FIELD)
#undef CRISP_PORTFORWARD_METRIC_FIELD

  // Children looked up once; updates are lock-free.
  stats::Counter& ok;
  stats::Counter& refused;
  stats::Counter& error;
  stats::Gauge& active;
  stats::Counter& spliced_bytes;

  stats::Counter& result(PortConnectResult r);

  // The families registered in stats::registry(), created on first use.
  static PortForwardMetrics& get();
};

}  // namespace crisp::session
