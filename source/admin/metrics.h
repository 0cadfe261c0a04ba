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

enum class Kind { kCounter, kGauge };

// One metric name with its help text and label names; children per label values.
class Family {
 public:
  Family(std::string name, std::string help, Kind kind, std::vector<std::string> label_names);

  const std::string& name() const { return name_; }
  Kind kind() const { return kind_; }

  // The child for these label values (same count and order as the names).
  Counter& counter(const std::vector<std::string>& label_values = {});
  Gauge& gauge(const std::vector<std::string>& label_values = {});

  void render(std::string& out) const;

 private:
  const std::string name_;
  const std::string help_;
  const Kind kind_;
  const std::vector<std::string> label_names_;
  mutable std::mutex mutex_;
  std::map<std::vector<std::string>, std::unique_ptr<Counter>> counters_;
  std::map<std::vector<std::string>, std::unique_ptr<Gauge>> gauges_;
};

class Registry {
 public:
  // Returns the family called `name`, creating it on first use. Declaring the
  // same name twice with a different kind or labels is a programming error.
  Family& family(const std::string& name, const std::string& help, Kind kind,
                 std::vector<std::string> label_names = {});

  // Every family, sorted by name, in the Prometheus text exposition format 0.0.4.
  std::string renderPrometheus() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Family>> families_;
};

// The process-wide registry.
Registry& registry();

}  // namespace crisp::stats
