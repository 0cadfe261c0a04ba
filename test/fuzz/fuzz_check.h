#pragma once

// Test-only: the assertion every fuzz target in this directory uses for the
// properties it checks. A failed check prints what was expected and aborts, so
// that libFuzzer records the input as a crash, and the corpus replay test (a
// plain gtest binary without a fuzzing engine) dies on the same file.
//
//   FUZZ_CHECK(events == expected, "whole and chunked feeds disagree: " + describe(events));
//
// The message argument is only evaluated when the check fails.

#include <cstdio>
#include <cstdlib>
#include <string>

namespace crisp::fuzz {

[[noreturn]] inline void checkFailed(const char* file, int line, const char* condition,
                                     const std::string& message) {
  std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n  %s\n", file, line, condition,
               message.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace crisp::fuzz

#define FUZZ_CHECK(condition, message)                                       \
  do {                                                                       \
    if (!(condition)) {                                                      \
      ::crisp::fuzz::checkFailed(__FILE__, __LINE__, #condition, (message)); \
    }                                                                        \
  } while (false)
