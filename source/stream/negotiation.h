#pragma once

// Protocol negotiation of the stream server's HTTP/1.1 upgrade, as pure
// functions: a parsed request in, a decision and the exact response bytes out.
// The rules and texts are those of the kubelet's streaming server (1.35):
//
// - WebSocket is recognised by "Upgrade: websocket" (first Upgrade value,
//   any case) and a Connection value containing "upgrade"; everything else
//   is handled as SPDY.
// - WebSocket: the opening handshake of golang.org/x/net/websocket
//   (codec/websocket/handshake.h): GET only (405), a key and version 13
//   (400, with "Sec-WebSocket-Version: 13" for a wrong version); the first
//   subprotocol of the client's Sec-WebSocket-Protocol list (lines and commas)
//   the route accepts and a handler serves wins, none offered means ""
//   (binary v1 framing, no subprotocol in the reply); no match -> the bare
//   "HTTP/1.1 403 Forbidden", after which kubectl falls back to SPDY. Else
//   101 with Sec-WebSocket-Accept and the chosen Sec-WebSocket-Protocol.
// - SPDY: every X-Stream-Protocol-Version value, split on lines and commas
//   and trimmed, in client order; the first one the server supports wins.
//   No header -> 400; only empty values -> 400; no match -> 403 listing both
//   sides (and X-Accepted-Stream-Protocol-Versions); a match but no
//   "Connection: upgrade" / "Upgrade: spdy/3.1" -> 400; else 101.
//
// Header names are matched case-insensitively, Connection and Upgrade values
// too. Error bodies read like Go's http.Error, since clients show them.

#include <functional>
#include <optional>
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

// The X-Stream-Protocol-Version value of a SPDY protocol ("v4.channel.k8s.io");
// "" for a WebSocket protocol.
const char* spdyProtocolVersion(Protocol p);

// The WebSocket subprotocols the server accepts for `op` ("" stands for no
// offer): exec/attach "", channel.k8s.io, base64.channel.k8s.io,
// v4.channel.k8s.io, v4.base64.channel.k8s.io (the kubelet's map) and
// v5.channel.k8s.io (which crisp serves too); port-forward "",
// v4.channel.k8s.io, v4.base64.channel.k8s.io (the kubelet's map) and
// SPDY/3.1+portforward.k8s.io (the SPDY tunnel).
const std::vector<std::string>& websocketServerProtocols(session::Operation op);

// The protocol of WebSocket subprotocol `subprotocol` ("" = none) on a route
// of kind `op`; nullopt when the route does not accept it.
std::optional<Protocol> websocketProtocol(session::Operation op, std::string_view subprotocol);

// True for a WebSocket upgrade request (see above).
bool isWebSocketRequest(const HttpRequest& request);

struct Negotiation {
  enum class Outcome {
    kSpdy,       // upgrade to SPDY `protocol`; `response` is the 101
    kWebSocket,  // upgrade to WebSocket `protocol`; `response` is the 101
    kRejected,   // `response` is the complete error response
  };
  Outcome outcome = Outcome::kRejected;
  Protocol protocol = Protocol::kSpdyRemoteCommandV4;
  // kWebSocket: the chosen subprotocol as echoed in the 101 ("" = none sent).
  std::string subprotocol;
  // HTTP status of `response`: 101 when upgrading; 400, 403 or 405 for
  // kRejected.
  int status = 0;
  // kRejected of a WebSocket request: the handshake's stable reason
  // ("ws.handshake.no_subprotocol", ...), for logs. Empty otherwise.
  std::string reason;
  std::string response;
};

// The answer to an RFC 8441 extended CONNECT on a route of kind `op` (the
// token has already been accepted): the same subprotocol choice as the
// HTTP/1.1 WebSocket handshake, answered with 200 and the chosen
// sec-websocket-protocol; a :protocol other than websocket or a
// sec-websocket-version other than 13 is a 400, no acceptable subprotocol a
// 403. SPDY has no HTTP/2 mapping.
struct ExtendedConnectNegotiation {
  bool accepted = false;
  Protocol protocol = Protocol::kWsChannel;
  std::string subprotocol;
  int status = 0;
  // The refusal's stable reason (ws.handshake.bad_protocol, ...); empty when
  // accepted.
  std::string reason;
  // Response fields other than :status, lower-case names.
  std::vector<std::pair<std::string, std::string>> headers;
  // The refusal's body, in the words of the HTTP/1.1 handshake's answers.
  std::string body;
};

// Which negotiated protocols have a handler; an empty function means all.
using ServedProtocols = std::function<bool(Protocol)>;

// Decides how to answer `request` on a route of kind `op` (the token has
// already been accepted). A WebSocket subprotocol whose protocol `served`
// rejects is left out of the server list, as if the server did not know it:
// the client's next offer is chosen, or the bare 403 when none is left.
Negotiation negotiate(const HttpRequest& request, session::Operation op,
                      const ServedProtocols& served = {});

// Decides an extended CONNECT with :protocol `protocol` and `request`'s fields
// on a route of kind `op`, offering only what `served` accepts (as above).
ExtendedConnectNegotiation negotiateExtendedConnect(std::string_view protocol,
                                                    const HttpRequest& request,
                                                    session::Operation op,
                                                    const ServedProtocols& served = {});

}  // namespace crisp::stream
