#pragma once

// PodSource backed by a CRI runtime service (crisp's socket): pods come from
// ListContainers (plus ContainerStatus for exited containers, for their exit
// code), streaming URLs from Exec, Attach and PortForward.
//
// The transport is a function so that tests can answer calls without a
// socket; main() binds it to cri::unaryCallBlocking() on the CRI socket.
// Thread-safe as long as the transport function is (each call is independent).

#include <chrono>
#include <functional>
#include <string>

#include "absl/status/statusor.h"

#include "tools/devapiserver/pod_source.h"

namespace crisp::devapi {

class CriPodSource : public PodSource {
 public:
  // Sends one serialized request to a full method path
  // ("/runtime.v1.RuntimeService/ListContainers") and returns the serialized
  // response or the call's status.
  using UnaryCall = std::function<absl::StatusOr<std::string>(const std::string& method,
                                                              const std::string& request)>;

  explicit CriPodSource(UnaryCall call);

  absl::StatusOr<std::vector<PodInfo>> listPods() override;
  absl::StatusOr<std::string> exec(const std::string& container_id,
                                   const StreamOptions& options) override;
  absl::StatusOr<std::string> attach(const std::string& container_id,
                                     const StreamOptions& options) override;
  absl::StatusOr<std::string> portForward(const std::string& sandbox_id,
                                          const std::vector<int32_t>& ports) override;

 private:
  UnaryCall call_;
};

}  // namespace crisp::devapi
