#include "source/stream/upgrade.h"

#include <strings.h>

namespace crisp::stream {
namespace {

bool isOptionalWhitespace(char c) { return c == ' ' || c == '\t'; }

std::string_view trimOptionalWhitespace(std::string_view s) {
  while (!s.empty() && isOptionalWhitespace(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && isOptionalWhitespace(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

}  // namespace

std::vector<std::string> HttpRequest::headerValues(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [key, value] : headers) {
    if (key.size() != name.size() || strncasecmp(key.data(), name.data(), name.size()) != 0) {
      continue;
    }
    std::string_view rest = value;
    while (true) {
      const size_t comma = rest.find(',');
      const std::string_view item = trimOptionalWhitespace(rest.substr(0, comma));
      if (!item.empty()) {
        out.emplace_back(item);
      }
      if (comma == std::string_view::npos) {
        break;
      }
      rest.remove_prefix(comma + 1);
    }
  }
  return out;
}

const char* protocolName(Protocol p) {
  switch (p) {
    case Protocol::kSpdyRemoteCommandV1:
      return "spdy/channel.k8s.io";
    case Protocol::kSpdyRemoteCommandV2:
      return "spdy/v2.channel.k8s.io";
    case Protocol::kSpdyRemoteCommandV3:
      return "spdy/v3.channel.k8s.io";
    case Protocol::kSpdyRemoteCommandV4:
      return "spdy/v4.channel.k8s.io";
    case Protocol::kSpdyPortForward:
      return "spdy/portforward.k8s.io";
    case Protocol::kWsChannel:
      return "ws/channel.k8s.io";
    case Protocol::kWsBase64Channel:
      return "ws/base64.channel.k8s.io";
    case Protocol::kWsV4Channel:
      return "ws/v4.channel.k8s.io";
    case Protocol::kWsV4Base64Channel:
      return "ws/v4.base64.channel.k8s.io";
    case Protocol::kWsV5Channel:
      return "ws/v5.channel.k8s.io";
    case Protocol::kWsPortForwardBinary:
      return "ws/portforward";
    case Protocol::kWsPortForwardV4:
      return "ws/portforward/v4.channel.k8s.io";
    case Protocol::kWsPortForwardV4Base64:
      return "ws/portforward/v4.base64.channel.k8s.io";
    case Protocol::kWsSpdyTunnelPortForward:
      return "ws/SPDY/3.1+portforward.k8s.io";
  }
  return "unknown";
}

ProtocolFamily protocolFamily(Protocol p) {
  switch (p) {
    case Protocol::kSpdyRemoteCommandV1:
    case Protocol::kSpdyRemoteCommandV2:
    case Protocol::kSpdyRemoteCommandV3:
    case Protocol::kSpdyRemoteCommandV4:
    case Protocol::kSpdyPortForward:
      return ProtocolFamily::kSpdy;
    case Protocol::kWsChannel:
    case Protocol::kWsBase64Channel:
    case Protocol::kWsV4Channel:
    case Protocol::kWsV4Base64Channel:
    case Protocol::kWsV5Channel:
    case Protocol::kWsPortForwardBinary:
    case Protocol::kWsPortForwardV4:
    case Protocol::kWsPortForwardV4Base64:
    case Protocol::kWsSpdyTunnelPortForward:
      return ProtocolFamily::kWebSocket;
  }
  return ProtocolFamily::kSpdy;
}

void discardUpgrade(event::Dispatcher& dispatcher, TransportPtr transport) {
  if (transport != nullptr) {
    transport->close();
    dispatcher.deferredDelete(std::move(transport));
  }
}

}  // namespace crisp::stream
