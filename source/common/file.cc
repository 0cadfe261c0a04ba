#include "source/common/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace crisp {
namespace {

absl::Status errnoStatus(int err, const std::string& path, const char* what) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(path, ": cannot ", what, ": ", std::strerror(err)));
}

absl::Status readAll(int fd, const std::string& path, size_t max_bytes, const char* kind,
                     std::string& text) {
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    return errnoStatus(errno, path, "stat");
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  char chunk[16384];
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return errnoStatus(errno, path, "read");
    }
    if (n == 0) {
      return absl::OkStatus();
    }
    text.append(chunk, static_cast<size_t>(n));
    if (text.size() > max_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": larger than ", max_bytes, " bytes; not a ", kind));
    }
  }
}

}  // namespace

absl::StatusOr<std::string> readSmallFile(const std::string& path, size_t max_bytes,
                                          const char* kind) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat() below
  // refuses it. Reads of a regular file ignore the flag.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    return errnoStatus(errno, path, "open");
  }
  std::string text;
  const absl::Status status = readAll(fd, path, max_bytes, kind, text);
  ::close(fd);
  if (!status.ok()) {
    return status;
  }
  return text;
}

}  // namespace crisp
