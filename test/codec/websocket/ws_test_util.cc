#include "test/codec/websocket/ws_test_util.h"

#include <algorithm>

namespace crisp::websocket::testing {

std::string buildFrame(const FrameSpec& spec) {
  std::string out;
  out.push_back(
      static_cast<char>((spec.fin ? 0x80 : 0) | ((spec.rsv & 0x7) << 4) | (spec.opcode & 0x0F)));
  const uint64_t len = spec.length_override.value_or(spec.payload.size());
  int bits = spec.length_bits;
  if (bits == 0) {
    bits = len < 126 ? 7 : (len < 65536 ? 16 : 64);
  }
  const char mask_bit = spec.masked ? static_cast<char>(0x80) : 0;
  if (bits == 7) {
    out.push_back(static_cast<char>(mask_bit | static_cast<char>(len)));
  } else if (bits == 16) {
    out.push_back(static_cast<char>(mask_bit | 126));
    out.push_back(static_cast<char>(len >> 8));
    out.push_back(static_cast<char>(len));
  } else {
    out.push_back(static_cast<char>(mask_bit | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>(len >> shift));
    }
  }
  if (spec.masked) {
    out.append(reinterpret_cast<const char*>(spec.mask.data()), spec.mask.size());
  }
  for (size_t i = 0; i < spec.payload.size(); ++i) {
    const uint8_t b = static_cast<uint8_t>(spec.payload[i]);
    out.push_back(static_cast<char>(spec.masked ? b ^ spec.mask[i % 4] : b));
  }
  return out;
}

std::string clientFrame(uint8_t opcode, std::string_view payload, bool fin) {
  FrameSpec spec;
  spec.opcode = opcode;
  spec.payload = std::string(payload);
  spec.fin = fin;
  return buildFrame(spec);
}

std::string serverFrame(uint8_t opcode, std::string_view payload, bool fin) {
  FrameSpec spec;
  spec.opcode = opcode;
  spec.payload = std::string(payload);
  spec.fin = fin;
  spec.masked = false;
  return buildFrame(spec);
}

std::string closePayload(uint16_t code, std::string_view reason) {
  std::string out;
  out.push_back(static_cast<char>(code >> 8));
  out.push_back(static_cast<char>(code));
  out.append(reason);
  return out;
}

uint16_t ParsedFrame::closeCode() const {
  if (payload.size() < 2) {
    return 0;
  }
  return static_cast<uint16_t>((static_cast<uint8_t>(payload[0]) << 8) |
                               static_cast<uint8_t>(payload[1]));
}

std::string ParsedFrame::closeReason() const {
  return payload.size() > 2 ? payload.substr(2) : std::string();
}

std::optional<std::vector<ParsedFrame>> parseFrames(std::string_view bytes) {
  std::vector<ParsedFrame> out;
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 2) {
      return std::nullopt;
    }
    const auto* p = reinterpret_cast<const uint8_t*>(bytes.data() + pos);
    ParsedFrame f;
    f.fin = (p[0] & 0x80) != 0;
    f.rsv = (p[0] >> 4) & 0x7;
    f.opcode = p[0] & 0x0F;
    f.masked = (p[1] & 0x80) != 0;
    uint64_t len = p[1] & 0x7F;
    size_t header = 2;
    if (len == 126) {
      if (bytes.size() - pos < 4) {
        return std::nullopt;
      }
      len = (uint64_t{p[2]} << 8) | p[3];
      header = 4;
    } else if (len == 127) {
      if (bytes.size() - pos < 10) {
        return std::nullopt;
      }
      len = 0;
      for (size_t i = 2; i < 10; ++i) {
        len = (len << 8) | p[i];
      }
      header = 10;
    }
    if (f.masked) {
      if (bytes.size() - pos < header + 4) {
        return std::nullopt;
      }
      std::copy(p + header, p + header + 4, f.mask.begin());
      header += 4;
    }
    if (bytes.size() - pos - header < len) {
      return std::nullopt;
    }
    f.payload.assign(bytes.data() + pos + header, len);
    if (f.masked) {
      for (size_t i = 0; i < f.payload.size(); ++i) {
        f.payload[i] = static_cast<char>(static_cast<uint8_t>(f.payload[i]) ^ f.mask[i % 4]);
      }
    }
    pos += header + len;
    out.push_back(std::move(f));
  }
  return out;
}

std::ostream& operator<<(std::ostream& os, const Event& e) {
  switch (e.kind) {
    case Event::Kind::kMessage:
      os << (e.type == MessageType::kText ? "text(" : "binary(");
      break;
    case Event::Kind::kPing:
      os << "ping(";
      break;
    case Event::Kind::kPong:
      os << "pong(";
      break;
    case Event::Kind::kClose:
      os << "close(" << e.code << ", ";
      break;
  }
  if (e.data.size() > 64) {
    return os << e.data.size() << " bytes)";
  }
  return os << '"' << e.data << "\")";
}

Event message(MessageType type, std::string data) {
  return Event{Event::Kind::kMessage, type, std::move(data), 0};
}
Event ping(std::string data) {
  return Event{Event::Kind::kPing, MessageType::kBinary, std::move(data), 0};
}
Event pong(std::string data) {
  return Event{Event::Kind::kPong, MessageType::kBinary, std::move(data), 0};
}
Event closeEvent(uint16_t code, std::string reason) {
  return Event{Event::Kind::kClose, MessageType::kBinary, std::move(reason), code};
}

void RecordingCallbacks::onMessage(MessageType type, Buffer& payload) {
  events.push_back(message(type, payload.toString()));
  if (on_message) {
    on_message(type, events.back().data);
  }
}

void RecordingCallbacks::onPing(std::string_view payload) {
  events.push_back(ping(std::string(payload)));
}

void RecordingCallbacks::onPong(std::string_view payload) {
  events.push_back(pong(std::string(payload)));
}

void RecordingCallbacks::onClose(uint16_t code, std::string_view reason) {
  events.push_back(closeEvent(code, std::string(reason)));
}

bool FakeRandom::fill(void* out, size_t len) {
  if (fail) {
    return false;
  }
  auto* p = static_cast<uint8_t*>(out);
  for (size_t i = 0; i < len; ++i) {
    p[i] = static_cast<uint8_t>(engine_());
    produced.push_back(static_cast<char>(p[i]));
  }
  return true;
}

std::string feedModeName(const FeedMode& mode) {
  switch (mode.kind) {
    case FeedMode::Kind::kWhole:
      return "Whole";
    case FeedMode::Kind::kByteByByte:
      return "ByteByByte";
    case FeedMode::Kind::kRandomChunks:
      return "RandomChunksSeed" + std::to_string(mode.seed);
  }
  return "Unknown";
}

std::ostream& operator<<(std::ostream& os, const FeedMode& mode) {
  return os << feedModeName(mode);
}

std::vector<FeedMode> allFeedModes() {
  return {
      {FeedMode::Kind::kWhole, 0},         {FeedMode::Kind::kByteByByte, 0},
      {FeedMode::Kind::kRandomChunks, 1},  {FeedMode::Kind::kRandomChunks, 7},
      {FeedMode::Kind::kRandomChunks, 42},
  };
}

absl::Status feed(Codec& codec, Buffer& input, std::string_view bytes, const FeedMode& mode) {
  std::mt19937 engine(mode.seed);
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t n = bytes.size() - pos;
    if (mode.kind == FeedMode::Kind::kByteByByte) {
      n = 1;
    } else if (mode.kind == FeedMode::Kind::kRandomChunks) {
      // Mostly small pieces (headers split anywhere), sometimes large ones.
      const size_t cap = (engine() % 4 == 0) ? 9000 : 17;
      n = std::min(n, 1 + static_cast<size_t>(engine() % cap));
    }
    input.add(bytes.data() + pos, n);
    pos += n;
    absl::Status status = codec.dispatch(input);
    if (!status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::Status pump(Codec& from, Codec& to, Buffer& to_input, const FeedMode& mode) {
  const std::string bytes = from.output().toString();
  return feed(to, to_input, bytes, mode);
}

}  // namespace crisp::websocket::testing
