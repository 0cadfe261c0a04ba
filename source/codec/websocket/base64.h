#pragma once

// Standard padded base64 (RFC 4648 section 4, alphabet A-Z a-z 0-9 + /, '='
// padding) with the decoding rules of Go's base64.StdEncoding, which is what
// Kubernetes peers use for the base64 channel protocols and what the
// WebSocket handshake key is checked against:
// - padding is required (the encoded length is a multiple of 4);
// - '=' may appear only as the last one or two characters;
// - '\r' and '\n' are skipped wherever they appear (Go ignores them);
// - any other byte outside the alphabet (spaces included) is an error;
// - non-zero bits left over in the last group are accepted (Go's non-strict
//   mode), so "QR==" decodes to "A".
//
// Encoding and decoding run on OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock.
// EVP_DecodeBlock alone is not enough: it decodes '=' as zero bits anywhere,
// never removes padding bytes from its result, and trims leading and trailing
// whitespace, so the checks above are made here before it runs.
//
// Pure functions, thread-safe.

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "source/common/buffer.h"

namespace crisp::websocket {

// Length of the padded encoding of `n` bytes.
constexpr size_t base64EncodedLength(size_t n) { return (n + 2) / 3 * 4; }

// Returns the padded encoding of `data`.
std::string base64Encode(std::string_view data);

// Appends the padded encoding of `data` to `out` (no intermediate copy).
void base64EncodeTo(std::string_view data, Buffer& out);

// Decodes `text` under the rules above. Errors are InvalidArgument with a
// message starting "ws.bad_base64:".
absl::StatusOr<std::string> base64Decode(std::string_view text);

// Same, appending the decoded bytes to `out`. On error nothing is appended.
absl::Status base64DecodeTo(std::string_view text, Buffer& out);

}  // namespace crisp::websocket
