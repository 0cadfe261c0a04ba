#pragma once

// startExec(): one exec session run through containerd's task API, with crisp
// moving the bytes between the client and the shim's stdio itself.
//
// Each session makes a private subdirectory of options.fifo_dir named by its
// exec id and in it the FIFOs the shim opens: "stdin" (when the client sends
// stdin), "stdout" and, without a terminal, "stderr" (containerd's runc shim
// takes both outputs or none, so an output the client did not ask for is read
// and dropped). crisp opens its ends before the exec, non-blocking, and serves
// them from the dispatcher's loop:
//
//   - Output is read only while the client is not paused (pauseOutput): the
//     FIFO fills, the shim stops copying, and the process blocks on its own
//     pipe; nothing is buffered here beyond one read.
//   - stdin is queued (session::ExecProcess watermarks) and written as the
//     FIFO takes it. It stays open until the client closes it or the process
//     exits; the process closing its stdout does not end it. A client's close
//     takes effect after the queued bytes: crisp closes its end and calls
//     CloseIO. With a terminal it sends the terminal's EOF character instead
//     (twice after a partial line), as the embedded runtime does.
//   - The end: the exit status comes from Tasks/Wait (the code, or 128+N for
//     signal N). onExit() follows once every output FIFO reached EOF (either
//     may come first); a background process that keeps the output open is
//     given kExitDrainIdle of silence, at most kExitDrainMax, as the embedded
//     runtime gives it. Before onExit() the process is deleted from containerd
//     and the FIFOs and their directory are removed.
//   - A terminal's size is applied with Tasks/ResizePty as soon as the process
//     exists; stdin is held back while a size is being set, so what the user
//     types after a resize meets the new size.
//   - Failures after startExec() returned (no such container, container not
//     running, command not found) arrive as onExit() with a kError status
//     carrying containerd's words.
//
// Destroying the returned ExecProcess before onExit() (the client went away)
// sends SIGKILL to the process, deletes it from containerd once it has
// exited, and removes its FIFOs; no ExecCallbacks are called after that. This
// cleanup needs `client`: when the client is destroyed first (crisp stopping)
// the FIFOs and descriptors are still released, the containerd entry is not.
// As with the CRI plugin, only the exec's own process is signalled; processes
// it started in the background are not.
//
// Threading: everything on `dispatcher`'s thread; callbacks are never called
// from inside a call the adapter made.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "source/common/dispatcher.h"
#include "source/runtime/containerd/containerd_client.h"
#include "source/session/request.h"
#include "source/session/runtime.h"

namespace crisp::containerd {

struct ContainerdExecOptions {
  std::string fifo_dir;  // a private directory (0700) where each session makes its FIFOs
};

inline constexpr std::chrono::milliseconds kExitDrainIdle{100};
inline constexpr std::chrono::milliseconds kExitDrainMax{2000};

// Starts spec.command in container spec.container_id through containerd's task API
// (session::ExecSpec, operation kExec). `client` belongs to `dispatcher` and must
// outlive the returned process.
//
// Returns INVALID_ARGUMENT for an attach or an empty command, and the error of
// making the session's FIFOs (with the path) when that fails.
absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
    event::Dispatcher& dispatcher, ContainerdClient& client, const ContainerdExecOptions& options,
    const session::ExecSpec& spec, std::optional<session::TerminalSize> initial,
    session::ExecCallbacks& callbacks);

// The containerd exec id of a process made by startExec() (empty for any
// other ExecProcess). Its FIFOs live in options.fifo_dir/<exec id>.
std::string containerdExecId(const session::ExecProcess& process);

}  // namespace crisp::containerd
