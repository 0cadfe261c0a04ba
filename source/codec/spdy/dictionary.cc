#include "source/codec/spdy/dictionary.h"

#include <string_view>

namespace crisp::spdy {
namespace {

// The dictionary is two parts (SPDY/3 draft, section 2.6.10.1): header names
// and common values, each preceded by its length as a 32-bit big-endian
// integer, then a run of common value fragments with no framing at all. It is
// kept here in that readable form and laid out as bytes at compile time; the
// test checks the result against the published length, SHA-256 and Adler-32.
constexpr std::string_view kWords[] = {
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
};

constexpr std::string_view kTail =
    "100101201202205206300302303304305306307402405406"
    "407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information"
    "204 No Content"
    "301 Moved Permanently"
    "400 Bad Request"
    "401 Unauthorized"
    "403 Forbidden"
    "404 Not Found"
    "500 Internal Server Error"
    "501 Not Implemented"
    "503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
    "text/plain,text/javascript,"
    "publicprivatemax-age="
    "gzip,deflate,sdch"
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

constexpr size_t layoutSize() {
  size_t size = kTail.size();
  for (std::string_view word : kWords) {
    size += 4 + word.size();
  }
  return size;
}

static_assert(layoutSize() == kHeaderDictionarySize, "SPDY/3 dictionary parts changed size");

constexpr std::array<uint8_t, kHeaderDictionarySize> layOut() {
  std::array<uint8_t, kHeaderDictionarySize> out{};
  size_t pos = 0;
  for (std::string_view word : kWords) {
    const size_t n = word.size();
    out[pos++] = static_cast<uint8_t>(n >> 24);
    out[pos++] = static_cast<uint8_t>(n >> 16);
    out[pos++] = static_cast<uint8_t>(n >> 8);
    out[pos++] = static_cast<uint8_t>(n);
    for (char c : word) {
      out[pos++] = static_cast<uint8_t>(c);
    }
  }
  for (char c : kTail) {
    out[pos++] = static_cast<uint8_t>(c);
  }
  return out;
}

constexpr std::array<uint8_t, kHeaderDictionarySize> kDictionary = layOut();

}  // namespace

const std::array<uint8_t, kHeaderDictionarySize>& headerDictionary() { return kDictionary; }

}  // namespace crisp::spdy
