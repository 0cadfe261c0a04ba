#include "source/recording/asciicast.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <dirent.h>

#include "gtest/gtest.h"

#include "test/common/temp_dir.h"

namespace crisp::recording {
namespace {

// The event's code and data, without its time: `"o","text"`.
std::string body(const std::string& event) { return event.substr(event.find(',') + 1); }

size_t castFiles(const std::string& dir) {
  size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    n += name.size() > 5 && name.substr(name.size() - 5) == ".cast" ? 1 : 0;
  }
  ::closedir(d);
  return n;
}

TEST(AsciicastTest, HeaderOutputResizeAndInput) {
  RecordingOptions options;
  const testing::TempDir dir("rec");
  options.dir = dir.path() + "/sub";  // created on demand
  options.input = true;
  auto rec = Recorder::start(options, "demo", 7, 100, 40, {"sh", "-c", "echo \"hi\""});
  ASSERT_NE(rec, nullptr);
  rec->output("demo$ ");
  rec->input("ls\r");
  rec->resize(120, 50);
  rec->output("a\tb\x01\n");
  const std::string path = rec->path();
  EXPECT_NE(path.find("-demo-s7.cast"), std::string::npos) << path;
  rec.reset();
  const auto lines = testing::readLines(path);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0].substr(0, 41), R"({"version":2,"width":100,"height":40,"tim)");
  EXPECT_NE(lines[0].find(R"("command":"sh -c echo \"hi\""})"), std::string::npos) << lines[0];
  EXPECT_EQ(body(lines[1]), R"("o","demo$ "])");
  EXPECT_EQ(body(lines[2]), R"("i","ls\r"])");
  EXPECT_EQ(body(lines[3]), R"("r","120x50"])");
  EXPECT_EQ(body(lines[4]), R"("o","a\tb\u0001\n"])");
}

// A character split across two reads is written whole, in the second event;
// what comes before it goes out at once.
TEST(AsciicastTest, KeepsSplitUtf8CharactersWhole) {
  RecordingOptions options;
  const testing::TempDir dir("rec");
  options.dir = dir.path();
  auto rec = Recorder::start(options, "demo", 1, 80, 24, {"sh"});
  ASSERT_NE(rec, nullptr);
  rec->output("caf\xC3");
  rec->output("\xA9!");
  rec->output("\xE2\x82");
  rec->output("\xAC");
  rec->input("ignored without recording.input");
  const std::string path = rec->path();
  rec.reset();
  const auto lines = testing::readLines(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(body(lines[1]), "\"o\",\"caf\"]");
  EXPECT_EQ(body(lines[2]), "\"o\",\"\xC3\xA9!\"]");
  EXPECT_EQ(body(lines[3]), "\"o\",\"\xE2\x82\xAC\"]");
}

// At the cap the recording ends with an "m" event saying so, under the cap.
TEST(AsciicastTest, StopsAtMaxBytesAndSaysSo) {
  RecordingOptions options;
  const testing::TempDir dir("rec");
  options.dir = dir.path();
  options.max_bytes = 1024;
  const uint64_t capped_before = RecordingMetrics::get().capped.value();
  auto rec = Recorder::start(options, "demo", 2, 80, 24, {"sh"});
  ASSERT_NE(rec, nullptr);
  for (int i = 0; i < 100; ++i) {
    rec->output("0123456789abcdef0123456789abcdef\r\n");
  }
  EXPECT_TRUE(rec->capped());
  const std::string path = rec->path();
  EXPECT_LE(rec->bytesWritten(), 1024u);
  rec.reset();
  const auto lines = testing::readLines(path);
  ASSERT_GT(lines.size(), 3u);
  EXPECT_EQ(body(lines.back()),
            R"("m","recording stopped: recording.max_bytes (1024) reached"])");
  EXPECT_EQ(RecordingMetrics::get().capped.value(), capped_before + 1);
}

TEST(AsciicastTest, RetentionKeepsTheNewestCount) {
  RecordingOptions options;
  const testing::TempDir dir("rec");
  options.dir = dir.path();
  options.retention_count = 2;
  for (uint64_t i = 1; i <= 4; ++i) {
    auto rec = Recorder::start(options, "demo", i, 80, 24, {"sh"});
    ASSERT_NE(rec, nullptr);
    EXPECT_LE(castFiles(options.dir), 2u);
  }
  EXPECT_EQ(castFiles(options.dir), 2u);
}

}  // namespace
}  // namespace crisp::recording
