#include "source/stream/http1_route.h"

namespace crisp::stream {
namespace {

bool isTokenChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

}  // namespace

std::optional<StreamRoute> matchStreamRoute(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return std::nullopt;
  }
  path.remove_prefix(1);
  const size_t slash = path.find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  const std::string_view prefix = path.substr(0, slash);
  const std::string_view token = path.substr(slash + 1);
  StreamRoute route;
  if (prefix == "exec") {
    route.operation = session::Operation::kExec;
  } else if (prefix == "attach") {
    route.operation = session::Operation::kAttach;
  } else if (prefix == "portforward") {
    route.operation = session::Operation::kPortForward;
  } else {
    return std::nullopt;
  }
  // The token alphabet has no '/', '.' or '%': this one check rejects a third
  // segment, a trailing slash, "//", dot segments and every percent escape.
  if (token.empty() || token.size() > kMaxRouteTokenLength) {
    return std::nullopt;
  }
  for (char c : token) {
    if (!isTokenChar(c)) {
      return std::nullopt;
    }
  }
  route.token = std::string(token);
  return route;
}

}  // namespace crisp::stream
