#pragma once

// Wire pieces of gRPC over HTTP/2 shared by crisp's gRPC server, client and
// passthrough: the 5-byte message framing, grpc-timeout and grpc-message
// encodings, status code names, the HTTP-to-gRPC status mapping, and metadata
// (header) lists.
//
// Everything here is pure: no sockets, no loop, no logging. Functions are
// thread-safe; a GrpcMessageDecoder belongs to one stream.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"

#include "source/common/buffer.h"

namespace crisp::cri {

// Request or response metadata: header names in lower case, values as they are
// on the wire, in wire order. Binary ("-bin") values stay base64-encoded.
using Metadata = std::vector<std::pair<std::string, std::string>>;

// The largest message accepted by default, in either direction.
inline constexpr size_t kDefaultMaxMessageBytes = 16 * 1024 * 1024;
// Compressed flag (1 byte) and big-endian length (4 bytes) before each message.
inline constexpr size_t kGrpcMessageHeaderBytes = 5;

// Returns the canonical gRPC name of `code` ("OK", "NOT_FOUND", ...). absl's
// codes 0-16 are gRPC's codes; anything else is "UNKNOWN".
std::string_view grpcCodeName(absl::StatusCode code);

// Maps a numeric grpc-status value to a code; values outside 0-16 are UNKNOWN.
absl::StatusCode grpcCodeFromNumber(int value);

// Percent-encodes a status message for the grpc-message trailer: bytes outside
// 0x20-0x7E and '%' become %XX (upper-case hex).
std::string percentEncodeGrpcMessage(std::string_view message);

// Reverses percentEncodeGrpcMessage. A malformed escape is kept as it is, so
// decoding never fails.
std::string percentDecodeGrpcMessage(std::string_view encoded);

// Parses a grpc-timeout value: 1 to 8 ASCII digits and a unit (H, M, S, m, u,
// n). Returns nullopt when malformed.
std::optional<std::chrono::nanoseconds> parseGrpcTimeout(std::string_view value);

// Formats a timeout for grpc-timeout with at most 8 digits, picking the finest
// unit that fits. Zero and negative durations encode as "1n" (already expired);
// durations too long for 8 digits of hours are capped.
std::string formatGrpcTimeout(std::chrono::nanoseconds timeout);

// The gRPC code a client reports for a response whose :status is not 200
// (grpc/grpc doc/http-grpc-status-mapping.md).
absl::StatusCode grpcCodeFromHttpStatus(int http_status);

// The gRPC code for an RST_STREAM error code received from the peer
// (PROTOCOL-HTTP2.md, "Errors").
absl::StatusCode grpcCodeFromHttp2Error(uint32_t error_code);

// Appends one uncompressed length-prefixed message to `out`.
void appendGrpcMessage(Buffer& out, std::string_view message);

// True for a header name that a proxy must not forward: connection-specific
// HTTP/1.1 and HTTP/2 fields (RFC 9113 section 8.2.2) and pseudo-headers.
bool isHopByHopHeader(std::string_view name);

// True when `name` and `value` may be sent in an HTTP/2 field (lower-case
// token name, no CR, LF or NUL in the value).
bool isValidHeaderField(std::string_view name, std::string_view value);

// Splits a stream of DATA bytes into gRPC messages. DATA frame boundaries have no
// relation to message boundaries, so bytes are fed as they come.
class GrpcMessageDecoder {
 public:
  explicit GrpcMessageDecoder(size_t max_message_bytes = kDefaultMaxMessageBytes);

  // Feeds bytes and appends every completed message to `messages`. Fails with
  // RESOURCE_EXHAUSTED when a declared length is above the limit (as soon as the
  // prefix is seen) and with INTERNAL when the compressed flag is set (crisp
  // never negotiates a message encoding). After a failure the decoder ignores
  // further input and keeps returning the same status.
  absl::Status decode(const uint8_t* data, size_t len, std::vector<std::string>& messages);

  // To call at end of stream: INTERNAL when a message was cut short.
  absl::Status finish() const;

  // Bytes of an incomplete message held so far.
  size_t bufferedBytes() const { return buffer_.length(); }

 private:
  const size_t max_message_bytes_;
  Buffer buffer_;
  absl::Status error_;
};

}  // namespace crisp::cri
