#include "source/admin/metrics.h"

#include <string>

#include "gtest/gtest.h"

namespace crisp::stats {
namespace {

// Buckets are cumulative, +Inf holds every observation, and the sum and
// count follow, as the Prometheus text format wants.
TEST(HistogramTest, RendersCumulativeBucketsSumAndCount) {
  Registry registry;
  Family& family =
      registry.histogramFamily("crisp_test_seconds", "Test.", {"operation"}, {0.005, 0.5, 10});
  Histogram& h = family.histogram({"exec"});
  h.observe(0.00390625);
  h.observe(0.5);  // on a bound: counted in that bucket
  h.observe(2);
  h.observe(100);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_DOUBLE_EQ(h.sum(), 102.50390625);
  EXPECT_EQ(registry.renderPrometheus(),
            "# HELP crisp_test_seconds Test.\n"
            "# TYPE crisp_test_seconds histogram\n"
            "crisp_test_seconds_bucket{operation=\"exec\",le=\"0.005\"} 1\n"
            "crisp_test_seconds_bucket{operation=\"exec\",le=\"0.5\"} 2\n"
            "crisp_test_seconds_bucket{operation=\"exec\",le=\"10\"} 3\n"
            "crisp_test_seconds_bucket{operation=\"exec\",le=\"+Inf\"} 4\n"
            "crisp_test_seconds_sum{operation=\"exec\"} 102.50390625\n"
            "crisp_test_seconds_count{operation=\"exec\"} 4\n");
}

TEST(HistogramTest, UnlabelledFamilyShowsZerosBeforeItsFirstObservation) {
  Registry registry;
  registry.histogramFamily("crisp_test_bytes", "Bytes.", {}, {1024});
  EXPECT_EQ(registry.renderPrometheus(),
            "# HELP crisp_test_bytes Bytes.\n"
            "# TYPE crisp_test_bytes histogram\n"
            "crisp_test_bytes_bucket{le=\"1024\"} 0\n"
            "crisp_test_bytes_bucket{le=\"+Inf\"} 0\n"
            "crisp_test_bytes_sum 0\n"
            "crisp_test_bytes_count 0\n");
}

// A collector publishes counts kept elsewhere each time the registry renders,
// and not after it was removed.
TEST(RegistryTest, CollectorsRunBeforeEachRenderingUntilRemoved) {
  Registry registry;
  Counter& counter = registry.family("crisp_test_total", "Test.", Kind::kCounter).counter();
  uint64_t kept = 0;
  uint64_t published = 0;
  const Registry::CollectorId id = registry.addCollector([&] {
    counter.inc(kept - published);
    published = kept;
  });
  kept = 3;
  EXPECT_NE(registry.renderPrometheus().find("\ncrisp_test_total 3\n"), std::string::npos);
  kept = 5;
  EXPECT_NE(registry.renderPrometheus().find("\ncrisp_test_total 5\n"), std::string::npos);
  registry.removeCollector(id);
  kept = 9;
  EXPECT_NE(registry.renderPrometheus().find("\ncrisp_test_total 5\n"), std::string::npos);
}

}  // namespace
}  // namespace crisp::stats
