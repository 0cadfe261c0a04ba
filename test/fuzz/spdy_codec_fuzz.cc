// Fuzz target for the SPDY/3.1 codec's decoder, Codec::dispatch().
//
// Input layout (the first bytes steer the run, the rest is the wire):
//   byte 0      options: bit 0 role (0 server, 1 client); bits 1-2 the Limits
//               profile (see kProfiles); bit 3 the DATA callback drains half of
//               the payload instead of leaving it all to the codec.
//   byte 1      n = byte % 8: how many chunk-size bytes follow (0: one chunk).
//   n bytes     chunk sizes, used in turn: b < 128 gives b + 1 bytes, b >= 128
//               gives (b - 127) * 64 bytes.
//   the rest    the bytes a peer sent.
//
// Properties checked on every input:
//   - no crash, leak or sanitizer report, whatever the bytes;
//   - feeding in chunks gives the same callbacks, the same status and the same
//     bytes left over as feeding the whole input at once;
//   - an error is INVALID_ARGUMENT naming one of the documented reasons, the
//     codec keeps returning it, and the input keeps the bytes from the bad
//     frame on;
//   - every frame delivered obeys the codec's contract (ids, priority, header
//     names and values, limits);
//   - every frame delivered, encoded again with the codec's encoders and decoded
//     by a second codec (one zlib stream per direction, as on a connection),
//     comes back equal.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

#include "source/codec/spdy/codec.h"
#include "source/common/buffer.h"

#include "test/fuzz/fuzz_check.h"

namespace crisp::spdy::fuzz {
namespace {

constexpr uint32_t kMaxStreamId = 0x7FFFFFFF;

constexpr Limits kProfiles[] = {
    Limits{},
    // Small enough that header blocks and DATA frames made by the mutator hit
    // every limit; large enough for the seed frames to pass.
    Limits{/*max_control_frame_bytes=*/256, /*max_header_block_bytes=*/128,
           /*max_data_frame_bytes=*/64, /*max_header_entries=*/4},
    Limits{/*max_control_frame_bytes=*/4096, /*max_header_block_bytes=*/1024,
           /*max_data_frame_bytes=*/1024, /*max_header_entries=*/32},
    // Only the smallest frames pass.
    Limits{/*max_control_frame_bytes=*/16, /*max_header_block_bytes=*/16,
           /*max_data_frame_bytes=*/0, /*max_header_entries=*/1},
};

enum class Kind {
  kSynStream,
  kSynReply,
  kHeaders,
  kData,
  kRst,
  kSettings,
  kPing,
  kGoAway,
  kWindow
};

// One callback, with everything it carried.
struct Event {
  Kind kind = Kind::kPing;
  uint32_t stream_id = 0;
  uint32_t associated_id = 0;
  uint8_t priority = 0;
  uint8_t flags = 0;
  bool fin = false;
  // RST_STREAM or GOAWAY status, PING id or WINDOW_UPDATE delta.
  uint32_t value = 0;
  HeaderList headers;
  std::string payload;
  std::vector<SettingsEntry> settings;

  bool operator==(const Event& o) const {
    if (settings.size() != o.settings.size()) {
      return false;
    }
    for (size_t i = 0; i < settings.size(); ++i) {
      if (settings[i].flags != o.settings[i].flags || settings[i].id != o.settings[i].id ||
          settings[i].value != o.settings[i].value) {
        return false;
      }
    }
    return kind == o.kind && stream_id == o.stream_id && associated_id == o.associated_id &&
           priority == o.priority && flags == o.flags && fin == o.fin && value == o.value &&
           headers == o.headers && payload == o.payload;
  }
  bool operator!=(const Event& o) const { return !(*this == o); }
};

std::string describe(const Event& e) {
  static constexpr const char* kNames[] = {"SYN_STREAM", "SYN_REPLY",  "HEADERS",
                                           "DATA",       "RST_STREAM", "SETTINGS",
                                           "PING",       "GOAWAY",     "WINDOW_UPDATE"};
  std::string out = absl::StrCat(kNames[static_cast<int>(e.kind)], " id=", e.stream_id,
                                 " assoc=", e.associated_id, " pri=", e.priority,
                                 " flags=", e.flags, " fin=", e.fin, " value=", e.value);
  for (const auto& [name, value] : e.headers) {
    absl::StrAppend(&out, " [", absl::CHexEscape(name), ": ", absl::CHexEscape(value), "]");
  }
  for (const SettingsEntry& s : e.settings) {
    absl::StrAppend(&out, " {", s.flags, " ", s.id, " ", s.value, "}");
  }
  absl::StrAppend(&out, " payload=\"", absl::CHexEscape(e.payload.substr(0, 64)), "\"");
  return out;
}

std::string describe(const std::vector<Event>& events) {
  std::string out;
  for (const Event& e : events) {
    absl::StrAppend(&out, "\n    ", describe(e));
  }
  return out;
}

// Records every callback as an Event and hands it to an optional observer.
class Recorder : public CodecCallbacks {
 public:
  explicit Recorder(bool drain_half_of_data = false) : drain_half_(drain_half_of_data) {}

  std::vector<Event> events;
  // Called with each event as it is recorded (the round-trip check).
  std::function<void(const Event&)> observer;

  void onSynStream(uint32_t stream_id, uint32_t associated_id, uint8_t priority, uint8_t flags,
                   HeaderList&& headers) override {
    Event e;
    e.kind = Kind::kSynStream;
    e.stream_id = stream_id;
    e.associated_id = associated_id;
    e.priority = priority;
    e.flags = flags;
    e.headers = std::move(headers);
    record(std::move(e));
  }
  void onSynReply(uint32_t stream_id, uint8_t flags, HeaderList&& headers) override {
    Event e;
    e.kind = Kind::kSynReply;
    e.stream_id = stream_id;
    e.flags = flags;
    e.headers = std::move(headers);
    record(std::move(e));
  }
  void onHeaders(uint32_t stream_id, uint8_t flags, HeaderList&& headers) override {
    Event e;
    e.kind = Kind::kHeaders;
    e.stream_id = stream_id;
    e.flags = flags;
    e.headers = std::move(headers);
    record(std::move(e));
  }
  void onData(uint32_t stream_id, Buffer& data, bool fin) override {
    Event e;
    e.kind = Kind::kData;
    e.stream_id = stream_id;
    e.fin = fin;
    e.payload = data.peekString();
    // The codec must clear whatever the callee leaves for the next frame.
    if (drain_half_) {
      data.drain(data.length() / 2);
    }
    record(std::move(e));
  }
  void onRstStream(uint32_t stream_id, RstStatus status) override {
    Event e;
    e.kind = Kind::kRst;
    e.stream_id = stream_id;
    e.value = static_cast<uint32_t>(status);
    record(std::move(e));
  }
  void onSettings(uint8_t flags, const std::vector<SettingsEntry>& entries) override {
    Event e;
    e.kind = Kind::kSettings;
    e.flags = flags;
    e.settings = entries;
    record(std::move(e));
  }
  void onPing(uint32_t id) override {
    Event e;
    e.kind = Kind::kPing;
    e.value = id;
    record(std::move(e));
  }
  void onGoAway(uint32_t last_good_stream_id, GoAwayStatus status) override {
    Event e;
    e.kind = Kind::kGoAway;
    e.stream_id = last_good_stream_id;
    e.value = static_cast<uint32_t>(status);
    record(std::move(e));
  }
  void onWindowUpdate(uint32_t stream_id, uint32_t delta) override {
    Event e;
    e.kind = Kind::kWindow;
    e.stream_id = stream_id;
    e.value = delta;
    record(std::move(e));
  }

 private:
  void record(Event&& e) {
    events.push_back(std::move(e));
    if (observer) {
      observer(events.back());
    }
  }

  const bool drain_half_;
};

// What the codec promises about every frame it delivers.
void checkContract(const Event& e, const Limits& limits) {
  FUZZ_CHECK(e.stream_id <= kMaxStreamId, "id above 31 bits: " + describe(e));
  FUZZ_CHECK(e.associated_id <= kMaxStreamId, "associated id above 31 bits: " + describe(e));
  switch (e.kind) {
    case Kind::kSynStream:
      FUZZ_CHECK(e.priority <= 7, "priority above 3 bits: " + describe(e));
      [[fallthrough]];
    case Kind::kSynReply:
    case Kind::kHeaders: {
      FUZZ_CHECK(e.stream_id != 0, "header frame on stream 0 delivered: " + describe(e));
      FUZZ_CHECK(e.headers.size() <= limits.max_header_entries,
                 "more header entries than the limit: " + describe(e));
      // The uncompressed block these entries came from: a count, then per
      // name its length, the name, the values' length and the values joined
      // with NUL. Entries of one name come from one pair, so they are adjacent.
      size_t plain_bytes = 4;
      std::vector<std::string_view> names;
      for (size_t i = 0; i < e.headers.size(); ++i) {
        const auto& [name, value] = e.headers[i];
        FUZZ_CHECK(!name.empty(), "empty header name delivered: " + describe(e));
        for (char c : name) {
          FUZZ_CHECK(c != '\0' && !(c >= 'A' && c <= 'Z'),
                     "NUL or uppercase in a header name: " + describe(e));
        }
        FUZZ_CHECK(value.find('\0') == std::string::npos,
                   "NUL inside a delivered header value: " + describe(e));
        if (i > 0 && e.headers[i - 1].first == name) {
          plain_bytes += 1 + value.size();
          continue;
        }
        names.push_back(name);
        // Lookups ignore case and find the first value of a name.
        FUZZ_CHECK(
            findHeader(e.headers, absl::AsciiStrToUpper(name)) == &value,
            "findHeader misses the first \"" + absl::CHexEscape(name) + "\" in " + describe(e));
        plain_bytes += 8 + name.size() + value.size();
      }
      std::sort(names.begin(), names.end());
      FUZZ_CHECK(std::adjacent_find(names.begin(), names.end()) == names.end(),
                 "one name delivered in two places: " + describe(e));
      FUZZ_CHECK(plain_bytes <= limits.max_header_block_bytes,
                 absl::StrCat("block of ", plain_bytes, " bytes passed the limit: ", describe(e)));
      break;
    }
    case Kind::kData:
      FUZZ_CHECK(e.stream_id != 0, "DATA on stream 0 delivered: " + describe(e));
      FUZZ_CHECK(e.payload.size() <= limits.max_data_frame_bytes,
                 "DATA payload above the limit: " + describe(e));
      break;
    case Kind::kRst:
      FUZZ_CHECK(e.stream_id != 0, "RST_STREAM on stream 0 delivered: " + describe(e));
      break;
    case Kind::kSettings:
      for (const SettingsEntry& s : e.settings) {
        FUZZ_CHECK(s.id <= 0xFFFFFF, "settings id above 24 bits: " + describe(e));
      }
      FUZZ_CHECK(8 * e.settings.size() + 4 <= limits.max_control_frame_bytes,
                 "SETTINGS larger than the control frame limit: " + describe(e));
      break;
    case Kind::kWindow:
      FUZZ_CHECK(e.value <= kMaxStreamId, "window delta above 31 bits: " + describe(e));
      break;
    case Kind::kPing:
    case Kind::kGoAway:
      break;
  }
}

void checkError(const absl::Status& status) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument,
             "error with an unexpected code: " + status.ToString());
  static constexpr absl::string_view kReasons[] = {
      "spdy.unsupported_version: ", "spdy.frame_too_large: ",  "spdy.bad_frame_length: ",
      "spdy.invalid_stream_id: ",   "spdy.bad_header_block: ", "spdy.header_block_too_large: ",
  };
  bool known = false;
  for (absl::string_view reason : kReasons) {
    known |= absl::StartsWith(status.message(), reason);
  }
  FUZZ_CHECK(known, "error without a documented reason: " + status.ToString());
}

// Encodes each delivered frame again, as the peer would have, and decodes it
// with a second codec that sees only these frames, in order.
class RoundTrip {
 public:
  RoundTrip(Codec::Role role, const Limits& limits)
      : sender_(role == Codec::Role::kServer ? Codec::Role::kClient : Codec::Role::kServer,
                unused_),
        receiver_(role, received_, roundTripLimits(limits)) {}

  void check(const Event& e) {
    Buffer wire;
    encode(e, wire);
    const absl::Status status = receiver_.dispatch(wire);
    FUZZ_CHECK(status.ok(),
               absl::StrCat("re-encoded frame rejected: ", status.ToString(), "\n  ", describe(e)));
    FUZZ_CHECK(wire.empty(), "re-encoded frame not consumed whole: " + describe(e));
    FUZZ_CHECK(received_.events.size() == 1,
               absl::StrCat("re-encoded frame gave ", received_.events.size(),
                            " callbacks instead of 1:", describe(received_.events),
                            "\n  from: ", describe(e)));
    FUZZ_CHECK(received_.events[0] == e, "frame changed in a round trip:\n  sent " + describe(e) +
                                             "\n  got  " + describe(received_.events[0]));
    received_.events.clear();
  }

 private:
  // Header blocks are re-encoded to the same uncompressed layout, so the block
  // limits must hold again; the compressed size may differ (another deflater),
  // so the frame size limit is lifted.
  static Limits roundTripLimits(Limits limits) {
    limits.max_control_frame_bytes = 0xFFFFFF;
    return limits;
  }

  void encode(const Event& e, Buffer& wire) {
    switch (e.kind) {
      case Kind::kSynStream:
        sender_.encodeSynStream(wire, e.stream_id, e.associated_id, e.priority, e.flags, e.headers);
        return;
      case Kind::kSynReply:
        sender_.encodeSynReply(wire, e.stream_id, e.flags, e.headers);
        return;
      case Kind::kHeaders:
        sender_.encodeHeaders(wire, e.stream_id, e.flags, e.headers);
        return;
      case Kind::kData: {
        Buffer payload;
        payload.add(e.payload);
        Codec::encodeData(wire, e.stream_id, payload, e.fin);
        FUZZ_CHECK(payload.empty(), "encodeData left payload behind");
        return;
      }
      case Kind::kRst:
        Codec::encodeRstStream(wire, e.stream_id, static_cast<RstStatus>(e.value));
        return;
      case Kind::kSettings:
        Codec::encodeSettings(wire, e.flags, e.settings);
        return;
      case Kind::kPing:
        Codec::encodePing(wire, e.value);
        return;
      case Kind::kGoAway:
        Codec::encodeGoAway(wire, e.stream_id, static_cast<GoAwayStatus>(e.value));
        return;
      case Kind::kWindow:
        Codec::encodeWindowUpdate(wire, e.stream_id, e.value);
        return;
    }
  }

  Recorder unused_;
  Codec sender_;
  Recorder received_;
  Codec receiver_;
};

size_t chunkSize(uint8_t b) { return b < 128 ? b + 1u : (b - 127u) * 64u; }

struct Outcome {
  std::vector<Event> events;
  absl::Status status;
  // Bytes fed to the codec, and bytes it left in its input at the end.
  size_t fed = 0;
  size_t left = 0;
};

Outcome run(std::string_view wire, const std::vector<size_t>& chunks, Codec::Role role,
            const Limits& limits, bool drain_half, RoundTrip* round_trip) {
  Recorder recorder(drain_half);
  if (round_trip != nullptr) {
    recorder.observer = [round_trip](const Event& e) { round_trip->check(e); };
  }
  Codec codec(role, recorder, limits);
  Buffer input;
  Outcome out;
  size_t next_chunk = 0;
  while (out.fed < wire.size()) {
    size_t n = wire.size() - out.fed;
    if (!chunks.empty()) {
      n = std::min(n, chunks[next_chunk]);
      next_chunk = (next_chunk + 1) % chunks.size();
    }
    input.add(wire.substr(out.fed, n));
    out.fed += n;
    out.status = codec.dispatch(input);
    if (!out.status.ok()) {
      break;
    }
  }
  out.left = input.length();
  FUZZ_CHECK(out.left <= out.fed, "codec grew its input");
  FUZZ_CHECK(input.peekString() == wire.substr(out.fed - out.left, out.left),
             "bytes left in the input are not the unconsumed tail");
  if (!out.status.ok()) {
    checkError(out.status);
    const absl::Status again = codec.dispatch(input);
    FUZZ_CHECK(again == out.status, "second dispatch after an error returned " + again.ToString() +
                                        " instead of " + out.status.ToString());
    FUZZ_CHECK(input.length() == out.left, "dispatch after an error consumed input");
  }
  out.events = std::move(recorder.events);
  return out;
}

}  // namespace
}  // namespace crisp::spdy::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace crisp::spdy;        // NOLINT(google-build-using-namespace)
  using namespace crisp::spdy::fuzz;  // NOLINT(google-build-using-namespace)
  if (size < 2) {
    return 0;
  }
  const uint8_t options = data[0];
  const size_t chunk_bytes = data[1] % 8;
  if (size < 2 + chunk_bytes) {
    return 0;
  }
  std::vector<size_t> chunks;
  for (size_t i = 0; i < chunk_bytes; ++i) {
    chunks.push_back(chunkSize(data[2 + i]));
  }
  const std::string_view wire(reinterpret_cast<const char*>(data) + 2 + chunk_bytes,
                              size - 2 - chunk_bytes);
  const Codec::Role role = (options & 1) != 0 ? Codec::Role::kClient : Codec::Role::kServer;
  const Limits& limits = kProfiles[(options >> 1) & 3];
  const bool drain_half = (options & 8) != 0;

  RoundTrip round_trip(role, limits);
  const Outcome chunked = run(wire, chunks, role, limits, drain_half, &round_trip);
  for (const Event& e : chunked.events) {
    checkContract(e, limits);
  }
  const Outcome whole = run(wire, {}, role, limits, !drain_half, nullptr);
  FUZZ_CHECK(chunked.events == whole.events, "chunked feed gave" + describe(chunked.events) +
                                                 "\n  whole feed gave" + describe(whole.events));
  FUZZ_CHECK(chunked.status == whole.status, "chunked feed ended with " +
                                                 chunked.status.ToString() + ", whole feed with " +
                                                 whole.status.ToString());
  FUZZ_CHECK(chunked.left + (wire.size() - chunked.fed) == whole.left,
             absl::StrCat("chunked feed stopped with ", chunked.left, " bytes left and ",
                          wire.size() - chunked.fed, " unfed; whole feed left ", whole.left));
  return 0;
}
