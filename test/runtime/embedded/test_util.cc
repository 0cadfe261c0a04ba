#include "test/runtime/embedded/test_util.h"

#include <optional>
#include <sstream>
#include <string>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

namespace crisp::runtime::testing {

int openFdCount() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    return -1;
  }
  int count = 0;
  while (dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') {
      ++count;
    }
  }
  ::closedir(dir);
  return count - 1;  // the directory's own descriptor
}

namespace {

// The text of /proc/<pid>/stat; nullopt once the process is gone, including
// when it is reaped between the open and the read (the read then fails with
// ESRCH, which std::ifstream reports by throwing).
std::optional<std::string> procStat(int pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return std::nullopt;
  }
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof(buf));
  ::close(fd);
  if (n <= 0) {
    return std::nullopt;
  }
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace

bool processGone(int pid) { return !procStat(pid).has_value(); }

bool processDead(int pid) {
  const std::optional<std::string> content = procStat(pid);
  if (!content.has_value()) {
    return true;
  }
  // "pid (comm) S ...": the state follows the last ')'.
  const size_t paren = content->rfind(')');
  return paren != std::string::npos && paren + 2 < content->size() &&
         ((*content)[paren + 2] == 'Z' || (*content)[paren + 2] == 'X');
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    out.push_back(line);
  }
  return out;
}

}  // namespace crisp::runtime::testing
