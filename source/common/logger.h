#pragma once

// Logging: one spdlog logger per component, all writing to the same sink.
// Lines about a connection or a session carry its id, "[C12]" or "[C12][S3]",
// so that one grep follows one client. Tokens, keys and payloads are never
// logged; use tokenFingerprint() where a token must be identified.

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace crisp::log {

enum class Component { kMain, kConfig, kCri, kStream, kSpdy, kSession, kRuntime, kAdmin, kCache };

// The logger of a component. Created on first use, level from setLevel().
spdlog::logger& get(Component c);

// Sets the level of every component logger. Accepts trace, debug, info, warn,
// error, critical and off; returns false for anything else.
bool setLevel(std::string_view level);

// A new process-unique id for a connection or session.
uint64_t nextId();

// The first characters of a token followed by an ellipsis: enough to match log
// lines to one another, far too little to use the token.
std::string tokenFingerprint(std::string_view token);

}  // namespace crisp::log

#define CRISP_LOG(component, level, ...) \
  ::crisp::log::get(::crisp::log::Component::component).level(__VA_ARGS__)

#define CRISP_CONN_LOG(component, level, conn_id, fmt_str, ...)           \
  ::crisp::log::get(::crisp::log::Component::component)                   \
      .level("[C{}] " fmt_str, conn_id __VA_OPT__(, ) __VA_ARGS__)

#define CRISP_SESSION_LOG(component, level, conn_id, session_id, fmt_str, ...) \
  ::crisp::log::get(::crisp::log::Component::component)                        \
      .level("[C{}][S{}] " fmt_str, conn_id, session_id __VA_OPT__(, ) __VA_ARGS__)
