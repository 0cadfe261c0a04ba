// Fuzz target for the stream server's HTTP/1.1 front before any token is
// looked at: the request head parser (Http1HeadParser), the route match of
// its path (matchStreamRoute) and protocol negotiation (negotiate) of the
// parsed request on every kind of route.
//
// Input layout (test/fuzz/fuzz_input.h): byte 0 options, byte 1 and the chunk
// sizes, then the bytes a client sent. Options: bits 0-1 pick the head size
// limit (16384, 64, 512 or 4096 bytes); bits 2-3 which protocols have a
// handler (all, none, SPDY only, WebSocket only).
//
// Properties checked on every input:
//   - no crash, leak or sanitizer report, whatever the bytes;
//   - feeding in chunks gives the same state, the same request and the same
//     count of head bytes as feeding the whole input at once;
//   - a complete head is at most the limit, consumed bytes never pass the
//     input, and every header name and value is free of CR, LF and NUL;
//   - a route is only ever "/exec|attach|portforward/<token>" spelled exactly,
//     with a token of 1-128 base64url characters: no dot segment, empty
//     segment or percent escape reaches a token;
//   - every negotiation answer is a well-formed HTTP/1.1 response: a status
//     line with the status it reports, header lines "Name: value" free of
//     control characters (nothing the client sent can inject a header), and a
//     WebSocket subprotocol (with a handler) or SPDY version only from the
//     server's own lists.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#include "source/stream/http1_head_parser.h"
#include "source/stream/http1_route.h"
#include "source/stream/negotiation.h"

#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_input.h"

namespace crisp::stream::fuzz {
namespace {

constexpr size_t kLimits[] = {16384, 64, 512, 4096};

struct Outcome {
  Http1HeadParser::State state = Http1HeadParser::State::kNeedMore;
  size_t consumed = 0;
  HttpRequest request;
};

Outcome run(std::string_view wire, const std::vector<size_t>& chunks, size_t limit) {
  Http1HeadParser parser(limit);
  Outcome out;
  crisp::fuzz::feedInChunks(wire, chunks, [&](std::string_view piece) {
    size_t used = 0;
    out.state = parser.feed(piece, used);
    FUZZ_CHECK(used <= piece.size(), "consumed more than was fed");
    out.consumed += used;
    if (out.state != Http1HeadParser::State::kNeedMore) {
      size_t again = 0;
      FUZZ_CHECK(parser.feed(piece, again) == out.state && again == 0,
                 "a finished parser changed state or consumed bytes");
    }
    return out.state == Http1HeadParser::State::kNeedMore;
  });
  if (out.state == Http1HeadParser::State::kComplete) {
    out.request = parser.request();
  }
  return out;
}

bool sameRequest(const HttpRequest& a, const HttpRequest& b) {
  return a.method == b.method && a.path == b.path && a.query == b.query && a.headers == b.headers;
}

std::string describe(const HttpRequest& r) {
  std::string out = absl::StrCat(r.method, " \"", crisp::fuzz::hexEscaped(r.path), "\" ?\"",
                                 crisp::fuzz::hexEscaped(r.query), "\"");
  for (const auto& [name, value] : r.headers) {
    absl::StrAppend(&out, "\n    [", crisp::fuzz::hexEscaped(name), ": ", crisp::fuzz::hexEscaped(value), "]");
  }
  return out;
}

bool hasControl(std::string_view s) {
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (b == '\r' || b == '\n' || b == 0) {
      return true;
    }
  }
  return false;
}

bool isBase64UrlToken(std::string_view token) {
  if (token.empty() || token.size() > kMaxRouteTokenLength) {
    return false;
  }
  for (char c : token) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '-' || c == '_')) {
      return false;
    }
  }
  return true;
}

void checkResponse(const Negotiation& n, session::Operation op) {
  const std::string& r = n.response;
  const size_t end = r.find("\r\n\r\n");
  FUZZ_CHECK(end != std::string::npos, "response without an end of head: " + crisp::fuzz::hexEscaped(r));
  const std::vector<std::string> lines = absl::StrSplit(r.substr(0, end), "\r\n");
  FUZZ_CHECK(lines[0] == absl::StrCat("HTTP/1.1 ", n.status) ||
                 absl::StartsWith(lines[0], absl::StrCat("HTTP/1.1 ", n.status, " ")),
             absl::StrCat("status line \"", crisp::fuzz::hexEscaped(lines[0]), "\" for status ",
                          n.status));
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(": ");
    FUZZ_CHECK(colon != std::string::npos && colon > 0,
               "header line without a name: " + crisp::fuzz::hexEscaped(lines[i]));
    for (char c : lines[i]) {
      const auto b = static_cast<unsigned char>(c);
      FUZZ_CHECK(b >= 0x20 && b != 0x7f, "control byte in header line: " +
                                             crisp::fuzz::hexEscaped(lines[i]));
    }
  }
  switch (n.outcome) {
    case Negotiation::Outcome::kSpdy: {
      FUZZ_CHECK(n.status == 101, "SPDY upgrade without 101");
      FUZZ_CHECK(protocolFamily(n.protocol) == ProtocolFamily::kSpdy, "SPDY outcome, other family");
      bool listed = false;
      for (const std::string& p : spdyServerProtocols(op)) {
        listed |= p == spdyProtocolVersion(n.protocol);
      }
      FUZZ_CHECK(listed, absl::StrCat("SPDY version not offered for the route: ",
                                      spdyProtocolVersion(n.protocol)));
      break;
    }
    case Negotiation::Outcome::kWebSocket: {
      FUZZ_CHECK(n.status == 101, "WebSocket upgrade without 101");
      FUZZ_CHECK(end + 4 == r.size(), "a 101 with a body");
      bool listed = false;
      for (const std::string& p : websocketServerProtocols(op)) {
        listed |= p == n.subprotocol;
      }
      FUZZ_CHECK(listed, "subprotocol not offered for the route: " +
                             crisp::fuzz::hexEscaped(n.subprotocol));
      const std::optional<Protocol> p = websocketProtocol(op, n.subprotocol);
      FUZZ_CHECK(p.has_value() && *p == n.protocol, "subprotocol and protocol disagree");
      break;
    }
    case Negotiation::Outcome::kRejected:
      FUZZ_CHECK(n.status == 400 || n.status == 403 || n.status == 405,
                 absl::StrCat("rejected with status ", n.status));
      break;
  }
}

}  // namespace
}  // namespace crisp::stream::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace crisp;                // NOLINT(google-build-using-namespace)
  using namespace crisp::stream;        // NOLINT(google-build-using-namespace)
  using namespace crisp::stream::fuzz;  // NOLINT(google-build-using-namespace)
  std::optional<crisp::fuzz::SteeredInput> in = crisp::fuzz::splitInput(data, size);
  if (!in) {
    return 0;
  }
  const size_t limit = kLimits[in->options & 3];
  const Outcome chunked = run(in->wire, in->chunks, limit);
  const Outcome whole = run(in->wire, {}, limit);
  FUZZ_CHECK(chunked.state == whole.state,
             absl::StrCat("chunked feed ended in state ", static_cast<int>(chunked.state),
                          ", whole feed in ", static_cast<int>(whole.state)));
  if (whole.state != Http1HeadParser::State::kComplete) {
    return 0;
  }
  FUZZ_CHECK(chunked.consumed == whole.consumed,
             absl::StrCat("chunked feed took ", chunked.consumed, " head bytes, whole feed ",
                          whole.consumed));
  FUZZ_CHECK(sameRequest(chunked.request, whole.request),
             "chunked feed gave " + describe(chunked.request) + "\n  whole feed gave " +
                 describe(whole.request));
  FUZZ_CHECK(whole.consumed <= limit && whole.consumed <= in->wire.size(),
             absl::StrCat("a complete head of ", whole.consumed, " bytes, limit ", limit));
  const HttpRequest& request = whole.request;
  for (const auto& [name, value] : request.headers) {
    FUZZ_CHECK(!hasControl(name) && !hasControl(value), "CR, LF or NUL in a header: " +
                                                            describe(request));
  }
  FUZZ_CHECK(!hasControl(request.path) && !hasControl(request.query), "control byte in target");

  if (std::optional<StreamRoute> route = matchStreamRoute(request.path)) {
    FUZZ_CHECK(isBase64UrlToken(route->token), "token " + crisp::fuzz::hexEscaped(route->token));
    FUZZ_CHECK(request.path == absl::StrCat("/", session::operationName(route->operation), "/",
                                            route->token),
               "route from a path spelled otherwise: " + crisp::fuzz::hexEscaped(request.path));
  }

  const ServedProtocols kServed[] = {
      {},
      [](Protocol) { return false; },
      [](Protocol p) { return protocolFamily(p) == ProtocolFamily::kSpdy; },
      [](Protocol p) { return protocolFamily(p) == ProtocolFamily::kWebSocket; },
  };
  const ServedProtocols& served = kServed[(in->options >> 2) & 3];
  for (const session::Operation op : {session::Operation::kExec, session::Operation::kAttach,
                                      session::Operation::kPortForward}) {
    const Negotiation n = negotiate(request, op, served);
    checkResponse(n, op);
    // `served` filters WebSocket subprotocols only; a SPDY upgrade without a
    // handler is refused by the server after negotiation.
    if (n.outcome == Negotiation::Outcome::kWebSocket && served) {
      FUZZ_CHECK(served(n.protocol), "upgraded to a WebSocket protocol without a handler");
    }
  }
  return 0;
}
