#pragma once

// The preset zlib dictionary that SPDY/3 and SPDY/3.1 header blocks are
// compressed with (SPDY/3 draft, section 2.6.10.1). Both directions of every
// session prime their zlib context with these exact bytes; a peer checks them
// through the Adler-32 DICTID in the zlib header, so one wrong byte makes every
// header block undecodable.
//
// Usage: deflateSetDictionary(&z, headerDictionary().data(), headerDictionary().size()).

#include <array>
#include <cstddef>
#include <cstdint>

namespace crisp::spdy {

constexpr size_t kHeaderDictionarySize = 1423;
// zlib's DICTID for the dictionary: its Adler-32.
constexpr uint32_t kHeaderDictionaryId = 0xE3C6A7C2;

// Returns the dictionary bytes. The array is a constant with static storage
// duration; safe to use from any thread.
const std::array<uint8_t, kHeaderDictionarySize>& headerDictionary();

}  // namespace crisp::spdy
