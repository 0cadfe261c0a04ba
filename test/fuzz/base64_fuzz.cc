// Fuzz target for the base64 of the base64 channel protocols and of the
// WebSocket handshake key (source/codec/websocket/base64.h).
//
// Input layout: the whole input is the text to decode (and, separately, the
// bytes to encode).
//
// Properties checked on every input:
//   - no crash, leak or sanitizer report, whatever the bytes;
//   - base64Decode accepts exactly what an independent reading of Go's
//     StdEncoding rules (written here from the header's list) accepts, and
//     gives the same bytes;
//   - base64DecodeTo agrees with base64Decode and appends nothing on error;
//   - encoding any bytes gives base64EncodedLength(n) characters that decode
//     back to them, and decoding then encoding gives the canonical text.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/match.h"

#include "source/codec/websocket/base64.h"
#include "source/common/buffer.h"

#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_input.h"

namespace crisp::websocket::fuzz {
namespace {

int sextet(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Go's StdEncoding.DecodeString, non-strict: CR and LF skipped, groups of
// four, '=' only as the last one or two characters of the last group.
std::optional<std::string> referenceDecode(std::string_view text) {
  std::string s;
  for (char c : text) {
    if (c != '\r' && c != '\n') {
      s.push_back(c);
    }
  }
  if (s.size() % 4 != 0) {
    return std::nullopt;
  }
  std::string out;
  for (size_t g = 0; g < s.size(); g += 4) {
    const bool last = g + 4 == s.size();
    int v[4];
    int data = 4;
    for (int i = 0; i < 4; ++i) {
      const char c = s[g + i];
      if (c == '=') {
        if (!last || i < 2 || (i == 2 && s[g + 3] != '=')) {
          return std::nullopt;
        }
        data = i;
        break;
      }
      v[i] = sextet(c);
      if (v[i] < 0) {
        return std::nullopt;
      }
    }
    for (int i = data; i < 4; ++i) {
      v[i] = 0;
    }
    const uint32_t n = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    const char bytes[3] = {static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                           static_cast<char>(n)};
    out.append(bytes, data - 1);
  }
  return out;
}

}  // namespace
}  // namespace crisp::websocket::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace crisp::websocket;        // NOLINT(google-build-using-namespace)
  using namespace crisp::websocket::fuzz;  // NOLINT(google-build-using-namespace)
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const absl::StatusOr<std::string> decoded = base64Decode(input);
  const std::optional<std::string> expected = referenceDecode(input);
  FUZZ_CHECK(decoded.ok() == expected.has_value(),
             "\"" + crisp::fuzz::hexEscaped(input) + "\": crisp says " + decoded.status().ToString() +
                 ", Go's rules say " + (expected ? "valid" : "invalid"));
  crisp::Buffer appended;
  appended.add("x");
  const absl::Status to = base64DecodeTo(input, appended);
  FUZZ_CHECK(to.ok() == decoded.ok(), "base64DecodeTo and base64Decode disagree");
  if (decoded.ok()) {
    FUZZ_CHECK(*decoded == *expected, "\"" + crisp::fuzz::hexEscaped(input) + "\" decoded to \"" +
                                          crisp::fuzz::hexEscaped(*decoded) + "\", Go's rules give \"" +
                                          crisp::fuzz::hexEscaped(*expected) + "\"");
    FUZZ_CHECK(appended.toString() == "x" + *decoded, "base64DecodeTo appended other bytes");
    const std::string canonical = base64Encode(*decoded);
    const absl::StatusOr<std::string> again = base64Decode(canonical);
    FUZZ_CHECK(again.ok() && *again == *decoded, "canonical text does not decode back");
  } else {
    FUZZ_CHECK(decoded.status().code() == absl::StatusCode::kInvalidArgument &&
                   absl::StartsWith(decoded.status().message(), "ws.bad_base64:"),
               decoded.status().ToString());
    FUZZ_CHECK(appended.toString() == "x", "base64DecodeTo appended bytes on error");
  }

  const std::string encoded = base64Encode(input);
  FUZZ_CHECK(encoded.size() == base64EncodedLength(size), "encoded length");
  crisp::Buffer encoded_to;
  base64EncodeTo(input, encoded_to);
  FUZZ_CHECK(encoded_to.toString() == encoded, "base64EncodeTo and base64Encode disagree");
  const absl::StatusOr<std::string> back = base64Decode(encoded);
  FUZZ_CHECK(back.ok() && *back == input, "encoded bytes do not decode back");
  return 0;
}
