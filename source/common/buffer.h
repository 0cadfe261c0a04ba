#pragma once

// Buffer: an owned chain of bytes, the currency of every codec and connection in
// crisp. It wraps libevent's evbuffer, so appending one buffer to another moves
// chain segments instead of copying, and sockets read into and write from it
// without intermediate copies.
//
// A Buffer is not thread-safe; it belongs to the event loop that created it.

#include <event2/buffer.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace crisp {

class Buffer {
 public:
  Buffer();
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  size_t length() const;
  bool empty() const { return length() == 0; }

  void add(const void* data, size_t len);
  void add(std::string_view data) { add(data.data(), data.size()); }
  // Moves every byte of `other` to the end of this buffer; `other` ends empty.
  void move(Buffer& other);
  // Moves at most `len` bytes from the front of `other` to the end of this buffer.
  // Whole segments move by reference; the part of a segment cut at `len` is
  // copied.
  void move(Buffer& other, size_t len);
  // How many bytes from the front to take for a piece of at most `max` bytes
  // that can be moved without a copy: the whole segments that fit in `max`;
  // when even the first is larger, `max` bytes of it (the cut is copied).
  // 0 only when the buffer is empty.
  size_t wholeSegmentsLength(size_t max) const;

  void addUint8(uint8_t v);
  void addUint16Be(uint16_t v);
  void addUint24Be(uint32_t v);
  void addUint32Be(uint32_t v);

  // Copies up to `len` bytes from the front without draining. Returns the count.
  size_t copyOut(void* out, size_t len, size_t offset = 0) const;
  // Returns a pointer to the first `len` bytes made contiguous (may rearrange the
  // chain). `len` must not exceed length().
  const uint8_t* linearize(size_t len);
  void drain(size_t len);
  // Drains and returns the whole content as a string (tests, small control data).
  std::string toString();
  // Returns the content as a string without draining it.
  std::string peekString() const;

  // Reads from / writes to a file descriptor. Same results as read(2) / write(2).
  int readFrom(int fd, int max);
  int writeTo(int fd);
  int writeTo(int fd, size_t max);

  evbuffer* raw() { return buf_; }

 private:
  evbuffer* buf_;
};

// Fills `iov` with the first `count` of libevent's segments `vec`, cut so
// that together they cover at most `max` bytes. Returns how many it used.
int toIovecs(const evbuffer_iovec* vec, int count, size_t max, iovec* iov);

}  // namespace crisp
