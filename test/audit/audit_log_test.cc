#include "source/audit/audit_log.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "gtest/gtest.h"

#include "test/common/temp_dir.h"

namespace crisp::audit {
namespace {

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

TEST(AuditLogTest, AppendsOneLinePerRecord) {
  const testing::TempDir dir("audit");
  const std::string path = dir.path() + "/audit.log";
  auto log = AuditLog::open({path, 1 << 20, 3});
  ASSERT_TRUE(log.ok()) << log.status();
  (*log)->write(R"({"event":"session_start"})");
  (*log)->write(R"({"event":"session_end"})");
  EXPECT_EQ(testing::readLines(path),
            (std::vector<std::string>{R"({"event":"session_start"})", R"({"event":"session_end"})"}));
}

// Lines are never split; at most max_files rotated files are kept, the
// newest lines in the live file.
TEST(AuditLogTest, RotatesBySizeAndKeepsMaxFiles) {
  const testing::TempDir dir("audit");
  const std::string path = dir.path() + "/audit.log";
  const uint64_t rotations_before = AuditMetrics::get().rotations.value();
  auto log = AuditLog::open({path, 1000, 2});
  ASSERT_TRUE(log.ok()) << log.status();
  for (int i = 0; i < 100; ++i) {
    std::string line = "{\"n\":" + std::to_string(i) + ",\"pad\":\"";
    line.append(90 - line.size(), 'x');
    line += "\"}";
    (*log)->write(line);
  }
  EXPECT_TRUE(exists(path));
  EXPECT_TRUE(exists(path + ".1"));
  EXPECT_TRUE(exists(path + ".2"));
  EXPECT_FALSE(exists(path + ".3"));
  int expected_next = -1;
  for (const std::string& p : {path + ".2", path + ".1", path}) {
    struct stat st {};
    ASSERT_EQ(::stat(p.c_str(), &st), 0);
    EXPECT_LE(st.st_size, 1000);
    for (const std::string& line : testing::readLines(p)) {
      ASSERT_EQ(line.size(), 92u) << line;
      const int n = std::stoi(line.substr(5));
      if (expected_next >= 0) {
        EXPECT_EQ(n, expected_next);
      }
      expected_next = n + 1;
    }
  }
  EXPECT_EQ(expected_next, 100);  // the last line is in the live file
  EXPECT_GE(AuditMetrics::get().rotations.value(), rotations_before + 9);
}

TEST(AuditLogTest, OpenFailureNamesThePath) {
  auto log = AuditLog::open({"/nonexistent-dir-for-crisp/audit.log", 1000, 2});
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("audit.path: /nonexistent-dir-for-crisp/audit.log"),
            std::string::npos)
      << log.status();
}

}  // namespace
}  // namespace crisp::audit
