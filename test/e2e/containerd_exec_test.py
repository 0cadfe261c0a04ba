"""containerd::startExec() (source/runtime/containerd/containerd_exec) against a
real, private containerd: starts containerd_env's containerd with a pod whose
container sleeps and one whose container has ended, then runs the gtest binary
containerd_exec_check, which runs exec sessions through containerd's task API
with crisp serving the FIFOs (bulk stdout and stdin byte for byte, exit codes,
terminal size, early close, containerd's errors, leaks after 100 sessions).

Skipped, with the reason, only when containerd cannot run on this machine.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_env  # noqa: E402

CHECK_TIMEOUT = 780


def setup(env, tmp):
    pod = env.run_pod("exec", [("main", ["sleep", "2147483647"], {})])
    ended = env.run_pod("ended", [("done", ["true"], {})])
    fifo_dir = os.path.join(tmp, "fifos")
    os.makedirs(fifo_dir, mode=0o700)
    return dict(CONTAINER_ID=pod.container_ids["main"],
                SANDBOX_ID=pod.sandbox_id,
                EXITED_CONTAINER_ID=ended.container_ids["done"],
                FIFO_DIR=fifo_dir)


if __name__ == "__main__":
    sys.exit(containerd_env.run_check("exec", setup, CHECK_TIMEOUT))
