#pragma once

// The stream server's metrics, declared in one place (docs/metrics.md):
//   X(function, kind, name, label names, help)
// Each function returns its family in `registry`; the users look their
// children up once and keep them.

#include <string>
#include <vector>

#include "source/admin/metrics.h"

namespace crisp::stream {

#define CRISP_STREAM_METRICS(X)                                                              \
  X(connectionsTotalFamily, kCounter, "crisp_stream_connections_total", {},                  \
    "Connections accepted by the stream server.")                                            \
  X(connectionsActiveFamily, kGauge, "crisp_stream_connections_active", {},                  \
    "Stream server connections in their HTTP/1.1 phase (reading the request head or "       \
    "answering an error).")                                                                  \
  X(http2ConnectionsActiveFamily, kGauge, "crisp_stream_http2_connections_active", {},       \
    "Stream server connections speaking HTTP/2.")                                            \
  X(requestsFamily, kCounter, "crisp_stream_requests_total", {"result"},                     \
    "Stream server requests by outcome; upgraded ones are handed to a protocol handler.")   \
  X(limitHitsFamily, kCounter, "crisp_stream_limit_hits_total", {"limit"},                   \
    "Requests, connections and streams of the stream server refused or closed because "    \
    "they reached a limit, by limit.")                                                       \
  X(acceptPausesFamily, kCounter, "crisp_listener_accept_pauses_total", {"listener"},        \
    "Times a listener stopped accepting for a moment because accept() ran out of "          \
    "descriptors or memory.")                                                                \
  X(protocolErrorsFamily, kCounter, "crisp_stream_protocol_errors_total", {"reason"},        \
    "Client protocol violations seen by the stream server, by the stable name of the "      \
    "error (ws.invalid_utf8, spdy.bad_header_block, ws.channel.bad_base64, ...).")          \
  X(clientPingsFamily, kCounter, "crisp_stream_pings_total", {"protocol"},                   \
    "Keepalive pings received from clients, by protocol (spdy, websocket).")

#define CRISP_STREAM_METRIC_FUNCTION(function, kind, name, labels, help) \
  inline stats::Family& function(stats::Registry& registry) {            \
    return registry.family(name, help, stats::Kind::kind, labels);       \
  }
CRISP_STREAM_METRICS(CRISP_STREAM_METRIC_FUNCTION)
#undef CRISP_STREAM_METRIC_FUNCTION

// Declares every family above in `registry`, so that /metrics names each one
// (with its help) before its first event.
inline void registerStreamMetrics(stats::Registry& registry) {
#define CRISP_STREAM_METRIC_REGISTER(function, kind, name, labels, help) function(registry);
  CRISP_STREAM_METRICS(CRISP_STREAM_METRIC_REGISTER)
#undef CRISP_STREAM_METRIC_REGISTER
}

}  // namespace crisp::stream
