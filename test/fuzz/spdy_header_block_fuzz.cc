// Fuzz target for the SPDY/3 header block decompressor, HeaderBlockDecoder,
// fed a sequence of blocks that share one zlib stream as on a connection.
//
// Input layout:
//   byte 0   options: bit 0 mode; bits 1-2 the decoder limits (kProfiles);
//            in plaintext mode bits 3-4 pick the harness's deflate level and
//            bits 5-6 its window size.
//   then     blocks, each a 16-bit big-endian length and that many bytes; a
//            length running past the end takes what is left.
//
// Mode 0 (compressed): the blocks go to the decoder as they are, so zlib's
// framing, the dictionary handshake and the size guard meet arbitrary bytes.
// Mode 1 (plaintext): the blocks are uncompressed pair lists that the harness
// compresses with its own zlib stream (preset dictionary, SYNC_FLUSH per
// block) before the decoder sees them, so the pair-list parser meets arbitrary
// lists. There an independent reading of the list decides what the decoder
// must answer: the block's entries when it is valid and within the limits,
// spdy.header_block_too_large when it is valid but too large, an error
// otherwise; and a decoded list written out again must give the very bytes of
// the block.
//
// In both modes every decoded list must obey the decoder's contract and come
// back equal after HeaderBlockEncoder and a second decoder. After the first
// error the decoder is not used again (its zlib stream is out of step).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include <zlib.h>

#include "source/codec/spdy/codec.h"
#include "source/codec/spdy/dictionary.h"
#include "source/codec/spdy/header_block.h"

#include "test/fuzz/fuzz_check.h"

namespace crisp::spdy::fuzz {
namespace {

struct Profile {
  uint32_t max_block_bytes;
  uint32_t max_entries;
};

constexpr Profile kProfiles[] = {{64 * 1024, 1024}, {128, 4}, {1024, 32}, {8, 1}};
constexpr int kLevels[] = {Z_BEST_COMPRESSION, Z_BEST_SPEED, Z_DEFAULT_COMPRESSION,
                           Z_NO_COMPRESSION};
constexpr int kWindowBits[] = {15, 12, 10, 9};

std::string describe(const HeaderList& headers) {
  std::string out;
  for (const auto& [name, value] : headers) {
    absl::StrAppend(&out, " [", absl::CHexEscape(name), ": ", absl::CHexEscape(value), "]");
  }
  return out;
}

uint32_t readUint32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}

void appendUint32(std::string& out, uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, sizeof(b));
}

// The uncompressed block a decoded list came from: adjacent entries of one
// name were one pair, their values NUL-joined.
std::string serialize(const HeaderList& headers) {
  std::string pairs;
  uint32_t count = 0;
  for (size_t i = 0; i < headers.size();) {
    const std::string& name = headers[i].first;
    std::string value = headers[i].second;
    size_t j = i + 1;
    for (; j < headers.size() && headers[j].first == name; ++j) {
      value += '\0';
      value += headers[j].second;
    }
    appendUint32(pairs, static_cast<uint32_t>(name.size()));
    pairs += name;
    appendUint32(pairs, static_cast<uint32_t>(value.size()));
    pairs += value;
    ++count;
    i = j;
  }
  std::string out;
  appendUint32(out, count);
  return out + pairs;
}

// An independent reading of an uncompressed block (SPDY/3 draft 2.6.10 and
// the decoder's documented rules): nullopt-like `valid` false when malformed,
// else how many entries it yields once values are split at NUL.
struct Reading {
  bool valid = false;
  size_t entries = 0;
};

Reading readBlock(std::string_view block) {
  Reading r;
  const auto* p = reinterpret_cast<const uint8_t*>(block.data());
  size_t left = block.size();
  auto take32 = [&](uint32_t& v) {
    if (left < 4) {
      return false;
    }
    v = readUint32(p);
    p += 4;
    left -= 4;
    return true;
  };
  uint32_t count = 0;
  if (!take32(count)) {
    return r;
  }
  std::vector<std::string_view> names;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t name_len = 0;
    if (!take32(name_len) || name_len == 0 || name_len > left) {
      return r;
    }
    const std::string_view name(reinterpret_cast<const char*>(p), name_len);
    p += name_len;
    left -= name_len;
    for (char c : name) {
      if (c == '\0' || (c >= 'A' && c <= 'Z')) {
        return r;
      }
    }
    names.push_back(name);
    uint32_t value_len = 0;
    if (!take32(value_len) || value_len > left) {
      return r;
    }
    r.entries +=
        1 + static_cast<size_t>(std::count(reinterpret_cast<const char*>(p),
                                           reinterpret_cast<const char*>(p) + value_len, '\0'));
    p += value_len;
    left -= value_len;
  }
  if (left != 0) {
    return r;
  }
  std::sort(names.begin(), names.end());
  r.valid = std::adjacent_find(names.begin(), names.end()) == names.end();
  return r;
}

// The harness's own compressing peer for plaintext mode.
class Deflater {
 public:
  Deflater(int level, int window_bits) {
    if (deflateInit2(&zs_, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
      std::abort();
    }
    const auto& dict = headerDictionary();
    if (deflateSetDictionary(&zs_, dict.data(), static_cast<uInt>(dict.size())) != Z_OK) {
      std::abort();
    }
  }
  ~Deflater() { deflateEnd(&zs_); }
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;

  std::string compress(std::string_view plain) {
    std::string out(deflateBound(&zs_, static_cast<uLong>(plain.size())) + 64, '\0');
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
    zs_.avail_in = static_cast<uInt>(plain.size());
    size_t produced = 0;
    for (;;) {
      zs_.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
      zs_.avail_out = static_cast<uInt>(out.size() - produced);
      const int rc = deflate(&zs_, Z_SYNC_FLUSH);
      FUZZ_CHECK(rc == Z_OK || rc == Z_BUF_ERROR, absl::StrCat("harness deflate failed: ", rc));
      produced = out.size() - zs_.avail_out;
      if (zs_.avail_in == 0 && zs_.avail_out != 0) {
        break;
      }
      out.resize(out.size() * 2);
    }
    out.resize(produced);
    return out;
  }

 private:
  z_stream zs_{};
};

bool isReason(const absl::Status& status, absl::string_view reason) {
  return status.code() == absl::StatusCode::kInvalidArgument &&
         absl::StartsWith(status.message(), absl::StrCat(reason, ": "));
}

void checkContract(const HeaderList& headers, const Profile& profile) {
  FUZZ_CHECK(headers.size() <= profile.max_entries,
             absl::StrCat(headers.size(), " entries passed the limit:", describe(headers)));
  for (const auto& [name, value] : headers) {
    FUZZ_CHECK(!name.empty(), "empty name decoded:" + describe(headers));
    FUZZ_CHECK(name.find('\0') == std::string::npos, "NUL in a decoded name:" + describe(headers));
    FUZZ_CHECK(value.find('\0') == std::string::npos,
               "NUL in a decoded value:" + describe(headers));
    for (char c : name) {
      FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), "uppercase in a decoded name:" + describe(headers));
    }
  }
  const std::string plain = serialize(headers);
  FUZZ_CHECK(
      plain.size() <= profile.max_block_bytes,
      absl::StrCat("block of ", plain.size(), " bytes passed the limit:", describe(headers)));
  FUZZ_CHECK(
      readBlock(plain).valid,
      "decoded list is not one of a valid block (a name in two places?):" + describe(headers));
}

}  // namespace
}  // namespace crisp::spdy::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace crisp::spdy;        // NOLINT(google-build-using-namespace)
  using namespace crisp::spdy::fuzz;  // NOLINT(google-build-using-namespace)
  if (size < 1) {
    return 0;
  }
  const uint8_t options = data[0];
  const bool plaintext = (options & 1) != 0;
  const Profile& profile = kProfiles[(options >> 1) & 3];
  std::vector<std::string_view> blocks;
  for (size_t at = 1; at < size;) {
    size_t len = data[at];
    if (at + 1 < size) {
      len = (len << 8) | data[at + 1];
    }
    at = std::min(at + 2, size);
    len = std::min(len, size - at);
    blocks.emplace_back(reinterpret_cast<const char*>(data) + at, len);
    at += len;
  }

  HeaderBlockDecoder decoder(profile.max_block_bytes, profile.max_entries);
  HeaderBlockEncoder reencoder;
  HeaderBlockDecoder redecoder(profile.max_block_bytes, profile.max_entries);
  Deflater deflater(kLevels[(options >> 3) & 3], kWindowBits[(options >> 5) & 3]);
  for (std::string_view block : blocks) {
    std::string compressed;
    if (plaintext) {
      compressed = deflater.compress(block);
    } else {
      compressed.assign(block);
    }
    HeaderList headers;
    const absl::Status status = decoder.decode(reinterpret_cast<const uint8_t*>(compressed.data()),
                                               compressed.size(), headers);
    if (!status.ok()) {
      FUZZ_CHECK(isReason(status, "spdy.bad_header_block") ||
                     isReason(status, "spdy.header_block_too_large"),
                 "error without a documented reason: " + status.ToString());
    }
    if (plaintext) {
      const Reading reading = readBlock(block);
      const std::string shown = absl::CHexEscape(std::string(block.substr(0, 256)));
      if (block.size() > profile.max_block_bytes) {
        FUZZ_CHECK(isReason(status, "spdy.header_block_too_large"),
                   absl::StrCat("block of ", block.size(), " bytes over the limit gave ",
                                status.ToString(), ": \"", shown, "\""));
      } else if (reading.valid && reading.entries > profile.max_entries) {
        FUZZ_CHECK(isReason(status, "spdy.header_block_too_large"),
                   absl::StrCat("block of ", reading.entries, " entries over the limit gave ",
                                status.ToString(), ": \"", shown, "\""));
      } else if (reading.valid) {
        FUZZ_CHECK(status.ok(),
                   "valid block rejected: " + status.ToString() + ": \"" + shown + "\"");
        FUZZ_CHECK(serialize(headers) == block, "decoded list differs from the block: \"" + shown +
                                                    "\" gave" + describe(headers));
      } else {
        FUZZ_CHECK(!status.ok(),
                   "malformed block accepted: \"" + shown + "\" gave" + describe(headers));
      }
    }
    if (!status.ok()) {
      break;
    }
    checkContract(headers, profile);
    const std::string_view again = reencoder.encode(headers);
    HeaderList round_trip;
    const absl::Status re_status =
        redecoder.decode(reinterpret_cast<const uint8_t*>(again.data()), again.size(), round_trip);
    FUZZ_CHECK(re_status.ok(),
               "re-encoded block rejected: " + re_status.ToString() + " for" + describe(headers));
    FUZZ_CHECK(round_trip == headers, "round trip changed the list:" + describe(headers) +
                                          "\n  became" + describe(round_trip));
  }
  return 0;
}
