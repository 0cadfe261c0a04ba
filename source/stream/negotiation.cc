#include "source/stream/negotiation.h"

#include <cstdio>
#include <map>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <strings.h>

#include "source/codec/websocket/handshake.h"
#include "source/stream/http1_response.h"

namespace crisp::stream {
namespace {

constexpr char kProtocolVersionHeader[] = "X-Stream-Protocol-Version";
constexpr char kAcceptedVersionsHeader[] = "X-Accepted-Stream-Protocol-Versions";

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Every raw value of `name`, one per header line, in order.
std::vector<std::string> rawValues(const HttpRequest& request, std::string_view name) {
  std::vector<std::string> out;
  for (const auto& [key, value] : request.headers) {
    if (equalsIgnoreCase(key, name)) {
      out.push_back(value);
    }
  }
  return out;
}

// Go's Header.Get: the first value of `name`, or "".
std::string firstValue(const HttpRequest& request, std::string_view name) {
  for (const auto& [key, value] : request.headers) {
    if (equalsIgnoreCase(key, name)) {
      return value;
    }
  }
  return "";
}

bool isTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Go's textproto.CanonicalMIMEHeaderKey: "x-stream-protocol-version" ->
// "X-Stream-Protocol-Version"; names with bytes outside the token alphabet
// stay as they are.
std::string canonicalHeaderKey(std::string_view name) {
  for (char c : name) {
    if (!isTokenChar(c)) {
      return std::string(name);
    }
  }
  std::string out(name);
  bool upper = true;
  for (char& c : out) {
    c = upper ? absl::ascii_toupper(static_cast<unsigned char>(c))
              : absl::ascii_tolower(static_cast<unsigned char>(c));
    upper = c == '-';
  }
  return out;
}

// The request's headers as Go's server stores them in http.Request.Header:
// canonical keys, sorted, values per line; Host and Transfer-Encoding are
// taken out of the map by Go's request reader.
std::map<std::string, std::vector<std::string>> goHeaderMap(const HttpRequest& request) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& [key, value] : request.headers) {
    std::string canonical = canonicalHeaderKey(key);
    if (canonical == "Host" || canonical == "Transfer-Encoding") {
      continue;
    }
    out[std::move(canonical)].push_back(value);
  }
  return out;
}

// Go's %q / %#v of a string, for the bytes a header can hold.
std::string goQuote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "\\x%02x", u);
          out += hex;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

// Go's %#v of an http.Header: http.Header{"A":[]string{"x", "y"}, "B":...}.
std::string goHeaderSyntax(const std::map<std::string, std::vector<std::string>>& header) {
  std::string out = "http.Header{";
  bool first_key = true;
  for (const auto& [key, values] : header) {
    if (!first_key) {
      out += ", ";
    }
    first_key = false;
    absl::StrAppend(&out, goQuote(key), ":[]string{");
    for (size_t i = 0; i < values.size(); ++i) {
      absl::StrAppend(&out, i == 0 ? "" : ", ", goQuote(values[i]));
    }
    out += "}";
  }
  out += "}";
  return out;
}

// Go's %v (and %s) of a []string: [a b c].
std::string goList(const std::vector<std::string>& items) {
  return absl::StrCat("[", absl::StrJoin(items, " "), "]");
}

Negotiation reject(HttpResponse response) {
  Negotiation out;
  out.outcome = Negotiation::Outcome::kRejected;
  out.status = response.status;
  out.response = response.serialize();
  return out;
}

std::optional<Protocol> spdyProtocolFromVersion(std::string_view version) {
  for (Protocol p : {Protocol::kSpdyRemoteCommandV4, Protocol::kSpdyRemoteCommandV3,
                     Protocol::kSpdyRemoteCommandV2, Protocol::kSpdyRemoteCommandV1,
                     Protocol::kSpdyPortForward}) {
    if (version == spdyProtocolVersion(p)) {
      return p;
    }
  }
  return std::nullopt;
}

Negotiation negotiateSpdy(const HttpRequest& request, session::Operation op) {
  const std::vector<std::string>& server = spdyServerProtocols(op);
  const std::vector<std::string> lines = rawValues(request, kProtocolVersionHeader);
  if (lines.empty()) {
    return reject(goHttpError(
        400,
        absl::StrCat("unable to upgrade: header ", kProtocolVersionHeader,
                     " does not exist in request with ", goHeaderMap(request).size(), " headers")));
  }
  // Lines and comma lists, trimmed, empty items dropped, client order.
  const std::vector<std::string> client = request.headerValues(kProtocolVersionHeader);
  if (client.empty()) {
    return reject(
        goHttpError(400, absl::StrCat("unable to upgrade: header ", kProtocolVersionHeader,
                                      " contains ", goList(lines), ", but no valid protocols")));
  }
  const std::string* chosen = nullptr;
  for (const std::string& offered : client) {
    for (const std::string& accepted : server) {
      if (offered == accepted) {
        chosen = &offered;
        break;
      }
    }
    if (chosen != nullptr) {
      break;
    }
  }
  if (chosen == nullptr) {
    HttpResponse response = goHttpError(
        403, absl::StrCat("unable to upgrade: unable to negotiate protocol: client supports ",
                          goList(client), ", server accepts ", goList(server)));
    // Go writes header keys sorted: between Content-Type and X-Content-Type-Options.
    auto at = response.headers.begin() + 1;
    for (const std::string& accepted : server) {
      at = response.headers.emplace(at, kAcceptedVersionsHeader, accepted) + 1;
    }
    return reject(std::move(response));
  }

  const std::string connection = absl::AsciiStrToLower(firstValue(request, "Connection"));
  const std::string upgrade = absl::AsciiStrToLower(firstValue(request, "Upgrade"));
  if (!absl::StrContains(connection, "upgrade") || !absl::StrContains(upgrade, "spdy/3.1")) {
    HttpResponse response =
        goHttpError(400, absl::StrCat("unable to upgrade: missing upgrade headers in request: ",
                                      goHeaderSyntax(goHeaderMap(request))));
    // The handshake has already set the chosen version when the check fails.
    response.headers.emplace_back(kProtocolVersionHeader, *chosen);
    return reject(std::move(response));
  }

  Negotiation out;
  out.outcome = Negotiation::Outcome::kSpdy;
  out.protocol = *spdyProtocolFromVersion(*chosen);
  out.status = 101;
  out.response = absl::StrCat(
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
      kProtocolVersionHeader, ": ", *chosen, "\r\n\r\n");
  return out;
}

// The WebSocket subprotocols of `op` whose protocol `served` accepts.
std::vector<std::string> servedWebsocketProtocols(session::Operation op,
                                                  const ServedProtocols& served) {
  std::vector<std::string> server_protocols;
  for (const std::string& subprotocol : websocketServerProtocols(op)) {
    const std::optional<Protocol> protocol = websocketProtocol(op, subprotocol);
    if (protocol.has_value() && (!served || served(*protocol))) {
      server_protocols.push_back(subprotocol);
    }
  }
  return server_protocols;
}

Negotiation negotiateWebSocket(const HttpRequest& request, session::Operation op,
                               const ServedProtocols& served) {
  const std::vector<std::string> server_protocols = servedWebsocketProtocols(op, served);
  websocket::HandshakeResult handshake =
      websocket::serverHandshake(request.method, request.headers, server_protocols);
  Negotiation out;
  out.status = handshake.status;
  out.response = std::move(handshake.response);
  if (!handshake.accepted) {
    out.outcome = Negotiation::Outcome::kRejected;
    out.reason = std::move(handshake.reason);
    return out;
  }
  const std::optional<Protocol> protocol = websocketProtocol(op, handshake.subprotocol);
  if (!protocol.has_value()) {
    // The handshake only picks from the server list, which maps completely.
    out.outcome = Negotiation::Outcome::kRejected;
    out.status = 500;
    out.reason = "ws.handshake.internal";
    out.response = "HTTP/1.1 500 Internal Server Error\r\n\r\n";
    return out;
  }
  out.outcome = Negotiation::Outcome::kWebSocket;
  out.protocol = *protocol;
  out.subprotocol = std::move(handshake.subprotocol);
  return out;
}

}  // namespace

const std::vector<std::string>& websocketServerProtocols(session::Operation op) {
  static const std::vector<std::string> remote_command = {
      "",
      "channel.k8s.io",
      "base64.channel.k8s.io",
      "v4.channel.k8s.io",
      "v4.base64.channel.k8s.io",
      "v5.channel.k8s.io",
  };
  static const std::vector<std::string> port_forward = {
      "",
      "v4.channel.k8s.io",
      "v4.base64.channel.k8s.io",
      "SPDY/3.1+portforward.k8s.io",
  };
  return op == session::Operation::kPortForward ? port_forward : remote_command;
}

std::optional<Protocol> websocketProtocol(session::Operation op, std::string_view subprotocol) {
  if (op == session::Operation::kPortForward) {
    if (subprotocol.empty()) {
      return Protocol::kWsPortForwardBinary;
    }
    if (subprotocol == "v4.channel.k8s.io") {
      return Protocol::kWsPortForwardV4;
    }
    if (subprotocol == "v4.base64.channel.k8s.io") {
      return Protocol::kWsPortForwardV4Base64;
    }
    if (subprotocol == "SPDY/3.1+portforward.k8s.io") {
      return Protocol::kWsSpdyTunnelPortForward;
    }
    return std::nullopt;
  }
  // No offer gets the framing of channel.k8s.io (the kubelet maps both the
  // same way).
  if (subprotocol.empty() || subprotocol == "channel.k8s.io") {
    return Protocol::kWsChannel;
  }
  if (subprotocol == "base64.channel.k8s.io") {
    return Protocol::kWsBase64Channel;
  }
  if (subprotocol == "v4.channel.k8s.io") {
    return Protocol::kWsV4Channel;
  }
  if (subprotocol == "v4.base64.channel.k8s.io") {
    return Protocol::kWsV4Base64Channel;
  }
  if (subprotocol == "v5.channel.k8s.io") {
    return Protocol::kWsV5Channel;
  }
  return std::nullopt;
}

const std::vector<std::string>& spdyServerProtocols(session::Operation op) {
  static const std::vector<std::string> remote_command = {
      spdyProtocolVersion(Protocol::kSpdyRemoteCommandV4),
      spdyProtocolVersion(Protocol::kSpdyRemoteCommandV3),
      spdyProtocolVersion(Protocol::kSpdyRemoteCommandV2),
      spdyProtocolVersion(Protocol::kSpdyRemoteCommandV1)};
  static const std::vector<std::string> port_forward = {
      spdyProtocolVersion(Protocol::kSpdyPortForward)};
  return op == session::Operation::kPortForward ? port_forward : remote_command;
}

const char* spdyProtocolVersion(Protocol p) {
  switch (p) {
    case Protocol::kSpdyRemoteCommandV1:
      return "channel.k8s.io";
    case Protocol::kSpdyRemoteCommandV2:
      return "v2.channel.k8s.io";
    case Protocol::kSpdyRemoteCommandV3:
      return "v3.channel.k8s.io";
    case Protocol::kSpdyRemoteCommandV4:
      return "v4.channel.k8s.io";
    case Protocol::kSpdyPortForward:
      return "portforward.k8s.io";
    case Protocol::kWsChannel:
    case Protocol::kWsBase64Channel:
    case Protocol::kWsV4Channel:
    case Protocol::kWsV4Base64Channel:
    case Protocol::kWsV5Channel:
    case Protocol::kWsPortForwardBinary:
    case Protocol::kWsPortForwardV4:
    case Protocol::kWsPortForwardV4Base64:
    case Protocol::kWsSpdyTunnelPortForward:
      return "";
  }
  return "";
}

bool isWebSocketRequest(const HttpRequest& request) {
  if (!equalsIgnoreCase(firstValue(request, "Upgrade"), "websocket")) {
    return false;
  }
  for (const std::string& value : rawValues(request, "Connection")) {
    if (absl::StrContains(absl::AsciiStrToLower(value), "upgrade")) {
      return true;
    }
  }
  return false;
}

Negotiation negotiate(const HttpRequest& request, session::Operation op,
                      const ServedProtocols& served) {
  if (isWebSocketRequest(request)) {
    return negotiateWebSocket(request, op, served);
  }
  return negotiateSpdy(request, op);
}

ExtendedConnectNegotiation negotiateExtendedConnect(std::string_view protocol,
                                                    const HttpRequest& request,
                                                    session::Operation op,
                                                    const ServedProtocols& served) {
  websocket::ExtendedConnectResult handshake = websocket::extendedConnectHandshake(
      protocol, request.headers, servedWebsocketProtocols(op, served));
  ExtendedConnectNegotiation out;
  out.status = handshake.status;
  out.reason = std::move(handshake.reason);
  for (auto& field : handshake.headers) {
    if (field.first != ":status") {
      out.headers.push_back(std::move(field));
    }
  }
  if (!handshake.accepted) {
    if (out.reason == "ws.handshake.bad_protocol") {
      out.body = absl::StrCat("unable to upgrade: :protocol ", goQuote(protocol),
                              " is not served; only websocket is\n");
    } else if (out.reason == "ws.handshake.bad_version") {
      out.body = "missing or bad WebSocket Version\n";
    } else {
      out.body =
          absl::StrCat("unable to upgrade: no WebSocket subprotocol in common; server accepts ",
                       goList(servedWebsocketProtocols(op, served)), "\n");
    }
    return out;
  }
  const std::optional<Protocol> chosen = websocketProtocol(op, handshake.subprotocol);
  if (!chosen.has_value()) {
    // The handshake only picks from the server list, which maps completely.
    out.status = 500;
    out.reason = "ws.handshake.internal";
    out.headers.clear();
    return out;
  }
  out.accepted = true;
  out.protocol = *chosen;
  out.subprotocol = std::move(handshake.subprotocol);
  return out;
}

}  // namespace crisp::stream
