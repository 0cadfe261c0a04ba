#include "source/codec/websocket/ws_codec.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include <wslay/wslay.h>

namespace crisp::websocket {
namespace {

// RFC 6455 5.2: 2 fixed bytes, up to 8 of extended length, 4 of masking key.
constexpr size_t kMaxFrameHeader = 14;

constexpr uint8_t kOpContinuation = 0x0;
constexpr uint8_t kOpText = 0x1;
constexpr uint8_t kOpBinary = 0x2;
constexpr uint8_t kOpClose = 0x8;
constexpr uint8_t kOpPing = 0x9;
constexpr uint8_t kOpPong = 0xA;

bool isControl(uint8_t opcode) { return (opcode & 0x8) != 0; }

bool isKnownOpcode(uint8_t opcode) {
  return opcode == kOpContinuation || opcode == kOpText || opcode == kOpBinary ||
         opcode == kOpClose || opcode == kOpPing || opcode == kOpPong;
}

std::string_view asView(const uint8_t* data, size_t len) {
  return len == 0 ? std::string_view() : std::string_view(reinterpret_cast<const char*>(data), len);
}

}  // namespace

bool isSendableCloseCode(uint16_t code) {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
         (code >= 3000 && code <= 4999);
}

// wslay does the framing, unmasking, reassembly, UTF-8 checks, pong replies
// and the close handshake. In front of its read side sits a small gate that
// looks at each frame header before wslay does and hands wslay only frames
// it accepts. The gate exists because wslay 1.1.1, taken alone:
// - answers several framing errors (over-long or fragmented control frame,
//   non-minimal length) with an empty close instead of 1002, and reports
//   them as a callback failure;
// - does not say which rule a frame broke, so no close reason could be named;
// - accepts a close frame with a one-byte payload (RFC 6455 5.5.1 needs 0 or
//   at least 2 bytes);
// - checks the UTF-8 of a close reason per received chunk, skipping the
//   first two bytes of every chunk, so the verdict would depend on how TCP
//   split the frame. The gate hands a close frame over only whole.
// wslay runs with no_buffering: data frame chunks are appended straight to
// `message_`, one copy, and the gate enforces the message size limit over
// all fragments (wslay would only check single frames in that mode).
// Binary messages (all of stdin and port-forward data) do not go through
// wslay at all: wslay copies every byte into its own read buffer and unmasks
// it one byte at a time, which made it the largest cost of a client's
// upload. The gate checks their headers as for any frame and decodes the
// payload itself (decodeDirect()); wslay only ever sees text and control
// frames, and the frames keep their order since the gate hands wslay nothing
// past a binary frame and takes one only when wslay is between frames.
class Codec::Impl {
 public:
  Impl(const CodecOptions& options, CodecCallbacks& callbacks)
      : options_(options), callbacks_(callbacks) {}

  ~Impl() {
    if (ctx_ != nullptr) {
      wslay_event_context_free(ctx_);
    }
  }

  absl::Status init() {
    const wslay_event_callbacks callbacks = {
        &Impl::recvCallback,       &Impl::sendCallback,       &Impl::genmaskCallback,
        &Impl::frameStartCallback, &Impl::frameChunkCallback, nullptr,
        &Impl::messageCallback,
    };
    const int rv = options_.role == Role::kServer
                       ? wslay_event_context_server_init(&ctx_, &callbacks, this)
                       : wslay_event_context_client_init(&ctx_, &callbacks, this);
    if (rv != 0) {
      ctx_ = nullptr;
      return absl::InternalError(absl::StrCat("ws.internal_error: wslay context init: ", rv));
    }
    wslay_event_config_set_no_buffering(ctx_, 1);
    // The gate enforces the limit first; wslay's own check stays as a backstop.
    wslay_event_config_set_max_recv_msg_length(ctx_, options_.max_message_bytes);
    return absl::OkStatus();
  }

  absl::Status dispatch(Buffer& input) {
    if (!error_.ok()) {
      return error_;
    }
    if (!wslay_event_get_read_enabled(ctx_)) {
      // The peer's close arrived earlier: nothing after it is read.
      input.drain(input.length());
      return absl::OkStatus();
    }
    input_ = &input;
    int rv = 0;
    // wslay_event_recv can return while bytes remain (it stops when one read
    // falls short of what it needs, or before a binary frame), so go on while
    // either side makes progress.
    for (;;) {
      const size_t before = input.length();
      if (in_direct_frame_ || (frame_left_ == 0 && !close_admitted_ && nextFrameIsDirect())) {
        decodeDirect();
      } else {
        rv = wslay_event_recv(ctx_);
      }
      if (rv != 0 || gate_failure_.has_value() || !wslay_event_get_read_enabled(ctx_) ||
          input.empty() || input.length() == before) {
        break;
      }
    }
    input_ = nullptr;

    if (rv != 0) {
      message_.drain(message_.length());
      flush().IgnoreError();
      return setError(
          absl::InternalError(absl::StrCat("ws.internal_error: wslay_event_recv: ", rv)));
    }
    // wslay stopped reading (the peer's close, or bad UTF-8) in bytes the
    // gate let through before any frame it refused: that comes first on the
    // wire, so it decides, whatever the gate saw in the same read.
    if (!wslay_event_get_read_enabled(ctx_)) {
      gate_failure_.reset();
      if (wslay_event_get_close_received(ctx_)) {
        input.drain(input.length());
        return flush();
      }
      // wslay failed the connection itself. With the gate in front, the only
      // check left to it is UTF-8 (text payloads, close reasons): it has
      // queued a 1007 close unless a close was already sent.
      message_.drain(message_.length());
      flush().IgnoreError();
      return setError(absl::InvalidArgumentError("ws.invalid_utf8: payload is not valid UTF-8"));
    }
    if (gate_failure_.has_value()) {
      return failConnection(*gate_failure_);
    }
    return flush();
  }

  absl::Status sendMessage(MessageType type, const uint8_t* data, size_t len) {
    wslay_event_msg msg;
    msg.opcode = static_cast<uint8_t>(type);
    msg.msg = data;
    msg.msg_length = len;
    return queueAndFlush(wslay_event_queue_msg(ctx_, &msg));
  }

  // Data frames are written here rather than copied into wslay's queue and
  // out again: a server's frame is a header in front of the payload, which
  // is moved behind it; a client's payload is masked on its way into the
  // output, eight bytes at a time. wslay's own queue is always empty between
  // calls (flush() sends everything), so the order of frames is kept.
  // Checks that a data frame may be sent and writes its header (unmasked, as
  // a server's) into `header`.
  absl::Status startFrame(MessageType type, uint64_t len, uint8_t* header, size_t& header_len) {
    // The same refusal wslay_event_queue_msg() gives once a close is queued
    // (ours, or the reply to the peer's).
    if (!wslay_event_get_write_enabled(ctx_) || wslay_event_get_close_sent(ctx_) ||
        wslay_event_get_close_received(ctx_)) {
      return absl::FailedPreconditionError("ws.closed: a close frame was already sent");
    }
    if (absl::Status status = flush(); !status.ok()) {
      return status;
    }
    header_len = 2;
    header[0] = static_cast<uint8_t>(0x80 | static_cast<uint8_t>(type));
    if (len < 126) {
      header[1] = static_cast<uint8_t>(len);
    } else if (len <= 0xFFFF) {
      header[1] = 126;
      header[2] = static_cast<uint8_t>(len >> 8);
      header[3] = static_cast<uint8_t>(len);
      header_len = 4;
    } else {
      header[1] = 127;
      for (int i = 0; i < 8; ++i) {
        header[2 + i] = static_cast<uint8_t>(len >> (56 - 8 * i));
      }
      header_len = 10;
    }
    return absl::OkStatus();
  }

  // A server's frame header alone; the caller sends the payload behind it.
  absl::Status sendHeaderOnly(MessageType type, uint64_t len) {
    if (options_.role != Role::kServer) {
      return absl::FailedPreconditionError("ws.internal_error: a client's frames are masked");
    }
    uint8_t header[kMaxFrameHeader];
    size_t header_len = 0;
    if (absl::Status status = startFrame(type, len, header, header_len); !status.ok()) {
      return status;
    }
    output_.add(header, header_len);
    return absl::OkStatus();
  }

  absl::Status sendFramed(MessageType type, Buffer& payload) {
    uint8_t header[kMaxFrameHeader];
    size_t header_len = 0;
    if (absl::Status status = startFrame(type, payload.length(), header, header_len);
        !status.ok()) {
      return status;
    }
    const uint64_t len = payload.length();
    if (options_.role == Role::kServer) {
      output_.add(header, header_len);
      output_.move(payload);
      return absl::OkStatus();
    }
    uint8_t* key = header + header_len;
    if (options_.random == nullptr || !options_.random->fill(key, 4)) {
      mask_failed_ = true;
      return setError(absl::InternalError("ws.mask_failed: the random source failed"));
    }
    header[1] |= 0x80;
    output_.add(header, header_len + 4);
    if (xorInto(output_, payload, static_cast<size_t>(len), key, 0) ==
        std::numeric_limits<size_t>::max()) {
      return setError(absl::InternalError("ws.internal_error: out of memory"));
    }
    return absl::OkStatus();
  }

  absl::Status sendPing(std::string_view payload) {
    if (!error_.ok()) {
      return error_;
    }
    if (payload.size() > kMaxControlPayload) {
      return absl::InvalidArgumentError(
          absl::StrCat("ws.ping_too_long: ", payload.size(), " bytes, at most 125"));
    }
    wslay_event_msg msg;
    msg.opcode = kOpPing;
    msg.msg = reinterpret_cast<const uint8_t*>(payload.data());
    msg.msg_length = payload.size();
    return queueAndFlush(wslay_event_queue_msg(ctx_, &msg));
  }

  absl::Status sendClose(uint16_t code, std::string_view reason) {
    if (!error_.ok()) {
      return error_;
    }
    if (!isSendableCloseCode(code)) {
      return absl::InvalidArgumentError(absl::StrCat("ws.bad_close_code: may not send ", code));
    }
    if (reason.size() > kMaxCloseReason) {
      return absl::InvalidArgumentError(
          absl::StrCat("ws.close_reason_too_long: ", reason.size(), " bytes, at most 123"));
    }
    return queueAndFlush(wslay_event_queue_close(
        ctx_, code, reinterpret_cast<const uint8_t*>(reason.data()), reason.size()));
  }

  Buffer& output() { return output_; }
  const absl::Status& error() const { return error_; }
  bool closeSent() const { return wslay_event_get_close_sent(ctx_) != 0; }
  bool closeReceived() const { return wslay_event_get_close_received(ctx_) != 0; }
  bool readEnabled() const { return wslay_event_get_read_enabled(ctx_) != 0; }
  uint16_t closeCodeSent() const { return wslay_event_get_status_code_sent(ctx_); }
  uint16_t closeCodeReceived() const { return wslay_event_get_status_code_received(ctx_); }

 private:
  struct GateFailure {
    uint16_t code;
    const char* reason;
    std::string detail;
  };

  absl::Status setError(absl::Status status) {
    error_ = std::move(status);
    return error_;
  }

  absl::Status queueAndFlush(int rv) {
    if (rv == WSLAY_ERR_NO_MORE_MSG) {
      return absl::FailedPreconditionError("ws.closed: a close frame was already sent");
    }
    if (rv != 0) {
      return absl::InvalidArgumentError(absl::StrCat("ws.bad_message: wslay refused it: ", rv));
    }
    return flush();
  }

  // Runs wslay's send side; every queued frame lands in output_ at once since
  // the send callback never pushes back.
  absl::Status flush() {
    const int rv = wslay_event_send(ctx_);
    if (rv != 0) {
      return setError(absl::InternalError(
          mask_failed_ ? "ws.mask_failed: the random source failed"
                       : absl::StrCat("ws.internal_error: wslay_event_send: ", rv)));
    }
    return absl::OkStatus();
  }

  absl::Status failConnection(const GateFailure& failure) {
    message_.drain(message_.length());
    wslay_event_shutdown_read(ctx_);
    flush().IgnoreError();  // what was queued before the bad frame goes first
    // Refused with WSLAY_ERR_NO_MORE_MSG when a close went out already; then
    // there is nothing more to say to the peer.
    const std::string_view reason = failure.reason;
    (void)wslay_event_queue_close(ctx_, failure.code,
                                  reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
    flush().IgnoreError();
    const std::string message = absl::StrCat(failure.reason, ": ", failure.detail);
    return setError(failure.code == kCloseMessageTooBig ? absl::ResourceExhaustedError(message)
                                                        : absl::InvalidArgumentError(message));
  }

  // Records a gate failure; returns 0 so the caller hands nothing more over.
  size_t refuse(uint16_t code, const char* reason, std::string detail) {
    gate_failure_ = GateFailure{code, reason, std::move(detail)};
    return 0;
  }

  // Whether the frame at the front of input_ is one the gate decodes itself:
  // a binary frame, or a continuation of a binary message. Its header is
  // checked by admitHeader() like any other.
  bool nextFrameIsDirect() const {
    uint8_t h0;
    if (input_->copyOut(&h0, 1) != 1) {
      return false;
    }
    const uint8_t opcode = h0 & 0x0F;
    return opcode == kOpBinary || (opcode == kOpContinuation && direct_message_);
  }

  // Takes the header of a direct frame, then as much of its payload as
  // input_ holds: unmasked into message_ (a server's input; the one copy),
  // or moved there by reference (a client's unmasked input). Delivers the
  // message after its last fragment.
  void decodeDirect() {
    if (!in_direct_frame_) {
      const size_t header_len = admitHeader(std::numeric_limits<size_t>::max());
      if (header_len == 0) {
        return;  // incomplete, or refused (gate_failure_)
      }
      input_->drain(header_len);
      in_direct_frame_ = true;
      direct_left_ = frame_left_;
      frame_left_ = 0;
      mask_offset_ = 0;
      direct_message_ = !admitted_fin_;
    }
    const size_t n = static_cast<size_t>(std::min<uint64_t>(direct_left_, input_->length()));
    if (n > 0) {
      if (admitted_masked_) {
        mask_offset_ = xorInto(message_, *input_, n, admitted_mask_, mask_offset_);
        if (mask_offset_ == std::numeric_limits<size_t>::max()) {
          refuse(kCloseInternalError, "ws.internal_error", "out of memory");
          return;
        }
      } else {
        message_.move(*input_, n);
      }
      direct_left_ -= n;
    }
    if (direct_left_ > 0) {
      return;
    }
    in_direct_frame_ = false;
    if (admitted_fin_) {
      callbacks_.onMessage(MessageType::kBinary, message_);
      message_.drain(message_.length());
    }
  }

  // Writes `len` bytes of `from` XORed with the 8-byte `key` (the masking key
  // twice, already rotated to the first byte's offset) to `to`. Every client
  // frame's payload passes through here once on each side (a client masking,
  // a server unmasking), so it works on 64 bytes at a time in 16-byte vector
  // words (the compiler's generic vectors: SSE2 registers on x86-64) rather
  // than 8-byte integers; the key repeats every 4 bytes, so every word uses
  // the same one.
  static void xorSpan(uint8_t* to, const uint8_t* from, size_t len, const uint8_t key[8]) {
    using Word = uint64_t __attribute__((vector_size(16)));
    uint64_t half_key;
    std::memcpy(&half_key, key, sizeof(half_key));
    const Word word_key = {half_key, half_key};
    size_t i = 0;
    for (; i + 4 * sizeof(Word) <= len; i += 4 * sizeof(Word)) {
      Word a, b, c, d;
      std::memcpy(&a, from + i, sizeof(Word));
      std::memcpy(&b, from + i + sizeof(Word), sizeof(Word));
      std::memcpy(&c, from + i + 2 * sizeof(Word), sizeof(Word));
      std::memcpy(&d, from + i + 3 * sizeof(Word), sizeof(Word));
      a ^= word_key;
      b ^= word_key;
      c ^= word_key;
      d ^= word_key;
      std::memcpy(to + i, &a, sizeof(Word));
      std::memcpy(to + i + sizeof(Word), &b, sizeof(Word));
      std::memcpy(to + i + 2 * sizeof(Word), &c, sizeof(Word));
      std::memcpy(to + i + 3 * sizeof(Word), &d, sizeof(Word));
    }
    for (; i + sizeof(half_key) <= len; i += sizeof(half_key)) {
      uint64_t word;
      std::memcpy(&word, from + i, sizeof(word));
      word ^= half_key;
      std::memcpy(to + i, &word, sizeof(word));
    }
    for (; i < len; ++i) {
      to[i] = from[i] ^ key[i & 7];
    }
  }

  // Moves `n` bytes of `in` to `out`, XORed with a masking key (RFC 6455
  // 5.3), the first byte with key[offset & 3] (see xorSpan()). Returns the
  // offset for the byte after them (or max() when out of memory).
  static size_t xorInto(Buffer& out, Buffer& in, size_t n, const uint8_t* mask, size_t offset) {
    if (n == 0) {
      return offset;
    }
    evbuffer_iovec dst;
    if (evbuffer_reserve_space(out.raw(), static_cast<ev_ssize_t>(n), &dst, 1) != 1) {
      return std::numeric_limits<size_t>::max();
    }
    auto* to = static_cast<uint8_t*>(dst.iov_base);
    size_t left = n;
    while (left > 0) {
      evbuffer_iovec src;
      if (evbuffer_peek(in.raw(), -1, nullptr, &src, 1) < 1) {
        break;
      }
      const size_t len = std::min(left, src.iov_len);
      const auto* from = static_cast<const uint8_t*>(src.iov_base);
      uint8_t key[8];
      for (size_t i = 0; i < sizeof(key); ++i) {
        key[i] = mask[(offset + i) & 3];
      }
      xorSpan(to, from, len, key);
      offset = (offset + len) & 3;
      to += len;
      left -= len;
      in.drain(len);
    }
    dst.iov_len = n - left;
    evbuffer_commit_space(out.raw(), &dst, 1);
    return offset;
  }

  // Examines the frame header at the front of input_. Returns its length when
  // wslay may have the frame (and sets frame_left_ to its payload length),
  // or 0 when more input is needed or the frame is refused (gate_failure_).
  // `room` is the space left in wslay's read buffer for this read.
  size_t admitHeader(size_t room) {
    uint8_t h[kMaxFrameHeader];
    const size_t avail = input_->copyOut(h, sizeof(h));
    if (avail < 2) {
      return 0;
    }
    const bool fin = (h[0] & 0x80) != 0;
    const uint8_t rsv = (h[0] >> 4) & 0x7;
    const uint8_t opcode = h[0] & 0x0F;
    const bool masked = (h[1] & 0x80) != 0;
    const uint8_t len7 = h[1] & 0x7F;

    // RFC 6455 5.2: no extension is negotiated, so no reserved bit may be set.
    if (rsv != 0) {
      return refuse(kCloseProtocolError, "ws.reserved_bits", absl::StrCat("rsv=", rsv));
    }
    if (!isKnownOpcode(opcode)) {
      return refuse(kCloseProtocolError, "ws.unknown_opcode", absl::StrCat("opcode ", opcode));
    }
    // RFC 6455 5.1: clients mask every frame, servers none.
    if (options_.role == Role::kServer && !masked) {
      return refuse(kCloseProtocolError, "ws.unmasked_client_frame",
                    absl::StrCat("opcode ", opcode, " without a mask"));
    }
    if (options_.role == Role::kClient && masked) {
      return refuse(kCloseProtocolError, "ws.masked_server_frame",
                    absl::StrCat("opcode ", opcode, " with a mask"));
    }
    const bool control = isControl(opcode);
    // RFC 6455 5.5: control frames are unfragmented, payload at most 125.
    if (control && !fin) {
      return refuse(kCloseProtocolError, "ws.fragmented_control_frame",
                    absl::StrCat("opcode ", opcode, " without FIN"));
    }
    if (control && len7 > kMaxControlPayload) {
      return refuse(kCloseProtocolError, "ws.control_frame_too_long",
                    absl::StrCat("opcode ", opcode, " with a length code of ", len7));
    }
    // RFC 6455 5.4: continuations only inside a fragmented message, and no
    // new data message before it ends.
    if (opcode == kOpContinuation && !in_fragmented_message_) {
      return refuse(kCloseProtocolError, "ws.unexpected_continuation",
                    "continuation frame outside a fragmented message");
    }
    if ((opcode == kOpText || opcode == kOpBinary) && in_fragmented_message_) {
      return refuse(kCloseProtocolError, "ws.expected_continuation",
                    "new data frame inside a fragmented message");
    }

    size_t pos = 2;
    uint64_t payload = len7;
    if (len7 == 126) {
      if (avail < 4) {
        return 0;
      }
      payload = (uint64_t{h[2]} << 8) | h[3];
      pos = 4;
      // RFC 6455 5.2: the minimal number of bytes must encode the length.
      if (payload < 126) {
        return refuse(kCloseProtocolError, "ws.non_minimal_length",
                      absl::StrCat("length ", payload, " in 16 bits"));
      }
    } else if (len7 == 127) {
      if (avail < 10) {
        return 0;
      }
      payload = 0;
      for (size_t i = 2; i < 10; ++i) {
        payload = (payload << 8) | h[i];
      }
      pos = 10;
      if ((payload >> 63) != 0) {
        return refuse(kCloseProtocolError, "ws.bad_frame_length",
                      "64-bit length with the most significant bit set");
      }
      if (payload < 65536) {
        return refuse(kCloseProtocolError, "ws.non_minimal_length",
                      absl::StrCat("length ", payload, " in 64 bits"));
      }
    }
    const uint8_t* mask = h + pos;
    const size_t header_len = pos + (masked ? 4 : 0);
    if (avail < header_len) {
      return 0;
    }
    if (!control) {
      const uint64_t so_far = opcode == kOpContinuation ? message_bytes_ : 0;
      if (payload > options_.max_message_bytes - so_far) {
        return refuse(kCloseMessageTooBig, "ws.message_too_big",
                      absl::StrCat("message of at least ", so_far + payload, " bytes, limit ",
                                   options_.max_message_bytes));
      }
    }
    if (opcode == kOpClose) {
      // RFC 6455 5.5.1: no payload, or a 2-byte code and a reason.
      if (payload == 1) {
        return refuse(kCloseProtocolError, "ws.bad_close_payload", "one-byte close payload");
      }
      const size_t whole = header_len + static_cast<size_t>(payload);
      if (input_->length() < whole || room < whole) {
        return 0;  // hand the close frame over only whole (see above)
      }
      if (payload >= 2) {
        uint8_t code_bytes[2];
        input_->copyOut(code_bytes, 2, header_len);
        if (masked) {
          code_bytes[0] ^= mask[0];
          code_bytes[1] ^= mask[1];
        }
        const uint16_t code = static_cast<uint16_t>((code_bytes[0] << 8) | code_bytes[1]);
        if (!isSendableCloseCode(code)) {
          return refuse(kCloseProtocolError, "ws.bad_close_code",
                        absl::StrCat("close code ", code));
        }
      }
    }
    if (room < header_len) {
      return 0;
    }
    frame_left_ = payload;
    close_admitted_ = opcode == kOpClose;
    admitted_fin_ = fin;
    admitted_masked_ = masked;
    if (masked) {
      std::memcpy(admitted_mask_, mask, sizeof(admitted_mask_));
    }
    if (!control) {
      if (opcode != kOpContinuation) {
        message_bytes_ = 0;
      }
      message_bytes_ += payload;
      in_fragmented_message_ = !fin;
    }
    return header_len;
  }

  // wslay wants up to `len` bytes: whole admitted frame headers and payload
  // bytes of admitted frames, as far as input_ has them.
  ssize_t onRecv(uint8_t* buf, size_t len) {
    size_t given = 0;
    while (given < len && !gate_failure_.has_value()) {
      // Nothing after the peer's close frame is read, so nothing is checked.
      if (close_admitted_ && frame_left_ == 0) {
        break;
      }
      size_t n = 0;
      if (frame_left_ > 0) {
        n = static_cast<size_t>(
            std::min<uint64_t>({len - given, frame_left_, uint64_t{input_->length()}}));
        frame_left_ -= n;
      } else {
        if (nextFrameIsDirect()) {
          break;  // decoded by the gate once wslay has what came before
        }
        n = admitHeader(len - given);
      }
      if (n == 0) {
        break;
      }
      input_->copyOut(buf + given, n);
      input_->drain(n);
      given += n;
    }
    if (given == 0) {
      wslay_event_set_error(ctx_, WSLAY_ERR_WOULDBLOCK);
      return -1;
    }
    return static_cast<ssize_t>(given);
  }

  static ssize_t recvCallback(wslay_event_context_ptr, uint8_t* buf, size_t len, int,
                              void* user_data) {
    return static_cast<Impl*>(user_data)->onRecv(buf, len);
  }

  static ssize_t sendCallback(wslay_event_context_ptr, const uint8_t* data, size_t len, int,
                              void* user_data) {
    static_cast<Impl*>(user_data)->output_.add(data, len);
    return static_cast<ssize_t>(len);
  }

  static int genmaskCallback(wslay_event_context_ptr, uint8_t* buf, size_t len, void* user_data) {
    auto* self = static_cast<Impl*>(user_data);
    if (self->options_.random == nullptr || !self->options_.random->fill(buf, len)) {
      self->mask_failed_ = true;
      return -1;
    }
    return 0;
  }

  static void frameStartCallback(wslay_event_context_ptr,
                                 const wslay_event_on_frame_recv_start_arg* arg, void* user_data) {
    static_cast<Impl*>(user_data)->frame_is_data_ = !isControl(arg->opcode);
  }

  static void frameChunkCallback(wslay_event_context_ptr,
                                 const wslay_event_on_frame_recv_chunk_arg* arg, void* user_data) {
    auto* self = static_cast<Impl*>(user_data);
    // Control frames are buffered by wslay and come whole to messageCallback.
    if (self->frame_is_data_) {
      self->message_.add(arg->data, arg->data_length);
    }
  }

  static void messageCallback(wslay_event_context_ptr, const wslay_event_on_msg_recv_arg* arg,
                              void* user_data) {
    static_cast<Impl*>(user_data)->onMessage(*arg);
  }

  void onMessage(const wslay_event_on_msg_recv_arg& arg) {
    switch (arg.opcode) {
      case kOpText:
      case kOpBinary:
        callbacks_.onMessage(static_cast<MessageType>(arg.opcode), message_);
        message_.drain(message_.length());
        break;
      case kOpPing:
        // wslay has queued the pong; send it now, so that a violation later
        // in the same input (after which wslay sends only the close) cannot
        // swallow it and the output does not depend on how input was split.
        flush().IgnoreError();
        callbacks_.onPing(asView(arg.msg, arg.msg_length));
        break;
      case kOpPong:
        callbacks_.onPong(asView(arg.msg, arg.msg_length));
        break;
      case kOpClose: {
        const std::string_view reason =
            arg.msg_length > 2 ? asView(arg.msg + 2, arg.msg_length - 2) : std::string_view();
        callbacks_.onClose(arg.status_code == 0 ? kCloseNoStatus : arg.status_code, reason);
        break;
      }
      default:
        break;
    }
  }

  const CodecOptions options_;
  CodecCallbacks& callbacks_;
  wslay_event_context_ptr ctx_ = nullptr;
  Buffer output_;
  absl::Status error_;
  bool mask_failed_ = false;

  // Read side. input_ is set only inside dispatch().
  Buffer* input_ = nullptr;
  // Payload bytes of the last admitted frame not yet handed to wslay.
  uint64_t frame_left_ = 0;
  bool in_fragmented_message_ = false;
  // Payload bytes of the data message in progress, all fragments so far.
  uint64_t message_bytes_ = 0;
  std::optional<GateFailure> gate_failure_;
  // The peer's close frame has been admitted: the gate hands over nothing after it.
  bool close_admitted_ = false;
  // Whether the frame wslay is delivering carries message data.
  bool frame_is_data_ = false;
  // The data message being reassembled.
  Buffer message_;
  // Of the last admitted frame header.
  bool admitted_fin_ = false;
  bool admitted_masked_ = false;
  uint8_t admitted_mask_[4] = {0, 0, 0, 0};
  // A binary frame is being decoded by the gate (decodeDirect()), with this
  // many payload bytes still to come; its payload so far ended at this
  // offset into the masking key.
  bool in_direct_frame_ = false;
  uint64_t direct_left_ = 0;
  size_t mask_offset_ = 0;
  // The data message in progress is binary and fragmented: its
  // continuations are decoded by the gate too.
  bool direct_message_ = false;
};

absl::StatusOr<std::unique_ptr<Codec>> Codec::create(const CodecOptions& options,
                                                     CodecCallbacks& callbacks) {
  if (options.role == Role::kClient && options.random == nullptr) {
    return absl::InvalidArgumentError("ws.bad_options: a client needs a random source");
  }
  if (options.max_message_bytes == 0) {
    return absl::InvalidArgumentError("ws.bad_options: max_message_bytes must be at least 1");
  }
  auto impl = std::make_unique<Impl>(options, callbacks);
  absl::Status status = impl->init();
  if (!status.ok()) {
    return status;
  }
  return std::unique_ptr<Codec>(new Codec(std::move(impl)));
}

Codec::Codec(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Codec::~Codec() = default;

absl::Status Codec::dispatch(Buffer& input) { return impl_->dispatch(input); }

absl::Status Codec::sendMessage(MessageType type, std::string_view payload) {
  if (!impl_->error().ok()) {
    return impl_->error();
  }
  return impl_->sendMessage(type, reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
}

absl::Status Codec::sendMessage(MessageType type, Buffer& payload) {
  if (!impl_->error().ok()) {
    return impl_->error();
  }
  return impl_->sendFramed(type, payload);
}

absl::Status Codec::sendMessageHeader(MessageType type, uint64_t length) {
  if (!impl_->error().ok()) {
    return impl_->error();
  }
  return impl_->sendHeaderOnly(type, length);
}

absl::Status Codec::sendPing(std::string_view payload) { return impl_->sendPing(payload); }

absl::Status Codec::sendClose(uint16_t code, std::string_view reason) {
  return impl_->sendClose(code, reason);
}

Buffer& Codec::output() { return impl_->output(); }
bool Codec::closeSent() const { return impl_->closeSent(); }
bool Codec::closeReceived() const { return impl_->closeReceived(); }

bool Codec::closed() const {
  return !impl_->error().ok() || (impl_->closeSent() && !impl_->readEnabled());
}

uint16_t Codec::closeCodeSent() const { return impl_->closeCodeSent(); }
uint16_t Codec::closeCodeReceived() const { return impl_->closeCodeReceived(); }

}  // namespace crisp::websocket
