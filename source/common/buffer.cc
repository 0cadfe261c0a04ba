#include "source/common/buffer.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdlib>

namespace crisp {

Buffer::Buffer() : buf_(evbuffer_new()) {
  if (buf_ == nullptr) {
    std::abort();
  }
}

Buffer::~Buffer() {
  if (buf_ != nullptr) {
    evbuffer_free(buf_);
  }
}

Buffer::Buffer(Buffer&& other) noexcept : buf_(other.buf_) { other.buf_ = evbuffer_new(); }

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    evbuffer_drain(buf_, evbuffer_get_length(buf_));
    evbuffer_add_buffer(buf_, other.buf_);
  }
  return *this;
}

size_t Buffer::length() const { return evbuffer_get_length(buf_); }

void Buffer::add(const void* data, size_t len) {
  if (len > 0) {
    evbuffer_add(buf_, data, len);
  }
}

void Buffer::move(Buffer& other) { evbuffer_add_buffer(buf_, other.buf_); }

void Buffer::move(Buffer& other, size_t len) { evbuffer_remove_buffer(other.buf_, buf_, len); }

size_t Buffer::wholeSegmentsLength(size_t max) const {
  // A piece longer than this many segments is rare (segments are reads of
  // tens of KiB); it just ends after them.
  constexpr int kPeek = 16;
  evbuffer_iovec vec[kPeek];
  const int count = evbuffer_peek(buf_, static_cast<ev_ssize_t>(max), nullptr, vec, kPeek);
  size_t whole = 0;
  for (int i = 0; i < std::min(count, kPeek) && whole + vec[i].iov_len <= max; ++i) {
    whole += vec[i].iov_len;
  }
  return whole > 0 ? whole : std::min(length(), max);
}

void Buffer::addUint8(uint8_t v) { evbuffer_add(buf_, &v, 1); }

void Buffer::addUint16Be(uint16_t v) {
  const uint8_t b[2] = {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  evbuffer_add(buf_, b, sizeof(b));
}

void Buffer::addUint24Be(uint32_t v) {
  const uint8_t b[3] = {static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 8),
                        static_cast<uint8_t>(v)};
  evbuffer_add(buf_, b, sizeof(b));
}

void Buffer::addUint32Be(uint32_t v) {
  const uint8_t b[4] = {static_cast<uint8_t>(v >> 24), static_cast<uint8_t>(v >> 16),
                        static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v)};
  evbuffer_add(buf_, b, sizeof(b));
}

size_t Buffer::copyOut(void* out, size_t len, size_t offset) const {
  if (offset == 0) {
    const ev_ssize_t n = evbuffer_copyout(buf_, out, len);
    return n < 0 ? 0 : static_cast<size_t>(n);
  }
  evbuffer_ptr pos;
  if (evbuffer_ptr_set(buf_, &pos, offset, EVBUFFER_PTR_SET) != 0) {
    return 0;
  }
  const ev_ssize_t n = evbuffer_copyout_from(buf_, &pos, out, len);
  return n < 0 ? 0 : static_cast<size_t>(n);
}

const uint8_t* Buffer::linearize(size_t len) {
  assert(len <= length());
  return evbuffer_pullup(buf_, static_cast<ev_ssize_t>(len));
}

void Buffer::drain(size_t len) { evbuffer_drain(buf_, len); }

std::string Buffer::toString() {
  std::string out = peekString();
  drain(out.size());
  return out;
}

std::string Buffer::peekString() const {
  std::string out(length(), '\0');
  copyOut(out.data(), out.size());
  return out;
}

// evbuffer_read() asks the kernel how much is readable (FIONREAD) before
// every read: one extra system call per read, which on a busy pipe costs as
// much as the read itself. Reading straight into reserved space needs none.
int Buffer::readFrom(int fd, int max) {
  if (max <= 0) {
    return 0;
  }
  evbuffer_iovec vec[2];
  const int count = evbuffer_reserve_space(buf_, max, vec, 2);
  if (count <= 0) {
    errno = ENOMEM;
    return -1;
  }
  iovec iov[2];
  const int used = toIovecs(vec, count, static_cast<size_t>(max), iov);
  const ssize_t n = used == 1 ? ::read(fd, iov[0].iov_base, iov[0].iov_len) : ::readv(fd, iov, used);
  if (n <= 0) {
    const int err = errno;
    evbuffer_commit_space(buf_, vec, 0);
    errno = err;
    return static_cast<int>(n);
  }
  size_t left = static_cast<size_t>(n);
  for (int i = 0; i < used; ++i) {
    vec[i].iov_len = std::min(iov[i].iov_len, left);
    left -= vec[i].iov_len;
  }
  int filled = used;
  while (filled > 0 && vec[filled - 1].iov_len == 0) {
    --filled;
  }
  evbuffer_commit_space(buf_, vec, filled);
  return static_cast<int>(n);
}

int Buffer::writeTo(int fd) { return evbuffer_write(buf_, fd); }

int Buffer::writeTo(int fd, size_t max) {
  return evbuffer_write_atmost(buf_, fd, static_cast<ev_ssize_t>(max));
}

int toIovecs(const evbuffer_iovec* vec, int count, size_t max, iovec* iov) {
  size_t room = max;
  int used = 0;
  for (int i = 0; i < count && room > 0; ++i) {
    iov[i].iov_base = vec[i].iov_base;
    iov[i].iov_len = std::min(vec[i].iov_len, room);
    room -= iov[i].iov_len;
    ++used;
  }
  return used;
}

}  // namespace crisp
