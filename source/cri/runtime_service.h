#pragma once

// RuntimeServiceImpl: the CRI runtime.v1 calls crisp answers itself when it
// fronts its embedded runtime, without any transport. The gRPC server hands it a
// method path and the request bytes (handle()), or calls the typed methods
// directly; everything else is forwarded upstream by the transport.
//
//   RuntimeServiceImpl service(runtime, token_cache, "http://127.0.0.1:10350/");
//   if (!service.handle(path, bytes, dispatcher, [](absl::StatusOr<std::string> r) {...})) {
//     // reply UNIMPLEMENTED with unimplementedMessage(path), or forward upstream
//   }
//
// Answered calls:
// - Exec, Attach, PortForward: validated like the kubelet's streaming server
//   (INVALID_ARGUMENT with its exact texts), checked against the runtime
//   (NOT_FOUND for an unknown container or sandbox, FAILED_PRECONDITION when it
//   is not running), stored in the TokenCache (RESOURCE_EXHAUSTED from a full
//   cache passes through) and answered with <base>exec|attach|portforward/<token>.
// - Version, Status, ListContainers, ContainerStatus: from the runtime's view.
// - ExecSync: runs the command through Runtime::startExec and collects its output
//   (asynchronous, see execSync()).
//
// Errors are absl::Status values whose codes equal gRPC's numeric codes, so the
// transport passes code and message through unchanged.
//
// Threading: the typed methods use the Runtime and must run on a thread where the
// Runtime may be used (a dispatcher's loop thread). handle() may be called from
// any thread: it moves itself onto `dispatcher` when needed, and its `done`
// always runs on that dispatcher's thread. The TokenCache is thread-safe.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/statusor.h"
#include "api/runtime/v1/api.pb.h"

#include "source/cache/token_cache.h"
#include "source/common/dispatcher.h"
#include "source/cri/stream_url.h"
#include "source/session/runtime.h"

namespace crisp::cri {

// VersionResponse.version: the kubelet-facing API version every CRI server reports.
inline constexpr char kKubeletApiVersion[] = "0.1.0";
inline constexpr char kRuntimeName[] = "crisp-embedded";
// crisp's own version, reported as VersionResponse.runtime_version.
inline constexpr char kCrispVersion[] = "0.1.0";
inline constexpr char kRuntimeApiVersion[] = "v1";

// ExecSync keeps at most this many bytes of stdout and, separately, of stderr;
// the rest is read and discarded while the command runs on, and the call still
// succeeds. The CRI API asks runtimes for this 16 MiB cap (containerd applies
// it); the kubelet's exec probe in turn keeps only the first 10 KiB it gets.
inline constexpr size_t kExecSyncOutputLimit = 16 * 1024 * 1024;

// The message for a call crisp neither answers nor forwards:
// "crisp's embedded runtime does not implement /runtime.v1.RuntimeService/X".
std::string unimplementedMessage(std::string_view method_path);

class RuntimeServiceImpl {
 public:
  using Done = std::function<void(absl::StatusOr<std::string> response_bytes)>;
  using ExecSyncDone = std::function<void(absl::StatusOr<::runtime::v1::ExecSyncResponse>)>;

  // `runtime` and `cache` are borrowed and must outlive this object.
  // `stream_base_url` is the stream server's address, e.g.
  // "http://127.0.0.1:10350/"; stream URLs are resolved against it like a
  // relative reference "exec/<token>" (a base without a trailing slash loses its
  // last path segment, a base without a path gets "/").
  RuntimeServiceImpl(session::Runtime& runtime, cache::TokenCache& cache,
                     std::string_view stream_base_url);
  // Abandons ExecSync calls still running: their processes are ended and their
  // `done` is never called. Destroy this object on the loop thread that runs
  // them, after the transport stopped calling it.
  ~RuntimeServiceImpl();

  RuntimeServiceImpl(const RuntimeServiceImpl&) = delete;
  RuntimeServiceImpl& operator=(const RuntimeServiceImpl&) = delete;

  // True for the method paths handle() answers.
  static bool implements(std::string_view method_path);

  // Decodes `request_bytes` as the request of `method_path`, answers it and hands
  // the encoded response (or the failure) to `done`, exactly once, on
  // `dispatcher`'s thread; that can happen before handle() returns. Returns false,
  // without calling `done`, when crisp does not answer that method itself.
  // Undecodable bytes fail with INVALID_ARGUMENT.
  //
  // When `cancel` is given and the call does work that outlives handle() (an
  // ExecSync still running), *cancel is set to a function that abandons it: the
  // command's process group is killed and `done` is never called. Run it on
  // `dispatcher`'s thread when the client goes away. It is set only when
  // handle() runs on that thread; otherwise it stays empty.
  bool handle(const std::string& method_path, const std::string& request_bytes,
              event::Dispatcher& dispatcher, Done done, std::function<void()>* cancel = nullptr);

  absl::StatusOr<::runtime::v1::VersionResponse> version(
      const ::runtime::v1::VersionRequest& request);
  // Both RuntimeReady and NetworkReady are true while crisp runs.
  absl::StatusOr<::runtime::v1::StatusResponse> status(const ::runtime::v1::StatusRequest& request);
  // Honours every filter field. Embedded containers carry no labels, so any
  // non-empty label_selector matches nothing.
  absl::StatusOr<::runtime::v1::ListContainersResponse> listContainers(
      const ::runtime::v1::ListContainersRequest& request);
  // NOT_FOUND for an unknown container.
  absl::StatusOr<::runtime::v1::ContainerStatusResponse> containerStatus(
      const ::runtime::v1::ContainerStatusRequest& request);

  absl::StatusOr<::runtime::v1::ExecResponse> exec(const ::runtime::v1::ExecRequest& request);
  absl::StatusOr<::runtime::v1::AttachResponse> attach(const ::runtime::v1::AttachRequest& request);
  // The embedded runtime's pod sandbox id is its container id; a container whose
  // pod_sandbox_id matches is accepted as well. Ports must be 1..65535.
  absl::StatusOr<::runtime::v1::PortForwardResponse> portForward(
      const ::runtime::v1::PortForwardRequest& request);

  // Runs request.cmd in the container without stdin and calls `done` once, on
  // `dispatcher`'s thread (possibly before execSync() returns), with stdout,
  // stderr (each capped at kExecSyncOutputLimit) and the exit code. Must be
  // called on `dispatcher`'s thread.
  // Failures: INVALID_ARGUMENT (no container_id, empty cmd, negative timeout),
  // NOT_FOUND, FAILED_PRECONDITION (container not running), the status of a
  // failed start, UNKNOWN when the runtime reports an error instead of an exit.
  // With timeout > 0 seconds a command still running then is killed and the call
  // fails with DEADLINE_EXCEEDED "failed to exec in container: timeout <N>s
  // exceeded" (containerd fails the same way with the same code; the kubelet
  // replaces the text with its own "command ... timed out" error, and a probe
  // counts it as a timeout).
  //
  // Returns an id for cancelExecSync() while the command runs, 0 when the call
  // already ended.
  uint64_t execSync(event::Dispatcher& dispatcher, const ::runtime::v1::ExecSyncRequest& request,
                    ExecSyncDone done);
  // Abandons the ExecSync `id` if it still runs: kills its process group and
  // drops its `done`. Call on the dispatcher's thread of that ExecSync.
  void cancelExecSync(uint64_t id);

  // ExecSync calls started and not yet finished. Thread-safe.
  size_t execSyncInFlight() const;

  // From now on Exec, Attach and PortForward hand out no stream URL: they fail
  // with UNAVAILABLE saying crisp is shutting down. Thread-safe.
  void stopIssuingStreams() { urls_.stopIssuing(); }

 private:
  class ExecSyncCall;

  // The container, NOT_FOUND if unknown, FAILED_PRECONDITION if not running.
  absl::StatusOr<session::ContainerInfo> runningContainer(const std::string& id);
  // Inserts `request` in the cache and returns the stream URL for it.
  absl::StatusOr<std::string> streamUrl(session::StreamRequest request);
  // Returns the id of an ExecSync still running, else 0.
  uint64_t dispatch(const std::string& method_path, const std::string& request_bytes,
                    event::Dispatcher& dispatcher, Done done);
  std::unique_ptr<ExecSyncCall> releaseCall(ExecSyncCall* call);

  session::Runtime& runtime_;
  StreamUrls urls_;

  mutable std::mutex calls_mutex_;
  std::unordered_map<ExecSyncCall*, std::unique_ptr<ExecSyncCall>> calls_;
  // The id each running call was given (ids are never reused; addresses are).
  std::unordered_map<ExecSyncCall*, uint64_t> call_ids_;
  std::atomic<uint64_t> next_call_id_{1};
};

}  // namespace crisp::cri
