#pragma once

// Test-only: a CodecCallbacks fake that records every callback as one line of
// text (so whole callback sequences compare with ==), plus helpers that feed
// bytes to a Codec whole, one byte at a time, or in seeded random chunks.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

#include "source/codec/spdy/codec.h"

namespace crisp::spdy::test {

class RecordingCallbacks : public CodecCallbacks {
 public:
  // Lines look like:
  //   SYN_STREAM 1 assoc=0 pri=2 flags=0x1 {name: value, ...}
  //   DATA 1 fin=1 len=5 "hello"   (payloads over 64 bytes are shown by length only)
  std::vector<std::string> events;
  // Full DATA payloads in order, for content checks.
  std::vector<std::string> payloads;
  // Headers of header frames in order.
  std::vector<HeaderList> header_lists;

  void onSynStream(uint32_t stream_id, uint32_t associated_id, uint8_t priority, uint8_t flags,
                   HeaderList&& headers) override;
  void onSynReply(uint32_t stream_id, uint8_t flags, HeaderList&& headers) override;
  void onHeaders(uint32_t stream_id, uint8_t flags, HeaderList&& headers) override;
  void onData(uint32_t stream_id, Buffer& data, bool fin) override;
  void onRstStream(uint32_t stream_id, RstStatus status) override;
  void onSettings(uint8_t flags, const std::vector<SettingsEntry>& entries) override;
  void onPing(uint32_t id) override;
  void onGoAway(uint32_t last_good_stream_id, GoAwayStatus status) override;
  void onWindowUpdate(uint32_t stream_id, uint32_t delta) override;
};

std::string formatHeaders(const HeaderList& headers);

enum class Chunking { kWhole, kByteByByte, kRandom };

struct FeedResult {
  std::vector<std::string> events;
  std::vector<std::string> payloads;
  // The first non-OK status from dispatch(), or OK.
  absl::Status status;
  // Bytes the codec left in its input at the end.
  size_t left_in_input = 0;
};

// Feeds `bytes` to a fresh codec (Role::kServer) in the given chunking,
// stopping at the first error. kRandom cuts chunks of 1..max_chunk bytes with
// std::mt19937 seeded by `seed`.
FeedResult feed(std::string_view bytes, Chunking chunking, uint32_t seed = 1,
                const Limits& limits = {}, size_t max_chunk = 64);

// Feeds through all three chunkings (random with several seeds), checks with
// gtest expectations that they agree, and returns the whole-input result.
FeedResult feedAllWays(std::string_view bytes, const Limits& limits = {});

}  // namespace crisp::spdy::test
