#pragma once

// Protocol negotiation of the stream server's HTTP/1.1 upgrade, as pure
// functions: a parsed request in, a decision and the exact response bytes out.
// The rules and texts are those of the kubelet's streaming server (1.35):
//
// - WebSocket is recognised by "Upgrade: websocket" (first Upgrade value,
//   any case) and a Connection value containing "upgrade"; everything else
//   is handled as SPDY.
// - SPDY: every X-Stream-Protocol-Version value, split on lines and commas
//   and trimmed, in client order; the first one the server supports wins.
//   No header -> 400; only empty values -> 400; no match -> 403 listing both
//   sides (and X-Accepted-Stream-Protocol-Versions); a match but no
//   "Connection: upgrade" / "Upgrade: spdy/3.1" -> 400; else 101.
//
// Header names are matched case-insensitively, Connection and Upgrade values
// too. Error bodies read like Go's http.Error, since clients show them.

#include <string>
#include <string_view>
#include <vector>

#include "source/session/request.h"
#include "source/stream/upgrade.h"

namespace crisp::stream {

// What kubelet's WebSocket server sends when no subprotocol matches: a bare
// status line, no header, no body. kubectl 1.30+ then falls back to SPDY.
inline constexpr std::string_view kWebSocketForbiddenResponse = "HTTP/1.1 403 Forbidden\r\n\r\n";

// The SPDY protocol versions the server accepts for `op`, in server order:
// exec/attach [v4.channel.k8s.io v3.channel.k8s.io v2.channel.k8s.io
// channel.k8s.io], port-forward [portforward.k8s.io].
const std::vector<std::string>& spdyServerProtocols(session::Operation op);

// The X-Stream-Protocol-Version value of a SPDY protocol ("v4.channel.k8s.io").
const char* spdyProtocolVersion(Protocol p);

// True for a WebSocket upgrade request (see above).
bool isWebSocketRequest(const HttpRequest& request);

struct Negotiation {
  enum class Outcome {
    kSpdy,       // upgrade to `protocol`; `response` is the 101
    kWebSocket,  // a WebSocket upgrade; left to the WebSocket handler
    kRejected,   // `response` is the complete error response
  };
  Outcome outcome = Outcome::kRejected;
  Protocol protocol = Protocol::kSpdyRemoteCommandV4;
  // kWebSocket: the client's Sec-WebSocket-Protocol offer, in order.
  std::vector<std::string> websocket_protocols;
  // HTTP status of `response`: 101 for kSpdy, 400 or 403 for kRejected.
  int status = 0;
  std::string response;
};

// Decides how to answer `request` on a route of kind `op` (the token has
// already been accepted).
Negotiation negotiate(const HttpRequest& request, session::Operation op);

}  // namespace crisp::stream
