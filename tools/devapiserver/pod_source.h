#pragma once

// Where the development API server gets its pods from, and how it asks for
// streaming URLs. The real implementation (cri_pod_source.h) reads crisp's CRI
// socket; tests use a fake. Every method may be called from many connection
// threads at once, so implementations must be thread-safe.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace crisp::devapi {

// The CRI container states, as far as a pod's phase cares.
enum class ContainerState { kCreated, kRunning, kExited, kUnknown };

// One CRI container, shown as one pod with one container of the same name.
struct PodInfo {
  std::string name;          // the container's metadata name: pod and container name
  std::string container_id;  // CRI container id
  std::string sandbox_id;    // CRI pod sandbox id
  std::string image;
  ContainerState state = ContainerState::kUnknown;
  int64_t created_at_ns = 0;  // Unix time in nanoseconds; 0 when unknown
  int64_t started_at_ns = 0;  // 0 when unknown
  int32_t exit_code = 0;      // meaningful for kExited only
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
};

// The CRI Exec or Attach request fields (command is empty for attach).
struct StreamOptions {
  std::vector<std::string> command;
  bool stdin = false;
  bool stdout = false;
  bool stderr = false;
  bool tty = false;
};

class PodSource {
 public:
  virtual ~PodSource() = default;

  // Every container the runtime knows. Fails with the runtime's status.
  virtual absl::StatusOr<std::vector<PodInfo>> listPods() = 0;

  // CRI Exec / Attach / PortForward: the streaming URL, or the runtime's
  // status (its code decides the HTTP status the client sees).
  virtual absl::StatusOr<std::string> exec(const std::string& container_id,
                                           const StreamOptions& options) = 0;
  virtual absl::StatusOr<std::string> attach(const std::string& container_id,
                                             const StreamOptions& options) = 0;
  virtual absl::StatusOr<std::string> portForward(const std::string& sandbox_id,
                                                  const std::vector<int32_t>& ports) = 0;
};

}  // namespace crisp::devapi
