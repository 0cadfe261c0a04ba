#pragma once

// Test-only builders of raw SPDY/3.1 bytes, packed by hand from the draft's
// layouts (section 2.2 and 2.6) without any of the codec's encoding code, so
// that decoder tests check the codec against independently made bytes and
// malformed frames are easy to write.
//
// TestDeflater / TestInflater are independent zlib streams primed with the
// SPDY/3 dictionary, used to make and read header blocks on the test's side.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <zlib.h>

namespace crisp::spdy::test {

std::string u16(uint16_t v);
std::string u24(uint32_t v);
std::string u32(uint32_t v);

// A control frame: C bit, version, type, flags, a 24-bit length and payload.
// The length written is payload.size() unless `length_override` is given.
std::string controlFrame(uint16_t type, uint8_t flags, std::string_view payload,
                         uint16_t version = 3, int64_t length_override = -1);
// Only the 8-byte header of a control frame.
std::string controlHeader(uint16_t type, uint8_t flags, uint32_t length, uint16_t version = 3);
// A DATA frame; `stream_id` is written as given (including the top bit).
std::string dataFrame(uint32_t stream_id, uint8_t flags, std::string_view payload);
std::string dataHeader(uint32_t stream_id, uint8_t flags, uint32_t length);

// Fixed layouts of the control frames without header blocks.
std::string rstStreamFrame(uint32_t stream_id, uint32_t status);
std::string pingFrame(uint32_t id);
std::string goAwayFrame(uint32_t last_good, uint32_t status);
std::string windowUpdateFrame(uint32_t stream_id, uint32_t delta);
struct RawSetting {
  uint8_t flags;
  uint32_t id;
  uint32_t value;
};
std::string settingsFrame(uint8_t flags, const std::vector<RawSetting>& entries);

// Control frames with a header block already compressed by the caller.
std::string synStreamFrame(uint32_t stream_id, uint32_t associated_id, uint8_t priority,
                           uint8_t flags, std::string_view block);
std::string synReplyFrame(uint32_t stream_id, uint8_t flags, std::string_view block);
std::string headersFrame(uint32_t stream_id, uint8_t flags, std::string_view block);

// An uncompressed header block: the pair count, then per pair the 32-bit
// name length, name, 32-bit value length and value, all written as given.
using RawPairs = std::vector<std::pair<std::string, std::string>>;
std::string rawHeaderBlock(const RawPairs& pairs);
// Same with an explicit pair count that need not match the pairs given.
std::string rawHeaderBlock(uint32_t count, const RawPairs& pairs);

// One direction's zlib compression stream, as a peer would run it.
class TestDeflater {
 public:
  // `dictionary` false leaves out the preset dictionary (a broken peer).
  explicit TestDeflater(int level = Z_BEST_COMPRESSION, int window_bits = 15,
                        bool dictionary = true);
  ~TestDeflater();
  TestDeflater(const TestDeflater&) = delete;
  TestDeflater& operator=(const TestDeflater&) = delete;

  // Compresses `plain` and ends with the given flush (Z_SYNC_FLUSH as SPDY
  // wants, or Z_FINISH to end the stream).
  std::string compress(std::string_view plain, int flush = Z_SYNC_FLUSH);

 private:
  z_stream zs_{};
};

// One direction's zlib decompression stream, for checking what the codec sends.
class TestInflater {
 public:
  TestInflater();
  ~TestInflater();
  TestInflater(const TestInflater&) = delete;
  TestInflater& operator=(const TestInflater&) = delete;

  // Inflates one compressed block. Returns false on any zlib error.
  bool inflateBlock(std::string_view compressed, std::string& plain);

 private:
  z_stream zs_{};
};

}  // namespace crisp::spdy::test
