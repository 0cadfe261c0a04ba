#pragma once

// killOrphanedExecs(): ends the exec processes an earlier crisp left running.
//
// A crisp that was killed (or lost containerd under its sessions) cannot end
// the processes of its exec sessions: they keep running in their containers,
// and the shim keeps their entries. At start, before the first session, crisp
// asks containerd for every task of the namespace (Tasks/List) and the execs
// running in each (Tasks/ListPids), and for each exec whose id has crisp's
// form (ContainerdClient::isCrispExecId()) sends SIGKILL (Tasks/Kill), waits
// for its end (Tasks/Wait) and deletes it (Tasks/DeleteProcess). Execs with
// other ids (the CRI plugin's, ctr's, another client's) are never touched.
// One log line per exec ended, one with the count.
//
// Only a crisp that has no session yet may call it: every crisp exec in the
// namespace is taken for an orphan. One crisp per containerd namespace.

#include <chrono>
#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace crisp::containerd {

struct OrphanSweep {
  size_t found = 0;  // crisp execs found running
  size_t ended = 0;  // of those, killed and deleted
};

// Blocks for at most `timeout` (its own loop, its own connection to
// `socket`). An error when the tasks cannot be listed or the deadline passed
// (naming what was done by then); a container whose processes cannot be
// listed, or an exec that cannot be killed or deleted, is logged and skipped.
absl::StatusOr<OrphanSweep> killOrphanedExecs(const std::string& socket,
                                              std::chrono::milliseconds timeout);

}  // namespace crisp::containerd
