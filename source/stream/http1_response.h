#pragma once

// Small HTTP/1.1 responses written by crisp itself: the errors of the stream
// server (made to read exactly like the Go servers kubectl and the kubelet
// expect) and the answers of the admin endpoint. Every response built here
// ends the connection: it carries Content-Length and "Connection: close".

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace crisp::stream {

struct HttpResponse {
  int status = 200;
  // Written in this order, before Content-Length and Connection.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // True for HEAD: Content-Length still describes `body`, which is not sent.
  bool omit_body = false;

  // The response on the wire: status line, headers, Content-Length,
  // "Connection: close", blank line, body.
  std::string serialize() const;
};

// The reason phrase of a status code ("Not Found"); "Unknown" if it has none.
const char* statusReason(int status);

// What Go's http.Error(w, text, status) sends: text/plain; charset=utf-8,
// X-Content-Type-Options: nosniff, and `text` plus a newline as the body.
HttpResponse goHttpError(int status, std::string_view text);

// Go's http.NotFound: 404 with body "404 page not found\n".
HttpResponse goNotFound();

// What Go's server itself answers to a request head it refuses (431 too
// large, 400 malformed): text/plain, body "<code> <reason>".
HttpResponse goHeadError(int status);

}  // namespace crisp::stream
