#include "source/admin/metrics.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace crisp::stats {
namespace {

void appendEscapedLabelValue(std::string& out, const std::string& v) {
  for (char c : v) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

void appendSample(std::string& out, const std::string& name,
                  const std::vector<std::string>& label_names,
                  const std::vector<std::string>& label_values, const std::string& value) {
  out += name;
  if (!label_names.empty()) {
    out += '{';
    for (size_t i = 0; i < label_names.size(); ++i) {
      if (i > 0) {
        out += ',';
      }
      out += label_names[i];
      out += "=\"";
      appendEscapedLabelValue(out, label_values[i]);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

// Shortest text that reads back as the same double ("0.005", "10", "1048576").
std::string formatDouble(double v) {
  char buf[32];
  if (v == static_cast<double>(static_cast<int64_t>(v)) && v > -1e15 && v < 1e15) {
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) {
      break;
    }
  }
  return buf;
}

}  // namespace

Histogram::Histogram(const std::vector<double>& bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    counts_[i].store(0, std::memory_order_relaxed);
  }
}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) {
    ++i;
  }
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  uint64_t old_bits = sum_bits_.load(std::memory_order_relaxed);
  for (;;) {
    double old_sum;
    std::memcpy(&old_sum, &old_bits, sizeof(old_sum));
    const double new_sum = old_sum + value;
    uint64_t new_bits;
    std::memcpy(&new_bits, &new_sum, sizeof(new_bits));
    if (sum_bits_.compare_exchange_weak(old_bits, new_bits, std::memory_order_relaxed)) {
      return;
    }
  }
}

double Histogram::sum() const {
  const uint64_t bits = sum_bits_.load(std::memory_order_relaxed);
  double v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

Family::Family(std::string name, std::string help, Kind kind, std::vector<std::string> label_names,
               std::vector<double> buckets)
    : name_(std::move(name)),
      help_(std::move(help)),
      kind_(kind),
      label_names_(std::move(label_names)),
      buckets_(std::move(buckets)) {}

Histogram& Family::histogram(const std::vector<std::string>& label_values) {
  if (kind_ != Kind::kHistogram || label_values.size() != label_names_.size()) {
    std::abort();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = histograms_[label_values];
  if (slot == nullptr) {
    slot = std::make_unique<Histogram>(buckets_);
  }
  return *slot;
}

Counter& Family::counter(const std::vector<std::string>& label_values) {
  if (kind_ != Kind::kCounter || label_values.size() != label_names_.size()) {
    std::abort();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = counters_[label_values];
  if (slot == nullptr) {
    slot = std::make_unique<Counter>();
  }
  return *slot;
}

Gauge& Family::gauge(const std::vector<std::string>& label_values) {
  if (kind_ != Kind::kGauge || label_values.size() != label_names_.size()) {
    std::abort();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = gauges_[label_values];
  if (slot == nullptr) {
    slot = std::make_unique<Gauge>();
  }
  return *slot;
}

void Family::render(std::string& out) const {
  out += "# HELP " + name_ + " " + help_ + "\n";
  out += "# TYPE " + name_ +
         (kind_ == Kind::kCounter ? " counter\n"
                                  : kind_ == Kind::kGauge ? " gauge\n" : " histogram\n");
  std::lock_guard<std::mutex> lock(mutex_);
  if (kind_ == Kind::kHistogram) {
    std::vector<std::string> names = label_names_;
    names.push_back("le");
    const auto renderOne = [&](const std::vector<std::string>& labels, const Histogram* h) {
      uint64_t cumulative = 0;
      std::vector<std::string> values = labels;
      values.push_back("");
      for (size_t i = 0; i <= buckets_.size(); ++i) {
        cumulative += h != nullptr ? h->bucketCount(i) : 0;
        values.back() = i < buckets_.size() ? formatDouble(buckets_[i]) : "+Inf";
        appendSample(out, name_ + "_bucket", names, values, std::to_string(cumulative));
      }
      appendSample(out, name_ + "_sum", label_names_, labels,
                   formatDouble(h != nullptr ? h->sum() : 0));
      appendSample(out, name_ + "_count", label_names_, labels,
                   std::to_string(h != nullptr ? h->count() : 0));
    };
    if (histograms_.empty() && label_names_.empty()) {
      renderOne({}, nullptr);
    }
    for (const auto& [labels, h] : histograms_) {
      renderOne(labels, h.get());
    }
    return;
  }
  if (kind_ == Kind::kCounter) {
    if (counters_.empty() && label_names_.empty()) {
      appendSample(out, name_, {}, {}, "0");
    }
    for (const auto& [labels, c] : counters_) {
      appendSample(out, name_, label_names_, labels, std::to_string(c->value()));
    }
  } else {
    if (gauges_.empty() && label_names_.empty()) {
      appendSample(out, name_, {}, {}, "0");
    }
    for (const auto& [labels, g] : gauges_) {
      appendSample(out, name_, label_names_, labels, std::to_string(g->value()));
    }
  }
}

Family& Registry::family(const std::string& name, const std::string& help, Kind kind,
                         std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = families_[name];
  if (slot == nullptr) {
    slot = std::make_unique<Family>(name, help, kind, std::move(label_names));
  } else if (slot->kind() != kind) {
    std::abort();
  }
  return *slot;
}

Family& Registry::histogramFamily(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> buckets) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = families_[name];
  if (slot == nullptr) {
    slot = std::make_unique<Family>(name, help, Kind::kHistogram, std::move(label_names),
                                    std::move(buckets));
  } else if (slot->kind() != Kind::kHistogram) {
    std::abort();
  }
  return *slot;
}

Registry::CollectorId Registry::addCollector(std::function<void()> collect) {
  std::lock_guard<std::mutex> lock(collectors_mutex_);
  const CollectorId id = next_collector_++;
  collectors_.emplace(id, std::move(collect));
  return id;
}

void Registry::removeCollector(CollectorId id) {
  std::lock_guard<std::mutex> lock(collectors_mutex_);
  collectors_.erase(id);
}

std::string Registry::renderPrometheus() const {
  {
    std::lock_guard<std::mutex> lock(collectors_mutex_);
    for (const auto& [id, collect] : collectors_) {
      collect();
    }
  }
  std::string out;
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [name, family] : families_) {
    family->render(out);
  }
  return out;
}

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

}  // namespace crisp::stats
