"""kubectl exec and attach through crisp, end to end.

Real kubectl binaries talk to the development API server, which calls crisp's
CRI socket for a stream URL and hands the upgrade to crisp's stream server;
crisp runs the commands with its embedded host runtime. Every assertion is on
what a kubectl user sees: output bytes, exit codes, timing bounds.

Usage: kubectl_exec_test.py --crisp PATH --devapiserver PATH --cricall PATH
                            --fake-runtime PATH [unittest args]
"""

import fcntl
import hashlib
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ARGS = None
START_TIMEOUT = 20
KUBECTL_TIMEOUT = 60
# The SPDY-only client, and the newest one (WebSocket first, then SPDY).
SPDY_KUBECTL = "1.27"
NEWEST_KUBECTL = "1.33"

CRISP_CONFIG = """
cri:
  listen: {dir}/crisp.sock
stream:
  listen: 127.0.0.1:0
  stream_creation_timeout: 5s
admin:
  listen: 127.0.0.1:0
log:
  level: {log_level}
runtime:
  embedded:
    containers:
      - id: demo
        command: ["/bin/sh"]
        working_dir: /tmp
        env: ["PS1=demo$ "]
        tty: true
        stdin: true
      - id: echoer
        command: ["/bin/cat"]
        stdin: true
"""


class Cluster:
    """crisp with its embedded runtime plus the development API server."""

    def __init__(self, tmp, config_template=None):
        """config_template: crisp's YAML with {dir} and {log_level} to fill in;
        CRISP_CONFIG when None."""
        self.dir = tmp
        config = os.path.join(tmp, "crisp.yaml")
        with open(config, "w") as f:
            f.write((config_template or CRISP_CONFIG).format(dir=tmp, log_level=os.environ.get("CRISP_TEST_LOG_LEVEL", "info")))
        self.cri_socket = os.path.join(tmp, "crisp.sock")
        self.crisp = harness.Process("crisp", [ARGS.crisp, "--config", config], tmp).start()
        ready = self._wait_for_log(self.crisp, r"crisp ready: .* admin (\S+)")
        self.admin = ready.group(1)
        self.start_devapiserver()

    def start_devapiserver(self):
        """The development API server on self.cri_socket, and its kubeconfig."""
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        ready_file = os.path.join(self.dir, "devapiserver.ready")
        self.devapi = harness.Process("devapiserver", [
            ARGS.devapiserver, "--listen", "127.0.0.1:0", "--cri", self.cri_socket,
            "--kubeconfig", self.kubeconfig, "--ready-file", ready_file], self.dir).start()
        self.devapi.wait_for_file(ready_file, START_TIMEOUT)

    @staticmethod
    def _wait_for_log(process, pattern):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with open(process.stderr_path, "r", errors="replace") as f:
                match = re.search(pattern, f.read())
            if match:
                return match
            process._check_alive(pattern)
            time.sleep(0.05)
        raise harness.HarnessError("no line matching %r\n%s" % (pattern, process.logs()))

    def stop(self):
        self.devapi.stop()
        return self.crisp.stop()

    def metric(self, name, labels=None):
        """The sum of every sample of `name` whose labels include `labels`."""
        with urllib.request.urlopen("http://%s/metrics" % self.admin, timeout=5) as r:
            text = r.read().decode()
        total = 0
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            if labels and not all('%s="%s"' % kv in (m.group(2) or "") for kv in labels.items()):
                continue
            total += float(m.group(3))
        return total

    def wait_for_metric(self, name, want, timeout=10, labels=None):
        deadline = time.monotonic() + timeout
        while True:
            got = self.metric(name, labels)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def kubectl_argv(self, version, *args):
        return [harness.kubectl_path(version), "--kubeconfig", self.kubeconfig] + list(args)

    def kubectl(self, version, *args, stdin_data=None, timeout=KUBECTL_TIMEOUT, env=None):
        return harness.run_kubectl(version, list(args), self.kubeconfig, timeout,
                                   stdin_data=stdin_data, env=env)

    def kubectl_env(self):
        return {"PATH": "/usr/bin:/bin", "HOME": self.dir, "KUBECONFIG": self.kubeconfig}

    def cricall(self, *args):
        return subprocess.run([ARGS.cricall, "--socket", self.cri_socket] + list(args),
                              capture_output=True, text=True, timeout=20)


class PtyKubectl:
    """kubectl in a pseudo-terminal of a given size, for -it sessions."""

    def __init__(self, cluster, version, args, rows, cols, env=None):
        """env: extra environment variables for kubectl."""
        self.master, slave = pty.openpty()
        self.set_size(rows, cols)
        full_env = cluster.kubectl_env()
        full_env.update(env or {})
        self.proc = subprocess.Popen(cluster.kubectl_argv(version, *args), stdin=slave,
                                     stdout=slave, stderr=slave, env=full_env,
                                     start_new_session=True)
        os.close(slave)
        self.output = b""

    def set_size(self, rows, cols):
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def resize(self, rows, cols):
        self.set_size(rows, cols)
        self.proc.send_signal(signal.SIGWINCH)

    def send(self, text):
        os.write(self.master, text.encode())

    def expect(self, pattern, timeout=15):
        """Reads until `pattern` (a regex on bytes) matches the output so far."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.output)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r in %r" % (pattern, self.output))
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError("EOF before %r in %r" % (pattern, self.output))
                self.output += chunk

    def wait(self, timeout=15):
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            os.close(self.master)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def read_at_rate(stream, bytes_per_second, timeout):
    """Reads `stream` to EOF no faster than `bytes_per_second`. Returns the
    byte count and whether every byte was zero."""
    start = time.monotonic()
    received = 0
    zeros = True
    while True:
        chunk = stream.read1(64 * 1024)
        if not chunk:
            return received, zeros
        zeros = zeros and chunk.count(0) == len(chunk)
        received += len(chunk)
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            raise AssertionError("still reading after %d s (%d bytes)" % (timeout, received))
        ahead = received / bytes_per_second - elapsed
        if ahead > 0:
            time.sleep(ahead)


class KubectlExecTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = Cluster(cls.tmp.path)

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        # crisp must stop cleanly on SIGTERM (exit 0), not by the harness's SIGKILL.
        assert code == 0, "crisp exited with %s" % code

    def setUp(self):
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0), 0,
                         "sessions left over from an earlier test")

    def tearDown(self):
        # Whatever a test did, crisp ends every session it opened.
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0), 0,
                         "sessions still active after the test")

    def test_echo_and_exit_code_on_every_kubectl(self):
        for version in harness.installed_kubectl_versions():
            with self.subTest(kubectl=version):
                r = self.cluster.kubectl(version, "exec", "demo", "--", "echo", "hello")
                self.assertEqual((r.returncode, r.stdout), (0, "hello\n"), str(r))
                r = self.cluster.kubectl(version, "exec", "demo", "--", "sh", "-c", "exit 7")
                self.assertEqual(r.returncode, 7, str(r))
                self.assertIn("command terminated with exit code 7", r.stderr)

    def test_exit_codes_reach_kubectl(self):
        # streaming case B03: the code itself, not 1; signals as 128+N.
        for script, code in (("exit 5", 5), ("true", 0), ("exit 255", 255),
                             ("kill -9 $$", 137)):
            with self.subTest(script=script):
                r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "sh", "-c", script)
                self.assertEqual(r.returncode, code, str(r))

    def test_piped_stdin_reaches_eof(self):
        # streaming case B01: stdin's end closes the process's stdin, output goes on.
        start = time.monotonic()
        r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "-i", "demo", "--", "sh", "-c",
                                 "cat; exit 3", stdin_data=b"a\nb\n", timeout=10)
        self.assertEqual((r.returncode, r.stdout, r.stderr.count("exit code 3")),
                         (3, "a\nb\n", 1), str(r))
        self.assertLess(time.monotonic() - start, 5)

    def test_64_mib_of_stdin_comes_back_byte_exact(self):
        # streaming case B17, larger: every stdin byte, in order.
        data = os.urandom(64 << 20)
        proc = subprocess.run(self.cluster.kubectl_argv(SPDY_KUBECTL, "exec", "-i", "demo",
                                                        "--", "cat"),
                              input=data, capture_output=True, env=self.cluster.kubectl_env(),
                              timeout=KUBECTL_TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proc.stdout), len(data))
        self.assertEqual(hashlib.sha256(proc.stdout).hexdigest(),
                         hashlib.sha256(data).hexdigest())

    def test_large_stdin_reaches_a_slow_reader_whole(self):
        # Over plain TCP stdin is spliced from the socket into the command's
        # pipe; while the command reads nothing the client is held back, and
        # then every byte arrives in order.
        data = os.urandom(48 << 20)
        r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "-i", "demo", "--", "sh", "-c",
                                 "sleep 1; head -c 1000000 >/dev/null; sleep 1; sha256sum",
                                 stdin_data=data, timeout=KUBECTL_TIMEOUT)
        self.assertEqual(r.returncode, 0, str(r))
        self.assertEqual(r.stdout.split()[0], hashlib.sha256(data[1000000:]).hexdigest())

    def test_large_stdout_is_never_truncated(self):
        # streaming case B05: all output before the status, every time.
        for _ in range(5):
            proc = subprocess.run(self.cluster.kubectl_argv(SPDY_KUBECTL, "exec", "demo", "--",
                                                            "seq", "1", "2000000"),
                                  capture_output=True, env=self.cluster.kubectl_env(),
                                  timeout=KUBECTL_TIMEOUT)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual(len(proc.stdout), 14888896)
            self.assertTrue(proc.stdout.endswith(b"\n2000000\n"))

    def test_stdout_and_stderr_stay_apart(self):
        # streaming case B13, without a TTY: never mixed.
        r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "sh", "-c",
                                 "echo out; echo err >&2")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "out\n", "err\n"), str(r))

    def test_tty_request_without_a_terminal_prints_both_lines(self):
        # streaming case B13: `-t` with stdin from /dev/null. kubectl drops the TTY
        # (its input is not a terminal) and both lines must still arrive.
        r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "-t", "demo", "--", "sh", "-c",
                                 "echo out; echo err >&2", timeout=10)
        self.assertEqual((r.returncode, r.stdout), (0, "out\n"), str(r))
        self.assertIn("err\n", r.stderr)

    def test_tty_session_carries_stderr_through_the_terminal(self):
        # streaming case B13 with a real terminal: no stderr stream exists, the
        # command's stderr shares the pty.
        term = PtyKubectl(self.cluster, SPDY_KUBECTL,
                          ["exec", "-it", "demo", "--", "sh", "-c", "echo out; echo err >&2"],
                          rows=24, cols=80)
        try:
            term.expect(rb"out\r\nerr\r\n")
            self.assertEqual(term.wait(), 0)
        finally:
            term.kill()

    def test_missing_binary_fails_fast(self):
        # streaming case B20, with and without a TTY.
        for tty in ([], ["-t"]):
            with self.subTest(tty=bool(tty)):
                start = time.monotonic()
                r = self.cluster.kubectl(SPDY_KUBECTL, "exec", *tty, "demo", "--",
                                         "/no/such/binary", timeout=10)
                self.assertNotEqual(r.returncode, 0, str(r))
                self.assertIn("/no/such/binary", r.stderr)
                self.assertLess(time.monotonic() - start, 5)

    def test_interactive_tty_with_resize(self):
        for version in (SPDY_KUBECTL, NEWEST_KUBECTL):
            with self.subTest(kubectl=version):
                term = PtyKubectl(self.cluster, version, ["exec", "-it", "demo", "--", "sh"],
                                  rows=40, cols=100)
                try:
                    # kubectl sends the terminal size beside the first input,
                    # not necessarily before it (kubelet behaves the same), so
                    # each size is polled for rather than read once.
                    self.assertEqual(wait_for_terminal_size(term, b"40 100"), b"40 100")
                    term.resize(50, 120)
                    self.assertEqual(wait_for_terminal_size(term, b"50 120"), b"50 120")
                    term.send("exit 4\n")
                    self.assertEqual(term.wait(), 4)
                finally:
                    term.kill()

    def test_attach_to_a_terminal_container(self):
        term = PtyKubectl(self.cluster, SPDY_KUBECTL, ["attach", "-it", "demo"], rows=24,
                          cols=80)
        try:
            term.send("echo attached-$((20+22))\n")
            term.expect(rb"attached-42")
        finally:
            term.kill()

    def test_attach_without_tty_carries_stdin_and_stdout(self):
        proc = subprocess.Popen(self.cluster.kubectl_argv(SPDY_KUBECTL, "attach", "-i",
                                                          "echoer"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.cluster.kubectl_env(),
                                start_new_session=True)
        try:
            # kubectl may print a hint on stderr first; stdout carries only cat's echo.
            seen = harness.write_until_echoed(proc, b"ping-1\n")
            self.assertIn(b"ping-1\n", seen)
            self.assertEqual(self.cluster.metric("crisp_sessions_active",
                                                 {"operation": "attach"}), 1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        # The container outlives the detached client.
        r = self.cluster.cricall("exec", "echoer", "--", "true")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_process_killed_from_outside_ends_the_session(self):
        # streaming case B19 (variant for host processes): stdin held open.
        pid_file = os.path.join(self.tmp.path, "victim.pid")
        keep_open = subprocess.Popen(["sleep", "1000"], stdout=subprocess.PIPE)
        proc = subprocess.Popen(self.cluster.kubectl_argv(
            SPDY_KUBECTL, "exec", "-i", "demo", "--", "sh", "-c",
            "echo $$ > %s; exec cat" % pid_file), stdin=keep_open.stdout,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.cluster.kubectl_env())
        try:
            deadline = time.monotonic() + 10
            while not read_file(pid_file).strip():
                self.assertLess(time.monotonic(), deadline, "exec never started")
                time.sleep(0.05)
            os.kill(int(read_file(pid_file)), signal.SIGKILL)
            out, err = proc.communicate(timeout=5)
            self.assertEqual(proc.returncode, 137, err)
        finally:
            keep_open.kill()
            keep_open.wait()
            keep_open.stdout.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_stalled_reader_is_paused_and_others_go_on(self):
        # streaming case B12: a client that stops reading must not wedge crisp.
        marker = "crisp-e2e-flood-%d" % os.getpid()
        flood = subprocess.Popen(self.cluster.kubectl_argv(
            SPDY_KUBECTL, "exec", "demo", "--", "sh", "-c",
            ": %s; while :; do echo XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX; done" % marker),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.cluster.kubectl_env(),
            start_new_session=True)
        try:
            time.sleep(3)  # let every buffer on the path fill up
            rss_before = harness.rss_kib(self.cluster.crisp.pid)
            time.sleep(2)
            rss_after = harness.rss_kib(self.cluster.crisp.pid)
            self.assertLess(rss_after - rss_before, 16 * 1024, "crisp keeps buffering")
            start = time.monotonic()
            r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "true", timeout=10)
            self.assertEqual(r.returncode, 0, str(r))
            self.assertLess(time.monotonic() - start, 5)
        finally:
            os.killpg(flood.pid, signal.SIGKILL)
            flood.wait()
        # The abandoned session's process is killed with it.
        deadline = time.monotonic() + 10
        while processes_matching(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(processes_matching(marker), [])

    def test_slow_reader_with_keepalive_pings_gets_every_byte(self):
        # streaming case B15 through kubectl: while bulk output waits behind a
        # reader at about 2 MB/s, kubectl keeps pinging (every 5 s); crisp answers
        # each ping ahead of the queued output, so kubectl neither tears the
        # connection down nor cuts the output short.
        total = 36 * 1000 * 1000  # about 18 s at the reader's pace
        for protocol, websockets in (("spdy", "false"), ("websocket", "true")):
            with self.subTest(protocol=protocol):
                pings = self.cluster.metric("crisp_stream_pings_total", {"protocol": protocol})
                env = dict(self.cluster.kubectl_env(),
                           KUBECTL_REMOTE_COMMAND_WEBSOCKETS=websockets)
                proc = subprocess.Popen(
                    self.cluster.kubectl_argv(NEWEST_KUBECTL, "exec", "demo", "--",
                                              "head", "-c", str(total), "/dev/zero"),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                    start_new_session=True)
                try:
                    received, zeros = read_at_rate(proc.stdout, 2 * 1000 * 1000, timeout=90)
                    stderr = proc.stderr.read().decode(errors="replace")
                    code = proc.wait(timeout=10)
                finally:
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    proc.stdout.close()
                    proc.stderr.close()
                self.assertEqual((code, received, zeros), (0, total, True), stderr)
                # The transfer took long enough for kubectl to ping, and it did.
                # (Over SPDY kubectl waits for each reply before its next ping,
                # and its single frame reader is busy with the queued output, so
                # one ping is what crisp sees; the raw-frame tests time the
                # reply itself.)
                self.assertGreaterEqual(
                    self.cluster.metric("crisp_stream_pings_total", {"protocol": protocol}),
                    pings + 1)

    def test_used_token_gets_404(self):
        r = self.cluster.cricall("exec", "demo", "--", "true")
        self.assertEqual(r.returncode, 0, r.stderr)
        url = r.stdout.strip()
        self.assertRegex(url, r"^http://127\.0\.0\.1:\d+/exec/[A-Za-z0-9_-]{22}$")
        for attempt in range(2):
            status, body = spdy_upgrade(url)
            if attempt == 0:
                self.assertEqual(status, 101)
            else:
                self.assertEqual((status, body), (404, b"404 page not found\n"))

    def test_invalid_requests_get_kubelets_codes(self):
        r = self.cluster.cricall("exec", "nosuch", "--", "true")
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("NOT_FOUND: "), r.stderr)
        r = self.cluster.cricall("exec", "--tty", "--stderr", "demo", "--", "true")
        self.assertEqual(r.stderr, "INVALID_ARGUMENT: tty and stderr cannot both be true\n")
        r = self.cluster.cricall("exec", "--no-stdout", "demo", "--", "true")
        self.assertEqual(r.stderr,
                         "INVALID_ARGUMENT: one of stdin, stdout, or stderr must be set\n")
        r = self.cluster.cricall("raw", "/runtime.v1.RuntimeService/RunPodSandbox")
        self.assertEqual(r.stderr, "UNIMPLEMENTED: crisp's embedded runtime does not implement "
                         "/runtime.v1.RuntimeService/RunPodSandbox\n")

    def test_metrics_count_sessions_and_calls(self):
        before = self.cluster.metric("crisp_sessions_total", {"operation": "exec"})
        r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "true")
        self.assertEqual(r.returncode, 0, str(r))
        self.assertEqual(self.cluster.wait_for_metric(
            "crisp_sessions_total", before + 1, labels={"operation": "exec"}), before + 1)
        self.assertGreater(self.cluster.metric("crisp_cri_calls_total",
                                               {"method": "Exec", "code": "OK"}), 0)
        self.assertGreater(self.cluster.metric("crisp_tokens_issued_total"), 0)


class PassthroughTest(unittest.TestCase):
    """crisp in front of another runtime forwards the calls it does not serve."""

    def test_version_and_unknown_methods_reach_the_upstream(self):
        with harness.TempDir() as tmp:
            upstream_socket = os.path.join(tmp.path, "runtime.sock")
            upstream = harness.Process("fake_runtime", [ARGS.fake_runtime, upstream_socket],
                                       tmp.path).start()
            try:
                upstream.wait_for_file(upstream.stdout_path, START_TIMEOUT)
                config = os.path.join(tmp.path, "crisp.yaml")
                with open(config, "w") as f:
                    f.write("cri:\n  listen: %s/crisp.sock\n  upstream: %s\n"
                            "stream:\n  listen: 127.0.0.1:0\n" % (tmp.path, upstream_socket))
                crisp = harness.Process("crisp", [ARGS.crisp, "--config", config],
                                        tmp.path).start()
                try:
                    Cluster._wait_for_log(crisp, r"crisp ready")
                    run = lambda *a: subprocess.run(
                        [ARGS.cricall, "--socket", os.path.join(tmp.path, "crisp.sock")] +
                        list(a), capture_output=True, text=True, timeout=20)
                    r = run("version")
                    self.assertEqual((r.returncode, r.stdout), (0, "fake-runtime 9.9.9 v1\n"),
                                     r.stderr)
                    r = run("raw", "/runtime.v1.RuntimeService/SomeFutureMethod")
                    self.assertEqual(r.stderr, "UNIMPLEMENTED: fake-runtime does not implement "
                                     "/runtime.v1.RuntimeService/SomeFutureMethod\n")
                    # The upstream vanishes: a clear error, crisp stays up.
                    upstream.stop()
                    r = run("version")
                    self.assertEqual(r.returncode, 1)
                    self.assertTrue(r.stderr.startswith("UNAVAILABLE: "), r.stderr)
                    self.assertIn(upstream_socket, r.stderr)
                    self.assertTrue(crisp.running())
                finally:
                    self.assertEqual(crisp.stop(), 0)
            finally:
                upstream.stop()


class ConfigCheckTest(unittest.TestCase):

    def test_check_config_names_file_line_and_key(self):
        with harness.TempDir() as tmp:
            path = os.path.join(tmp.path, "bad.yaml")
            with open(path, "w") as f:
                f.write("cri:\n  listen: /tmp/x.sock\nstream:\n  listen: nonsense\n")
            r = subprocess.run([ARGS.crisp, "--check-config", path], capture_output=True,
                               text=True, timeout=10)
            self.assertEqual(r.returncode, 1)
            self.assertIn("%s:4: stream.listen: " % path, r.stderr)
            good = os.path.join(tmp.path, "good.yaml")
            with open(good, "w") as f:
                f.write("cri:\n  listen: /tmp/x.sock\n")
            r = subprocess.run([ARGS.crisp, "--check-config", good], capture_output=True,
                               text=True, timeout=10)
            self.assertEqual((r.returncode, r.stdout), (0, "%s: ok\n" % good), r.stderr)


def spdy_upgrade(url):
    """POSTs a SPDY/3.1 upgrade offering v4 to `url`; returns (status, body)."""
    m = re.match(r"^http://([^/:]+):(\d+)(/.*)$", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3)
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(("POST %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: Upgrade\r\n"
                   "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
                   "Content-Length: 0\r\n\r\n" % (path, host, port)).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        if status != 101:
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                chunk = s.recv(4096)
                if not chunk:
                    break
                body += chunk
        return status, body


def wait_for_terminal_size(term, want, timeout=10):
    """Asks the shell in `term` for `stty size` until it answers `want` or
    `timeout` seconds pass; returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        # Each round starts after the shell's prompt, so the answer read is the
        # one to this round's question.
        term.expect(rb"demo\$ $")
        term.output = b""
        term.send("stty size\n")
        answer = term.expect(rb"(\d+ \d+)\r\n").group(1)
        if answer == want or time.monotonic() > deadline:
            return answer


def read_file(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def processes_matching(text):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def main():
    harness.test_main(("crisp", "devapiserver", "cricall", "fake_runtime"))


if __name__ == "__main__":
    main()
