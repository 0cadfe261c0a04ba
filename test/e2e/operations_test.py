"""Operating crisp end to end with real kubectl: drain, audit log, session
recordings, reload and metrics.

DrainTest runs crisp with a short drain grace period, keeps two kubectl exec
sessions running and sends SIGTERM: /readyz turns not-ready at once, a new
kubectl exec is refused with a clear message, the session that ends inside
the grace period ends normally, the one still running after it is ended with
a message kubectl prints (and a non-zero exit), and crisp exits 0.

AuditAndRecordingTest runs crisp with an audit log and recordings: each
kubectl session leaves a start and an end line, checked field by field; a
kubectl exec -it session's recording replays to what the terminal showed and
holds its resizes.

ReloadTest changes the file under a running session and sends SIGHUP: the
session goes on, the new limits and recording size apply, and a change of
stream.listen is refused with a log line while the old address keeps serving;
twenty reloads while four sessions stream 40 MiB each lose no byte.

MetricsTest scrapes /metrics after real sessions and finds every metric that
docs/metrics.md lists, and lists every crisp_* metric it finds there.

Usage: operations_test.py --crisp PATH --devapiserver PATH --cricall PATH
                          [unittest args]
"""

import glob
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import termios
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kubectl_exec_test as base  # noqa: E402  (Cluster)

ARGS = None
SPDY_KUBECTL = "1.27"
WS_KUBECTL = "1.33"

# kubectl_exec_test's crisp, with a short drain grace period.
DRAIN_CONFIG = base.CRISP_CONFIG.replace("  stream_creation_timeout: 5s\n",
                                         "  stream_creation_timeout: 5s\n"
                                         "  drain_grace_period: 4s\n")


def readyz(admin):
    """The /readyz status code."""
    try:
        with urllib.request.urlopen("http://%s/readyz" % admin, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def start_kubectl(cluster, version, *args):
    return subprocess.Popen(cluster.kubectl_argv(version, *args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cluster.kubectl_env(), start_new_session=True)


def finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class DrainTest(unittest.TestCase):

    def setUp(self):
        self.tmp = harness.TempDir()
        self.cluster = base.Cluster(self.tmp.path, DRAIN_CONFIG)

    def tearDown(self):
        self.cluster.stop()
        self.tmp.cleanup()

    def test_sigterm_drains_then_ends_what_is_left_with_a_message(self):
        cluster = self.cluster
        self.assertEqual(readyz(cluster.admin), 200)
        # One session per protocol still running at the end of the grace
        # period, one that ends inside it.
        short = start_kubectl(cluster, SPDY_KUBECTL, "exec", "demo", "--", "sh", "-c",
                              "sleep 2; echo finished in time")
        long_spdy = start_kubectl(cluster, SPDY_KUBECTL, "exec", "demo", "--", "sleep", "100")
        long_ws = start_kubectl(cluster, WS_KUBECTL, "exec", "demo", "--", "sleep", "100")
        self.assertEqual(cluster.wait_for_metric("crisp_sessions_active", 3), 3)

        began = time.monotonic()
        os.kill(cluster.crisp.pid, signal.SIGTERM)
        # Not ready at once.
        deadline = time.monotonic() + 1
        while readyz(cluster.admin) != 503 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(readyz(cluster.admin), 503)
        # No new session.
        refused = cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "true", timeout=20)
        self.assertNotEqual(refused.returncode, 0, refused)
        self.assertIn("crisp is shutting down and accepts no new exec sessions", refused.stderr,
                      refused)

        code, out, err = finish(short, 20)
        self.assertEqual((code, out), (0, "finished in time\n"), err)
        for proc in (long_spdy, long_ws):
            code, out, err = finish(proc, 20)
            self.assertNotEqual(code, 0, err)
            self.assertIn("crisp is shutting down: the session was ended at the end of the "
                          "drain grace period", err)
        ended = time.monotonic() - began
        self.assertGreaterEqual(ended, 3.5)
        # crisp then exits by itself, with 0.
        self.assertEqual(cluster.crisp._popen.wait(timeout=15), 0, cluster.crisp.logs())
        logs = cluster.crisp.logs()
        self.assertIn("received SIGTERM: draining", logs)
        self.assertIn("drain grace period over: ending 2 sessions", logs)


    def test_slow_reader_at_the_end_of_the_drain_gets_the_status(self):
        # A client that reads much slower than the command writes while the
        # grace period ends: its status goes out ahead of the output still
        # queued for it, and crisp keeps the connection while that client
        # still takes bytes, so kubectl reports the shutdown instead of a cut
        # transfer (or, over SPDY, a clean exit).
        #
        # Neither the status nor the close frame kubectl needs to read it
        # can overtake what the kernels and the API server already hold: two
        # TCP hops of autotuned buffers, 20 to 30 MB here. At 8 MB/s that is
        # 3 or 4 seconds of reading, inside the 5 s crisp gives closing
        # connections after the grace period.
        cluster = self.cluster
        env = dict(cluster.kubectl_env(), KUBECTL_REMOTE_COMMAND_WEBSOCKETS="true")
        proc = subprocess.Popen(
            cluster.kubectl_argv(WS_KUBECTL, "exec", "demo", "--", "head", "-c", "1000000000",
                                 "/dev/zero"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            start_new_session=True)
        try:
            self.assertEqual(cluster.wait_for_metric("crisp_sessions_active", 1), 1)
            os.kill(cluster.crisp.pid, signal.SIGTERM)
            received, zeros = base.read_at_rate(proc.stdout, 8 * 1000 * 1000, timeout=60)
            err = proc.stderr.read().decode(errors="replace")
            code = proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        self.assertTrue(zeros)
        self.assertLess(received, 1000000000)
        self.assertNotEqual(code, 0, err)
        self.assertIn("crisp is shutting down: the session was ended at the end of the "
                      "drain grace period", err, cluster.crisp.logs())
        self.assertEqual(cluster.crisp._popen.wait(timeout=20), 0, cluster.crisp.logs())


# kubectl_exec_test's crisp, with an audit log, recordings and a session limit.
OPS_CONFIG = base.CRISP_CONFIG.replace(
    "  stream_creation_timeout: 5s\n",
    "  stream_creation_timeout: 5s\n  max_sessions: 100\n").replace("runtime:\n", """audit:
  path: {dir}/audit.log
  max_bytes: 1048576
  max_files: 3
recording:
  dir: {dir}/recordings
  max_bytes: 1048576
  retention: 50
  input: true
runtime:
""")

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
AUDIT_START_KEYS = {"time", "event", "session_id", "connection_id", "operation", "protocol",
                    "pod_sandbox_id", "container_id", "command", "tty", "stdin",
                    "client_address", "client_subject"}
AUDIT_END_KEYS = AUDIT_START_KEYS | {"bytes_in", "bytes_out", "exit_code", "duration_seconds",
                                     "close_reason"}


def audit_records(directory):
    """Every audit record, oldest file first."""
    records = []
    paths = sorted(glob.glob(os.path.join(directory, "audit.log.*")), reverse=True)
    for path in paths + [os.path.join(directory, "audit.log")]:
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def wait_for_end(directory, command, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        ends = [r for r in audit_records(directory)
                if r["event"] == "session_end" and r["command"] == command]
        if ends or time.monotonic() > deadline:
            return ends
        time.sleep(0.05)


def read_cast(path):
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines[0], lines[1:]


def wait_for_terminal_size(term, want, timeout=15):
    """Asks the shell for its size until it answers `want` (b"40 100")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        marker = b"size-%d" % int(time.monotonic() * 1000)
        term.send("echo %s $(stty size)\n" % marker.decode())
        m = term.expect(marker + rb" (\d+ \d+)\r?\n")
        if m.group(1) == want:
            return m.group(1)
        time.sleep(0.2)
    return None


def wait_for_raw_terminal(term, timeout=15):
    """Waits until kubectl has put its terminal in raw mode: what is typed
    before that is echoed by the local terminal too, not only by the remote
    shell, and would show twice on the screen but once in the recording."""
    deadline = time.monotonic() + timeout
    while termios.tcgetattr(term.master)[3] & termios.ECHO:
        if time.monotonic() > deadline:
            raise AssertionError("kubectl never made its terminal raw")
        time.sleep(0.02)


def drain_pty(term, timeout=15):
    """Reads the terminal until kubectl closes it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([term.master], [], [], 0.5)
        if not ready:
            if term.proc.poll() is not None:
                return
            continue
        try:
            chunk = os.read(term.master, 65536)
        except OSError:
            return
        if not chunk:
            return
        term.output += chunk


class AuditAndRecordingTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = base.Cluster(cls.tmp.path, OPS_CONFIG)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop()
        # The audit log and recordings as Bazel test outputs
        # (bazel-testlogs/.../test.outputs), for a reader to look at.
        outputs = os.environ.get("TEST_UNDECLARED_OUTPUTS_DIR")
        if outputs:
            for path in [os.path.join(cls.tmp.path, "audit.log")] + \
                    glob.glob(os.path.join(cls.tmp.path, "recordings", "*.cast")):
                if os.path.exists(path):
                    shutil.copy(path, outputs)
        cls.tmp.cleanup()

    def test_audit_lines_field_by_field(self):
        for version, protocol in ((SPDY_KUBECTL, "spdy/v4.channel.k8s.io"),
                                  (WS_KUBECTL, "ws/v5.channel.k8s.io")):
            with self.subTest(kubectl=version):
                command = ["sh", "-c", "cat; echo err-%s >&2; exit 3" % version]
                result = self.cluster.kubectl(version, "exec", "-i", "demo", "--", *command,
                                              stdin_data=b"audit-in\n")
                self.assertEqual(result.returncode, 3, result)
                self.assertEqual(result.stdout, "audit-in\n")
                ends = wait_for_end(self.tmp.path, command)
                self.assertEqual(len(ends), 1, ends)
                end = ends[0]
                starts = [r for r in audit_records(self.tmp.path)
                          if r["event"] == "session_start" and
                          r["session_id"] == end["session_id"]]
                self.assertEqual(len(starts), 1)
                start = starts[0]
                self.assertEqual(set(start), AUDIT_START_KEYS)
                self.assertEqual(set(end), AUDIT_END_KEYS)
                for record in (start, end):
                    self.assertRegex(record["time"], TIME_RE)
                    self.assertEqual(record["operation"], "exec")
                    self.assertEqual(record["protocol"], protocol)
                    self.assertEqual(record["pod_sandbox_id"], "demo")
                    self.assertEqual(record["container_id"], "demo")
                    self.assertEqual(record["command"], command)
                    self.assertIs(record["tty"], False)
                    self.assertIs(record["stdin"], True)
                    self.assertRegex(record["client_address"], r"^127\.0\.0\.1:\d+$")
                    self.assertIsNone(record["client_subject"])
                self.assertLessEqual(start["time"], end["time"])
                self.assertEqual(end["bytes_in"], len(b"audit-in\n"))
                self.assertEqual(end["bytes_out"],
                                 len(b"audit-in\n") + len(("err-%s\n" % version).encode()))
                self.assertEqual(end["exit_code"], 3)
                self.assertEqual(end["close_reason"], "exited")
                self.assertGreater(end["duration_seconds"], 0)
                self.assertLess(end["duration_seconds"], 30)
        # No token anywhere: the stream URLs' last segment never appears.
        with open(os.path.join(self.tmp.path, "audit.log")) as f:
            text = f.read()
        self.assertNotIn("/exec/", text)
        self.assertNotIn("token", text)

    def test_recording_replays_the_terminal_and_its_resizes(self):
        before = set(glob.glob(os.path.join(self.tmp.path, "recordings", "*.cast")))
        term = base.PtyKubectl(self.cluster, SPDY_KUBECTL, ["exec", "-it", "demo", "--", "sh"],
                               rows=40, cols=100)
        try:
            wait_for_raw_terminal(term)
            self.assertEqual(wait_for_terminal_size(term, b"40 100"), b"40 100")
            term.send("echo rec-marker-$((6*7))\n")
            term.expect(rb"rec-marker-42")
            term.resize(50, 120)
            self.assertEqual(wait_for_terminal_size(term, b"50 120"), b"50 120")
            term.send("exit 0\n")
            drain_pty(term)
            self.assertEqual(term.wait(), 0)
        finally:
            term.kill()
        new = set(glob.glob(os.path.join(self.tmp.path, "recordings", "*.cast"))) - before
        self.assertEqual(len(new), 1, new)
        path = new.pop()
        ends = wait_for_end(self.tmp.path, ["sh"])
        self.assertTrue(any(e.get("recording") == path for e in ends), ends)
        header, events = read_cast(path)
        self.assertEqual(header["version"], 2)
        self.assertEqual(header["command"], "sh")
        self.assertIsInstance(header["timestamp"], int)
        self.assertAlmostEqual(header["timestamp"], time.time(), delta=120)
        replay = "".join(e[2] for e in events if e[1] == "o").encode()
        self.assertEqual(replay, term.output)
        sizes = ["%dx%d" % (header["width"], header["height"])] + \
            [e[2] for e in events if e[1] == "r"]
        self.assertIn("100x40", sizes)
        self.assertEqual(sizes[-1], "120x50")
        self.assertLess(sizes.index("100x40"), len(sizes) - 1)
        typed = "".join(e[2] for e in events if e[1] == "i")
        self.assertIn("echo rec-marker-$((6*7))", typed)
        times = [e[0] for e in events]
        self.assertEqual(times, sorted(times))


RELOAD_CONFIG = OPS_CONFIG.replace("max_sessions: 100", "max_sessions: {max_sessions}") \
    .replace("  max_bytes: 1048576\n  retention", "  max_bytes: {recording_bytes}\n  retention")


class ReloadTest(unittest.TestCase):

    def setUp(self):
        self.tmp = harness.TempDir()
        self.cluster = base.Cluster(
            self.tmp.path,
            RELOAD_CONFIG.replace("{max_sessions}", "100").replace("{recording_bytes}",
                                                                    "1048576"))

    def tearDown(self):
        self.cluster.stop()
        self.tmp.cleanup()

    def write_config(self, max_sessions, recording_bytes, listen="127.0.0.1:0"):
        text = RELOAD_CONFIG.replace("{max_sessions}", str(max_sessions)) \
            .replace("{recording_bytes}", str(recording_bytes)) \
            .replace("listen: 127.0.0.1:0\n  stream_creation", "listen: %s\n  stream_creation" % listen)
        with open(os.path.join(self.tmp.path, "crisp.yaml"), "w") as f:
            f.write(text.format(dir=self.tmp.path, log_level="debug"))

    def wait_for_log(self, pattern, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.cluster.crisp.stderr_path, errors="replace") as f:
                m = re.search(pattern, f.read())
            if m:
                return m
            time.sleep(0.05)
        self.fail("no log line %r\n%s" % (pattern, self.cluster.crisp.logs()))

    def test_sighup_applies_live_keys_keeps_sessions_and_refuses_the_listen_address(self):
        cluster = self.cluster
        running = start_kubectl(cluster, SPDY_KUBECTL, "exec", "-i", "demo", "--", "sh", "-c",
                                "sleep 3; echo survived")
        self.assertEqual(cluster.wait_for_metric("crisp_sessions_active", 1), 1)
        self.write_config(max_sessions=1, recording_bytes=4096, listen="127.0.0.1:1")
        os.kill(cluster.crisp.pid, signal.SIGHUP)
        self.wait_for_log(r"reload: stream\.listen cannot change while crisp runs \(restart to "
                          r"apply it\); still \"127\.0\.0\.1:\d+\", not \"127\.0\.0\.1:1\"")
        self.wait_for_log(r"reload applied: .*log\.level=debug.*stream\.max_sessions=1")
        self.assertEqual(cluster.wait_for_metric("crisp_config_reloads_total", 1,
                                                 labels={"result": "partial"}), 1)
        # The new limit is in effect while the old session runs.
        refused = cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "true", timeout=20)
        self.assertNotEqual(refused.returncode, 0, refused)
        self.assertIn("the limit is 1, stream.max_sessions", refused.stderr)
        code, out, err = finish(running, 20)
        self.assertEqual((code, out), (0, "survived\n"), err)
        # The old address still serves; a TTY session's recording now stops at
        # 4096 bytes while the session goes on to the end.
        before = set(glob.glob(os.path.join(self.tmp.path, "recordings", "*.cast")))
        term = base.PtyKubectl(cluster, SPDY_KUBECTL, ["exec", "-it", "demo", "--", "seq", "1",
                                                       "3000"], rows=24, cols=80)
        try:
            drain_pty(term)
            self.assertEqual(term.wait(), 0)
        finally:
            term.kill()
        self.assertIn(b"\r\n3000\r\n", term.output)
        new = set(glob.glob(os.path.join(self.tmp.path, "recordings", "*.cast"))) - before
        self.assertEqual(len(new), 1)
        path = new.pop()
        self.assertLessEqual(os.path.getsize(path), 4096)
        _, events = read_cast(path)
        self.assertEqual(events[-1][1], "m")
        self.assertEqual(events[-1][2], "recording stopped: recording.max_bytes (4096) reached")
        self.wait_for_log(r"recording .*\.cast stopped at \d+ bytes: recording\.max_bytes "
                          r"reached; the session goes on")

    def test_reloads_while_sessions_stream_lose_no_byte(self):
        cluster = self.cluster
        # 40 MiB each, spread over about 8 s so that every reload lands
        # while the four sessions stream.
        size = 40 << 20
        script = "for i in $(seq 40); do head -c 1048576 /dev/zero; sleep 0.2; done"
        streams = [start_kubectl(cluster, version, "exec", "demo", "--", "sh", "-c", script)
                   for version in (SPDY_KUBECTL, SPDY_KUBECTL, WS_KUBECTL, WS_KUBECTL)]
        self.assertEqual(cluster.wait_for_metric("crisp_sessions_active", 4), 4)
        reloads = 20
        for i in range(reloads):
            self.write_config(max_sessions=101 + i, recording_bytes=1048576 + i)
            os.kill(cluster.crisp.pid, signal.SIGHUP)
            self.wait_for_log(r"reload applied: .*stream\.max_sessions=%d" % (101 + i))
        self.assertEqual(cluster.wait_for_metric("crisp_config_reloads_total", reloads,
                                                 labels={"result": "applied"}), reloads)
        self.assertEqual(cluster.metric("crisp_sessions_active"), 4,
                         "the sessions ended before the reloads did")
        for proc in streams:
            try:
                out, err = proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            self.assertEqual((proc.returncode, len(out), out.count(b"\0")), (0, size, size),
                             err.decode(errors="replace"))

    def test_a_file_that_does_not_load_is_refused_whole(self):
        with open(os.path.join(self.tmp.path, "crisp.yaml"), "a") as f:
            f.write("bogus: 1\n")
        os.kill(self.cluster.crisp.pid, signal.SIGHUP)
        self.wait_for_log(r"reload refused, the running configuration stays: .*bogus")
        result = self.cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "echo", "still")
        self.assertEqual((result.returncode, result.stdout), (0, "still\n"), result)


class MetricsTest(unittest.TestCase):

    def test_every_documented_metric_is_scraped(self):
        with open(ARGS.metrics_doc) as f:
            documented = set(re.findall(r"^\| `(crisp_\w+)`", f.read(), re.M))
        self.assertGreater(len(documented), 20)
        with harness.TempDir() as tmp:
            cluster = base.Cluster(tmp.path, OPS_CONFIG)
            try:
                result = cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "echo", "m")
                self.assertEqual(result.returncode, 0, result)
                result = cluster.kubectl(WS_KUBECTL, "exec", "demo", "--", "echo", "m")
                self.assertEqual(result.returncode, 0, result)
                with urllib.request.urlopen("http://%s/metrics" % cluster.admin,
                                            timeout=5) as r:
                    text = r.read().decode()
            finally:
                cluster.stop()
        scraped = set(re.findall(r"^# TYPE (crisp_\w+) ", text, re.M))
        self.assertEqual(sorted(documented - scraped), [], "documented but not scraped")
        self.assertEqual(sorted(scraped - documented), [], "scraped but not documented")
        # The histograms carry observations from the sessions above.
        for name in ("crisp_session_setup_seconds", "crisp_session_duration_seconds",
                     "crisp_session_payload_bytes"):
            m = re.search(r'^%s_count\{operation="exec"\} (\d+)$' % name, text, re.M)
            self.assertTrue(m and int(m.group(1)) >= 2, name)


def main():
    harness.test_main(("crisp", "devapiserver", "cricall", "metrics_doc"), share_with=(base,))


if __name__ == "__main__":
    main()
