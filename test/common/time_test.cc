#include "source/common/time.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace crisp {
namespace {

using Token = std::array<uint8_t, 16>;

TEST(RealTimeSourceTest, CoarseTimeIsTheMonotonicClockAtTickResolution) {
  RealTimeSource time;
  for (int i = 0; i < 1000; ++i) {
    const MonotonicTime before = time.monotonicTime();
    const MonotonicTime coarse = time.coarseMonotonicTime();
    const MonotonicTime after = time.monotonicTime();
    // The value of the same clock at the last tick: never ahead of it, and
    // behind by at most a tick (1-10 ms for HZ 1000-100; 50 ms leaves room).
    ASSERT_LE(coarse, after);
    ASSERT_GE(coarse, before - std::chrono::milliseconds(50));
  }
}

Token draw(SystemRandomSource& random) {
  Token t{};
  EXPECT_TRUE(random.fill(t.data(), t.size()));
  return t;
}

TEST(SystemRandomSourceTest, SmallFillsAcrossSeveralBatchesAreAllDifferent) {
  SystemRandomSource random;
  std::set<Token> seen;
  // Enough 16-byte draws to empty the thread's buffer a few times over.
  const size_t draws = 4 * SystemRandomSource::kRandomBatchBytes / 16 + 3;
  for (size_t i = 0; i < draws; ++i) {
    EXPECT_TRUE(seen.insert(draw(random)).second) << "draw " << i << " repeated an earlier one";
  }
}

TEST(SystemRandomSourceTest, OddSizedFillsStraddlingARefillAreFilled) {
  SystemRandomSource random;
  // 7-byte requests do not divide the batch: the one that finds too few bytes
  // left gets a fresh batch, not a short read or stale zeros.
  for (size_t i = 0; i < 2 * SystemRandomSource::kRandomBatchBytes / 7; ++i) {
    std::array<uint8_t, 7> bytes{};
    ASSERT_TRUE(random.fill(bytes.data(), bytes.size()));
    std::array<uint8_t, 7> zeros{};
    EXPECT_NE(bytes, zeros) << "fill " << i;  // 2^-56 chance of a false alarm
  }
}

TEST(SystemRandomSourceTest, LargeFillsGoToTheKernelAndAreFilled) {
  SystemRandomSource random;
  std::vector<uint8_t> a(4096, 0);
  std::vector<uint8_t> b(4096, 0);
  ASSERT_TRUE(random.fill(a.data(), a.size()));
  ASSERT_TRUE(random.fill(b.data(), b.size()));
  EXPECT_NE(a, b);
  EXPECT_NE(a, std::vector<uint8_t>(4096, 0));
}

TEST(SystemRandomSourceTest, ForkedChildDoesNotRepeatItsParentsNextBytes) {
  SystemRandomSource random;
  draw(random);  // the thread's buffer now holds bytes a child would inherit
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    Token t{};
    const bool ok = random.fill(t.data(), t.size());
    const bool written = write(fds[1], t.data(), t.size()) == static_cast<ssize_t>(t.size());
    _exit(ok && written ? 0 : 1);
  }
  close(fds[1]);
  const Token parent = draw(random);
  Token child{};
  ASSERT_EQ(read(fds[0], child.data(), child.size()), static_cast<ssize_t>(child.size()));
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_NE(parent, child);
}

}  // namespace
}  // namespace crisp
