#pragma once

// Metrics: counters and gauges with labels, rendered in the Prometheus text
// format by the admin endpoint. Every metric is declared once, in one list per
// component (see the *_METRICS lists next to each component), named crisp_* in
// base units.
//
// Looking up a labelled child takes a lock; hot paths look up once (per
// session) and keep the returned reference, whose updates are lock-free.
// References stay valid for the life of the process.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace crisp::stats {

class Counter {
 public:
  void inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class Gauge {
 public:
  void inc(int64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  void dec(int64_t n = 1) { value_.fetch_sub(n, std::memory_order_relaxed); }
  void set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  int64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

// Observations counted in fixed buckets (cumulative when rendered), with their
// sum and count. Lock-free.
class Histogram {
 public:
  // `bounds`: the buckets' upper bounds, ascending; +Inf is implicit.
  explicit Histogram(const std::vector<double>& bounds);

  void observe(double value);

  const std::vector<double>& bounds() const { return bounds_; }
  // Observations in bucket i (not cumulative); i == bounds().size() is +Inf.
  uint64_t bucketCount(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> count_{0};
  // The sum's bits (a double), updated by compare-and-swap.
  std::atomic<uint64_t> sum_bits_{0};
};

enum class Kind { kCounter, kGauge, kHistogram };

// One metric name with its help text and label names; children per label values.
class Family {
 public:
  Family(std::string name, std::string help, Kind kind, std::vector<std::string> label_names,
         std::vector<double> buckets = {});

  const std::string& name() const { return name_; }
  Kind kind() const { return kind_; }

  // The child for these label values (same count and order as the names).
  Counter& counter(const std::vector<std::string>& label_values = {});
  Gauge& gauge(const std::vector<std::string>& label_values = {});
  Histogram& histogram(const std::vector<std::string>& label_values = {});

  void render(std::string& out) const;

 private:
  const std::string name_;
  const std::string help_;
  const Kind kind_;
  const std::vector<std::string> label_names_;
  mutable std::mutex mutex_;
  std::map<std::vector<std::string>, std::unique_ptr<Counter>> counters_;
  std::map<std::vector<std::string>, std::unique_ptr<Gauge>> gauges_;
  const std::vector<double> buckets_;
  std::map<std::vector<std::string>, std::unique_ptr<Histogram>> histograms_;
};

class Registry {
 public:
  // Returns the family called `name`, creating it on first use. Declaring the
  // same name twice with a different kind or labels is a programming error.
  Family& family(const std::string& name, const std::string& help, Kind kind,
                 std::vector<std::string> label_names = {});
  // A histogram family with these bucket bounds (ascending).
  Family& histogramFamily(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names, std::vector<double> buckets);

  // A component that keeps its counts where its own threads meet (under its
  // own locks, say) rather than in shared atomics publishes them from a
  // collector: renderPrometheus() calls every collector first, on the caller's
  // thread, and the collector brings its families up to date (inc() by what
  // changed since it last ran). A collector must not add or remove
  // collectors. Remove it before what it reads goes away.
  using CollectorId = uint64_t;
  CollectorId addCollector(std::function<void()> collect);
  void removeCollector(CollectorId id);

  // Every family, sorted by name, in the Prometheus text exposition format 0.0.4.
  std::string renderPrometheus() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Family>> families_;
  // Held while collectors run, so that removeCollector() returns only once
  // its collector is not running.
  mutable std::mutex collectors_mutex_;
  CollectorId next_collector_ = 1;
  std::map<CollectorId, std::function<void()>> collectors_;
};

// The process-wide registry.
Registry& registry();

}  // namespace crisp::stats
