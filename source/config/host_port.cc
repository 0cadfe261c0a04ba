#include "source/config/host_port.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include <arpa/inet.h>
#include <netinet/in.h>

namespace crisp::config {
namespace {

bool isDigit(char c) { return c >= '0' && c <= '9'; }

bool isAlnum(char c) { return isDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// RFC 1123 host name: dot-separated labels of letters, digits and inner '-'.
bool isDnsName(std::string_view name) {
  if (name.empty() || name.size() > 253) {
    return false;
  }
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('.', start);
    if (end == std::string_view::npos) {
      end = name.size();
    }
    const std::string_view label = name.substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    for (char c : label) {
      if (!isAlnum(c) && c != '-') {
        return false;
      }
    }
    start = end + 1;
  }
  return true;
}

bool isIpv4(const std::string& host) {
  in_addr addr;
  return inet_pton(AF_INET, host.c_str(), &addr) == 1;
}

bool isIpv6(const std::string& host) {
  in6_addr addr;
  return inet_pton(AF_INET6, host.c_str(), &addr) == 1;
}

bool allDigits(std::string_view s) {
  for (char c : s) {
    if (!isDigit(c)) {
      return false;
    }
  }
  return !s.empty();
}

}  // namespace

std::string HostPort::toString() const {
  if (kind == HostKind::kIpv6) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

absl::StatusOr<HostPort> parseHostPort(std::string_view text) {
  HostPort result;
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError("missing ']' after the IPv6 address");
    }
    host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty() || rest.front() != ':') {
      return absl::InvalidArgumentError("expected ':port' after ']'");
    }
    port = rest.substr(1);
    result.host = std::string(host);
    if (!isIpv6(result.host)) {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", result.host, "\" is not an IPv6 address"));
    }
    result.kind = HostKind::kIpv6;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError("missing ':port'");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    result.host = std::string(host);
    if (host.find(':') != std::string_view::npos) {
      return absl::InvalidArgumentError("an IPv6 address must be written in brackets, as [::1]:0");
    }
    if (host.empty()) {
      return absl::InvalidArgumentError("missing host before ':'");
    }
    if (isIpv4(result.host)) {
      result.kind = HostKind::kIpv4;
    } else if (allDigits(host.substr(host.rfind('.') + 1))) {
      // A name's last label is never all digits: this is a malformed address.
      return absl::InvalidArgumentError(
          absl::StrCat("\"", result.host, "\" is not an IPv4 address"));
    } else if (isDnsName(host)) {
      result.kind = HostKind::kName;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("\"", result.host, "\" is neither an IP address nor a host name"));
    }
  }
  if (!allDigits(port) || port.size() > 5) {
    return absl::InvalidArgumentError(
        absl::StrCat("port must be a number from 0 to 65535, got \"", std::string(port), "\""));
  }
  uint32_t value = 0;
  for (char c : port) {
    value = value * 10 + static_cast<uint32_t>(c - '0');
  }
  if (value > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("port must be a number from 0 to 65535, got \"", std::string(port), "\""));
  }
  result.port = static_cast<uint16_t>(value);
  return result;
}

HostPort dialableAddress(const HostPort& bound) {
  HostPort out = bound;
  if (bound.kind == HostKind::kIpv4) {
    in_addr v4{};
    if (inet_pton(AF_INET, bound.host.c_str(), &v4) == 1 && v4.s_addr == htonl(INADDR_ANY)) {
      out.host = "127.0.0.1";
    }
  } else if (bound.kind == HostKind::kIpv6) {
    in6_addr v6{};
    if (inet_pton(AF_INET6, bound.host.c_str(), &v6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&v6)) {
      out.host = "::1";
    }
  }
  return out;
}

}  // namespace crisp::config
