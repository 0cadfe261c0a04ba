#include "source/codec/websocket/handshake.h"

#include <algorithm>

#include "absl/strings/str_split.h"
#include <openssl/evp.h>
#include <strings.h>

#include "source/codec/websocket/base64.h"

namespace crisp::websocket {
namespace {

constexpr int kKeyBytes = 16;  // RFC 6455 4.1: a random 16-byte nonce
constexpr std::string_view kVersion = "13";

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view trimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// Go's Header.Get: the first line of `name`, trimmed; nullopt when absent.
std::optional<std::string_view> firstValue(const HeaderList& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (equalsIgnoreCase(key, name)) {
      return trimOws(value);
    }
  }
  return std::nullopt;
}

bool hasToken(const HeaderList& headers, std::string_view name, std::string_view token) {
  for (const std::string& value : headerTokens(headers, name)) {
    if (equalsIgnoreCase(value, token)) {
      return true;
    }
  }
  return false;
}

// The body x/net/websocket appends to its handshake errors is the text of a
// ProtocolError; the status text is Go's http.StatusText.
HandshakeResult refuse(int status, std::string_view reason, std::string response) {
  HandshakeResult out;
  out.status = status;
  out.reason = std::string(reason);
  out.response = std::move(response);
  return out;
}

}  // namespace

std::string computeAccept(std::string_view key) {
  std::string input(key);
  input.append(kAcceptGuid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1) {
    return "";
  }
  return base64Encode(std::string_view(reinterpret_cast<const char*>(digest), digest_len));
}

bool isValidKey(std::string_view key) {
  // 16 bytes encode to exactly 24 characters ending in "=="; the length test
  // first keeps CR/LF tolerance in the decoder from admitting longer text.
  if (key.size() != static_cast<size_t>(base64EncodedLength(kKeyBytes))) {
    return false;
  }
  absl::StatusOr<std::string> decoded = base64Decode(key);
  return decoded.ok() && decoded->size() == kKeyBytes;
}

std::vector<std::string> headerTokens(const HeaderList& headers, std::string_view name) {
  std::vector<std::string> out;
  for (const auto& [key, value] : headers) {
    if (!equalsIgnoreCase(key, name)) {
      continue;
    }
    for (absl::string_view piece : absl::StrSplit(value, ',')) {
      const std::string_view part = trimOws(std::string_view(piece.data(), piece.size()));
      if (!part.empty()) {
        out.emplace_back(part);
      }
    }
  }
  return out;
}

std::optional<std::string> chooseSubprotocol(const std::vector<std::string>& offered,
                                             const std::vector<std::string>& server) {
  if (offered.empty()) {
    if (std::find(server.begin(), server.end(), "") != server.end()) {
      return std::string();
    }
    return std::nullopt;
  }
  for (const std::string& offer : offered) {
    if (std::find(server.begin(), server.end(), offer) != server.end()) {
      return offer;
    }
  }
  return std::nullopt;
}

std::string switchingProtocolsResponse(std::string_view accept, std::string_view subprotocol) {
  std::string out =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: ";
  out.append(accept);
  out += "\r\n";
  if (!subprotocol.empty()) {
    out += "Sec-WebSocket-Protocol: ";
    out.append(subprotocol);
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

HandshakeResult serverHandshake(std::string_view method, const HeaderList& headers,
                                const std::vector<std::string>& server_protocols) {
  if (method != "GET") {
    return refuse(405, "ws.handshake.bad_method",
                  "HTTP/1.1 405 Method Not Allowed\r\n\r\nbad method");
  }
  const std::optional<std::string_view> upgrade = firstValue(headers, "Upgrade");
  if (!upgrade.has_value() || !equalsIgnoreCase(*upgrade, "websocket") ||
      !hasToken(headers, "Connection", "upgrade")) {
    return refuse(400, "ws.handshake.not_websocket",
                  "HTTP/1.1 400 Bad Request\r\n\r\nnot websocket protocol");
  }
  const std::optional<std::string_view> key = firstValue(headers, "Sec-WebSocket-Key");
  if (!key.has_value() || key->empty()) {
    return refuse(400, "ws.handshake.missing_key",
                  "HTTP/1.1 400 Bad Request\r\n\r\nmismatch challenge/response");
  }
  const std::optional<std::string_view> version = firstValue(headers, "Sec-WebSocket-Version");
  if (!version.has_value() || *version != kVersion) {
    return refuse(400, "ws.handshake.bad_version",
                  "HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  "missing or bad WebSocket Version");
  }
  if (!isValidKey(*key)) {
    return refuse(400, "ws.handshake.bad_key",
                  "HTTP/1.1 400 Bad Request\r\n\r\nmismatch challenge/response");
  }
  std::optional<std::string> chosen =
      chooseSubprotocol(headerTokens(headers, "Sec-WebSocket-Protocol"), server_protocols);
  if (!chosen.has_value()) {
    return refuse(403, "ws.handshake.no_subprotocol", std::string(kForbiddenResponse));
  }
  const std::string accept = computeAccept(*key);
  if (accept.empty()) {
    return refuse(500, "ws.handshake.internal",
                  "HTTP/1.1 500 Internal Server Error\r\n\r\nsha1 failed");
  }
  HandshakeResult out;
  out.accepted = true;
  out.status = 101;
  out.response = switchingProtocolsResponse(accept, *chosen);
  out.subprotocol = std::move(*chosen);
  return out;
}

ExtendedConnectResult extendedConnectHandshake(std::string_view protocol, const HeaderList& headers,
                                               const std::vector<std::string>& server_protocols) {
  ExtendedConnectResult out;
  auto refuseWith = [&out](int status, std::string_view reason) {
    out.status = status;
    out.reason = std::string(reason);
    out.headers.emplace_back(":status", std::to_string(status));
  };
  if (!equalsIgnoreCase(trimOws(protocol), "websocket")) {
    refuseWith(400, "ws.handshake.bad_protocol");
    return out;
  }
  const std::optional<std::string_view> version = firstValue(headers, "sec-websocket-version");
  if (!version.has_value() || *version != kVersion) {
    refuseWith(400, "ws.handshake.bad_version");
    out.headers.emplace_back("sec-websocket-version", std::string(kVersion));
    return out;
  }
  std::optional<std::string> chosen =
      chooseSubprotocol(headerTokens(headers, "sec-websocket-protocol"), server_protocols);
  if (!chosen.has_value()) {
    refuseWith(403, "ws.handshake.no_subprotocol");
    return out;
  }
  out.accepted = true;
  out.status = 200;
  out.headers.emplace_back(":status", "200");
  if (!chosen->empty()) {
    out.headers.emplace_back("sec-websocket-protocol", *chosen);
  }
  out.subprotocol = std::move(*chosen);
  return out;
}

}  // namespace crisp::websocket
