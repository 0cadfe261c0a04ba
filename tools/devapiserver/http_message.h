#pragma once

// Plain HTTP/1.1 request and response values passed between the connection
// code (http_server.h), the API routes (api_handler.h) and the stream proxy
// (stream_proxy.h). No sockets here.

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace crisp::devapi {

using HeaderList = std::vector<std::pair<std::string, std::string>>;
using QueryList = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;    // "GET", "POST", ...
  std::string target;    // the request target as sent: path and optional "?query"
  std::string path;      // target before '?', not decoded
  std::string query;     // target after '?', not decoded
  HeaderList headers;    // as received: original case and order, repeated names kept
  bool upgrade = false;  // the request asks for a protocol upgrade (Connection + Upgrade)

  // The value of the first header named `name` (case-insensitive), or nullptr.
  const std::string* header(absl::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  HeaderList headers;  // Content-Length and Connection are added by the writer
  std::string body;
};

// The standard reason phrase of a status code ("OK", "Not Found", ...); "Unknown" otherwise.
const char* reasonPhrase(int status);

// Splits "a=1&b=x%20y&b=z" into ordered pairs, percent-decoding names and
// values and turning '+' into a space (as Go's url.ParseQuery does). Malformed
// escapes are kept literally.
QueryList parseQuery(absl::string_view query);

// Percent-decodes `s` ('+' is left alone). Malformed escapes are kept literally.
std::string percentDecode(absl::string_view s);

// Serializes the status line, the headers and the body, adding Content-Length
// and "Connection: close" when `keep_alive` is false.
std::string serializeResponse(const HttpResponse& response, bool keep_alive);

}  // namespace crisp::devapi
