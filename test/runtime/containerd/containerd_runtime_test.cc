// ContainerdRuntime::prepareFifoDir() and removeStaleFifoDirs(): what a crisp
// that was killed left in runtime.containerd.fifo_dir is removed at the next
// start, and nothing else is. checkFifoDir() (--check-config): a fifo_dir
// crisp cannot use is reported naming it, and the check leaves nothing.

#include "source/runtime/containerd/containerd_runtime.h"

#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "gmock/gmock.h"
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

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* entry = ::readdir(d)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") {
        names.push_back(name);
      }
    }
    ::closedir(d);
  }
  return names;
}

// checkFifoDir(path) where `dir` (path or a parent of it) cannot be written
// in. Permission bits do not stop root, so as root the check runs in a child
// with its own mount namespace where `dir` is a read-only tmpfs (private:
// nothing of it reaches the test's namespace); otherwise `dir` is made 0555.
// Returns "skip: why" when that cannot be arranged.
absl::StatusOr<absl::Status> checkFifoDirUnwritable(const std::string& dir,
                                                    const std::string& path) {
  if (::geteuid() != 0) {
    if (::chmod(dir.c_str(), 0555) != 0) {
      return absl::InternalError("chmod");
    }
    return ContainerdRuntime::checkFifoDir(path);
  }
  int fds[2];
  if (::pipe(fds) != 0) {
    return absl::InternalError("pipe");
  }
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(fds[0]);
    std::string report;
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", dir.c_str(), "tmpfs", MS_RDONLY, nullptr) != 0) {
      report = std::string("skip: no read-only mount: ") + std::strerror(errno);
    } else {
      const absl::Status status = ContainerdRuntime::checkFifoDir(path);
      report =
          std::to_string(static_cast<int>(status.code())) + " " + std::string(status.message());
    }
    (void)!::write(fds[1], report.data(), report.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string report;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) > 0;) {
    report.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  ::waitpid(child, nullptr, 0);
  const size_t space = report.find(' ');
  int code = 0;
  if (space == std::string::npos || !absl::SimpleAtoi(report.substr(0, space), &code)) {
    return absl::FailedPreconditionError(report);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), report.substr(space + 1));
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

TEST_F(FifoDirTest, CheckAcceptsAUsableDirectoryAndLeavesItAsItWas) {
  ASSERT_TRUE(ContainerdRuntime::prepareFifoDir(fifo_dir_).ok());
  const absl::Status checked = ContainerdRuntime::checkFifoDir(fifo_dir_);
  EXPECT_TRUE(checked.ok()) << checked;
  EXPECT_TRUE(entries(fifo_dir_).empty());
}

TEST_F(FifoDirTest, CheckAcceptsAMissingDirectoryItsParentCanHoldAndMakesNothing) {
  // fifo_dir_ and its parent are missing; tmp_ is the nearest that exists.
  const absl::Status checked = ContainerdRuntime::checkFifoDir(fifo_dir_);
  EXPECT_TRUE(checked.ok()) << checked;
  EXPECT_TRUE(entries(tmp_.path()).empty());
}

TEST_F(FifoDirTest, CheckRefusesAFileNamingThePath) {
  const std::string file = tmp_.path() + "/fifos";
  writeFile(file, "not a directory");
  const absl::Status checked = ContainerdRuntime::checkFifoDir(file);
  EXPECT_EQ(checked.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(checked.message(), "runtime.containerd.fifo_dir: " + file + ": not a directory");
  // Below a file, the directory cannot be made either.
  const absl::Status below = ContainerdRuntime::checkFifoDir(file + "/exec-fifos");
  EXPECT_EQ(below.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(below.message(), "runtime.containerd.fifo_dir: " + file + "/exec-fifos: stat " + file +
                                 "/exec-fifos: Not a directory");
}

TEST_F(FifoDirTest, CheckRefusesADirectoryCrispCannotWriteIn) {
  const std::string dir = tmp_.path() + "/read-only";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  // Permission denied (0555) or read-only file system (as root).
  const std::string unwritable = "(Permission denied|Read-only file system)";
  absl::StatusOr<absl::Status> checked = checkFifoDirUnwritable(dir, dir);
  if (!checked.ok()) {
    GTEST_SKIP() << checked.status();
  }
  EXPECT_EQ(checked->code(), absl::StatusCode::kFailedPrecondition) << *checked;
  EXPECT_THAT(std::string(checked->message()),
              ::testing::MatchesRegex("runtime.containerd.fifo_dir: " + dir +
                                      ": not writable: " + dir + ": " + unwritable));
  // And one it would have to make there.
  checked = checkFifoDirUnwritable(dir, dir + "/exec-fifos");
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(checked->code(), absl::StatusCode::kFailedPrecondition) << *checked;
  EXPECT_THAT(std::string(checked->message()),
              ::testing::MatchesRegex("runtime.containerd.fifo_dir: " + dir +
                                      "/exec-fifos: cannot be made: " + dir + ": " + unwritable));
  EXPECT_TRUE(entries(dir).empty());
}

}  // namespace
}  // namespace crisp::containerd
