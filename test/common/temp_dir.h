#pragma once

// Scratch files for tests: a directory of the test's own, removed with
// everything in it when the test is done, and the lines of a file.

#include <string>
#include <string_view>
#include <vector>

namespace crisp::testing {

// A new directory /tmp/<prefix>-XXXXXX. Under /tmp rather than TEST_TMPDIR:
// a unix socket path inside it must fit sun_path (108 bytes), which Bazel's
// TEST_TMPDIR is too deep for. Aborts the test binary when it cannot be made.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix = "crisp-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name.
  std::string file(std::string_view name) const;
  // Writes `content` to path()/name through a new file renamed into place
  // (a new inode, as tools that rotate certificates do); returns the path.
  std::string write(std::string_view name, std::string_view content) const;

 private:
  std::string path_;
};

// The lines of the file at `path`, without their '\n'; none when it cannot
// be read.
std::vector<std::string> readLines(const std::string& path);

}  // namespace crisp::testing
