"""Restarting crisp in front of a real containerd.

- A restart (SIGTERM, or SIGKILL that leaves the socket file behind) does not
  touch the running containers, and the next crisp starts on the same socket
  path; a new kubectl session works within a second of crisp being ready.
- An exec in flight when crisp stops: in direct mode its stream runs between
  kubectl and containerd's stream server, so it finishes untouched; when the
  stream goes through crisp (bridged mode, and crisp's own embedded runtime,
  which is checked in both modes), kubectl ends with a clear message, neither
  hanging nor printing a stack.
- configs/daemonset.yaml's run.sh, run here as it is in the pod: while crisp
  is down (crash, stop) kubelet's socket path leads to containerd; crisp is
  started again within about a second.

Usage: containerd_restart_test.py --crisp PATH --devapiserver PATH --cricall PATH
                                  --manifest PATH [--mode direct|bridged]
"""

import argparse
import os
import re
import signal
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_env  # noqa: E402
import containerd_test as cells  # noqa: E402
import harness  # noqa: E402
import kubectl_exec_test as exec_base  # noqa: E402

ARGS = None
KUBECTL = "1.33"
# An exec that runs across the restart: a numbered line every 100 ms, then
# its own exit code.
LONG_EXEC = ["sh", "-c", "for i in $(seq 1 40); do echo line-$i; sleep 0.1; done; exit 6"]
LONG_EXEC_OUTPUT = "".join("line-%d\n" % i for i in range(1, 41))
# A stack trace or panic is never a clear message.
UNCLEAR = re.compile(r"goroutine \d+|panic:")


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("not within %ss: %s" % (timeout, what))
        time.sleep(0.01)


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def is_socket(path):
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class RestartTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir(prefix="crisp-rst-")
        cls.env = cells.Environment(cls.tmp.path)
        try:
            cls.env.start()
        except BaseException:
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.env.stop()
        cls.tmp.cleanup()

    def start_long_exec(self, cluster, name, version=KUBECTL):
        return harness.Process(name, cluster.kubectl_argv(version, "exec", "work", "--",
                                                          *LONG_EXEC),
                               cluster.dir, env=cluster.kubectl_env()).start()

    def restart_crisp(self, sig):
        """Stops crisp with `sig` and starts it again on the same config; returns
        the seconds from the new process's start to its first answered CRI
        call."""
        cluster = self.env.cluster
        old = cluster.crisp
        if sig == signal.SIGTERM:
            self.assertEqual(old.stop(), 0, old.logs())
            self.assertFalse(os.path.exists(cluster.cri_socket))
        else:
            os.kill(old.pid, sig)
            old.stop()
            # A killed crisp leaves its socket file: the next one must not mind.
            self.assertTrue(is_socket(cluster.cri_socket))
        config = os.path.join(cluster.dir, "crisp.yaml")
        started = time.monotonic()
        cluster.crisp = harness.Process("crisp-%d" % time.monotonic_ns(),
                                        [ARGS.crisp, "--config", config], cluster.dir).start()

        def answers():
            r = subprocess.run([ARGS.cricall, "--socket", cluster.cri_socket, "version"],
                               capture_output=True, text=True, timeout=10)
            return r.returncode == 0

        wait_until(answers, 10, "crisp answering after the restart\n" + cluster.crisp.logs())
        ready = time.monotonic() - started
        admin = re.search(r"admin (\S+)", cluster.crisp.logs())
        cluster.admin = admin.group(1)
        return ready

    def test_restart_leaves_containers_and_socket_usable(self):
        before = {name: self.env.container_state(name) for name, _, _ in cells.CONTAINERS}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with self.subTest(signal=sig.name):
                inflight = self.start_long_exec(self.env.cluster, "inflight-%s" % sig.name)
                # Wait until the exec streams, then restart under it.
                cells.pf.wait_for_line(inflight.stdout_path, r"line-3\n", inflight)
                ready = self.restart_crisp(sig)
                # The first session after the restart works, and in time.
                t0 = time.monotonic()
                r = self.env.kubectl(KUBECTL, "exec", "work", "--", "echo", "after")
                self.assertEqual((r.returncode, r.stdout), (0, "after\n"),
                                 "%s\n%s" % (r, self.env.logs()))
                self.assertLess(ready, 1.0, "crisp took %.2fs to answer" % ready)
                # kubectl itself needs a few hundred ms per exec on a busy machine.
                self.assertLess(time.monotonic() - t0, 10)
                code = inflight._popen.wait(timeout=30)
                out = read(inflight.stdout_path)
                err = read(inflight.stderr_path)
                if cells.ARGS.mode == "direct":
                    # The stream never went through crisp.
                    self.assertEqual((code, out), (6, LONG_EXEC_OUTPUT), err)
                else:
                    self.assert_clear_end(code, out, err)
                inflight.stop()
        after = {name: self.env.container_state(name) for name, _, _ in cells.CONTAINERS}
        self.assertEqual(after, before, "containers changed across crisp restarts")
        self.assertTrue(all(state == "CONTAINER_RUNNING" for state, _ in after.values()), after)

    def assert_clear_end(self, code, out, err):
        self.assertNotEqual(code, 0, "exec ended with 0 although crisp stopped under it")
        self.assertIn("error: Internal error occurred: error executing command in container: "
                      "crisp is shutting down", err)
        self.assertIsNone(UNCLEAR.search(err), err)
        self.assertTrue(LONG_EXEC_OUTPUT.startswith(out), out)

    def test_in_flight_exec_on_crisps_stream_server_ends_clearly(self):
        # crisp's embedded runtime: the stream is crisp's own, whatever the mode.
        for version in cells.VERSIONS:
            with self.subTest(kubectl=version), harness.TempDir(prefix="crisp-rst-emb-") as tmp:
                config = exec_base.CRISP_CONFIG.replace("id: echoer", "id: work")
                cluster = exec_base.Cluster(tmp.path, config)
                try:
                    inflight = self.start_long_exec(cluster, "inflight-embedded", version)
                    cells.pf.wait_for_line(inflight.stdout_path, r"line-3\n", inflight)
                    t0 = time.monotonic()
                    self.assertEqual(cluster.crisp.stop(), 0, cluster.crisp.logs())
                    code = inflight._popen.wait(timeout=20)
                    self.assertLess(time.monotonic() - t0, 10)
                    out = read(inflight.stdout_path)
                    err = read(inflight.stderr_path)
                    print("kubectl %s, exec in flight when crisp stopped: exit %d, %r" %
                          (version, code, err.strip()), file=sys.stderr)
                    self.assert_clear_end(code, out, err)
                    inflight.stop()
                finally:
                    cluster.stop()

    def test_daemonset_run_script_falls_back_to_containerd(self):
        script = os.path.join(self.tmp.path, "run.sh")
        with open(script, "w") as f:
            f.write(run_script(ARGS.manifest))
        sock = os.path.join(self.tmp.path, "node-crisp.sock")
        config = os.path.join(self.tmp.path, "node-crisp.yaml")
        with open(config, "w") as f:
            f.write(cells.crisp_config(cells.ARGS.mode, self.env.containerd.socket).format(
                dir=self.tmp.path, log_level="info").replace(
                    os.path.join(self.tmp.path, "crisp.sock"), sock))
        # As the kubelet drop-in of docs/operations.md leaves it before crisp runs.
        os.symlink(self.env.containerd.socket, sock)
        runner = harness.Process("run-sh", ["/bin/sh", script], self.tmp.path, env={
            "PATH": "/usr/bin:/bin", "CRISP_SOCKET": sock,
            "RUNTIME_SOCKET": self.env.containerd.socket, "CRISP_BIN": ARGS.crisp,
            "CRISP_CONFIG": config}).start()
        try:
            def version():
                r = subprocess.run([ARGS.cricall, "--socket", sock, "version"],
                                   capture_output=True, text=True, timeout=10)
                return r.stdout if r.returncode == 0 else ""

            def crisp_pid():
                with open("/proc/%d/task/%d/children" % (runner.pid, runner.pid)) as f:
                    pids = f.read().split()
                return int(pids[0]) if pids else None

            wait_until(lambda: is_socket(sock) and version(), 10,
                       "crisp serving its socket\n" + runner.logs())
            self.assertTrue(version().startswith("containerd "), version())
            first = crisp_pid()
            # A crash: the path leads to containerd at once, then to a new crisp.
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: os.path.islink(sock), 2, "fallback link after a crash")
            self.assertTrue(version().startswith("containerd "))
            wait_until(lambda: is_socket(sock) and crisp_pid() not in (None, first), 5,
                       "crisp started again\n" + runner.logs())
            wait_until(version, 5, "the new crisp answering")
            self.assertIn("crisp exited with 137; starting it again in 1s",
                          read(runner.stderr_path))
            # A stop (the pod deleted or updated): run.sh exits 0 and leaves the link.
            self.assertEqual(runner.stop(grace=20), 0, runner.logs())
            self.assertEqual(os.readlink(sock), self.env.containerd.socket)
            self.assertTrue(version().startswith("containerd "))
        finally:
            runner.stop()


def run_script(manifest):
    """run.sh from the ConfigMap in configs/daemonset.yaml, as the pod sees it."""
    with open(manifest) as f:
        text = f.read()
    m = re.search(r"\n  run\.sh: \|\n((?:    .*\n|\n)+)", text)
    if not m:
        raise AssertionError("no run.sh in %s" % manifest)
    return "".join(line[4:] + "\n" for line in m.group(1).splitlines())


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--crisp", required=True)
    parser.add_argument("--devapiserver", required=True)
    parser.add_argument("--cricall", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--mode", choices=["direct", "bridged"], default="direct")
    ARGS, rest = parser.parse_known_args()
    for name in ("crisp", "devapiserver", "cricall", "manifest"):
        setattr(ARGS, name, os.path.abspath(getattr(ARGS, name)))
    cells.ARGS = exec_base.ARGS = cells.pf.ARGS = ARGS
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
