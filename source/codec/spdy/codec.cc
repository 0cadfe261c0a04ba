#include "source/codec/spdy/codec.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

#include "source/codec/spdy/header_block.h"

namespace crisp::spdy {
namespace {

// Every frame starts with 8 bytes (SPDY/3 draft 2.2): a control bit, then for
// control frames version (15 bits) and type (16), for DATA frames the stream
// id (31); then flags (8) and payload length (24) for both.
constexpr size_t kFrameHeaderSize = 8;
constexpr uint32_t kMaxFrameLength = 0xFFFFFF;
constexpr uint32_t kStreamIdMask = 0x7FFFFFFF;

uint32_t readUint32(const uint8_t* p) {
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}

uint8_t* putUint32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
  return p + 4;
}

uint8_t* putControlHeader(uint8_t* p, FrameType type, uint8_t flags, uint32_t length) {
  p[0] = static_cast<uint8_t>(0x80 | (kVersion >> 8));
  p[1] = static_cast<uint8_t>(kVersion);
  p[2] = static_cast<uint8_t>(static_cast<uint16_t>(type) >> 8);
  p[3] = static_cast<uint8_t>(type);
  return putUint32(p + 4, (static_cast<uint32_t>(flags) << 24) | (length & kMaxFrameLength));
}

const char* typeName(uint16_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kSynStream:
      return "SYN_STREAM";
    case FrameType::kSynReply:
      return "SYN_REPLY";
    case FrameType::kRstStream:
      return "RST_STREAM";
    case FrameType::kSettings:
      return "SETTINGS";
    case FrameType::kPing:
      return "PING";
    case FrameType::kGoAway:
      return "GOAWAY";
    case FrameType::kHeaders:
      return "HEADERS";
    case FrameType::kWindowUpdate:
      return "WINDOW_UPDATE";
  }
  return nullptr;
}

absl::Status protocolError(const char* reason, const std::string& detail) {
  return absl::InvalidArgumentError(absl::StrCat(reason, ": ", detail));
}

// Checks a control frame's length against its type before any of its payload
// is buffered (SPDY/3 draft 2.6). Returns an error naming the frame.
absl::Status checkControlLength(uint16_t type, uint32_t length) {
  uint32_t exact = 0;
  uint32_t minimum = 0;
  switch (static_cast<FrameType>(type)) {
    case FrameType::kSynStream:
      minimum = 10;  // Stream id, associated id, priority, slot; then the block.
      break;
    case FrameType::kSynReply:
    case FrameType::kHeaders:
      minimum = 4;  // Stream id; then the block.
      break;
    case FrameType::kRstStream:
    case FrameType::kGoAway:
    case FrameType::kWindowUpdate:
      exact = 8;
      break;
    case FrameType::kPing:
      exact = 4;
      break;
    case FrameType::kSettings:
      if (length < 4 || (length - 4) % 8 != 0) {
        return protocolError("spdy.bad_frame_length",
                             absl::StrCat("SETTINGS length ", length, " is not 4 + 8n"));
      }
      return absl::OkStatus();
  }
  if (exact != 0 && length != exact) {
    return protocolError("spdy.bad_frame_length", absl::StrCat(typeName(type), " length ", length,
                                                               " (must be ", exact, ")"));
  }
  if (length < minimum) {
    return protocolError("spdy.bad_frame_length", absl::StrCat(typeName(type), " length ", length,
                                                               " (at least ", minimum, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

const std::string* findHeader(const HeaderList& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (headerNameEquals(key, name)) {
      return &value;
    }
  }
  return nullptr;
}

bool isPeerInitiated(Codec::Role role, uint32_t stream_id) {
  const bool odd = (stream_id & 1) != 0;
  return role == Codec::Role::kServer ? odd : !odd;
}

class Codec::Impl {
 public:
  // The role matters only to stream id parity and ordering, which the
  // connection checks (isPeerInitiated); framing is the same for both sides.
  Impl(Role /*role*/, CodecCallbacks& callbacks, Limits limits)
      : callbacks_(callbacks),
        limits_(limits),
        decoder_(limits.max_header_block_bytes, limits.max_header_entries) {}

  absl::Status dispatch(Buffer& input);
  void skipDataPayload(size_t bytes);
  uint32_t streamedDataStream() const { return streamed_remaining_ > 0 ? streamed_stream_ : 0; }
  size_t streamedDataRemaining() const { return streamed_remaining_; }
  void encodeHeaderFrame(Buffer& out, FrameType type, uint8_t flags, const uint8_t* fields,
                         size_t fields_len, const HeaderList& headers);

 private:
  enum class Step { kDone, kNeedMore };

  Step dispatchOne(Buffer& input, absl::Status& status);
  Step dispatchData(Buffer& input, const uint8_t* header, absl::Status& status);
  // Hands data_ (a piece of a streamed payload) to onData(), with the FIN
  // when it is the last piece.
  void deliverStreamed();
  Step dispatchControl(Buffer& input, const uint8_t* header, absl::Status& status);
  absl::Status deliverControl(Buffer& input, uint16_t type, uint8_t flags, const uint8_t* payload,
                              uint32_t length);

  CodecCallbacks& callbacks_;
  const Limits limits_;
  HeaderBlockEncoder encoder_;
  HeaderBlockDecoder decoder_;
  absl::Status error_;
  // Bytes of an unknown control frame still to be dropped.
  uint32_t skip_remaining_ = 0;
  // A DATA payload delivered in pieces: its stream, bytes still to come, FIN.
  uint32_t streamed_stream_ = 0;
  uint32_t streamed_remaining_ = 0;
  bool streamed_fin_ = false;
  // Receives each DATA payload; one evbuffer reused for the whole session.
  Buffer data_;
  std::vector<SettingsEntry> settings_;
};

absl::Status Codec::Impl::dispatch(Buffer& input) {
  if (!error_.ok()) {
    return error_;
  }
  for (;;) {
    if (streamed_remaining_ > 0) {
      if (input.empty()) {
        return absl::OkStatus();
      }
      const size_t n = std::min<size_t>(streamed_remaining_, input.length());
      streamed_remaining_ -= static_cast<uint32_t>(n);
      data_.move(input, n);
      deliverStreamed();
      continue;
    }
    if (skip_remaining_ > 0) {
      const size_t n = std::min<size_t>(skip_remaining_, input.length());
      input.drain(n);
      skip_remaining_ -= static_cast<uint32_t>(n);
      if (skip_remaining_ > 0) {
        return absl::OkStatus();
      }
    }
    absl::Status status;
    if (dispatchOne(input, status) == Step::kNeedMore) {
      return absl::OkStatus();
    }
    if (!status.ok()) {
      error_ = status;
      return error_;
    }
  }
}

Codec::Impl::Step Codec::Impl::dispatchOne(Buffer& input, absl::Status& status) {
  uint8_t header[kFrameHeaderSize];
  if (input.copyOut(header, sizeof(header)) < sizeof(header)) {
    return Step::kNeedMore;
  }
  if ((header[0] & 0x80) != 0) {
    return dispatchControl(input, header, status);
  }
  return dispatchData(input, header, status);
}

Codec::Impl::Step Codec::Impl::dispatchData(Buffer& input, const uint8_t* header,
                                            absl::Status& status) {
  const uint32_t stream_id = readUint32(header) & kStreamIdMask;
  const uint8_t flags = header[4];
  const uint32_t length = readUint32(header + 4) & kMaxFrameLength;
  // Checked before the payload arrives so that nothing oversized is buffered.
  if (length > limits_.max_data_frame_bytes) {
    status = protocolError("spdy.frame_too_large",
                           absl::StrCat("DATA frame of ", length, " bytes exceeds the limit of ",
                                        limits_.max_data_frame_bytes));
    return Step::kDone;
  }
  if (stream_id == 0) {
    status = protocolError("spdy.invalid_stream_id", "DATA frame on stream 0");
    return Step::kDone;
  }
  if (input.length() < kFrameHeaderSize + length) {
    if (length == 0 || !callbacks_.onDataStreamed(stream_id, length)) {
      return Step::kNeedMore;
    }
    input.drain(kFrameHeaderSize);
    streamed_stream_ = stream_id;
    streamed_remaining_ = length;
    streamed_fin_ = (flags & kFlagFin) != 0;
    return Step::kDone;
  }
  input.drain(kFrameHeaderSize);
  // evbuffer hands over whole chain segments; only a segment split at the
  // frame's end is copied.
  data_.move(input, length);
  callbacks_.onData(stream_id, data_, (flags & kFlagFin) != 0);
  if (!data_.empty()) {
    data_.drain(data_.length());
  }
  return Step::kDone;
}

void Codec::Impl::deliverStreamed() {
  const bool last = streamed_remaining_ == 0;
  if (!data_.empty() || (last && streamed_fin_)) {
    callbacks_.onData(streamed_stream_, data_, last && streamed_fin_);
    if (!data_.empty()) {
      data_.drain(data_.length());
    }
  }
}

void Codec::Impl::skipDataPayload(size_t bytes) {
  if (bytes == 0 || streamed_remaining_ == 0) {
    return;
  }
  streamed_remaining_ -= static_cast<uint32_t>(std::min<size_t>(bytes, streamed_remaining_));
  if (streamed_remaining_ == 0) {
    deliverStreamed();
  }
}

Codec::Impl::Step Codec::Impl::dispatchControl(Buffer& input, const uint8_t* header,
                                               absl::Status& status) {
  const uint16_t version = static_cast<uint16_t>(((header[0] & 0x7F) << 8) | header[1]);
  const uint16_t type = static_cast<uint16_t>((header[2] << 8) | header[3]);
  const uint8_t flags = header[4];
  const uint32_t length = readUint32(header + 4) & kMaxFrameLength;
  if (version != kVersion) {
    status =
        protocolError("spdy.unsupported_version", absl::StrCat("control frame version ", version));
    return Step::kDone;
  }
  if (length > limits_.max_control_frame_bytes) {
    status =
        protocolError("spdy.frame_too_large", absl::StrCat("control frame type ", type, " of ",
                                                           length, " bytes exceeds the limit of ",
                                                           limits_.max_control_frame_bytes));
    return Step::kDone;
  }
  if (typeName(type) == nullptr) {
    // Unknown types are ignored (SPDY/3 draft 2.2.1); CREDENTIAL (10) is one
    // since spdystream never sends it. Drop it as it streams in.
    input.drain(kFrameHeaderSize);
    skip_remaining_ = length;
    return Step::kDone;
  }
  status = checkControlLength(type, length);
  if (!status.ok()) {
    return Step::kDone;
  }
  if (input.length() < kFrameHeaderSize + length) {
    return Step::kNeedMore;
  }
  const uint8_t* payload = input.linearize(kFrameHeaderSize + length) + kFrameHeaderSize;
  status = deliverControl(input, type, flags, payload, length);
  return Step::kDone;
}

// Parses a complete control frame of a known type whose length passed
// checkControlLength, drains it from `input` (which `payload` points into) and
// then runs the callback, so that a callback never sees a half-consumed input.
absl::Status Codec::Impl::deliverControl(Buffer& input, uint16_t type, uint8_t flags,
                                         const uint8_t* payload, uint32_t length) {
  const size_t frame_size = kFrameHeaderSize + length;
  switch (static_cast<FrameType>(type)) {
    case FrameType::kSynStream: {
      const uint32_t stream_id = readUint32(payload) & kStreamIdMask;
      const uint32_t associated_id = readUint32(payload + 4) & kStreamIdMask;
      const uint8_t priority = payload[8] >> 5;  // 3 bits; 5 unused bits and the slot follow.
      if (stream_id == 0) {
        return protocolError("spdy.invalid_stream_id", "SYN_STREAM for stream 0");
      }
      HeaderList headers;
      absl::Status status = decoder_.decode(payload + 10, length - 10, headers);
      if (!status.ok()) {
        return status;
      }
      input.drain(frame_size);
      callbacks_.onSynStream(stream_id, associated_id, priority, flags, std::move(headers));
      return absl::OkStatus();
    }
    case FrameType::kSynReply:
    case FrameType::kHeaders: {
      const uint32_t stream_id = readUint32(payload) & kStreamIdMask;
      if (stream_id == 0) {
        return protocolError("spdy.invalid_stream_id",
                             absl::StrCat(typeName(type), " for stream 0"));
      }
      HeaderList headers;
      absl::Status status = decoder_.decode(payload + 4, length - 4, headers);
      if (!status.ok()) {
        return status;
      }
      input.drain(frame_size);
      if (static_cast<FrameType>(type) == FrameType::kSynReply) {
        callbacks_.onSynReply(stream_id, flags, std::move(headers));
      } else {
        callbacks_.onHeaders(stream_id, flags, std::move(headers));
      }
      return absl::OkStatus();
    }
    case FrameType::kRstStream: {
      const uint32_t stream_id = readUint32(payload) & kStreamIdMask;
      const uint32_t code = readUint32(payload + 4);
      if (stream_id == 0) {
        return protocolError("spdy.invalid_stream_id", "RST_STREAM for stream 0");
      }
      input.drain(frame_size);
      callbacks_.onRstStream(stream_id, static_cast<RstStatus>(code));
      return absl::OkStatus();
    }
    case FrameType::kSettings: {
      const uint32_t count = readUint32(payload);
      if (count != (length - 4) / 8) {
        return protocolError(
            "spdy.bad_frame_length",
            absl::StrCat("SETTINGS announces ", count, " entries in ", length, " bytes"));
      }
      settings_.clear();
      for (uint32_t i = 0; i < count; ++i) {
        const uint8_t* entry = payload + 4 + 8 * static_cast<size_t>(i);
        const uint32_t flags_and_id = readUint32(entry);
        settings_.push_back(SettingsEntry{static_cast<uint8_t>(flags_and_id >> 24),
                                          flags_and_id & 0xFFFFFF, readUint32(entry + 4)});
      }
      input.drain(frame_size);
      callbacks_.onSettings(flags, settings_);
      return absl::OkStatus();
    }
    case FrameType::kPing: {
      const uint32_t id = readUint32(payload);
      input.drain(frame_size);
      callbacks_.onPing(id);
      return absl::OkStatus();
    }
    case FrameType::kGoAway: {
      const uint32_t last_good = readUint32(payload) & kStreamIdMask;
      const uint32_t code = readUint32(payload + 4);
      input.drain(frame_size);
      callbacks_.onGoAway(last_good, static_cast<GoAwayStatus>(code));
      return absl::OkStatus();
    }
    case FrameType::kWindowUpdate: {
      const uint32_t stream_id = readUint32(payload) & kStreamIdMask;
      const uint32_t delta = readUint32(payload + 4) & kStreamIdMask;
      input.drain(frame_size);
      callbacks_.onWindowUpdate(stream_id, delta);
      return absl::OkStatus();
    }
  }
  // dispatchControl lets only known types through.
  return protocolError("spdy.internal", "unexpected control frame type");
}

void Codec::Impl::encodeHeaderFrame(Buffer& out, FrameType type, uint8_t flags,
                                    const uint8_t* fields, size_t fields_len,
                                    const HeaderList& headers) {
  const std::string_view block = encoder_.encode(headers);
  uint8_t header[kFrameHeaderSize];
  putControlHeader(header, type, flags, static_cast<uint32_t>(fields_len + block.size()));
  out.add(header, sizeof(header));
  out.add(fields, fields_len);
  out.add(block);
}

Codec::Codec(Role role, CodecCallbacks& callbacks, Limits limits)
    : impl_(std::make_unique<Impl>(role, callbacks, limits)) {}

Codec::~Codec() = default;

absl::Status Codec::dispatch(Buffer& input) { return impl_->dispatch(input); }

uint32_t Codec::streamedDataStream() const { return impl_->streamedDataStream(); }

size_t Codec::streamedDataRemaining() const { return impl_->streamedDataRemaining(); }

void Codec::skipDataPayload(size_t bytes) { impl_->skipDataPayload(bytes); }

void Codec::encodeSynStream(Buffer& out, uint32_t stream_id, uint32_t associated_id,
                            uint8_t priority, uint8_t flags, const HeaderList& headers) {
  uint8_t fields[10];
  uint8_t* p = putUint32(fields, stream_id & kStreamIdMask);
  p = putUint32(p, associated_id & kStreamIdMask);
  p[0] = static_cast<uint8_t>((priority & 0x07) << 5);
  p[1] = 0;  // Slot: CREDENTIAL is not used.
  impl_->encodeHeaderFrame(out, FrameType::kSynStream, flags, fields, sizeof(fields), headers);
}

void Codec::encodeSynReply(Buffer& out, uint32_t stream_id, uint8_t flags,
                           const HeaderList& headers) {
  uint8_t fields[4];
  putUint32(fields, stream_id & kStreamIdMask);
  impl_->encodeHeaderFrame(out, FrameType::kSynReply, flags, fields, sizeof(fields), headers);
}

void Codec::encodeHeaders(Buffer& out, uint32_t stream_id, uint8_t flags,
                          const HeaderList& headers) {
  uint8_t fields[4];
  putUint32(fields, stream_id & kStreamIdMask);
  impl_->encodeHeaderFrame(out, FrameType::kHeaders, flags, fields, sizeof(fields), headers);
}

void Codec::encodeData(Buffer& out, uint32_t stream_id, Buffer& data, bool fin) {
  uint8_t header[kFrameHeaderSize];
  do {
    const uint32_t length = static_cast<uint32_t>(std::min<size_t>(data.length(), kMaxFrameLength));
    const bool last = data.length() == length;
    putUint32(header, stream_id & kStreamIdMask);
    putUint32(header + 4, (static_cast<uint32_t>(last && fin ? kFlagFin : 0) << 24) | length);
    out.add(header, sizeof(header));
    if (last) {
      out.move(data);
    } else {
      out.move(data, length);
    }
  } while (!data.empty());
}

void Codec::encodeDataHeader(Buffer& out, uint32_t stream_id, uint32_t length, bool fin) {
  uint8_t header[kFrameHeaderSize];
  putUint32(header, stream_id & kStreamIdMask);
  putUint32(header + 4,
            (static_cast<uint32_t>(fin ? kFlagFin : 0) << 24) | (length & kMaxFrameLength));
  out.add(header, sizeof(header));
}

void Codec::encodeRstStream(Buffer& out, uint32_t stream_id, RstStatus status) {
  uint8_t frame[kFrameHeaderSize + 8];
  uint8_t* p = putControlHeader(frame, FrameType::kRstStream, 0, 8);
  p = putUint32(p, stream_id & kStreamIdMask);
  putUint32(p, static_cast<uint32_t>(status));
  out.add(frame, sizeof(frame));
}

void Codec::encodeSettings(Buffer& out, uint8_t flags, const std::vector<SettingsEntry>& entries) {
  uint8_t header[kFrameHeaderSize + 4];
  uint8_t* p = putControlHeader(header, FrameType::kSettings, flags,
                                static_cast<uint32_t>(4 + 8 * entries.size()));
  putUint32(p, static_cast<uint32_t>(entries.size()));
  out.add(header, sizeof(header));
  for (const SettingsEntry& entry : entries) {
    uint8_t bytes[8];
    putUint32(bytes, (static_cast<uint32_t>(entry.flags) << 24) | (entry.id & 0xFFFFFF));
    putUint32(bytes + 4, entry.value);
    out.add(bytes, sizeof(bytes));
  }
}

void Codec::encodePing(Buffer& out, uint32_t id) {
  uint8_t frame[kFrameHeaderSize + 4];
  putUint32(putControlHeader(frame, FrameType::kPing, 0, 4), id);
  out.add(frame, sizeof(frame));
}

void Codec::encodeGoAway(Buffer& out, uint32_t last_good_stream_id, GoAwayStatus status) {
  uint8_t frame[kFrameHeaderSize + 8];
  uint8_t* p = putControlHeader(frame, FrameType::kGoAway, 0, 8);
  p = putUint32(p, last_good_stream_id & kStreamIdMask);
  putUint32(p, static_cast<uint32_t>(status));
  out.add(frame, sizeof(frame));
}

void Codec::encodeWindowUpdate(Buffer& out, uint32_t stream_id, uint32_t delta) {
  uint8_t frame[kFrameHeaderSize + 8];
  uint8_t* p = putControlHeader(frame, FrameType::kWindowUpdate, 0, 8);
  p = putUint32(p, stream_id & kStreamIdMask);
  putUint32(p, delta & kStreamIdMask);
  out.add(frame, sizeof(frame));
}

}  // namespace crisp::spdy
