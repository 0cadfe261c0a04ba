// The stream server's limits and timeouts in the configuration: defaults,
// each range accepted at its edges and refused one past them.

#include <chrono>
#include <string>

#include "source/config/config.h"

#include "gtest/gtest.h"

namespace crisp::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kMinimal[] = "cri:\n  listen: /tmp/crisp.sock\n";

absl::StatusOr<Config> loadStream(const std::string& stream_lines) {
  return loadString(std::string(kMinimal) + "stream:\n" + stream_lines, "t.yaml");
}

// The message of a failed load, or "<loaded>".
std::string errorOf(const std::string& stream_lines) {
  absl::StatusOr<Config> c = loadStream(stream_lines);
  return c.ok() ? "<loaded>" : std::string(c.status().message());
}

TEST(StreamLimitsConfigTest, Defaults) {
  absl::StatusOr<Config> c = loadString(kMinimal, "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.max_sessions, 10000u);
  EXPECT_EQ(c->stream.max_frame_bytes, 16u * 1024 * 1024);
  EXPECT_EQ(c->stream.max_header_bytes, 16384u);
  EXPECT_EQ(c->stream.header_timeout, seconds(10));
  EXPECT_EQ(c->stream.stream_creation_timeout, seconds(30));
  EXPECT_EQ(c->stream.stream_idle_timeout, hours(4));
}

TEST(StreamLimitsConfigTest, MaxFrameBytesRange) {
  absl::StatusOr<Config> c = loadStream("  max_frame_bytes: 4096\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.max_frame_bytes, 4096u);
  c = loadStream("  max_frame_bytes: 268435456\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.max_frame_bytes, 268435456u);
  EXPECT_EQ(errorOf("  max_frame_bytes: 4095\n"),
            "t.yaml:4: stream.max_frame_bytes: expected an integer from 4096 to 268435456, got "
            "\"4095\"");
  EXPECT_EQ(errorOf("  max_frame_bytes: 268435457\n"),
            "t.yaml:4: stream.max_frame_bytes: expected an integer from 4096 to 268435456, got "
            "\"268435457\"");
  EXPECT_EQ(errorOf("  max_frame_bytes: 16MiB\n"),
            "t.yaml:4: stream.max_frame_bytes: expected an integer from 4096 to 268435456, got "
            "\"16MiB\"");
  EXPECT_EQ(errorOf("  max_frame_bytes:\n"),
            "t.yaml:4: stream.max_frame_bytes: missing value, expected an integer from 4096 to "
            "268435456");
}

TEST(StreamLimitsConfigTest, MaxSessionsRange) {
  absl::StatusOr<Config> c = loadStream("  max_sessions: 1\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.max_sessions, 1u);
  c = loadStream("  max_sessions: 1000000\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.max_sessions, 1000000u);
  EXPECT_EQ(errorOf("  max_sessions: 0\n"),
            "t.yaml:4: stream.max_sessions: expected an integer from 1 to 1000000, got \"0\"");
  EXPECT_EQ(errorOf("  max_sessions: 1000001\n"),
            "t.yaml:4: stream.max_sessions: expected an integer from 1 to 1000000, got "
            "\"1000001\"");
}

TEST(StreamLimitsConfigTest, HeaderLimitsRange) {
  absl::StatusOr<Config> c = loadStream("  max_header_bytes: 1048576\n  header_timeout: 100ms\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.max_header_bytes, 1048576u);
  EXPECT_EQ(c->stream.header_timeout, milliseconds(100));
  EXPECT_EQ(errorOf("  header_timeout: 99ms\n"),
            "t.yaml:4: stream.header_timeout: must be from 100ms to 10m, got \"99ms\"");
  EXPECT_EQ(errorOf("  header_timeout: 10m1ms\n"),
            "t.yaml:4: stream.header_timeout: must be from 100ms to 10m, got \"10m1ms\"");
}

TEST(StreamLimitsConfigTest, TimeoutRanges) {
  absl::StatusOr<Config> c =
      loadStream("  stream_creation_timeout: 100ms\n  stream_idle_timeout: 168h\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.stream_creation_timeout, milliseconds(100));
  EXPECT_EQ(c->stream.stream_idle_timeout, hours(168));
  c = loadStream("  stream_creation_timeout: 1h\n  stream_idle_timeout: 1s\n");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.stream_creation_timeout, hours(1));
  EXPECT_EQ(c->stream.stream_idle_timeout, seconds(1));
  EXPECT_EQ(errorOf("  stream_creation_timeout: 99ms\n"),
            "t.yaml:4: stream.stream_creation_timeout: must be from 100ms to 1h, got \"99ms\"");
  EXPECT_EQ(errorOf("  stream_idle_timeout: 999ms\n"),
            "t.yaml:4: stream.stream_idle_timeout: must be from 1s to 168h, got \"999ms\"");
  EXPECT_EQ(errorOf("  stream_idle_timeout: 168h1ms\n"),
            "t.yaml:4: stream.stream_idle_timeout: must be from 1s to 168h, got \"168h1ms\"");
}

}  // namespace
}  // namespace crisp::config
