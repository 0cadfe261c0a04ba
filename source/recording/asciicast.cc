#include "source/recording/asciicast.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"
#include "source/session/remotecommand.h"

namespace crisp::recording {
namespace {

// Room kept for the last "m" event, so that a capped recording still says why.
constexpr size_t kFinalEventReserve = 160;

std::mutex options_mutex;
std::shared_ptr<const RecordingOptions>& optionsSlot() {
  static auto* slot = new std::shared_ptr<const RecordingOptions>();
  return *slot;
}

// How many bytes at the end of `s` start a UTF-8 character that is not
// complete yet (0 when the text ends on a character boundary).
size_t incompleteUtf8Tail(std::string_view s) {
  for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
    const auto c = static_cast<uint8_t>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) {
      continue;  // a continuation byte: look further back
    }
    size_t need = 1;
    if ((c & 0xE0) == 0xC0) {
      need = 2;
    } else if ((c & 0xF0) == 0xE0) {
      need = 3;
    } else if ((c & 0xF8) == 0xF0) {
      need = 4;
    }
    return need > back ? back : 0;
  }
  return 0;
}

bool isRecording(const struct dirent* e) {
  const std::string_view name(e->d_name);
  return name.size() > 5 && name.substr(name.size() - 5) == ".cast" && name[0] != '.';
}

}  // namespace

std::unique_ptr<Recorder> Recorder::start(const RecordingOptions& options,
                                          const std::string& container_id, uint64_t session_id,
                                          uint16_t width, uint16_t height,
                                          const std::vector<std::string>& command) {
  RecordingMetrics& metrics = RecordingMetrics::get();
  if (::mkdir(options.dir.c_str(), 0750) != 0 && errno != EEXIST) {
    metrics.errors.inc();
    CRISP_LOG(kSession, warn, "recording: cannot create {}: {}", options.dir,
              std::strerror(errno));
    return nullptr;
  }
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &utc);
  // Container ids are checked ([A-Za-z0-9_.-]) before a session exists.
  const std::string path =
      absl::StrCat(options.dir, "/", stamp, "-", container_id, "-s", session_id, ".cast");
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (fd < 0) {
    metrics.errors.inc();
    CRISP_LOG(kSession, warn, "recording: cannot create {}: {}", path, std::strerror(errno));
    return nullptr;
  }
  std::unique_ptr<Recorder> recorder(new Recorder(options, path, fd));
  std::string header = absl::StrCat("{\"version\":2,\"width\":", width, ",\"height\":", height,
                                    ",\"timestamp\":", static_cast<int64_t>(seconds),
                                    ",\"command\":");
  std::string joined;
  for (size_t i = 0; i < command.size(); ++i) {
    absl::StrAppend(&joined, i > 0 ? " " : "", command[i]);
  }
  session::appendJsonString(header, joined);
  header += "}";
  recorder->writeLine(header);
  metrics.started.inc();
  const size_t removed = applyRetention(options);
  if (removed > 0) {
    CRISP_LOG(kSession, debug, "recording: removed {} old recordings from {}", removed,
              options.dir);
  }
  return recorder;
}

Recorder::Recorder(const RecordingOptions& options, std::string path, int fd)
    : options_(options),
      path_(std::move(path)),
      fd_(fd),
      started_(std::chrono::steady_clock::now()) {}

Recorder::~Recorder() { ::close(fd_); }

double Recorder::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

void Recorder::output(std::string_view bytes) {
  if (capped_ || failed_) {
    return;
  }
  pending_output_.append(bytes);
  const size_t keep = incompleteUtf8Tail(pending_output_);
  if (pending_output_.size() == keep) {
    return;
  }
  const std::string whole = pending_output_.substr(0, pending_output_.size() - keep);
  pending_output_.erase(0, pending_output_.size() - keep);
  event("o", whole);
}

void Recorder::input(std::string_view bytes) {
  if (!options_.input || capped_ || failed_) {
    return;
  }
  pending_input_.append(bytes);
  const size_t keep = incompleteUtf8Tail(pending_input_);
  if (pending_input_.size() == keep) {
    return;
  }
  const std::string whole = pending_input_.substr(0, pending_input_.size() - keep);
  pending_input_.erase(0, pending_input_.size() - keep);
  event("i", whole);
}

void Recorder::resize(uint16_t width, uint16_t height) {
  event("r", absl::StrCat(width, "x", height));
}

void Recorder::event(std::string_view code, std::string_view data) {
  if (capped_ || failed_) {
    return;
  }
  char time_text[32];
  std::snprintf(time_text, sizeof(time_text), "%.6f", elapsed());
  std::string line = absl::StrCat("[", time_text, ",\"", std::string(code), "\",");
  session::appendJsonString(line, data);
  line += "]";
  if (size_ + line.size() + 1 + kFinalEventReserve > options_.max_bytes) {
    capped_ = true;
    RecordingMetrics::get().capped.inc();
    const std::string why =
        absl::StrCat("recording stopped: recording.max_bytes (", options_.max_bytes, ") reached");
    std::string last = absl::StrCat("[", time_text, ",\"m\",");
    session::appendJsonString(last, why);
    last += "]";
    writeLine(last);
    CRISP_LOG(kSession, info, "recording {} stopped at {} bytes: recording.max_bytes reached; "
              "the session goes on", path_, size_);
    return;
  }
  writeLine(line);
}

bool Recorder::writeLine(const std::string& line) {
  std::string out = line;
  out += '\n';
  const char* p = out.data();
  size_t left = out.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      failed_ = true;
      RecordingMetrics::get().errors.inc();
      CRISP_LOG(kSession, warn, "recording {}: write failed: {}; recording stopped", path_,
                std::strerror(errno));
      return false;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  size_ += out.size();
  RecordingMetrics::get().bytes.inc(out.size());
  return true;
}

size_t applyRetention(const RecordingOptions& options) {
  DIR* dir = ::opendir(options.dir.c_str());
  if (dir == nullptr) {
    return 0;
  }
  struct Entry {
    std::string path;
    int64_t mtime_ns;
    std::string name;
  };
  std::vector<Entry> entries;
  while (const struct dirent* e = ::readdir(dir)) {
    if (!isRecording(e)) {
      continue;
    }
    const std::string path = absl::StrCat(options.dir, "/", e->d_name);
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      continue;
    }
    entries.push_back(
        {path, static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
         e->d_name});
  }
  ::closedir(dir);
  // Newest first: by modification time, then by name (which starts with the time).
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.mtime_ns != b.mtime_ns ? a.mtime_ns > b.mtime_ns : a.name > b.name;
  });
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  size_t removed = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const bool over_count = options.retention_count > 0 && i >= options.retention_count;
    const bool too_old =
        options.retention_age.count() > 0 &&
        now_ns - entries[i].mtime_ns >
            std::chrono::duration_cast<std::chrono::nanoseconds>(options.retention_age).count();
    if ((over_count || too_old) && ::unlink(entries[i].path.c_str()) == 0) {
      ++removed;
    }
  }
  RecordingMetrics::get().removed.inc(removed);
  return removed;
}

std::shared_ptr<const RecordingOptions> currentOptions() {
  std::lock_guard<std::mutex> lock(options_mutex);
  return optionsSlot();
}

void setCurrentOptions(std::shared_ptr<const RecordingOptions> options) {
  std::lock_guard<std::mutex> lock(options_mutex);
  optionsSlot() = std::move(options);
}

RecordingMetrics& RecordingMetrics::get() {
  static RecordingMetrics* metrics = [] {
    auto& registry = stats::registry();
#define CRISP_RECORDING_METRIC_CHILD(field, name, help) \
  registry.family(name, help, stats::Kind::kCounter).counter(),
    return new RecordingMetrics{CRISP_RECORDING_METRICS(CRISP_RECORDING_METRIC_CHILD)};
#undef CRISP_RECORDING_METRIC_CHILD
  }();
  return *metrics;
}

}  // namespace crisp::recording
