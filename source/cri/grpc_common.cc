#include "source/cri/grpc_common.h"

#include <array>
#include <cstring>

#include <nghttp2/nghttp2.h>

namespace crisp::cri {
namespace {

constexpr std::array<std::string_view, 17> kCodeNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

// The largest TimeoutValue: "positive integer as ASCII string of at most 8 digits".
constexpr int64_t kMaxTimeoutValue = 99999999;

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

}  // namespace

std::string_view grpcCodeName(absl::StatusCode code) {
  const int n = static_cast<int>(code);
  if (n < 0 || n >= static_cast<int>(kCodeNames.size())) {
    return "UNKNOWN";
  }
  return kCodeNames[n];
}

absl::StatusCode grpcCodeFromNumber(int value) {
  if (value < 0 || value >= static_cast<int>(kCodeNames.size())) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(value);
}

std::string percentEncodeGrpcMessage(std::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(message.size());
  for (char ch : message) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 0x0f];
    }
  }
  return out;
}

std::string percentDecodeGrpcMessage(std::string_view encoded) {
  std::string out;
  out.reserve(encoded.size());
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (encoded[i] == '%' && i + 2 < encoded.size()) {
      const int hi = hexValue(encoded[i + 1]);
      const int lo = hexValue(encoded[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += encoded[i];
  }
  return out;
}

std::optional<std::chrono::nanoseconds> parseGrpcTimeout(std::string_view value) {
  if (value.size() < 2 || value.size() > 9) {
    return std::nullopt;
  }
  int64_t n = 0;
  for (size_t i = 0; i + 1 < value.size(); ++i) {
    const char c = value[i];
    if (c < '0' || c > '9') {
      return std::nullopt;
    }
    n = n * 10 + (c - '0');
  }
  using std::chrono::duration_cast;
  using std::chrono::nanoseconds;
  switch (value.back()) {
    case 'H':
      return duration_cast<nanoseconds>(std::chrono::hours(n));
    case 'M':
      return duration_cast<nanoseconds>(std::chrono::minutes(n));
    case 'S':
      return duration_cast<nanoseconds>(std::chrono::seconds(n));
    case 'm':
      return duration_cast<nanoseconds>(std::chrono::milliseconds(n));
    case 'u':
      return duration_cast<nanoseconds>(std::chrono::microseconds(n));
    case 'n':
      return nanoseconds(n);
    default:
      return std::nullopt;
  }
}

std::string formatGrpcTimeout(std::chrono::nanoseconds timeout) {
  const int64_t ns = timeout.count();
  if (ns <= 0) {
    return "1n";
  }
  // Finest unit whose value fits in 8 digits; round up so that a short deadline
  // never encodes as zero.
  struct Unit {
    int64_t ns;
    char suffix;
  };
  static constexpr std::array<Unit, 6> kUnits = {{{1, 'n'},
                                                  {1000, 'u'},
                                                  {1000000, 'm'},
                                                  {1000000000, 'S'},
                                                  {60LL * 1000000000, 'M'},
                                                  {3600LL * 1000000000, 'H'}}};
  for (const Unit& u : kUnits) {
    const int64_t v = ns / u.ns + (ns % u.ns != 0 ? 1 : 0);
    if (v <= kMaxTimeoutValue) {
      return std::to_string(v) + u.suffix;
    }
  }
  return std::to_string(kMaxTimeoutValue) + "H";
}

absl::StatusCode grpcCodeFromHttpStatus(int http_status) {
  switch (http_status) {
    case 400:
      return absl::StatusCode::kInternal;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kUnknown;
  }
}

absl::StatusCode grpcCodeFromHttp2Error(uint32_t error_code) {
  switch (error_code) {
    case NGHTTP2_REFUSED_STREAM:
      return absl::StatusCode::kUnavailable;
    case NGHTTP2_CANCEL:
      return absl::StatusCode::kCancelled;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return absl::StatusCode::kResourceExhausted;
    case NGHTTP2_INADEQUATE_SECURITY:
      return absl::StatusCode::kPermissionDenied;
    default:
      return absl::StatusCode::kInternal;
  }
}

void appendGrpcMessage(Buffer& out, std::string_view message) {
  out.addUint8(0);
  out.addUint32Be(static_cast<uint32_t>(message.size()));
  out.add(message);
}

bool isHopByHopHeader(std::string_view name) {
  if (name.empty() || name[0] == ':') {
    return true;
  }
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" ||
         name == "transfer-encoding" || name == "upgrade" || name == "te" || name == "host" ||
         name == "http2-settings";
}

bool isValidHeaderField(std::string_view name, std::string_view value) {
  if (name.empty()) {
    return false;
  }
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') {
      return false;
    }
  }
  return nghttp2_check_header_name(reinterpret_cast<const uint8_t*>(name.data()), name.size()) !=
             0 &&
         nghttp2_check_header_value(reinterpret_cast<const uint8_t*>(value.data()), value.size()) !=
             0;
}

GrpcMessageDecoder::GrpcMessageDecoder(size_t max_message_bytes)
    : max_message_bytes_(max_message_bytes) {}

absl::Status GrpcMessageDecoder::decode(const uint8_t* data, size_t len,
                                        std::vector<std::string>& messages) {
  if (!error_.ok()) {
    return error_;
  }
  buffer_.add(data, len);
  while (buffer_.length() >= kGrpcMessageHeaderBytes) {
    uint8_t header[kGrpcMessageHeaderBytes];
    buffer_.copyOut(header, sizeof(header));
    if (header[0] != 0) {
      error_ = absl::InternalError(
          header[0] == 1 ? "compressed message received but no grpc-encoding was negotiated"
                         : "invalid compressed flag in message prefix");
      buffer_.drain(buffer_.length());
      return error_;
    }
    const uint32_t size = (static_cast<uint32_t>(header[1]) << 24) |
                          (static_cast<uint32_t>(header[2]) << 16) |
                          (static_cast<uint32_t>(header[3]) << 8) | header[4];
    if (size > max_message_bytes_) {
      error_ = absl::ResourceExhaustedError("message of " + std::to_string(size) +
                                            " bytes exceeds the limit of " +
                                            std::to_string(max_message_bytes_) + " bytes");
      buffer_.drain(buffer_.length());
      return error_;
    }
    if (buffer_.length() < kGrpcMessageHeaderBytes + size) {
      break;
    }
    buffer_.drain(kGrpcMessageHeaderBytes);
    std::string message(size, '\0');
    buffer_.copyOut(message.data(), size);
    buffer_.drain(size);
    messages.push_back(std::move(message));
  }
  return absl::OkStatus();
}

absl::Status GrpcMessageDecoder::finish() const {
  if (!error_.ok()) {
    return error_;
  }
  if (!buffer_.empty()) {
    return absl::InternalError("stream ended inside a message (" +
                               std::to_string(buffer_.length()) + " bytes of a message)");
  }
  return absl::OkStatus();
}

}  // namespace crisp::cri
