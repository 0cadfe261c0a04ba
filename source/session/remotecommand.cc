#include "source/session/remotecommand.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

namespace crisp::session {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

constexpr char kExecErrorPrefix[] = "error executing command in container: ";
constexpr char kAttachErrorPrefix[] = "error attaching to container: ";

char asciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equalsIgnoreAsciiCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (asciiLower(a[i]) != asciiLower(b[i])) {
      return false;
    }
  }
  return true;
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes
// there are not one (the rules of Go's utf8.DecodeRuneInString: no overlong
// forms, no surrogates, nothing above U+10FFFF).
size_t validUtf8Length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = byte(i);
  const size_t left = s.size() - i;
  const auto cont = [&](size_t k) { return (byte(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) {
    return (left >= 2 && cont(i + 1)) ? 2 : 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(i + 1) || !cont(i + 2)) {
      return 0;
    }
    const uint8_t c1 = byte(i + 1);
    if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F)) {
      return 0;  // overlong, or a UTF-16 surrogate
    }
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) {
      return 0;
    }
    const uint8_t c1 = byte(i + 1);
    if ((c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F)) {
      return 0;  // overlong, or above U+10FFFF
    }
    return 4;
  }
  return 0;
}

void appendJsonKey(std::string& out, std::string_view key) {
  out += '"';
  out += key;
  out += "\":";
}

// {"metadata":{},"status":"Failure","message":...,"reason":...,"details":{"causes":[...]}[,"code":N]}
// with the keys in the order of metav1.Status's fields, as encoding/json emits them.
struct FailureStatus {
  std::string message;
  std::string reason;
  std::string cause_reason;  // StatusCause.Type, serialized under "reason"; omitted when empty
  std::string cause_message;
  int code = 0;  // omitted when 0
};

std::string failureJson(const FailureStatus& f) {
  std::string out = "{\"metadata\":{},\"status\":\"Failure\"";
  if (!f.message.empty()) {
    out += ',';
    appendJsonKey(out, "message");
    appendJsonString(out, f.message);
  }
  if (!f.reason.empty()) {
    out += ',';
    appendJsonKey(out, "reason");
    appendJsonString(out, f.reason);
  }
  out += ",\"details\":{\"causes\":[{";
  bool first = true;
  if (!f.cause_reason.empty()) {
    appendJsonKey(out, "reason");
    appendJsonString(out, f.cause_reason);
    first = false;
  }
  if (!f.cause_message.empty()) {
    if (!first) {
      out += ',';
    }
    appendJsonKey(out, "message");
    appendJsonString(out, f.cause_message);
  }
  out += "}]}";
  if (f.code != 0) {
    out += ",\"code\":";
    out += std::to_string(f.code);
  }
  out += '}';
  return out;
}

// Go's %v of a []string: "[a b c]".
std::string goStringSlice(const std::vector<std::string>& words) {
  std::string out = "[";
  for (size_t i = 0; i < words.size(); ++i) {
    if (i > 0) {
      out += ' ';
    }
    out += words[i];
  }
  out += ']';
  return out;
}

// apierrors.NewInternalError(err) for the error text `detail`.
FailureStatus internalError(std::string detail) {
  FailureStatus f;
  f.message = "Internal error occurred: " + detail;
  f.reason = "InternalError";
  f.cause_message = std::move(detail);
  f.code = 500;
  return f;
}

}  // namespace

const char* remoteCommandProtocol(RemoteCommandVersion v) {
  switch (v) {
    case RemoteCommandVersion::kV1:
      return "channel.k8s.io";
    case RemoteCommandVersion::kV2:
      return "v2.channel.k8s.io";
    case RemoteCommandVersion::kV3:
      return "v3.channel.k8s.io";
    case RemoteCommandVersion::kV4:
      return "v4.channel.k8s.io";
    case RemoteCommandVersion::kV5:
      return "v5.channel.k8s.io";
  }
  return "unknown";
}

std::optional<RemoteCommandVersion> parseRemoteCommandProtocol(std::string_view token) {
  for (auto v : {RemoteCommandVersion::kV1, RemoteCommandVersion::kV2, RemoteCommandVersion::kV3,
                 RemoteCommandVersion::kV4, RemoteCommandVersion::kV5}) {
    if (token == remoteCommandProtocol(v)) {
      return v;
    }
  }
  return std::nullopt;
}

const char* streamTypeName(StreamType t) {
  switch (t) {
    case StreamType::kError:
      return "error";
    case StreamType::kStdin:
      return "stdin";
    case StreamType::kStdout:
      return "stdout";
    case StreamType::kStderr:
      return "stderr";
    case StreamType::kResize:
      return "resize";
  }
  return "unknown";
}

std::optional<StreamType> parseStreamType(std::string_view value) {
  for (auto t : {StreamType::kError, StreamType::kStdin, StreamType::kStdout, StreamType::kStderr,
                 StreamType::kResize}) {
    if (equalsIgnoreAsciiCase(value, streamTypeName(t))) {
      return t;
    }
  }
  return std::nullopt;
}

size_t StreamSet::size() const {
  size_t n = 0;
  for (uint8_t b = bits_; b != 0; b &= static_cast<uint8_t>(b - 1)) {
    ++n;
  }
  return n;
}

std::string StreamSet::toString() const {
  std::string out;
  for (auto t : {StreamType::kError, StreamType::kStdin, StreamType::kStdout, StreamType::kStderr,
                 StreamType::kResize}) {
    if (contains(t)) {
      if (!out.empty()) {
        out += ',';
      }
      out += streamTypeName(t);
    }
  }
  return out;
}

StreamSet expectedStreams(RemoteCommandVersion v, const ExecSpec& spec) {
  StreamSet set;
  set.add(StreamType::kError);
  if (spec.stdin) {
    set.add(StreamType::kStdin);
  }
  if (spec.stdout) {
    set.add(StreamType::kStdout);
  }
  if (spec.stderr && !spec.tty) {
    set.add(StreamType::kStderr);
  }
  if (spec.tty && hasResizeStream(v)) {
    set.add(StreamType::kResize);
  }
  return set;
}

std::string nonZeroExitMessage(const ExecSpec& spec, const ExitStatus& status) {
  std::string text = "command terminated with non-zero exit code: ";
  if (!status.message.empty()) {
    text += status.message;
  } else {
    text += "error executing command ";
    text += goStringSlice(spec.command);
    text += ", exit code ";
    text += std::to_string(status.exit_code);
  }
  return text;
}

std::string errorStreamPayload(RemoteCommandVersion v, const ExecSpec& spec,
                               const ExitStatus& status) {
  const bool attach = spec.operation == Operation::kAttach;
  std::optional<FailureStatus> failure;
  switch (status.kind) {
    case ExitStatus::Kind::kSuccess:
      break;
    case ExitStatus::Kind::kNonZeroExit:
      if (attach) {
        break;  // the kubelet's attach never reports an exit code
      }
      if (status.exit_code < 0 || status.exit_code > 255) {
        failure = internalError(kExecErrorPrefix + std::string("process exited with code ") +
                                std::to_string(status.exit_code));
        break;
      }
      if (status.exit_code == 0) {
        break;
      }
      failure = FailureStatus{nonZeroExitMessage(spec, status), "NonZeroExitCode", "ExitCode",
                              std::to_string(status.exit_code), 0};
      break;
    case ExitStatus::Kind::kError:
      failure = internalError((attach ? kAttachErrorPrefix : kExecErrorPrefix) + status.message);
      break;
    case ExitStatus::Kind::kEndedByServer:
      // Shown by kubectl as it stands ("error: <message>"), with a non-zero exit.
      failure = FailureStatus{status.message, status.reason, "", status.message, status.http_code};
      break;
  }
  if (!hasStructuredStatus(v)) {
    return failure.has_value() ? failure->message : std::string();
  }
  if (!failure.has_value()) {
    return "{\"metadata\":{},\"status\":\"Success\"}";
  }
  return failureJson(*failure);
}

void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c >= 0x80) {
      const size_t len = validUtf8Length(s, i);
      if (len == 0) {
        out += "\\ufffd";
        ++i;
        continue;
      }
      // U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: E2 80 A8/A9.
      if (len == 3 && c == 0xE2 && static_cast<uint8_t>(s[i + 1]) == 0x80 &&
          (static_cast<uint8_t>(s[i + 2]) & 0xFE) == 0xA8) {
        out += "\\u202";
        out += kHexDigits[static_cast<uint8_t>(s[i + 2]) & 0x0F];
      } else {
        out.append(s.data() + i, len);
      }
      i += len;
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == '<' || c == '>' || c == '&') {
          out += "\\u00";
          out += kHexDigits[c >> 4];
          out += kHexDigits[c & 0x0F];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++i;
  }
  out += '"';
}

namespace {

// A small JSON scanner over one buffered document. It validates syntax as
// RFC 8259 does and extracts the two TerminalSize fields. kIncomplete means the
// bytes so far are a valid prefix and more are needed.
class ResizeParser {
 public:
  enum class Result { kComplete, kIncomplete, kError };

  explicit ResizeParser(std::string_view text) : text_(text) {}

  // Parses one top-level document starting at offset 0 (no leading whitespace).
  Result parseDocument() {
    if (text_[0] == 'n') {
      return literal("null");
    }
    if (text_[0] != '{') {
      error_ = "resize document is not a JSON object";
      return Result::kError;
    }
    return object(/*depth=*/1, /*top_level=*/true);
  }

  size_t end() const { return pos_; }
  TerminalSize size() const { return size_; }
  const std::string& error() const { return error_; }

 private:
  bool atEnd() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  void skipWhitespace() {
    while (!atEnd() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) {
      ++pos_;
    }
  }

  Result fail(std::string why) {
    error_ = std::move(why);
    return Result::kError;
  }

  Result literal(std::string_view word) {
    for (char expected : word) {
      if (atEnd()) {
        return Result::kIncomplete;
      }
      if (peek() != expected) {
        return fail("invalid JSON literal in resize document");
      }
      ++pos_;
    }
    return Result::kComplete;
  }

  // A string; its decoded value (non-ASCII reduced to a marker byte, enough to
  // compare with ASCII field names) goes to `decoded` when not null.
  Result string(std::string* decoded) {
    ++pos_;  // opening quote
    while (true) {
      if (atEnd()) {
        return Result::kIncomplete;
      }
      const auto c = static_cast<uint8_t>(peek());
      if (c == '"') {
        ++pos_;
        return Result::kComplete;
      }
      if (c < 0x20) {
        return fail("control character in a JSON string in resize document");
      }
      if (c != '\\') {
        if (decoded != nullptr) {
          decoded->push_back(static_cast<char>(c));
        }
        ++pos_;
        continue;
      }
      ++pos_;
      if (atEnd()) {
        return Result::kIncomplete;
      }
      const char e = peek();
      ++pos_;
      char out = 0;
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out = e;
          break;
        case 'b':
          out = '\b';
          break;
        case 'f':
          out = '\f';
          break;
        case 'n':
          out = '\n';
          break;
        case 'r':
          out = '\r';
          break;
        case 't':
          out = '\t';
          break;
        case 'u': {
          uint32_t code = 0;
          for (int k = 0; k < 4; ++k) {
            if (atEnd()) {
              return Result::kIncomplete;
            }
            const char h = peek();
            uint32_t digit;
            if (h >= '0' && h <= '9') {
              digit = static_cast<uint32_t>(h - '0');
            } else if (h >= 'a' && h <= 'f') {
              digit = static_cast<uint32_t>(h - 'a' + 10);
            } else if (h >= 'A' && h <= 'F') {
              digit = static_cast<uint32_t>(h - 'A' + 10);
            } else {
              return fail("invalid \\u escape in resize document");
            }
            code = code * 16 + digit;
            ++pos_;
          }
          out = code < 0x80 ? static_cast<char>(code) : '\x80';
          break;
        }
        default:
          return fail("invalid escape in a JSON string in resize document");
      }
      if (decoded != nullptr) {
        decoded->push_back(out);
      }
    }
  }

  // A number; its text goes to `text` when not null. A number is complete only
  // when a byte that cannot continue it follows (as for Go's decoder).
  Result number(std::string_view* text) {
    const size_t start = pos_;
    const auto digits = [&]() -> size_t {
      size_t n = 0;
      while (!atEnd() && peek() >= '0' && peek() <= '9') {
        ++pos_;
        ++n;
      }
      return n;
    };
    if (peek() == '-') {
      ++pos_;
    }
    if (atEnd()) {
      return Result::kIncomplete;
    }
    if (peek() == '0') {
      ++pos_;
    } else if (digits() == 0) {
      return fail("invalid number in resize document");
    }
    if (atEnd()) {
      return Result::kIncomplete;
    }
    if (peek() == '.') {
      ++pos_;
      if (digits() == 0) {
        return atEnd() ? Result::kIncomplete : fail("invalid number in resize document");
      }
      if (atEnd()) {
        return Result::kIncomplete;
      }
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (atEnd()) {
        return Result::kIncomplete;
      }
      if (peek() == '+' || peek() == '-') {
        ++pos_;
      }
      if (digits() == 0) {
        return atEnd() ? Result::kIncomplete : fail("invalid number in resize document");
      }
      if (atEnd()) {
        return Result::kIncomplete;
      }
    }
    if (text != nullptr) {
      *text = text_.substr(start, pos_ - start);
    }
    return Result::kComplete;
  }

  // Any JSON value, validated and skipped.
  Result value(int depth) {
    if (atEnd()) {
      return Result::kIncomplete;
    }
    switch (peek()) {
      case '{':
        return object(depth + 1, /*top_level=*/false);
      case '[':
        return array(depth + 1);
      case '"':
        return string(nullptr);
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) {
          return number(nullptr);
        }
        return fail("invalid JSON value in resize document");
    }
  }

  Result array(int depth) {
    if (depth > ResizeDecoder::kMaxDepth) {
      return fail("resize document nested too deeply");
    }
    ++pos_;  // '['
    bool more = false;
    Result r = firstElement(']', more);
    while (r == Result::kComplete && more) {
      skipWhitespace();
      r = value(depth);
      if (r == Result::kComplete) {
        r = nextElement(']', more);
      }
    }
    return r;
  }

  // Just inside an array or object that `close` ends: whether an element
  // follows (`more`) or the container is empty (consumed).
  Result firstElement(char close, bool& more) {
    skipWhitespace();
    if (atEnd()) {
      return Result::kIncomplete;
    }
    more = peek() != close;
    if (!more) {
      ++pos_;
    }
    return Result::kComplete;
  }

  // After an element of an array or object that `close` ends: a comma
  // announces another (`more`), `close` ends the container (consumed).
  Result nextElement(char close, bool& more) {
    skipWhitespace();
    if (atEnd()) {
      return Result::kIncomplete;
    }
    if (peek() == close) {
      ++pos_;
      more = false;
      return Result::kComplete;
    }
    if (peek() != ',') {
      return fail(std::string("expected ',' or '") + close + "' in resize document");
    }
    ++pos_;
    more = true;
    return Result::kComplete;
  }

  // A uint16 field of TerminalSize: an integer literal 0-65535, or null.
  Result sizeField(uint16_t& field) {
    if (atEnd()) {
      return Result::kIncomplete;
    }
    if (peek() == 'n') {
      return literal("null");
    }
    if (peek() != '-' && (peek() < '0' || peek() > '9')) {
      // Still validate the value's syntax first: a syntax error and a type
      // error both end decoding, but an incomplete value must wait.
      const Result r = value(0);
      return r == Result::kComplete ? fail("resize field is not a number") : r;
    }
    std::string_view text;
    const Result r = number(&text);
    if (r != Result::kComplete) {
      return r;
    }
    uint32_t v = 0;
    for (char c : text) {
      if (c < '0' || c > '9') {
        return fail("resize field is not an unsigned integer");
      }
      v = v * 10 + static_cast<uint32_t>(c - '0');
      if (v > 0xFFFF) {
        return fail("resize field out of range");
      }
    }
    field = static_cast<uint16_t>(v);
    return Result::kComplete;
  }

  Result object(int depth, bool top_level) {
    if (depth > ResizeDecoder::kMaxDepth) {
      return fail("resize document nested too deeply");
    }
    ++pos_;  // '{'
    bool more = false;
    Result r = firstElement('}', more);
    while (r == Result::kComplete && more) {
      r = member(depth, top_level);
      if (r == Result::kComplete) {
        r = nextElement('}', more);
      }
    }
    return r;
  }

  // "name": value. Width and Height of the top-level object are kept.
  Result member(int depth, bool top_level) {
    skipWhitespace();
    if (atEnd()) {
      return Result::kIncomplete;
    }
    if (peek() != '"') {
      return fail("expected a field name in resize document");
    }
    std::string key;
    const Result r = string(&key);
    if (r != Result::kComplete) {
      return r;
    }
    skipWhitespace();
    if (atEnd()) {
      return Result::kIncomplete;
    }
    if (peek() != ':') {
      return fail("expected ':' in resize document");
    }
    ++pos_;
    skipWhitespace();
    if (top_level && equalsIgnoreAsciiCase(key, "Width")) {
      return sizeField(size_.width);
    }
    if (top_level && equalsIgnoreAsciiCase(key, "Height")) {
      return sizeField(size_.height);
    }
    return value(depth);
  }

  std::string_view text_;
  size_t pos_ = 0;
  TerminalSize size_;
  std::string error_;
};

bool isJsonWhitespace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

}  // namespace

absl::Status ResizeDecoder::feed(std::string_view data,
                                 const std::function<void(TerminalSize)>& on_size) {
  if (failed_) {
    return absl::OkStatus();
  }
  while (!data.empty()) {
    // Whitespace between documents is never buffered.
    if (pending_.empty()) {
      size_t skip = 0;
      while (skip < data.size() && isJsonWhitespace(data[skip])) {
        ++skip;
      }
      data.remove_prefix(skip);
      if (data.empty()) {
        break;
      }
    }
    // Take no more than the bound allows (plus one byte to detect overflow).
    const size_t room = max_document_bytes_ + 1 - std::min(pending_.size(), max_document_bytes_);
    const size_t take = std::min(room, data.size());
    pending_.append(data.data(), take);
    data.remove_prefix(take);

    // Parse every complete document now in the buffer.
    while (!pending_.empty()) {
      ResizeParser parser(pending_);
      const auto result = parser.parseDocument();
      if (result == ResizeParser::Result::kError) {
        failed_ = true;
        pending_.clear();
        return absl::InvalidArgumentError(parser.error());
      }
      if (result == ResizeParser::Result::kIncomplete) {
        if (pending_.size() > max_document_bytes_) {
          failed_ = true;
          pending_.clear();
          return absl::InvalidArgumentError("resize document larger than " +
                                            std::to_string(max_document_bytes_) + " bytes");
        }
        break;
      }
      if (parser.end() > max_document_bytes_) {
        failed_ = true;
        pending_.clear();
        return absl::InvalidArgumentError("resize document larger than " +
                                          std::to_string(max_document_bytes_) + " bytes");
      }
      const TerminalSize size = parser.size();
      size_t next = parser.end();
      while (next < pending_.size() && isJsonWhitespace(pending_[next])) {
        ++next;
      }
      pending_.erase(0, next);
      if (size.width != 0 && size.height != 0) {
        on_size(size);
      }
    }
  }
  return absl::OkStatus();
}

SessionMetrics& SessionMetrics::get() {
  static SessionMetrics* metrics = [] {
    auto& registry = stats::registry();
#define CRISP_SESSION_COUNTER_FAMILY(field, name, help, labels) \
  stats::Family& field = registry.family(name, help, stats::Kind::kCounter, labels);
#define CRISP_SESSION_GAUGE_FAMILY(field, name, help, labels) \
  stats::Family& field = registry.family(name, help, stats::Kind::kGauge, labels);
#define CRISP_SESSION_HISTOGRAM_FAMILY(field, name, help, labels, buckets) \
  stats::Family& field = registry.histogramFamily(name, help, labels, buckets);
    CRISP_SESSION_METRICS(CRISP_SESSION_COUNTER_FAMILY, CRISP_SESSION_GAUGE_FAMILY,
                          CRISP_SESSION_HISTOGRAM_FAMILY)
#undef CRISP_SESSION_COUNTER_FAMILY
#undef CRISP_SESSION_GAUGE_FAMILY
#undef CRISP_SESSION_HISTOGRAM_FAMILY
#define CRISP_SESSION_FAMILY_NAME(field, name, help, labels) field,
#define CRISP_SESSION_HISTOGRAM_NAME(field, name, help, labels, buckets) field,
    return new SessionMetrics{
        CRISP_SESSION_METRICS(CRISP_SESSION_FAMILY_NAME, CRISP_SESSION_FAMILY_NAME,
                              CRISP_SESSION_HISTOGRAM_NAME)
            session_bytes_total.counter({"in"}),
        session_bytes_total.counter({"out"}), session_timeouts_total.counter({"creation"}),
        session_timeouts_total.counter({"idle"})};
#undef CRISP_SESSION_FAMILY_NAME
#undef CRISP_SESSION_HISTOGRAM_NAME
  }();
  return *metrics;
}

}  // namespace crisp::session
