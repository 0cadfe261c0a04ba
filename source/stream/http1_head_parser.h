#pragma once

// Http1HeadParser: reads one HTTP/1.1 request head (request line and header
// fields) with http-parser, incrementally, and stops right after the blank
// line that ends it. Whatever follows the head (a body, or the first bytes of
// the protocol the client upgrades to) is left to the caller untouched.
//
// Pure: bytes in, an HttpRequest out; no socket, no timer. Usage:
//
//   Http1HeadParser parser(16384);
//   size_t used = 0;
//   switch (parser.feed(chunk, used)) {
//     case Http1HeadParser::State::kComplete:  // chunk.substr(used) follows the head
//     ...
//   }
//
// The size limit counts every byte of the head, request line and final CRLF
// included; a head of exactly `max_header_bytes` is accepted, one byte more is
// kTooLarge. The parser never looks at more than one byte past the limit.

#include <cstddef>
#include <string>
#include <string_view>

#include <http_parser.h>

#include "source/stream/upgrade.h"

namespace crisp::stream {

class Http1HeadParser {
 public:
  enum class State {
    kNeedMore,   // the head is not complete yet: feed more bytes
    kComplete,   // request() holds the head
    kTooLarge,   // the head exceeds max_header_bytes
    kMalformed,  // not an HTTP/1.x request head; error() says why
  };

  explicit Http1HeadParser(size_t max_header_bytes);
  Http1HeadParser(const Http1HeadParser&) = delete;
  Http1HeadParser& operator=(const Http1HeadParser&) = delete;

  // Parses the next bytes. `consumed` is set to the count of bytes of `data`
  // that belong to the head (on kComplete, data.substr(consumed) is what the
  // client sent after it). Once a state other than kNeedMore is returned,
  // further calls return that state again and consume nothing.
  State feed(std::string_view data, size_t& consumed);

  // The parsed request (method, path, query, headers); valid on kComplete.
  // The caller may move it out. `peer` is left empty.
  HttpRequest& request() { return request_; }

  // Why the head is malformed (http-parser's description), for logs.
  const std::string& error() const { return error_; }

 private:
  static int onUrl(http_parser* p, const char* at, size_t len);
  static int onHeaderField(http_parser* p, const char* at, size_t len);
  static int onHeaderValue(http_parser* p, const char* at, size_t len);
  static int onHeadersComplete(http_parser* p);
  static const http_parser_settings& settings();

  // Splits the request target into path and query; false if it is not a
  // valid origin-form or absolute-form target.
  bool finishRequestLine();
  // False (with error_ set) when a header name or value holds NUL, CR or LF.
  bool checkHeaderBytes();
  void finishHeaderValue();

  const size_t max_header_bytes_;
  http_parser parser_;
  State state_ = State::kNeedMore;
  size_t seen_ = 0;
  bool head_done_ = false;
  bool in_value_ = false;
  std::string url_;
  HttpRequest request_;
  std::string error_;
};

}  // namespace crisp::stream
