#pragma once

// Parsing of "host:port" addresses as they appear in crisp's configuration and
// in URLs: "127.0.0.1:10350", "[::1]:0", "node.example:443". Pure string work:
// no resolution, no sockets.
//
//   absl::StatusOr<HostPort> a = config::parseHostPort("[::1]:0");
//   if (a.ok() && a->kind == HostKind::kIpv6) { ... a->host is "::1" ... }

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace crisp::config {

enum class HostKind { kIpv4, kIpv6, kName };

struct HostPort {
  std::string host;  // without brackets: "127.0.0.1", "::1", "node.example"
  uint16_t port = 0;
  HostKind kind = HostKind::kIpv4;

  bool isIp() const { return kind != HostKind::kName; }
  // "host:port", an IPv6 host in brackets.
  std::string toString() const;

  bool operator==(const HostPort& other) const {
    return host == other.host && port == other.port && kind == other.kind;
  }
};

// Parses `text` as host:port. The host is a dotted IPv4 address, an IPv6
// address in brackets (no zone id), or a DNS name (letters, digits, '-' and
// '.', labels of 1..63 characters); the port is decimal 0..65535. Returns
// INVALID_ARGUMENT with a short reason (no location: the caller adds it).
absl::StatusOr<HostPort> parseHostPort(std::string_view text);

// The address a client on this host dials to reach a listener bound to
// `bound`: the loopback address of the same family (127.0.0.1, ::1) for an
// unspecified one (0.0.0.0, ::), which accepts on every address but names
// none; `bound` itself otherwise. For URLs built without stream.advertise.
HostPort dialableAddress(const HostPort& bound);

}  // namespace crisp::config
