#pragma once

// The server side of the WebSocket opening handshake as pure functions: a
// request's method and headers in, a decision and the exact response out.
//
// HTTP/1.1 (RFC 6455 section 4.2): serverHandshake() checks the request in the
// order and with the answers of golang.org/x/net/websocket, the server the
// kubelet's stream server runs on, so clients see what they see there:
//   method not GET                              -> 405, body "bad method"
//   no "Upgrade: websocket" (any case) or no
//   "upgrade" token in Connection               -> 400, body "not websocket protocol"
//   no Sec-WebSocket-Key                        -> 400, body "mismatch challenge/response"
//   Sec-WebSocket-Version other than 13         -> 400 with "Sec-WebSocket-Version: 13",
//                                                  body "missing or bad WebSocket Version"
//   key not base64 of 16 bytes (RFC 6455 4.2.1) -> 400, body "mismatch challenge/response"
//   no acceptable subprotocol                   -> the bare "HTTP/1.1 403 Forbidden\r\n\r\n"
//   otherwise                                   -> 101 with Sec-WebSocket-Accept and, when
//                                                  one was chosen, Sec-WebSocket-Protocol.
// Error responses carry no Content-Length (as x/net writes them): the caller
// writes them and closes the connection.
//
// Subprotocol choice: every Sec-WebSocket-Protocol header line, each split on
// commas and trimmed, empty elements dropped, in client order; the first
// offer the server list contains wins. A request with no offer chooses ""
// (no Sec-WebSocket-Protocol in the reply) when the server list contains "",
// as the kubelet's server maps do (binary v1 framing), and is refused
// otherwise.
//
// HTTP/2 (RFC 8441): extendedConnectHandshake() does the same for an extended
// CONNECT stream; there is no key and no Accept, success is a 200.
//
// Header names compare case-insensitively. All functions are pure and
// thread-safe.

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crisp::websocket {

// Request or response header lines in order; names keep their case.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

// RFC 6455 section 1.3: appended to the key before hashing.
inline constexpr std::string_view kAcceptGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// What the kubelet's WebSocket server writes when no subprotocol matches: a
// status line, no header, no body. kubectl 1.30+ then falls back to SPDY.
inline constexpr std::string_view kForbiddenResponse = "HTTP/1.1 403 Forbidden\r\n\r\n";

// base64(SHA-1(key + kAcceptGuid)), the Sec-WebSocket-Accept value. `key` is
// used as sent (not trimmed, not decoded).
std::string computeAccept(std::string_view key);

// True when `key` is the base64 encoding of exactly 16 bytes.
bool isValidKey(std::string_view key);

// Every value of header `name` (case-insensitive), each comma-separated list
// split and trimmed of spaces and tabs, empty elements dropped, in order.
std::vector<std::string> headerTokens(const HeaderList& headers, std::string_view name);

// The first of `offered` that `server` contains; with no offer, "" when
// `server` contains "". nullopt when nothing is acceptable.
std::optional<std::string> chooseSubprotocol(const std::vector<std::string>& offered,
                                             const std::vector<std::string>& server);

// The 101 response head (ends with the blank line).
std::string switchingProtocolsResponse(std::string_view accept, std::string_view subprotocol);

struct HandshakeResult {
  bool accepted = false;
  // 101 when accepted; 400, 403 or 405 otherwise.
  int status = 0;
  // The chosen subprotocol when accepted ("" = none, no header sent).
  std::string subprotocol;
  // When refused, a stable dotted reason for logs and metrics:
  // ws.handshake.bad_method, ws.handshake.not_websocket,
  // ws.handshake.missing_key, ws.handshake.bad_version,
  // ws.handshake.bad_key, ws.handshake.no_subprotocol.
  std::string reason;
  // The exact bytes to write to the client.
  std::string response;
};

// Answers an HTTP/1.1 upgrade request (see the table above). `server_protocols`
// is the server's list, which may contain "".
HandshakeResult serverHandshake(std::string_view method, const HeaderList& headers,
                                const std::vector<std::string>& server_protocols);

struct ExtendedConnectResult {
  bool accepted = false;
  // 200 when accepted; 400 or 403 otherwise.
  int status = 0;
  std::string subprotocol;
  // As in HandshakeResult, plus ws.handshake.bad_protocol.
  std::string reason;
  // Response header fields, lowercase, ":status" first: accepted ->
  // [:status 200] and [sec-websocket-protocol <p>] when one was chosen;
  // wrong version -> [:status 400] [sec-websocket-version 13]; others just
  // [:status]. Refusals end the stream (the caller adds END_STREAM).
  HeaderList headers;
};

// Answers an RFC 8441 extended CONNECT whose :method was CONNECT (checked by
// the caller). `protocol` is the :protocol value, which must be "websocket"
// (any case); `headers` holds the request's regular fields
// (sec-websocket-version must be 13, sec-websocket-protocol is the offer).
ExtendedConnectResult extendedConnectHandshake(std::string_view protocol, const HeaderList& headers,
                                               const std::vector<std::string>& server_protocols);

}  // namespace crisp::websocket
