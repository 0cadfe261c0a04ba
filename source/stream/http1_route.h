#pragma once

// The stream server's URL space: "/exec/{token}", "/attach/{token}" and
// "/portforward/{token}", nothing else. Pure function, no I/O.
//
// Matching is strict rather than normalising: a path with an empty segment
// ("//"), a dot segment ("." or ".."), a percent escape anywhere, a trailing
// slash or a third segment is no route at all, so no spelling of a path can
// reach a token another spelling would not. Tokens are base64url
// ("A-Za-z0-9-_"), which is all crisp (and the kubelet) ever hands out.

#include <optional>
#include <string>
#include <string_view>

#include "source/session/request.h"

namespace crisp::stream {

struct StreamRoute {
  session::Operation operation = session::Operation::kExec;
  std::string token;
};

// Longest token accepted in a path; longer ones cannot be crisp's.
inline constexpr size_t kMaxRouteTokenLength = 128;

// The route of `path` (the request target's path, still percent-encoded, no
// query), or nullopt when it names none.
std::optional<StreamRoute> matchStreamRoute(std::string_view path);

}  // namespace crisp::stream
