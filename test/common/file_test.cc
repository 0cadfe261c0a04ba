#include "source/common/file.h"

#include <sys/stat.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include "test/common/temp_dir.h"

namespace crisp {
namespace {

using ::testing::HasSubstr;

TEST(ReadSmallFileTest, ReadsAWholeFileUpToTheLimit) {
  testing::TempDir dir;
  const std::string big(40000, 'x');  // more than one read
  const std::string path = dir.write("big", big);
  absl::StatusOr<std::string> text = readSmallFile(path, big.size(), "test file");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, big);

  const std::string empty = dir.write("empty", "");
  text = readSmallFile(empty, 0, "test file");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "");
}

TEST(ReadSmallFileTest, ALargerFileIsRefusedWithItsKind) {
  testing::TempDir dir;
  const std::string path = dir.write("nine", "123456789");
  const absl::StatusOr<std::string> text = readSmallFile(path, 8, "test file");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(text.status().message(), path + ": larger than 8 bytes; not a test file");
}

TEST(ReadSmallFileTest, AMissingFileIsNamed) {
  testing::TempDir dir;
  const std::string path = dir.file("absent");
  const absl::StatusOr<std::string> text = readSmallFile(path, 100, "test file");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(text.status().message()), HasSubstr(path + ": cannot open: "));
}

TEST(ReadSmallFileTest, ADirectoryOrAFifoIsNotRead) {
  testing::TempDir dir;
  absl::StatusOr<std::string> text = readSmallFile(dir.path(), 100, "test file");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().message(), dir.path() + ": not a regular file");

  // No writer ever opens the FIFO: a blocking open would hang here.
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  text = readSmallFile(fifo, 100, "test file");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().message(), fifo + ": not a regular file");
}

}  // namespace
}  // namespace crisp
