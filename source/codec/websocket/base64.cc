#include "source/codec/websocket/base64.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include <event2/buffer.h>
#include <openssl/evp.h>

namespace crisp::websocket {
namespace {

// EVP_EncodeBlock / EVP_DecodeBlock take int lengths: work in blocks well
// below INT_MAX. Multiples of 3 (encoding) and 4 (decoding) keep every block
// but the last free of padding.
constexpr size_t kEncodeBlock = 3 * (size_t{1} << 20);
constexpr size_t kDecodeBlock = 4 * (size_t{1} << 20);

bool isAlphabet(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

absl::Status badBase64(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("ws.bad_base64: ", what));
}

// Writes the encoding of `data` to `out`, which must have room for
// base64EncodedLength(data.size()) + 1 bytes (EVP_EncodeBlock writes a NUL).
void encodeInto(std::string_view data, uint8_t* out) {
  const auto* in = reinterpret_cast<const uint8_t*>(data.data());
  size_t done = 0;
  while (done < data.size()) {
    const size_t n = std::min(kEncodeBlock, data.size() - done);
    const int written = EVP_EncodeBlock(out, in + done, static_cast<int>(n));
    out += written;
    done += n;
  }
}

// Checks `text` (already free of CR/LF) and returns the number of padding
// characters, or an error.
absl::StatusOr<size_t> checkShape(std::string_view text) {
  if (text.empty()) {
    return 0;
  }
  if (text.size() % 4 != 0) {
    return badBase64(absl::StrCat("length ", text.size(), " is not a multiple of 4"));
  }
  size_t pad = 0;
  while (pad < text.size() && text[text.size() - 1 - pad] == '=') {
    ++pad;
  }
  if (pad > 2) {
    return badBase64("more than two padding characters");
  }
  if (std::memchr(text.data(), '=', text.size() - pad) != nullptr) {
    return badBase64("padding before the end");
  }
  return pad;
}

// Decodes `text` (shape already checked, `pad` padding characters) into
// `out`, which must have room for text.size() / 4 * 3 bytes. Returns the
// number of bytes decoded.
absl::StatusOr<size_t> decodeInto(std::string_view text, size_t pad, uint8_t* out) {
  const auto* in = reinterpret_cast<const uint8_t*>(text.data());
  size_t done = 0;
  size_t produced = 0;
  while (done < text.size()) {
    const size_t n = std::min(kDecodeBlock, text.size() - done);
    // EVP_DecodeBlock silently trims blanks and '-' at both ends of its input;
    // requiring alphabet characters there leaves it nothing to trim, and it
    // rejects every other stray byte itself.
    const char first = text[done];
    const char last = text[done + n - 1];
    if (!isAlphabet(first) || !(isAlphabet(last) || last == '=')) {
      return badBase64("byte outside the alphabet");
    }
    const int got = EVP_DecodeBlock(out + produced, in + done, static_cast<int>(n));
    if (got < 0) {
      return badBase64("byte outside the alphabet");
    }
    produced += static_cast<size_t>(got);
    done += n;
  }
  // EVP_DecodeBlock counts each '=' as a zero byte of output.
  return produced - pad;
}

// Go skips CR and LF anywhere in the input; so do we, copying only when one
// is present.
std::string_view withoutNewlines(std::string_view text, std::string& storage) {
  if (text.find_first_of("\r\n") == std::string_view::npos) {
    return text;
  }
  storage.reserve(text.size());
  for (char c : text) {
    if (c != '\r' && c != '\n') {
      storage.push_back(c);
    }
  }
  return storage;
}

}  // namespace

std::string base64Encode(std::string_view data) {
  std::string out(base64EncodedLength(data.size()) + 1, '\0');
  encodeInto(data, reinterpret_cast<uint8_t*>(out.data()));
  out.pop_back();
  return out;
}

void base64EncodeTo(std::string_view data, Buffer& out) {
  const size_t len = base64EncodedLength(data.size());
  if (len == 0) {
    return;
  }
  evbuffer_iovec vec;
  if (evbuffer_reserve_space(out.raw(), static_cast<ev_ssize_t>(len + 1), &vec, 1) != 1) {
    std::abort();  // out of memory
  }
  encodeInto(data, static_cast<uint8_t*>(vec.iov_base));
  vec.iov_len = len;
  evbuffer_commit_space(out.raw(), &vec, 1);
}

absl::StatusOr<std::string> base64Decode(std::string_view text) {
  std::string storage;
  text = withoutNewlines(text, storage);
  absl::StatusOr<size_t> pad = checkShape(text);
  if (!pad.ok()) {
    return pad.status();
  }
  std::string out(text.size() / 4 * 3, '\0');
  absl::StatusOr<size_t> n = decodeInto(text, *pad, reinterpret_cast<uint8_t*>(out.data()));
  if (!n.ok()) {
    return n.status();
  }
  out.resize(*n);
  return out;
}

absl::Status base64DecodeTo(std::string_view text, Buffer& out) {
  std::string storage;
  text = withoutNewlines(text, storage);
  absl::StatusOr<size_t> pad = checkShape(text);
  if (!pad.ok()) {
    return pad.status();
  }
  const size_t room = text.size() / 4 * 3;
  if (room == 0) {
    return absl::OkStatus();
  }
  evbuffer_iovec vec;
  if (evbuffer_reserve_space(out.raw(), static_cast<ev_ssize_t>(room), &vec, 1) != 1) {
    std::abort();  // out of memory
  }
  absl::StatusOr<size_t> n = decodeInto(text, *pad, static_cast<uint8_t*>(vec.iov_base));
  if (!n.ok()) {
    return n.status();  // nothing committed
  }
  vec.iov_len = *n;
  evbuffer_commit_space(out.raw(), &vec, 1);
  return absl::OkStatus();
}

}  // namespace crisp::websocket
