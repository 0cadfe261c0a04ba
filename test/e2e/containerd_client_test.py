"""ContainerdClient (source/runtime/containerd) against a real, private
containerd: starts containerd_env's containerd with one pod whose container
sleeps, then runs the gtest binary containerd_client_check, which drives the
client on that container (spec, exec with FIFO stdio, stdin, terminal resize,
kill, wait, delete, errors).

Skipped, with the reason, only when containerd cannot run on this machine.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_env  # noqa: E402

CHECK_TIMEOUT = 300


def setup(env, tmp):
    pod = env.run_pod("client", [("main", ["sleep", "2147483647"], {})])
    fifo_dir = os.path.join(tmp, "fifos")
    os.makedirs(fifo_dir)
    return dict(CONTAINER_ID=pod.container_ids["main"], FIFO_DIR=fifo_dir)


if __name__ == "__main__":
    sys.exit(containerd_env.run_check("client", setup, CHECK_TIMEOUT))
