#include "source/stream/http1_head_parser.h"

#include <algorithm>

namespace crisp::stream {
namespace {

Http1HeadParser* self(http_parser* p) { return static_cast<Http1HeadParser*>(p->data); }

}  // namespace

Http1HeadParser::Http1HeadParser(size_t max_header_bytes) : max_header_bytes_(max_header_bytes) {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
}

const http_parser_settings& Http1HeadParser::settings() {
  static const http_parser_settings s = [] {
    http_parser_settings out;
    http_parser_settings_init(&out);
    out.on_url = &Http1HeadParser::onUrl;
    out.on_header_field = &Http1HeadParser::onHeaderField;
    out.on_header_value = &Http1HeadParser::onHeaderValue;
    out.on_headers_complete = &Http1HeadParser::onHeadersComplete;
    return out;
  }();
  return s;
}

int Http1HeadParser::onUrl(http_parser* p, const char* at, size_t len) {
  self(p)->url_.append(at, len);
  return 0;
}

int Http1HeadParser::onHeaderField(http_parser* p, const char* at, size_t len) {
  Http1HeadParser* parser = self(p);
  if (parser->in_value_ || parser->request_.headers.empty()) {
    if (parser->in_value_) {
      parser->finishHeaderValue();
    }
    parser->request_.headers.emplace_back();
    parser->in_value_ = false;
  }
  parser->request_.headers.back().first.append(at, len);
  return 0;
}

int Http1HeadParser::onHeaderValue(http_parser* p, const char* at, size_t len) {
  Http1HeadParser* parser = self(p);
  parser->in_value_ = true;
  parser->request_.headers.back().second.append(at, len);
  return 0;
}

int Http1HeadParser::onHeadersComplete(http_parser* p) {
  Http1HeadParser* parser = self(p);
  if (parser->in_value_) {
    parser->finishHeaderValue();
  }
  parser->head_done_ = true;
  // 2 = "no body and nothing else of HTTP on this connection": http-parser
  // then returns right after the head, whatever the headers announce, and
  // the bytes that follow are left to the caller.
  return 2;
}

void Http1HeadParser::finishHeaderValue() {
  std::string& value = request_.headers.back().second;
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.pop_back();
  }
}

bool Http1HeadParser::finishRequestLine() {
  request_.method = http_method_str(static_cast<http_method>(parser_.method));
  if (parser_.http_major != 1) {
    error_ = "unsupported HTTP version";
    return false;
  }
  if (url_.size() > 0xffff) {
    // http_parser_url holds 16-bit offsets.
    error_ = "request target too long";
    return false;
  }
  http_parser_url parsed;
  http_parser_url_init(&parsed);
  if (http_parser_parse_url(url_.data(), url_.size(), parser_.method == HTTP_CONNECT, &parsed) !=
      0) {
    error_ = "invalid request target";
    return false;
  }
  if ((parsed.field_set & (1 << UF_PATH)) != 0) {
    request_.path = url_.substr(parsed.field_data[UF_PATH].off, parsed.field_data[UF_PATH].len);
  }
  if ((parsed.field_set & (1 << UF_QUERY)) != 0) {
    request_.query = url_.substr(parsed.field_data[UF_QUERY].off, parsed.field_data[UF_QUERY].len);
  }
  return true;
}

bool Http1HeadParser::checkHeaderBytes() {
  // http-parser (built without strict checks) lets NUL through in values;
  // RFC 9110 5.5 forbids NUL, CR and LF in a field, and none may reach code
  // that compares, logs or echoes header values.
  for (const auto& [name, value] : request_.headers) {
    for (const std::string* field : {&name, &value}) {
      if (field->find_first_of(std::string_view("\0\r\n", 3)) != std::string::npos) {
        error_ = "NUL, CR or LF in a header field";
        return false;
      }
    }
  }
  return true;
}

Http1HeadParser::State Http1HeadParser::feed(std::string_view data, size_t& consumed) {
  consumed = 0;
  if (state_ != State::kNeedMore) {
    return state_;
  }
  // Never parse more than one byte past the limit: enough to know the head is
  // too large, without spending work on the rest.
  const size_t allowance = max_header_bytes_ + 1 - seen_;
  const size_t chunk = std::min(data.size(), allowance);
  const size_t parsed = http_parser_execute(&parser_, &settings(), data.data(), chunk);
  seen_ += parsed;
  consumed = parsed;
  if (head_done_) {
    if (seen_ > max_header_bytes_) {
      state_ = State::kTooLarge;
    } else if (!finishRequestLine() || !checkHeaderBytes()) {
      state_ = State::kMalformed;
    } else {
      state_ = State::kComplete;
    }
    return state_;
  }
  const http_errno err = HTTP_PARSER_ERRNO(&parser_);
  if (err == HPE_HEADER_OVERFLOW) {
    state_ = State::kTooLarge;
  } else if (err != HPE_OK) {
    error_ = http_errno_description(err);
    state_ = State::kMalformed;
  } else if (seen_ > max_header_bytes_) {
    state_ = State::kTooLarge;
  }
  return state_;
}

}  // namespace crisp::stream
