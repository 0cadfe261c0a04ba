#pragma once

// Test-only: the input layout the stream fuzz targets share, so that the same
// bytes can be fed whole and in pieces and the two outcomes compared.
//
//   byte 0      options, read by each target as it documents
//   byte 1      n = byte % 8: how many chunk-size bytes follow (0: one chunk)
//   n bytes     chunk sizes, used in turn: b < 128 gives b + 1 bytes, b >= 128
//               gives (b - 127) * 64 bytes
//   the rest    the bytes a peer sent

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"

namespace crisp::fuzz {

struct SteeredInput {
  uint8_t options = 0;
  std::vector<size_t> chunks;  // empty: feed everything at once
  std::string_view wire;
};

// `s` with C escapes, for failure messages (absl's string_view is not
// std::string_view in Debian's build).
inline std::string hexEscaped(std::string_view s) {
  return absl::CHexEscape(absl::string_view(s.data(), s.size()));
}

inline size_t chunkSize(uint8_t b) { return b < 128 ? b + 1u : (b - 127u) * 64u; }

// nullopt when the input is too short to hold its own steering bytes.
inline std::optional<SteeredInput> splitInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return std::nullopt;
  }
  const size_t chunk_bytes = data[1] % 8;
  if (size < 2 + chunk_bytes) {
    return std::nullopt;
  }
  SteeredInput in;
  in.options = data[0];
  for (size_t i = 0; i < chunk_bytes; ++i) {
    in.chunks.push_back(chunkSize(data[2 + i]));
  }
  in.wire = std::string_view(reinterpret_cast<const char*>(data) + 2 + chunk_bytes,
                             size - 2 - chunk_bytes);
  return in;
}

// Calls `feed(piece)` with consecutive pieces of `wire` cut by `chunks` (one
// piece when empty) until `feed` returns false or the bytes run out. Returns
// the count of bytes handed over.
template <class Feed>
size_t feedInChunks(std::string_view wire, const std::vector<size_t>& chunks, Feed feed) {
  size_t fed = 0;
  size_t next = 0;
  while (fed < wire.size()) {
    size_t n = wire.size() - fed;
    if (!chunks.empty()) {
      n = n < chunks[next] ? n : chunks[next];
      next = (next + 1) % chunks.size();
    }
    const std::string_view piece = wire.substr(fed, n);
    fed += n;
    if (!feed(piece)) {
      break;
    }
  }
  return fed;
}

}  // namespace crisp::fuzz
