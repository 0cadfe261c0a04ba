// ContainerdRuntime::prepareFifoDir() and removeStaleFifoDirs(): what a crisp
// that was killed left in runtime.containerd.fifo_dir is removed at the next
// start, and nothing else is.

#include "source/runtime/containerd/containerd_runtime.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <initializer_list>
#include <string>

#include "gtest/gtest.h"

#include "test/common/temp_dir.h"

namespace crisp::containerd {
namespace {

using crisp::testing::TempDir;

void writeFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// A session directory as startExec() makes it: the FIFOs named in `fifos`.
std::string makeSessionDir(const std::string& parent, const std::string& name,
                           std::initializer_list<const char*> fifos) {
  const std::string dir = parent + "/" + name;
  EXPECT_EQ(::mkdir(dir.c_str(), 0700), 0) << dir;
  for (const char* fifo : fifos) {
    EXPECT_EQ(::mkfifo((dir + "/" + fifo).c_str(), 0600), 0) << fifo;
  }
  return dir;
}

class FifoDirTest : public ::testing::Test {
 protected:
  TempDir tmp_{"crisp-fifodir"};
  const std::string fifo_dir_ = tmp_.path() + "/run/crisp/exec-fifos";
};

TEST_F(FifoDirTest, PrepareMakesThePrivateDirectory) {
  ASSERT_TRUE(ContainerdRuntime::prepareFifoDir(fifo_dir_).ok());
  struct stat st {};
  ASSERT_EQ(::stat(fifo_dir_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(*ContainerdRuntime::removeStaleFifoDirs(fifo_dir_), 0u);
}

TEST_F(FifoDirTest, PrepareRemovesTheSessionDirectoriesOfAKilledCrisp) {
  ASSERT_TRUE(ContainerdRuntime::prepareFifoDir(fifo_dir_).ok());
  const std::string a =
      makeSessionDir(fifo_dir_, "crisp-0123456789abcdef01234567", {"stdin", "stdout", "stderr"});
  const std::string b = makeSessionDir(fifo_dir_, "crisp-00000000000000ff", {"stdout"});
  const std::string c = makeSessionDir(fifo_dir_, "crisp-abcdef", {});
  ASSERT_TRUE(ContainerdRuntime::prepareFifoDir(fifo_dir_).ok());
  EXPECT_FALSE(exists(a));
  EXPECT_FALSE(exists(b));
  EXPECT_FALSE(exists(c));
  EXPECT_TRUE(exists(fifo_dir_));
}

TEST_F(FifoDirTest, LeavesEverythingThatIsNotASessionDirectory) {
  ASSERT_TRUE(ContainerdRuntime::prepareFifoDir(fifo_dir_).ok());
  // Names that are not exec ids.
  const std::string other = makeSessionDir(fifo_dir_, "other", {"stdout"});
  const std::string upper = makeSessionDir(fifo_dir_, "crisp-ABCDEF", {"stdout"});
  const std::string bare = makeSessionDir(fifo_dir_, "crisp-", {"stdout"});
  const std::string word = makeSessionDir(fifo_dir_, "crisp-cafe-x", {"stdout"});
  // An exec id's name on a regular file.
  const std::string file = fifo_dir_ + "/crisp-beef";
  writeFile(file, "data");
  // A symbolic link with an exec id's name, to a directory shaped like a
  // session's: neither the link nor what it points to is touched.
  const std::string target = makeSessionDir(tmp_.path(), "elsewhere", {"stdout"});
  const std::string link = fifo_dir_ + "/crisp-dead";
  ASSERT_EQ(::symlink(target.c_str(), link.c_str()), 0);
  // Session directories holding something else than their FIFOs.
  const std::string extra = makeSessionDir(fifo_dir_, "crisp-0a", {"stdout"});
  writeFile(extra + "/notes", "keep");
  const std::string regular = makeSessionDir(fifo_dir_, "crisp-0b", {});
  writeFile(regular + "/stdout", "a regular file named like a FIFO");
  const std::string nested = makeSessionDir(fifo_dir_, "crisp-0c", {"stdin"});
  makeSessionDir(nested, "stdout", {});
  // One that goes.
  const std::string stale = makeSessionDir(fifo_dir_, "crisp-0d", {"stdin", "stdout"});

  absl::StatusOr<size_t> removed = ContainerdRuntime::removeStaleFifoDirs(fifo_dir_);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1u);
  EXPECT_FALSE(exists(stale));
  for (const std::string& kept : {other + "/stdout", upper + "/stdout", bare + "/stdout",
                                  word + "/stdout", file, link, target + "/stdout",
                                  extra + "/stdout", extra + "/notes", regular + "/stdout",
                                  nested + "/stdin", nested + "/stdout"}) {
    EXPECT_TRUE(exists(kept)) << kept;
  }
}

TEST_F(FifoDirTest, AMissingDirectoryIsAnError) {
  absl::StatusOr<size_t> removed = ContainerdRuntime::removeStaleFifoDirs(fifo_dir_);
  EXPECT_FALSE(removed.ok());
  EXPECT_NE(removed.status().message().find(fifo_dir_), std::string::npos)
      << removed.status();
}

}  // namespace
}  // namespace crisp::containerd
