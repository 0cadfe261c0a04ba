#include "source/stream/http1_response.h"

#include "absl/strings/str_cat.h"
#include <http_parser.h>

namespace crisp::stream {

const char* statusReason(int status) {
  const char* reason = http_status_str(static_cast<http_status>(status));
  // http-parser answers "<unknown>" for codes it does not know.
  return reason[0] == '<' ? "Unknown" : reason;
}

std::string HttpResponse::serialize() const {
  std::string out = absl::StrCat("HTTP/1.1 ", status, " ", statusReason(status), "\r\n");
  for (const auto& [name, value] : headers) {
    absl::StrAppend(&out, name, ": ", value, "\r\n");
  }
  absl::StrAppend(&out, "Content-Length: ", body.size(), "\r\nConnection: close\r\n\r\n");
  if (!omit_body) {
    out += body;
  }
  return out;
}

HttpResponse goHttpError(int status, std::string_view text) {
  HttpResponse response;
  response.status = status;
  response.headers = {{"Content-Type", "text/plain; charset=utf-8"},
                      {"X-Content-Type-Options", "nosniff"}};
  response.body = std::string(text) + "\n";
  return response;
}

HttpResponse goNotFound() { return goHttpError(404, "404 page not found"); }

HttpResponse goHeadError(int status) {
  HttpResponse response;
  response.status = status;
  response.headers = {{"Content-Type", "text/plain; charset=utf-8"}};
  response.body = absl::StrCat(status, " ", statusReason(status));
  return response;
}

}  // namespace crisp::stream
