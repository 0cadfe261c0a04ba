#include "source/codec/spdy/header_block.h"

#include <algorithm>
#include <cstdlib>

#include "absl/container/inlined_vector.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

#include "source/codec/spdy/dictionary.h"

namespace crisp::spdy {
namespace {

// Our own deflate state is kept small: we only ever send a handful of short
// headers per stream, and every connection carries one encoder, which holds
// its window and hash chains for the connection's whole life (a few KiB of
// every idle session). The smallest window (512 bytes) keeps only the tail of
// the 1423-byte dictionary, which costs a few bytes on the rare SYN_STREAM we
// send (a server's SYN_REPLY is empty); inflaters accept any window up to
// 32 KiB and check the dictionary's id, computed over all of it. Level 9 as
// spdystream uses; the blocks are tiny.
constexpr int kDeflateWindowBits = 9;
constexpr int kDeflateMemLevel = 1;
// Peers compress with the full 32 KiB window, so inflate needs all of it.
constexpr int kInflateWindowBits = 15;

void appendUint32(std::string& out, uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, sizeof(b));
}

uint32_t readUint32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}

absl::Status badBlock(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("spdy.bad_header_block: ", what));
}

absl::Status zlibError(const char* what, const z_stream& zs) {
  return badBlock(absl::StrCat(what, " (", zs.msg != nullptr ? zs.msg : "no detail", ")"));
}

}  // namespace

bool headerNameEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(a[i])) !=
        absl::ascii_tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

HeaderBlockEncoder::HeaderBlockEncoder() {
  const auto& dict = headerDictionary();
  if (deflateInit2(&zs_, Z_BEST_COMPRESSION, Z_DEFLATED, kDeflateWindowBits, kDeflateMemLevel,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    std::abort();  // Only fails without memory.
  }
  if (deflateSetDictionary(&zs_, dict.data(), static_cast<uInt>(dict.size())) != Z_OK) {
    std::abort();  // Only fails on a broken stream state, which would be a bug here.
  }
}

HeaderBlockEncoder::~HeaderBlockEncoder() { deflateEnd(&zs_); }

void HeaderBlockEncoder::serialize(const HeaderList& headers) {
  plain_.clear();
  // An entry whose name appeared earlier was already sent joined to that one.
  auto seen_before = [&headers](size_t i) {
    for (size_t k = 0; k < i; ++k) {
      if (headerNameEquals(headers[k].first, headers[i].first)) {
        return true;
      }
    }
    return false;
  };
  uint32_t pairs = 0;
  for (size_t i = 0; i < headers.size(); ++i) {
    if (!seen_before(i)) {
      ++pairs;
    }
  }
  appendUint32(plain_, pairs);
  for (size_t i = 0; i < headers.size(); ++i) {
    if (seen_before(i)) {
      continue;
    }
    const std::string& name = headers[i].first;
    appendUint32(plain_, static_cast<uint32_t>(name.size()));
    for (char c : name) {
      plain_.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
    }
    const size_t length_at = plain_.size();
    appendUint32(plain_, 0);  // Patched below once the joined length is known.
    const size_t value_at = plain_.size();
    plain_.append(headers[i].second);
    for (size_t j = i + 1; j < headers.size(); ++j) {
      if (headerNameEquals(headers[j].first, name)) {
        plain_.push_back('\0');
        plain_.append(headers[j].second);
      }
    }
    const uint32_t value_len = static_cast<uint32_t>(plain_.size() - value_at);
    plain_[length_at] = static_cast<char>(value_len >> 24);
    plain_[length_at + 1] = static_cast<char>(value_len >> 16);
    plain_[length_at + 2] = static_cast<char>(value_len >> 8);
    plain_[length_at + 3] = static_cast<char>(value_len);
  }
}

std::string_view HeaderBlockEncoder::encode(const HeaderList& headers) {
  serialize(headers);
  zs_.next_in = reinterpret_cast<Bytef*>(plain_.data());
  zs_.avail_in = static_cast<uInt>(plain_.size());
  if (compressed_.size() < 256) {
    compressed_.resize(256);
  }
  size_t produced = 0;
  for (;;) {
    zs_.next_out = reinterpret_cast<Bytef*>(compressed_.data() + produced);
    zs_.avail_out = static_cast<uInt>(compressed_.size() - produced);
    // Z_SYNC_FLUSH ends the block on a byte boundary so that the peer can
    // decode it completely now, while the stream (and its history) goes on.
    const int rc = deflate(&zs_, Z_SYNC_FLUSH);
    produced = compressed_.size() - zs_.avail_out;
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      std::abort();  // Z_STREAM_ERROR: the state is corrupt, a bug here.
    }
    // With avail_out left over, deflate has flushed everything it was given.
    if (zs_.avail_in == 0 && zs_.avail_out != 0) {
      break;
    }
    if (zs_.avail_out == 0) {
      compressed_.resize(compressed_.size() * 2);
    }
  }
  return std::string_view(compressed_.data(), produced);
}

HeaderBlockDecoder::HeaderBlockDecoder(uint32_t max_block_bytes, uint32_t max_entries)
    : max_block_bytes_(max_block_bytes), max_entries_(max_entries) {
  if (inflateInit2(&zs_, kInflateWindowBits) != Z_OK) {
    std::abort();  // Only fails without memory.
  }
}

HeaderBlockDecoder::~HeaderBlockDecoder() { inflateEnd(&zs_); }

absl::Status HeaderBlockDecoder::decode(const uint8_t* data, size_t len, HeaderList& out) {
  absl::Status status = inflateBlock(data, len);
  if (!status.ok()) {
    return status;
  }
  return parse(out);
}

absl::Status HeaderBlockDecoder::inflateBlock(const uint8_t* data, size_t len) {
  plain_len_ = 0;
  zs_.next_in = const_cast<Bytef*>(data);
  zs_.avail_in = static_cast<uInt>(len);
  // The output space never grows past max_block_bytes_ + 1: one byte more than
  // allowed proves the block too large, whatever the compressed input still
  // holds. This is the guard against blocks that inflate enormously.
  const size_t cap = static_cast<size_t>(max_block_bytes_) + 1;
  for (;;) {
    if (plain_len_ == plain_.size()) {
      plain_.resize(std::min(cap, std::max<size_t>(plain_.size() * 2, 512)));
    }
    zs_.next_out = reinterpret_cast<Bytef*>(plain_.data() + plain_len_);
    zs_.avail_out = static_cast<uInt>(plain_.size() - plain_len_);
    int rc = inflate(&zs_, Z_SYNC_FLUSH);
    plain_len_ = plain_.size() - zs_.avail_out;
    if (rc == Z_NEED_DICT) {
      // The first block's zlib header names the dictionary by its Adler-32.
      if (zs_.adler != kHeaderDictionaryId) {
        return badBlock(
            absl::StrCat("zlib stream asks for an unknown dictionary 0x", absl::Hex(zs_.adler)));
      }
      const auto& dict = headerDictionary();
      if (inflateSetDictionary(&zs_, dict.data(), static_cast<uInt>(dict.size())) != Z_OK) {
        return zlibError("zlib rejected the dictionary", zs_);
      }
      continue;
    }
    if (rc == Z_STREAM_END) {
      // The stream must stay open for the whole session.
      return badBlock("zlib stream ended inside the session");
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return zlibError("zlib inflate failed", zs_);
    }
    if (plain_len_ > max_block_bytes_) {
      return absl::InvalidArgumentError(
          absl::StrCat("spdy.header_block_too_large: header block exceeds ", max_block_bytes_,
                       " bytes after decompression"));
    }
    if (zs_.avail_in == 0 && zs_.avail_out != 0) {
      return absl::OkStatus();
    }
    if (rc == Z_BUF_ERROR && zs_.avail_out != 0) {
      // Input left, output space left, and still no progress: cannot happen
      // with a sane zlib; fail rather than spin.
      return zlibError("zlib made no progress", zs_);
    }
  }
}

absl::Status HeaderBlockDecoder::parse(HeaderList& out) const {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(plain_.data());
  const uint8_t* const end = p + plain_len_;
  auto remaining = [&p, end]() { return static_cast<size_t>(end - p); };

  if (remaining() < 4) {
    return badBlock("block shorter than its pair count");
  }
  const uint32_t pairs = readUint32(p);
  p += 4;
  // Each pair takes at least its two 4-byte lengths.
  if (pairs > remaining() / 8) {
    return badBlock(
        absl::StrCat("pair count ", pairs, " exceeds the ", remaining(), " bytes of the block"));
  }
  absl::InlinedVector<std::string_view, 16> names;
  names.reserve(pairs);
  const size_t first_entry = out.size();
  for (uint32_t i = 0; i < pairs; ++i) {
    if (remaining() < 4) {
      return badBlock(absl::StrCat("pair ", i, ": name length past the end"));
    }
    const uint32_t name_len = readUint32(p);
    p += 4;
    if (name_len > remaining()) {
      return badBlock(absl::StrCat("pair ", i, ": name of ", name_len, " bytes past the end"));
    }
    if (name_len == 0) {
      return badBlock(absl::StrCat("pair ", i, ": empty name"));
    }
    const std::string_view name(reinterpret_cast<const char*>(p), name_len);
    p += name_len;
    for (char c : name) {
      if (c == '\0') {
        return badBlock(absl::StrCat("pair ", i, ": NUL in name"));
      }
      if (absl::ascii_isupper(static_cast<unsigned char>(c))) {
        return badBlock(absl::StrCat("pair ", i, ": uppercase letter in name"));
      }
    }
    names.push_back(name);
    if (remaining() < 4) {
      return badBlock(absl::StrCat("pair ", i, ": value length past the end"));
    }
    const uint32_t value_len = readUint32(p);
    p += 4;
    if (value_len > remaining()) {
      return badBlock(absl::StrCat("pair ", i, ": value of ", value_len, " bytes past the end"));
    }
    std::string_view value(reinterpret_cast<const char*>(p), value_len);
    p += value_len;
    // Several values of one name travel NUL-separated in one pair (SPDY/3
    // draft 2.6.10); each becomes its own entry, in order. Empty pieces are
    // kept, as spdystream keeps them.
    for (;;) {
      if (out.size() - first_entry >= max_entries_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spdy.header_block_too_large: header block has more than ", max_entries_, " entries"));
      }
      const size_t nul = value.find('\0');
      out.emplace_back(std::string(name), std::string(value.substr(0, nul)));
      if (nul == std::string_view::npos) {
        break;
      }
      value.remove_prefix(nul + 1);
    }
  }
  if (p != end) {
    return badBlock(absl::StrCat(remaining(), " bytes left after the last pair"));
  }
  // A name may appear in only one pair (SPDY/3 draft 2.6.10).
  std::sort(names.begin(), names.end());
  if (std::adjacent_find(names.begin(), names.end()) != names.end()) {
    return badBlock("duplicate header name");
  }
  return absl::OkStatus();
}

}  // namespace crisp::spdy
