"""ContainerdClient (source/runtime/containerd) against a real, private
containerd: starts containerd_env's containerd with one pod whose container
sleeps, then runs the gtest binary containerd_client_check, which drives the
client on that container (spec, exec with FIFO stdio, stdin, terminal resize,
kill, wait, delete, errors).

Skipped, with the reason, only when containerd cannot run on this machine.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_env  # noqa: E402

CHECK_TIMEOUT = 300


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cricall", required=True)
    parser.add_argument("--check", required=True, help="the containerd_client_check binary")
    args, rest = parser.parse_known_args()
    # Under /tmp, not TEST_TMPDIR: containerd's sockets need a short path.
    tmp = tempfile.mkdtemp(prefix="crisp-ctrd-client-")
    env = containerd_env.Containerd(os.path.join(tmp, "containerd"),
                                    os.path.abspath(args.cricall))
    try:
        try:
            env.start()
            pod = env.run_pod("client", [("main", ["sleep", "2147483647"], {})])
        except containerd_env.ContainerdUnavailable as e:
            containerd_env.report_skip("containerd cannot run on this machine: %s" % e)
            return 0
        fifo_dir = os.path.join(tmp, "fifos")
        os.makedirs(fifo_dir)
        child_env = dict(os.environ,
                         CONTAINERD_SOCKET=env.socket,
                         CONTAINER_ID=pod.container_ids["main"],
                         FIFO_DIR=fifo_dir)
        r = subprocess.run([os.path.abspath(args.check)] + rest, env=child_env,
                           timeout=CHECK_TIMEOUT)
        if r.returncode != 0:
            print("containerd log:\n" + env.logs(), file=sys.stderr)
        return r.returncode
    finally:
        env.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
