"""containerd::startExec() (source/runtime/containerd/containerd_exec) against a
real, private containerd: starts containerd_env's containerd with a pod whose
container sleeps and one whose container has ended, then runs the gtest binary
containerd_exec_check, which runs exec sessions through containerd's task API
with crisp serving the FIFOs (bulk stdout and stdin byte for byte, exit codes,
terminal size, early close, containerd's errors, leaks after 100 sessions).

Skipped, with the reason, only when containerd cannot run on this machine.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_env  # noqa: E402

CHECK_TIMEOUT = 780


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cricall", required=True)
    parser.add_argument("--check", required=True, help="the containerd_exec_check binary")
    args, rest = parser.parse_known_args()
    # Under /tmp, not TEST_TMPDIR: containerd's sockets need a short path.
    tmp = tempfile.mkdtemp(prefix="crisp-ctrd-exec-")
    env = containerd_env.Containerd(os.path.join(tmp, "containerd"),
                                    os.path.abspath(args.cricall))
    try:
        try:
            env.start()
            pod = env.run_pod("exec", [("main", ["sleep", "2147483647"], {})])
            ended = env.run_pod("ended", [("done", ["true"], {})])
        except containerd_env.ContainerdUnavailable as e:
            containerd_env.report_skip("containerd cannot run on this machine: %s" % e)
            return 0
        fifo_dir = os.path.join(tmp, "fifos")
        os.makedirs(fifo_dir, mode=0o700)
        child_env = dict(os.environ,
                         CONTAINERD_SOCKET=env.socket,
                         CONTAINER_ID=pod.container_ids["main"],
                         SANDBOX_ID=pod.sandbox_id,
                         EXITED_CONTAINER_ID=ended.container_ids["done"],
                         FIFO_DIR=fifo_dir)
        started = time.monotonic()
        r = subprocess.run([os.path.abspath(args.check)] + rest, env=child_env,
                           timeout=CHECK_TIMEOUT)
        print("check took %.1f s" % (time.monotonic() - started))
        if r.returncode != 0:
            print("containerd log:\n" + env.logs(), file=sys.stderr)
        return r.returncode
    finally:
        env.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
