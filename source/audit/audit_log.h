#pragma once

// AuditLog: the audit trail of streaming sessions, one JSON document per line,
// appended to a file (rotated by size) or written to standard output.
//
//   auto log = AuditLog::open({"/var/log/crisp/audit.log", 100 << 20, 5});
//   setCurrent(std::move(log).value());   // sessions write to current()
//   if (auto a = current()) { a->write(line); }
//
// Rotation: before a line would take the file past max_bytes, path.N-1 becomes
// path.N (... path becomes path.1) and a new file is started; at most
// max_files rotated files are kept. A line is never split across files.
//
// Thread-safe: sessions on every worker write through one mutex (a line is one
// write(2)); current() may be swapped at any time (reload), and a session
// holding the old log keeps writing to it until it lets go.

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "source/admin/metrics.h"

namespace crisp::audit {

struct AuditOptions {
  std::string path;  // absolute; empty = standard output (never rotated)
  uint64_t max_bytes = 100 * 1024 * 1024;
  uint32_t max_files = 5;
};

class AuditLog {
 public:
  // Opens (creates, mode 0640) the file for appending. Errors name the path.
  static absl::StatusOr<std::shared_ptr<AuditLog>> open(const AuditOptions& options);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends `line` and a newline. A failed write is counted and logged; the
  // session goes on.
  void write(std::string_view line);

  const AuditOptions& options() const { return options_; }

 private:
  AuditLog(const AuditOptions& options, int fd, uint64_t size);
  // Moves the files along and opens a new one. Called with mutex_ held.
  void rotateLocked();

  const AuditOptions options_;
  std::mutex mutex_;
  int fd_;
  uint64_t size_;
};

// The log sessions write to; null when there is none.
std::shared_ptr<AuditLog> current();
void setCurrent(std::shared_ptr<AuditLog> log);

// The audit component's metrics, declared in one place.
#define CRISP_AUDIT_METRICS(COUNTER)                                                        \
  COUNTER(records, "crisp_audit_records_total", "Audit lines written.")                     \
  COUNTER(write_errors, "crisp_audit_write_errors_total",                                   \
          "Audit lines that could not be written (or rotations that failed).")              \
  COUNTER(rotations, "crisp_audit_rotations_total", "Audit files rotated at audit.max_bytes.")

struct AuditMetrics {
#define CRISP_AUDIT_METRIC_FIELD(field, name, help) stats::Counter& field;
  CRISP_AUDIT_METRICS(CRISP_AUDIT_METRIC_FIELD)
#undef CRISP_AUDIT_METRIC_FIELD
  static AuditMetrics& get();
};

}  // namespace crisp::audit
