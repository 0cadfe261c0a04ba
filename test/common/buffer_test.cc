#include "source/common/buffer.h"

#include <string>

#include <gtest/gtest.h>

namespace crisp {
namespace {

TEST(BufferTest, AppendsIntegersBigEndian) {
  Buffer b;
  b.addUint8(0x01);
  b.addUint16Be(0x0203);
  b.addUint24Be(0x040506);
  b.addUint32Be(0x0708090a);
  EXPECT_EQ(b.toString(), std::string("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a", 10));
  EXPECT_TRUE(b.empty());
}

TEST(BufferTest, MoveTransfersAllOrPart) {
  Buffer a;
  Buffer b;
  a.add("hello world");
  b.move(a, 5);
  EXPECT_EQ(b.peekString(), "hello");
  EXPECT_EQ(a.peekString(), " world");
  b.move(a);
  EXPECT_EQ(b.toString(), "hello world");
  EXPECT_TRUE(a.empty());
}

TEST(BufferTest, CopyOutAtOffsetDoesNotDrain) {
  Buffer b;
  b.add("abcdef");
  char out[3];
  EXPECT_EQ(b.copyOut(out, 3, 2), 3u);
  EXPECT_EQ(std::string(out, 3), "cde");
  EXPECT_EQ(b.length(), 6u);
  EXPECT_EQ(b.copyOut(out, 3, 5), 1u);
}

// Appends `len` bytes of `fill` as a segment of its own, as one read makes.
void addSegment(Buffer& to, size_t len, char fill) {
  Buffer segment;
  segment.add(std::string(len, fill));
  to.move(segment);
}

TEST(BufferTest, WholeSegmentsLengthStopsAtTheLastSegmentThatFits) {
  Buffer b;
  EXPECT_EQ(b.wholeSegmentsLength(100), 0u);
  addSegment(b, 40, 'a');
  addSegment(b, 40, 'b');
  addSegment(b, 40, 'c');
  EXPECT_EQ(b.wholeSegmentsLength(120), 120u);
  EXPECT_EQ(b.wholeSegmentsLength(119), 80u);
  EXPECT_EQ(b.wholeSegmentsLength(1000), 120u);
  // A first segment larger than the limit is cut at the limit.
  EXPECT_EQ(b.wholeSegmentsLength(30), 30u);
  // Moving that many bytes leaves the next segment untouched.
  Buffer piece;
  piece.move(b, b.wholeSegmentsLength(90));
  EXPECT_EQ(piece.toString(), std::string(40, 'a') + std::string(40, 'b'));
  EXPECT_EQ(b.toString(), std::string(40, 'c'));
}

}  // namespace
}  // namespace crisp
