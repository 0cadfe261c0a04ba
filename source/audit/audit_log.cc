#include "source/audit/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"

namespace crisp::audit {
namespace {

std::mutex current_mutex;
std::shared_ptr<AuditLog>& currentSlot() {
  static auto* slot = new std::shared_ptr<AuditLog>();
  return *slot;
}

int openForAppend(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
}

// Writes all of `data`, retrying short writes.
bool writeAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    const ssize_t n = ::write(fd, data, len);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

absl::StatusOr<std::shared_ptr<AuditLog>> AuditLog::open(const AuditOptions& options) {
  if (options.path.empty()) {
    return std::shared_ptr<AuditLog>(new AuditLog(options, STDOUT_FILENO, 0));
  }
  const int fd = openForAppend(options.path);
  if (fd < 0) {
    const int err = errno;
    return absl::Status(absl::ErrnoToStatusCode(err),
                        absl::StrCat("audit.path: ", options.path, ": ", std::strerror(err)));
  }
  struct stat st {};
  const uint64_t size = ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return std::shared_ptr<AuditLog>(new AuditLog(options, fd, size));
}

AuditLog::AuditLog(const AuditOptions& options, int fd, uint64_t size)
    : options_(options), fd_(fd), size_(size) {}

AuditLog::~AuditLog() {
  if (fd_ > STDERR_FILENO) {
    ::close(fd_);
  }
}

void AuditLog::write(std::string_view line) {
  AuditMetrics& metrics = AuditMetrics::get();
  std::string out;
  out.reserve(line.size() + 1);
  out.append(line);
  out += '\n';
  std::lock_guard<std::mutex> lock(mutex_);
  if (!options_.path.empty() && size_ > 0 && size_ + out.size() > options_.max_bytes) {
    rotateLocked();
  }
  if (fd_ < 0 || !writeAll(fd_, out.data(), out.size())) {
    metrics.write_errors.inc();
    CRISP_LOG(kMain, warn, "audit: cannot write to {}: {}",
              options_.path.empty() ? "standard output" : options_.path, std::strerror(errno));
    return;
  }
  size_ += out.size();
  metrics.records.inc();
}

void AuditLog::rotateLocked() {
  AuditMetrics& metrics = AuditMetrics::get();
  const std::string& base = options_.path;
  // path.N is dropped by the rename onto it; path.N-1 ... path.1 move up one.
  for (uint32_t i = options_.max_files; i > 1; --i) {
    const std::string from = absl::StrCat(base, ".", i - 1);
    const std::string to = absl::StrCat(base, ".", i);
    if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      CRISP_LOG(kMain, warn, "audit: cannot rename {} to {}: {}", from, to, std::strerror(errno));
    }
  }
  if (::rename(base.c_str(), absl::StrCat(base, ".1").c_str()) != 0) {
    metrics.write_errors.inc();
    CRISP_LOG(kMain, warn, "audit: cannot rotate {}: {}; writing on", base, std::strerror(errno));
    return;
  }
  const int fd = openForAppend(base);
  if (fd < 0) {
    metrics.write_errors.inc();
    CRISP_LOG(kMain, warn, "audit: cannot open {} after rotating it: {}", base,
              std::strerror(errno));
    return;  // keeps writing to the rotated file rather than losing lines
  }
  ::close(fd_);
  fd_ = fd;
  size_ = 0;
  metrics.rotations.inc();
}

std::shared_ptr<AuditLog> current() {
  std::lock_guard<std::mutex> lock(current_mutex);
  return currentSlot();
}

void setCurrent(std::shared_ptr<AuditLog> log) {
  std::lock_guard<std::mutex> lock(current_mutex);
  currentSlot() = std::move(log);
}

AuditMetrics& AuditMetrics::get() {
  static AuditMetrics* metrics = [] {
    auto& registry = stats::registry();
#define CRISP_AUDIT_METRIC_CHILD(field, name, help) \
  registry.family(name, help, stats::Kind::kCounter).counter(),
    return new AuditMetrics{CRISP_AUDIT_METRICS(CRISP_AUDIT_METRIC_CHILD)};
#undef CRISP_AUDIT_METRIC_CHILD
  }();
  return *metrics;
}

}  // namespace crisp::audit
