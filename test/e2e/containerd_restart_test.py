"""Restarting crisp in front of a real containerd.

- A restart (SIGTERM, or SIGKILL that leaves the socket file behind) does not
  touch the running containers, and the next crisp starts on the same socket
  path; it answers CRI calls within a second of starting, and a kubectl exec
  started then works at once.
- An exec in flight when crisp stops: crisp bridges every stream to
  containerd's stream server, so the stream ends with crisp. On SIGTERM crisp
  drains: at the end of the grace period it ends the stream with a Status,
  and kubectl (SPDY and WebSocket alike) prints "crisp is shutting down"
  after the output it had and exits 1. On SIGKILL
  there is no Status: kubectl over WebSocket reports the abnormal closure and
  exits 1, kubectl over SPDY exits 0 with the output cut short (it takes the
  lost connection for the end). Never a hang, never a stack.
- configs/daemonset.yaml's run.sh, run here as it is in the pod: while crisp
  is down (crash, stop) kubelet's socket path leads to containerd; crisp is
  started again within about a second.

Usage: containerd_restart_test.py --crisp PATH --devapiserver PATH --cricall PATH
                                  --manifest PATH
"""

import os
import re
import signal
import stat
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_test as cells  # noqa: E402
import harness  # noqa: E402
import kubectl_exec_test as exec_base  # noqa: E402

ARGS = None
# An exec that runs across the restart: a numbered line every 100 ms, then
# its own exit code.
LONG_EXEC = ["sh", "-c", "for i in $(seq 1 40); do echo line-$i; sleep 0.1; done; exit 6"]
LONG_EXEC_OUTPUT = "".join("line-%d\n" % i for i in range(1, 41))
# A stack trace or panic is never a clear message.
UNCLEAR = re.compile(r"goroutine \d+|panic:")
# What kubectl prints for a session still running when crisp's drain grace
# period (1 s here) after SIGTERM is over (docs/operations.md, "Drain").
STOPPING = ("error: crisp is shutting down: the session was ended at the end of the drain "
            "grace period (stream.drain_grace_period)")
# What kubectl 1.33 over WebSocket prints when crisp is killed under a
# session: the connection is gone with no Status to carry a reason.
KILLED_WS = ("error: error reading from error stream: next reader: websocket: close 1006 "
             "(abnormal closure): unexpected EOF")


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

    def start_long_exec(self, variant):
        cluster = self.env.cluster
        return harness.Process("inflight-%d" % time.monotonic_ns(),
                               cluster.kubectl_argv(variant.version, "exec", "work", "--",
                                                    *LONG_EXEC),
                               cluster.dir, env=self.env.kubectl_env(variant.env)).start()

    def restart_crisp(self, sig):
        """Stops crisp with `sig` and starts it again on the same config; returns
        the seconds from the new process's start to its first answered CRI
        call."""
        cluster = self.env.cluster
        old = cluster.crisp
        if sig == signal.SIGTERM:
            self.assertEqual(old.stop(grace=10), 0, old.logs())
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
        cluster.admin = re.search(r"admin (\S+)", cluster.crisp.logs()).group(1)
        return ready

    def test_restart_under_running_containers_and_streams(self):
        before = {name: self.env.container_state(name) for name, _, _ in cells.CONTAINERS}
        for sig, variants in ((signal.SIGTERM, cells.VARIANTS),
                              (signal.SIGKILL, cells.VARIANTS)):
            with self.subTest(signal=sig.name):
                inflight = [(v, self.start_long_exec(v)) for v in variants]
                # Wait until every exec streams, then restart under them.
                for _, proc in inflight:
                    cells.pf.wait_for_line(proc.stdout_path, r"line-3\n", proc)
                ready = self.restart_crisp(sig)
                # A new exec, started as soon as crisp answers, works at once.
                t0 = time.monotonic()
                r = self.env.kubectl("1.33", "exec", "work", "--", "cat", "/marker")
                took = time.monotonic() - t0
                self.assertEqual((r.returncode, r.stdout), (0, cells.MARKER + "\n"),
                                 "%s\n%s" % (r, self.env.logs()))
                print("%s: crisp answering %.3f s after its start; first exec took %.3f s" %
                      (sig.name, ready, took), file=sys.stderr)
                self.assertLess(ready, 1.0, "crisp took %.2fs to answer" % ready)
                # kubectl itself needs a few hundred ms per exec on a busy machine.
                self.assertLess(took, 10)
                for v, proc in inflight:
                    self.check_in_flight_end(sig, v, proc)
        after = {name: self.env.container_state(name) for name, _, _ in cells.CONTAINERS}
        self.assertEqual(after, before, "containers changed across crisp restarts")
        self.assertTrue(all(state == "CONTAINER_RUNNING" for state, _ in after.values()), after)

    def check_in_flight_end(self, sig, v, proc):
        with self.subTest(kubectl=v.name):
            try:
                code = proc._popen.wait(timeout=30)
                out = read(proc.stdout_path)
                err = read(proc.stderr_path)
                print("%s, kubectl %s: exit %d, %r" % (sig.name, v.name, code, err.strip()),
                      file=sys.stderr)
                self.assertIsNone(UNCLEAR.search(err), err)
                self.assertTrue(LONG_EXEC_OUTPUT.startswith(out), out)
                self.assertNotEqual(out, LONG_EXEC_OUTPUT, "the exec outlived crisp")
                if sig == signal.SIGTERM:
                    self.assertEqual(code, 1)
                    self.assertIn(STOPPING, err)
                elif v.remotecommand == cells.WS_V5:
                    self.assertEqual(code, 1, err)
                    self.assertIn(KILLED_WS, err)
                else:
                    # kubectl's SPDY client takes a connection that ends without
                    # a Status for the command's end: exit 0, output cut short.
                    self.assertEqual((code, err), (0, ""))
            finally:
                proc.stop()

    def test_daemonset_run_script_falls_back_to_containerd(self):
        script = os.path.join(self.tmp.path, "run.sh")
        with open(script, "w") as f:
            f.write(run_script(ARGS.manifest))
        sock = os.path.join(self.tmp.path, "node-crisp.sock")
        config = os.path.join(self.tmp.path, "node-crisp.yaml")
        with open(config, "w") as f:
            f.write(cells.crisp_config(self.env.containerd.socket).format(
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
    harness.test_main(("crisp", "devapiserver", "cricall", "manifest"),
                      share_with=(cells, exec_base, cells.pf))


if __name__ == "__main__":
    main()
