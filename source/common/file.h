#pragma once

// Reading small files that crisp is configured with (its YAML file, PEM
// certificates and keys), with errors that name the file and say what is
// wrong with it.

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace crisp {

// The whole content of the regular file at `path`. Fails, naming `path`, when
// it cannot be opened or read, is not a regular file (a FIFO or a device
// would block or never end), or holds more than `max_bytes` bytes (then
// "larger than N bytes; not a <kind>", with `kind` such as "config file").
absl::StatusOr<std::string> readSmallFile(const std::string& path, size_t max_bytes,
                                          const char* kind);

}  // namespace crisp
