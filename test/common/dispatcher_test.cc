#include "source/common/dispatcher.h"

#include <gtest/gtest.h>

#include <thread>

namespace crisp::event {
namespace {

TEST(DispatcherTest, PostFromAnotherThreadRunsOnLoopInOrder) {
  Dispatcher d;
  std::vector<int> seen;
  std::thread::id loop_thread;
  std::thread poster([&] {
    for (int i = 0; i < 100; ++i) {
      d.post([&, i] {
        loop_thread = std::this_thread::get_id();
        seen.push_back(i);
        if (i == 99) {
          d.exit();
        }
      });
    }
  });
  d.run();
  poster.join();
  ASSERT_EQ(seen.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(seen[i], i);
  }
  EXPECT_EQ(loop_thread, std::this_thread::get_id());
}

TEST(DispatcherTest, TimerFiresOnceAndCanBeDisabled) {
  Dispatcher d;
  int fired = 0;
  Timer never(d, [&] { ADD_FAILURE() << "disabled timer fired"; });
  never.enable(std::chrono::milliseconds(5));
  never.disable();
  Timer t(d, [&] {
    ++fired;
    d.exit();
  });
  t.enable(std::chrono::milliseconds(10));
  d.run();
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(t.enabled());
}

TEST(DispatcherTest, DeferredDeleteRunsAfterCurrentCallback) {
  Dispatcher d;
  struct Probe {
    explicit Probe(bool& flag) : deleted(flag) {}
    ~Probe() { deleted = true; }
    bool& deleted;
  };
  bool deleted = false;
  d.post([&] {
    d.deferredDelete(std::make_unique<Probe>(deleted));
    EXPECT_FALSE(deleted);
    d.post([&] {
      EXPECT_TRUE(deleted);
      d.exit();
    });
  });
  d.run();
  EXPECT_TRUE(deleted);
}

TEST(DispatcherTest, AdoptedObjectsLiveUntilDisownedOrTheDispatcherGoes) {
  struct Probe {
    explicit Probe(int& count) : deleted(count) {}
    ~Probe() { ++deleted; }
    int& deleted;
  };
  int deleted = 0;
  {
    Dispatcher d;
    Probe* kept = d.adopt(std::make_unique<Probe>(deleted));
    Probe* given_back = d.adopt(std::make_unique<Probe>(deleted));
    ASSERT_NE(kept, nullptr);
    d.post([&] {
      d.disownAndDelete(given_back);
      EXPECT_EQ(deleted, 0);  // not inside the caller's own callback
      d.post([&] {
        EXPECT_EQ(deleted, 1);
        d.exit();
      });
    });
    d.run();
    EXPECT_EQ(deleted, 1);
  }
  // The loop stopped with one still waiting: the dispatcher frees it.
  EXPECT_EQ(deleted, 2);
}

}  // namespace
}  // namespace crisp::event
