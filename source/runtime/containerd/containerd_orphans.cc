#include "source/runtime/containerd/containerd_orphans.h"

#include <csignal>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

#include "source/common/dispatcher.h"
#include "source/common/logger.h"
#include "source/runtime/containerd/containerd_client.h"

namespace crisp::containerd {
namespace {

// The calls of one sweep, run on its own loop. Every step starts its
// successors before it returns, so `pending_` reaching zero means done.
class Sweeper {
 public:
  Sweeper(event::Dispatcher& dispatcher, ContainerdClient& client)
      : dispatcher_(dispatcher), client_(client) {}

  void start() {
    ++pending_;
    client_.listTasks([this](absl::StatusOr<std::vector<TaskSummary>> tasks) {
      if (!tasks.ok()) {
        error_ = tasks.status();
      } else {
        for (const TaskSummary& task : *tasks) {
          // A stopped task has no processes left to end.
          if (task.running) {
            listExecs(task.container_id);
          }
        }
      }
      stepDone();
    });
  }

  bool done() const { return pending_ == 0; }
  const absl::Status& error() const { return error_; }
  const OrphanSweep& result() const { return result_; }

 private:
  void listExecs(const std::string& container_id) {
    ++pending_;
    client_.listExecs(
        container_id, [this, container_id](absl::StatusOr<std::vector<std::string>> exec_ids) {
          if (!exec_ids.ok()) {
            // The task may have ended since the list; others are still swept.
            CRISP_LOG(kRuntime, warn, "containerd: execs of container {} not listed: {}",
                      container_id, exec_ids.status().ToString());
          } else {
            for (const std::string& exec_id : *exec_ids) {
              if (ContainerdClient::isCrispExecId(exec_id)) {
                ++result_.found;
                end(container_id, exec_id);
              }
            }
          }
          stepDone();
        });
  }

  // Kill, wait for the end, delete. A process that ended by itself between
  // the list and the kill makes Kill fail; it is deleted all the same.
  void end(const std::string& container_id, const std::string& exec_id) {
    ++pending_;
    client_.kill(container_id, exec_id, SIGKILL,
                 [this, container_id, exec_id](const absl::Status& killed) {
                   if (!killed.ok()) {
                     remove(container_id, exec_id, killed);
                     stepDone();
                     return;
                   }
                   client_.wait(container_id, exec_id,
                                [this, container_id, exec_id](absl::StatusOr<ProcessExit> exit) {
                                  remove(container_id, exec_id, exit.status());
                                  stepDone();
                                });
                 });
  }

  void remove(const std::string& container_id, const std::string& exec_id,
              const absl::Status& before) {
    ++pending_;
    client_.deleteProcess(
        container_id, exec_id,
        [this, container_id, exec_id, before](absl::StatusOr<ProcessExit> exit) {
          if (exit.ok()) {
            ++result_.ended;
            CRISP_LOG(kRuntime, info,
                      "containerd: ended exec {} in container {} that an earlier crisp left "
                      "running (exit status {})",
                      exec_id, container_id, exit->exit_status);
          } else {
            CRISP_LOG(kRuntime, warn,
                      "containerd: exec {} in container {}, left running by an earlier crisp, "
                      "not ended: {}{}",
                      exec_id, container_id, exit.status().ToString(),
                      before.ok() ? "" : absl::StrCat(" (before: ", before.ToString(), ")"));
          }
          stepDone();
        });
  }

  void stepDone() {
    if (--pending_ == 0) {
      dispatcher_.exit();
    }
  }

  event::Dispatcher& dispatcher_;
  ContainerdClient& client_;
  size_t pending_ = 0;
  absl::Status error_;
  OrphanSweep result_;
};

}  // namespace

absl::StatusOr<OrphanSweep> killOrphanedExecs(const std::string& socket,
                                              std::chrono::milliseconds timeout) {
  event::Dispatcher dispatcher;
  ContainerdClientOptions options;
  options.call_timeout = timeout;
  options.process_timeout = timeout;
  options.peer_name = socket;
  auto client = std::make_unique<ContainerdClient>(dispatcher, socket, options);
  Sweeper sweeper(dispatcher, *client);
  bool timed_out = false;
  event::Timer deadline(dispatcher, [&] {
    timed_out = true;
    dispatcher.exit();
  });
  deadline.enable(timeout);
  sweeper.start();
  dispatcher.run();
  // Ends the calls still in flight; a process killed but not yet deleted
  // stays in the shim's table until its container stops.
  client.reset();
  if (!sweeper.error().ok()) {
    return sweeper.error();
  }
  const OrphanSweep& result = sweeper.result();
  if (timed_out && !sweeper.done()) {
    return absl::DeadlineExceededError(absl::StrCat(
        "containerd: the sweep for execs left by an earlier crisp took more than ", timeout.count(),
        " ms; ", result.ended, " of ", result.found, " found so far ended"));
  }
  return result;
}

}  // namespace crisp::containerd
