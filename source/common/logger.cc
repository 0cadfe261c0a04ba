#include "source/common/logger.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <array>
#include <mutex>

namespace crisp::log {
namespace {

constexpr std::array<const char*, 9> kNames = {"main",    "config",  "cri",   "stream", "spdy",
                                               "session", "runtime", "admin", "cache"};

struct Registry {
  Registry() {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    for (size_t i = 0; i < kNames.size(); ++i) {
      loggers[i] = std::make_shared<spdlog::logger>(kNames[i], sink);
      loggers[i]->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ %n: %v");
      loggers[i]->set_level(spdlog::level::info);
    }
  }
  std::array<std::shared_ptr<spdlog::logger>, kNames.size()> loggers;
};

Registry& registry() {
  static Registry* r = new Registry();
  return *r;
}

std::atomic<uint64_t> next_id{1};

}  // namespace

spdlog::logger& get(Component c) { return *registry().loggers[static_cast<size_t>(c)]; }

bool setLevel(std::string_view level) {
  const auto parsed = spdlog::level::from_str(std::string(level));
  // from_str maps unknown names to off; only accept "off" when it was asked for.
  if (parsed == spdlog::level::off && level != "off") {
    return false;
  }
  for (auto& l : registry().loggers) {
    l->set_level(parsed);
  }
  return true;
}

uint64_t nextId() { return next_id.fetch_add(1, std::memory_order_relaxed); }

std::string tokenFingerprint(std::string_view token) {
  return std::string(token.substr(0, 4)) + "...";
}

}  // namespace crisp::log
