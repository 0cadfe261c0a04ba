#pragma once

// Session recordings in the asciicast v2 format (one JSON document per line):
//
//   {"version":2,"width":100,"height":40,"timestamp":1796414462,"command":"sh"}
//   [0.012345,"o","demo$ "]          output, seconds since the start
//   [1.5,"r","120x50"]               a resize
//   [2.25,"i","ls\r"]                input (only with recording.input)
//   [9.8,"m","recording stopped: recording.max_bytes (1048576) reached"]
//
// One Recorder belongs to one session (its thread). Output is written as it
// comes, so a recording is readable while the session runs; a multi-byte
// UTF-8 character split across two reads is kept whole. When the next event
// would take the file past max_bytes, a last "m" event says so and the
// recording ends; the session goes on.
//
// Retention: each new recording removes the oldest ones beyond
// retention_count, and those older than retention_age (by modification time).

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "source/admin/metrics.h"

namespace crisp::recording {

struct RecordingOptions {
  std::string dir;  // absolute; created when missing (one level)
  uint64_t max_bytes = 10 * 1024 * 1024;
  uint32_t retention_count = 1000;             // 0: no count limit
  std::chrono::milliseconds retention_age{0};  // 0: no age limit
  bool input = false;
};

class Recorder {
 public:
  // Creates `<dir>/<UTC time>-<container>-<session id>.cast` and writes the
  // header. Null (logged and counted) when the file cannot be made.
  static std::unique_ptr<Recorder> start(const RecordingOptions& options,
                                         const std::string& container_id, uint64_t session_id,
                                         uint16_t width, uint16_t height,
                                         const std::vector<std::string>& command);
  ~Recorder();
  Recorder(const Recorder&) = delete;
  Recorder& operator=(const Recorder&) = delete;

  void output(std::string_view bytes);
  // Ignored unless options.input.
  void input(std::string_view bytes);
  void resize(uint16_t width, uint16_t height);

  const std::string& path() const { return path_; }
  uint64_t bytesWritten() const { return size_; }
  // True once the size cap ended the recording.
  bool capped() const { return capped_; }

 private:
  Recorder(const RecordingOptions& options, std::string path, int fd);
  void event(std::string_view code, std::string_view data);
  bool writeLine(const std::string& line);
  double elapsed() const;

  const RecordingOptions options_;
  const std::string path_;
  int fd_;
  uint64_t size_ = 0;
  bool capped_ = false;
  bool failed_ = false;
  const std::chrono::steady_clock::time_point started_;
  // Bytes of an incomplete UTF-8 character at the end of the last read.
  std::string pending_output_;
  std::string pending_input_;
};

// Removes recordings of `options.dir` beyond the retention settings. Returns
// how many were removed.
size_t applyRetention(const RecordingOptions& options);

// The settings new sessions record with; null when recording is off.
// Thread-safe; swapped on reload (running recordings keep theirs).
std::shared_ptr<const RecordingOptions> currentOptions();
void setCurrentOptions(std::shared_ptr<const RecordingOptions> options);

// The recording component's metrics, declared in one place.
#define CRISP_RECORDING_METRICS(COUNTER)                                                    \
  COUNTER(started, "crisp_recordings_total", "TTY session recordings started.")             \
  COUNTER(capped, "crisp_recordings_capped_total",                                          \
          "Recordings ended early at recording.max_bytes (the session went on).")           \
  COUNTER(errors, "crisp_recording_errors_total",                                           \
          "Recordings that could not be created or written.")                               \
  COUNTER(removed, "crisp_recordings_removed_total",                                        \
          "Recordings removed by recording.retention.")                                     \
  COUNTER(bytes, "crisp_recording_bytes_total", "Bytes written to recordings.")

struct RecordingMetrics {
#define CRISP_RECORDING_METRIC_FIELD(field, name, help) stats::Counter& field;
  CRISP_RECORDING_METRICS(CRISP_RECORDING_METRIC_FIELD)
#undef CRISP_RECORDING_METRIC_FIELD
  static RecordingMetrics& get();
};

}  // namespace crisp::recording
