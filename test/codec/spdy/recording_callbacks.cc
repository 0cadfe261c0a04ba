#include "test/codec/spdy/recording_callbacks.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include <gtest/gtest.h>

namespace crisp::spdy::test {
namespace {

std::string escaped(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrFormat("\\x%02x", c);
    }
  }
  return out + "\"";
}

}  // namespace

std::string formatHeaders(const HeaderList& headers) {
  std::string out = "{";
  for (size_t i = 0; i < headers.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ", ", escaped(headers[i].first), ": ",
                    escaped(headers[i].second));
  }
  return out + "}";
}

void RecordingCallbacks::onSynStream(uint32_t stream_id, uint32_t associated_id, uint8_t priority,
                                     uint8_t flags, HeaderList&& headers) {
  events.push_back(absl::StrFormat("SYN_STREAM %u assoc=%u pri=%u flags=0x%x %s", stream_id,
                                   associated_id, priority, flags, formatHeaders(headers)));
  header_lists.push_back(std::move(headers));
}

void RecordingCallbacks::onSynReply(uint32_t stream_id, uint8_t flags, HeaderList&& headers) {
  events.push_back(
      absl::StrFormat("SYN_REPLY %u flags=0x%x %s", stream_id, flags, formatHeaders(headers)));
  header_lists.push_back(std::move(headers));
}

void RecordingCallbacks::onHeaders(uint32_t stream_id, uint8_t flags, HeaderList&& headers) {
  events.push_back(
      absl::StrFormat("HEADERS %u flags=0x%x %s", stream_id, flags, formatHeaders(headers)));
  header_lists.push_back(std::move(headers));
}

void RecordingCallbacks::onData(uint32_t stream_id, Buffer& data, bool fin) {
  std::string payload = data.toString();
  events.push_back(absl::StrFormat("DATA %u fin=%d len=%u%s", stream_id, fin ? 1 : 0,
                                   payload.size(),
                                   payload.size() <= 64 ? " " + escaped(payload) : ""));
  payloads.push_back(std::move(payload));
}

void RecordingCallbacks::onRstStream(uint32_t stream_id, RstStatus status) {
  events.push_back(
      absl::StrFormat("RST_STREAM %u status=%u", stream_id, static_cast<uint32_t>(status)));
}

void RecordingCallbacks::onSettings(uint8_t flags, const std::vector<SettingsEntry>& entries) {
  std::string line = absl::StrFormat("SETTINGS flags=0x%x", flags);
  for (const SettingsEntry& e : entries) {
    absl::StrAppend(&line, absl::StrFormat(" [flags=0x%x id=%u value=%u]", e.flags, e.id, e.value));
  }
  events.push_back(line);
}

void RecordingCallbacks::onPing(uint32_t id) { events.push_back(absl::StrFormat("PING %u", id)); }

void RecordingCallbacks::onGoAway(uint32_t last_good_stream_id, GoAwayStatus status) {
  events.push_back(absl::StrFormat("GOAWAY last=%u status=%u", last_good_stream_id,
                                   static_cast<uint32_t>(status)));
}

void RecordingCallbacks::onWindowUpdate(uint32_t stream_id, uint32_t delta) {
  events.push_back(absl::StrFormat("WINDOW_UPDATE %u delta=%u", stream_id, delta));
}

FeedResult feed(std::string_view bytes, Chunking chunking, uint32_t seed, const Limits& limits,
                size_t max_chunk) {
  RecordingCallbacks callbacks;
  Codec codec(Codec::Role::kServer, callbacks, limits);
  Buffer input;
  FeedResult result;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<size_t> chunk_size(1, std::max<size_t>(1, max_chunk));
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t n = bytes.size() - pos;
    if (chunking == Chunking::kByteByByte) {
      n = 1;
    } else if (chunking == Chunking::kRandom) {
      n = std::min(n, chunk_size(rng));
    }
    input.add(bytes.data() + pos, n);
    pos += n;
    result.status = codec.dispatch(input);
    if (!result.status.ok()) {
      break;
    }
  }
  result.left_in_input = input.length();
  result.events = std::move(callbacks.events);
  result.payloads = std::move(callbacks.payloads);
  return result;
}

FeedResult feedAllWays(std::string_view bytes, const Limits& limits) {
  FeedResult whole = feed(bytes, Chunking::kWhole, 1, limits);
  FeedResult bytewise = feed(bytes, Chunking::kByteByByte, 1, limits);
  EXPECT_EQ(whole.events, bytewise.events) << "byte by byte";
  EXPECT_EQ(whole.status, bytewise.status) << "byte by byte";
  for (uint32_t seed : {1u, 7u, 42u, 1234u}) {
    FeedResult random = feed(bytes, Chunking::kRandom, seed, limits);
    EXPECT_EQ(whole.events, random.events) << "random chunks, seed " << seed;
    EXPECT_EQ(whole.status, random.status) << "random chunks, seed " << seed;
  }
  return whole;
}

}  // namespace crisp::spdy::test
