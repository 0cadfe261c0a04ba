#include "source/admin/metrics.h"

#include <cstdlib>

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

}  // namespace

Family::Family(std::string name, std::string help, Kind kind, std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      kind_(kind),
      label_names_(std::move(label_names)) {}

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
  out += "# TYPE " + name_ + (kind_ == Kind::kCounter ? " counter\n" : " gauge\n");
  std::lock_guard<std::mutex> lock(mutex_);
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

std::string Registry::renderPrometheus() const {
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
