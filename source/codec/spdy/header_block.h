#pragma once

// SPDY/3 header blocks: the name/value list carried by SYN_STREAM, SYN_REPLY
// and HEADERS, serialized with 32-bit counts and lengths and compressed with
// zlib primed by the SPDY/3 dictionary (SPDY/3 draft, sections 2.6.10 and
// 2.6.10.1). Each direction of a session is one zlib stream that lives as long
// as the session: every block ends with a SYNC_FLUSH, and the next block
// continues the same stream. A session therefore owns exactly one
// HeaderBlockEncoder (for what it sends) and one HeaderBlockDecoder (for what
// it receives), and must run every block through them in wire order.
//
// Neither class is thread-safe; both belong to their connection's event loop.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include <zlib.h>

#include "source/codec/spdy/codec.h"

namespace crisp::spdy {

// Compares two header names ASCII case-insensitively (names are ASCII tokens;
// bytes outside A-Z compare exactly).
bool headerNameEquals(std::string_view a, std::string_view b);

// Serializes and compresses header blocks for one direction of a session.
class HeaderBlockEncoder {
 public:
  // Aborts the process if zlib cannot allocate its state (out of memory).
  HeaderBlockEncoder();
  ~HeaderBlockEncoder();
  HeaderBlockEncoder(const HeaderBlockEncoder&) = delete;
  HeaderBlockEncoder& operator=(const HeaderBlockEncoder&) = delete;

  // Compresses `headers` as the next block of this direction's stream and
  // returns the compressed bytes. The view stays valid until the next call.
  // Names are sent lowercase; entries sharing a name (compared without case)
  // are joined into one pair, values NUL-separated in list order, at the
  // position of the first of them. Names must be non-empty and free of NUL, and
  // values must not contain NUL (the peer would split them): the caller
  // guarantees this, nothing here checks it.
  std::string_view encode(const HeaderList& headers);

 private:
  // Lays out the uncompressed block in plain_.
  void serialize(const HeaderList& headers);

  z_stream zs_{};
  // Reused across blocks so that encoding allocates nothing once warm.
  std::string plain_;
  std::string compressed_;
};

// Decompresses and parses header blocks for one direction of a session.
class HeaderBlockDecoder {
 public:
  // `max_block_bytes` bounds the decompressed size of one block; `max_entries`
  // bounds the number of entries one block may yield (after NUL splitting).
  // Aborts the process if zlib cannot allocate its state (out of memory).
  HeaderBlockDecoder(uint32_t max_block_bytes, uint32_t max_entries);
  ~HeaderBlockDecoder();
  HeaderBlockDecoder(const HeaderBlockDecoder&) = delete;
  HeaderBlockDecoder& operator=(const HeaderBlockDecoder&) = delete;

  // Decompresses one block of `len` bytes and appends its entries to `out`.
  // Errors (the session must end; the zlib stream is out of step after any of
  // them, so the decoder must not be used again):
  //   spdy.bad_header_block        zlib data error, wrong dictionary, stream end,
  //                                or a malformed or invalid pair list
  //   spdy.header_block_too_large  more than max_block_bytes after
  //                                decompression, or more than max_entries
  absl::Status decode(const uint8_t* data, size_t len, HeaderList& out);

 private:
  absl::Status inflateBlock(const uint8_t* data, size_t len);
  absl::Status parse(HeaderList& out) const;

  const uint32_t max_block_bytes_;
  const uint32_t max_entries_;
  z_stream zs_{};
  // Decompressed bytes of the current block; grows up to max_block_bytes_ + 1
  // and is reused.
  std::string plain_;
  size_t plain_len_ = 0;
};

}  // namespace crisp::spdy
