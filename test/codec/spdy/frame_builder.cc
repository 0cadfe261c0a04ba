#include "test/codec/spdy/frame_builder.h"

#include <cstdlib>

#include "source/codec/spdy/dictionary.h"

namespace crisp::spdy::test {

std::string u16(uint16_t v) { return std::string{static_cast<char>(v >> 8), static_cast<char>(v)}; }

std::string u24(uint32_t v) {
  return std::string{static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string u32(uint32_t v) {
  return std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string controlHeader(uint16_t type, uint8_t flags, uint32_t length, uint16_t version) {
  return u16(static_cast<uint16_t>(0x8000 | version)) + u16(type) +
         std::string(1, static_cast<char>(flags)) + u24(length);
}

std::string controlFrame(uint16_t type, uint8_t flags, std::string_view payload, uint16_t version,
                         int64_t length_override) {
  const uint32_t length =
      length_override >= 0 ? static_cast<uint32_t>(length_override) : payload.size();
  return controlHeader(type, flags, length, version) + std::string(payload);
}

std::string dataHeader(uint32_t stream_id, uint8_t flags, uint32_t length) {
  return u32(stream_id) + std::string(1, static_cast<char>(flags)) + u24(length);
}

std::string dataFrame(uint32_t stream_id, uint8_t flags, std::string_view payload) {
  return dataHeader(stream_id, flags, static_cast<uint32_t>(payload.size())) + std::string(payload);
}

std::string rstStreamFrame(uint32_t stream_id, uint32_t status) {
  return controlFrame(3, 0, u32(stream_id) + u32(status));
}

std::string pingFrame(uint32_t id) { return controlFrame(6, 0, u32(id)); }

std::string goAwayFrame(uint32_t last_good, uint32_t status) {
  return controlFrame(7, 0, u32(last_good) + u32(status));
}

std::string windowUpdateFrame(uint32_t stream_id, uint32_t delta) {
  return controlFrame(9, 0, u32(stream_id) + u32(delta));
}

std::string settingsFrame(uint8_t flags, const std::vector<RawSetting>& entries) {
  std::string payload = u32(static_cast<uint32_t>(entries.size()));
  for (const RawSetting& e : entries) {
    payload += std::string(1, static_cast<char>(e.flags)) + u24(e.id) + u32(e.value);
  }
  return controlFrame(4, flags, payload);
}

std::string synStreamFrame(uint32_t stream_id, uint32_t associated_id, uint8_t priority,
                           uint8_t flags, std::string_view block) {
  std::string payload = u32(stream_id) + u32(associated_id);
  payload += static_cast<char>(priority << 5);
  payload += '\0';  // slot
  payload += block;
  return controlFrame(1, flags, payload);
}

std::string synReplyFrame(uint32_t stream_id, uint8_t flags, std::string_view block) {
  return controlFrame(2, flags, u32(stream_id) + std::string(block));
}

std::string headersFrame(uint32_t stream_id, uint8_t flags, std::string_view block) {
  return controlFrame(8, flags, u32(stream_id) + std::string(block));
}

std::string rawHeaderBlock(uint32_t count, const RawPairs& pairs) {
  std::string out = u32(count);
  for (const auto& [name, value] : pairs) {
    out += u32(static_cast<uint32_t>(name.size())) + name;
    out += u32(static_cast<uint32_t>(value.size())) + value;
  }
  return out;
}

std::string rawHeaderBlock(const RawPairs& pairs) {
  return rawHeaderBlock(static_cast<uint32_t>(pairs.size()), pairs);
}

TestDeflater::TestDeflater(int level, int window_bits, bool dictionary) {
  if (deflateInit2(&zs_, level, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    std::abort();
  }
  if (dictionary) {
    const auto& dict = headerDictionary();
    if (deflateSetDictionary(&zs_, dict.data(), static_cast<uInt>(dict.size())) != Z_OK) {
      std::abort();
    }
  }
}

TestDeflater::~TestDeflater() { deflateEnd(&zs_); }

std::string TestDeflater::compress(std::string_view plain, int flush) {
  std::string out;
  zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
  zs_.avail_in = static_cast<uInt>(plain.size());
  char chunk[4096];
  do {
    zs_.next_out = reinterpret_cast<Bytef*>(chunk);
    zs_.avail_out = sizeof(chunk);
    const int rc = deflate(&zs_, flush);
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      std::abort();
    }
    out.append(chunk, sizeof(chunk) - zs_.avail_out);
  } while (zs_.avail_out == 0);
  return out;
}

TestInflater::TestInflater() {
  if (inflateInit2(&zs_, 15) != Z_OK) {
    std::abort();
  }
}

TestInflater::~TestInflater() { inflateEnd(&zs_); }

bool TestInflater::inflateBlock(std::string_view compressed, std::string& plain) {
  plain.clear();
  zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  zs_.avail_in = static_cast<uInt>(compressed.size());
  char chunk[4096];
  for (;;) {
    zs_.next_out = reinterpret_cast<Bytef*>(chunk);
    zs_.avail_out = sizeof(chunk);
    int rc = inflate(&zs_, Z_SYNC_FLUSH);
    if (rc == Z_NEED_DICT) {
      const auto& dict = headerDictionary();
      if (inflateSetDictionary(&zs_, dict.data(), static_cast<uInt>(dict.size())) != Z_OK) {
        return false;
      }
      rc = Z_OK;
    }
    plain.append(chunk, sizeof(chunk) - zs_.avail_out);
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      return false;
    }
    if (zs_.avail_in == 0 && zs_.avail_out != 0) {
      return true;
    }
  }
}

}  // namespace crisp::spdy::test
