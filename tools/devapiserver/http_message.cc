#include "tools/devapiserver/http_message.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace crisp::devapi {
namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

std::string decodeComponent(absl::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%' && i + 2 < s.size()) {
      const int hi = hexValue(s[i + 1]);
      const int lo = hexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
  return out;
}

}  // namespace

const std::string* HttpRequest::header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) {
      return &value;
    }
  }
  return nullptr;
}

const char* reasonPhrase(int status) {
  switch (status) {
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Unknown";
  }
}

std::string percentDecode(absl::string_view s) { return decodeComponent(s, false); }

QueryList parseQuery(absl::string_view query) {
  QueryList out;
  while (!query.empty()) {
    const size_t amp = query.find('&');
    absl::string_view part = query.substr(0, amp);
    query = amp == absl::string_view::npos ? absl::string_view() : query.substr(amp + 1);
    if (part.empty()) {
      continue;
    }
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos) {
      out.emplace_back(decodeComponent(part, true), "");
    } else {
      out.emplace_back(decodeComponent(part.substr(0, eq), true),
                       decodeComponent(part.substr(eq + 1), true));
    }
  }
  return out;
}

std::string serializeResponse(const HttpResponse& response, bool keep_alive) {
  std::string out =
      absl::StrCat("HTTP/1.1 ", response.status, " ", reasonPhrase(response.status), "\r\n");
  for (const auto& [key, value] : response.headers) {
    absl::StrAppend(&out, key, ": ", value, "\r\n");
  }
  absl::StrAppend(&out, "Content-Length: ", response.body.size(), "\r\n");
  if (!keep_alive) {
    absl::StrAppend(&out, "Connection: close\r\n");
  }
  absl::StrAppend(&out, "\r\n", response.body);
  return out;
}

}  // namespace crisp::devapi
