"""crisp in front of a real containerd, with real kubectl, end to end.

A private containerd (containerd_env.py: its own root, state and socket under
a temporary directory; images built from busybox-static; host-network pods)
runs one pod of runc containers. crisp forwards every CRI call to it
(cri.upstream), answers Exec, Attach and PortForward with its own URL, and
bridges each stream to containerd's stream server. The development API server
sits in front of crisp, and kubectl execs, attaches and port-forwards into the
containers:
- kubectl 1.27 (SPDY only);
- kubectl 1.33 with KUBECTL_REMOTE_COMMAND_WEBSOCKETS and
  KUBECTL_PORT_FORWARD_WEBSOCKETS "false" (SPDY) and "true" (WebSocket v5,
  and SPDY tunnelled in WebSocket for port-forward).

Every cell checks that its stream went through crisp over the protocol
expected (crisp_sessions_total by protocol) and on to containerd (the
runtime-side upgrades crisp made), that it reached the container (a file only
the container's root filesystem has), and that crisp holds nothing afterwards:
no session, no token, no connection to the runtime, no descriptor beyond its
baseline.

When containerd cannot run here (not root, packages missing and not
installable, runc unable to start a container), the tests are skipped and the
reason is printed; any other failure fails them, with containerd's and crisp's
logs.

With --backend containerd (cri.backend), crisp answers Exec and PortForward
itself, runs exec sessions through containerd's task API and connects
forwarded ports inside the pod sandbox's network namespace: the exec and
port-forward cells run in that mode too, and check that crisp made no upgrade
to containerd's stream server for them. Attach still goes through the stream
server and is left to the default mode. That mode also checks that the next
crisp removes the FIFO directory of an exec crisp was killed under, and ends
the exec's process (and no other client's exec).

Usage: containerd_test.py --crisp PATH --devapiserver PATH --cricall PATH
                          [--backend stream-server|containerd] [unittest args]
"""

import argparse
import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_env  # noqa: E402
import harness  # noqa: E402
import kubectl_exec_test as exec_base  # noqa: E402
import kubectl_portforward_test as pf  # noqa: E402
# The kubectl toggles, crisp's protocol labels, and what each kubectl
# version negotiates per toggle value.
from interop_matrix_test import (EXPECTED, PF_TOGGLE, RC_TOGGLE, SPDY_PF, SPDY_V4,  # noqa: E402
                                 WS_TUNNEL, WS_V5)

ARGS = None
KUBECTL_TIMEOUT = 60



class Variant:
    """A kubectl and the protocols it speaks to crisp with `env`."""

    def __init__(self, name, version, env, remotecommand, portforward):
        self.name = name
        self.version = version
        self.env = env
        self.remotecommand = remotecommand
        self.portforward = portforward


# kubectl 1.27 reads neither toggle.
VARIANTS = [
    Variant("1.27 spdy", "1.27", {}, SPDY_V4, SPDY_PF),
    Variant("1.33 spdy", "1.33", {RC_TOGGLE: "false", PF_TOGGLE: "false"}, SPDY_V4, SPDY_PF),
    Variant("1.33 websocket", "1.33", {RC_TOGGLE: "true", PF_TOGGLE: "true"}, WS_V5, WS_TUNNEL),
]
VERSIONS = ["1.27", "1.33"]

# crisp in front of containerd; {upstream} is containerd's socket.
CRISP_CONFIG = """
cri:
  listen: {{dir}}/crisp.sock
  upstream: {upstream}
  backend: {backend}
stream:
  listen: 127.0.0.1:0
  stream_creation_timeout: 10s
  drain_grace_period: 1s
admin:
  listen: 127.0.0.1:0
log:
  level: {{log_level}}
runtime:
  stream_server:
    connect_timeout: 5s
    upgrade_timeout: 10s
  containerd:
    fifo_dir: {{dir}}/exec-fifos
"""

# A word only the exec container's root filesystem holds (written by its own
# command at start): what an exec reads there proves where it ran.
MARKER = "ctr-" + os.urandom(6).hex()
# What every container's image has and the host does not.
IMAGE_FILE = "/var/www/index.html"
IMAGE_FILE_CONTENT = "crisp e2e\n"

# The pod every test uses, one container per role.
POD = "e2e"
CONTAINERS = [
    # exec target.
    ("work", ["/bin/sh", "-c", "echo %s > /marker && exec sleep 2147483647" % MARKER], {}),
    # attach -it target: an interactive shell on a terminal.
    ("shell", ["/bin/sh"], {"tty": True, "stdin": True}),
    # attach target without a terminal: a line every 100 ms.
    ("ticker", ["/bin/sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done"],
     {}),
]
# Served by the web container's httpd and fetched through port-forward.
BLOB = os.urandom(6 << 20)


def crisp_config(upstream):
    return CRISP_CONFIG.format(upstream=upstream, backend=backend())


# cri.backend; --backend sets it (the scripts that reuse this module, the
# restart test and the bench, keep the default).
BACKEND = "stream-server"


def backend():
    return BACKEND


def containerd_backend():
    return backend() == "containerd"


# The cells of the containerd backend: crisp runs these sessions itself.
CONTAINERD_BACKEND_CELLS = ("test_exec_", "test_port_forward_", "test_stream_urls_are_crisps",
                            "test_check_config_asks_containerd")
# The operations crisp serves without containerd's stream server in that mode.
CONTAINERD_BACKEND_OPERATIONS = ("exec", "portforward")
# The cells that check what only that mode does.
CONTAINERD_ONLY_CELLS = ("test_check_config_asks_containerd",
                         "test_exec_fifo_directories_of_a_killed_crisp_go_at_start",
                         "test_exec_processes_of_a_killed_crisp_end_at_start")


def skip(reason):
    """Skips the tests, with the reason on stderr and in Bazel's test warnings."""
    containerd_env.report_skip(reason)
    raise unittest.SkipTest(reason)


class Environment:
    """containerd with the pod, crisp and the development API server."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.containerd = containerd_env.Containerd(os.path.join(tmp, "containerd"),
                                                    ARGS.cricall)
        self.cluster = None
        self.web_port = None
        self.pod = None

    def start(self):
        """Raises unittest.SkipTest when containerd cannot run here."""
        try:
            self.containerd.start()
            self.web_port = containerd_env.free_port()
            web = ("web", ["httpd", "-f", "-p", "127.0.0.1:%d" % self.web_port, "-h",
                           "/var/www"], {})
            self.pod = self.containerd.run_pod(POD, CONTAINERS + [web])
            self.cluster = exec_base.Cluster(self.tmp, crisp_config(self.containerd.socket))
        except containerd_env.ContainerdUnavailable as e:
            self.stop()
            skip("containerd cannot run on this machine: %s" % e)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        code = self.cluster.stop() if self.cluster else None
        self.containerd.stop()
        return code

    def logs(self):
        parts = [self.containerd.logs()]
        if self.cluster:
            parts += [self.cluster.crisp.logs(), self.cluster.devapi.logs()]
        return "\n".join(parts)

    def kubectl(self, version, *args, stdin_data=None, timeout=KUBECTL_TIMEOUT, env=None):
        return self.cluster.kubectl(version, *args, stdin_data=stdin_data, timeout=timeout,
                                    env=env)

    def kubectl_env(self, extra=None):
        env = self.cluster.kubectl_env()
        env.update(extra or {})
        return env

    def container_state(self, name):
        """(state, started_at_ns) of a container of the pod, from containerd."""
        state, started, _ = self.containerd.cri("status",
                                                self.pod.container_ids[name]).split()
        return state, int(started)

    def open_fds(self):
        return len(os.listdir("/proc/%d/fd" % self.cluster.crisp.pid))


class ContainerdCells(unittest.TestCase):
    """Each test runs for every variant (subtests) on one containerd and crisp."""

    env = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir(prefix="crisp-ctd-")
        cls.env = Environment(cls.tmp.path)
        try:
            cls.env.start()
            # The file httpd serves, written through crisp; and the connections
            # crisp keeps (to containerd's CRI) opened before the baseline.
            # The shell's own stdout stays open while cat reads: containerd
            # 1.6 closes an exec's stdin as soon as its stdout ends, and
            # `cat > file` alone would lose all but the first bytes.
            r = cls.env.kubectl(VERSIONS[0], "exec", "-i", "web", "--", "sh", "-c",
                                "cat > /var/www/blob; wc -c < /var/www/blob", stdin_data=BLOB)
            assert (r.returncode, r.stdout.strip()) == (0, str(len(BLOB))), \
                "%s\n%s" % (r, cls.env.logs())
            cls.fds = cls.env.open_fds()
        except BaseException:
            cls.env.stop()
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        code = cls.env.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def setUp(self):
        if containerd_backend() and not self._testMethodName.startswith(
                CONTAINERD_BACKEND_CELLS):
            self.skipTest("cri.backend containerd runs the exec and port-forward cells; attach "
                          "still uses containerd's stream server, checked in the default mode")
        if not containerd_backend() and self._testMethodName.startswith(
                CONTAINERD_ONLY_CELLS):
            self.skipTest("cri.backend containerd only")

    def tearDown(self):
        # Whatever a cell did, crisp holds nothing of it afterwards.
        cluster = self.env.cluster
        for metric in ("crisp_sessions_active", "crisp_tokens_live",
                       "crisp_runtime_stream_connections_active"):
            self.assertEqual(cluster.wait_for_metric(metric, 0), 0, "%s after the test" % metric)
        deadline = time.monotonic() + 10
        while self.env.open_fds() > self.fds and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLessEqual(self.env.open_fds(), self.fds, "descriptors left open by crisp")

    @contextlib.contextmanager
    def through_crisp(self, operation, protocol, sessions=1):
        """Asserts that the block opened `sessions` sessions of `operation`
        on crisp over `protocol`, each bridged by an upgrade to containerd's
        stream server (none for exec and port-forward with the containerd
        backend: crisp runs those through containerd's API itself)."""
        cluster = self.env.cluster
        labels = {"operation": operation, "protocol": protocol}
        before = cluster.metric("crisp_sessions_total", labels)
        upgrades = cluster.metric("crisp_runtime_stream_upgrades_total", {"result": "ok"})
        yield
        self.assertEqual(cluster.metric("crisp_sessions_total", labels) - before, sessions,
                         "%s sessions over %s on crisp" % (operation, protocol))
        bridged = (0 if containerd_backend() and operation in CONTAINERD_BACKEND_OPERATIONS
                   else sessions)
        self.assertEqual(
            cluster.metric("crisp_runtime_stream_upgrades_total", {"result": "ok"}) - upgrades,
            bridged, "upgrades from crisp to containerd's stream server")

    def check(self, result, want_code, want_stdout=None):
        msg = "%s\n%s" % (result, self.env.logs() if result.returncode < 0 else "")
        self.assertEqual(result.returncode, want_code, msg)
        if want_stdout is not None:
            self.assertEqual(result.stdout, want_stdout, msg)

    def test_stream_urls_are_crisps(self):
        crisp_url = self.env.containerd.cri("exec", self.env.pod.container_ids["work"], "--",
                                            "true", socket_path=self.env.cluster.cri_socket)
        runtime_url = self.env.containerd.stream_url(self.env.pod.container_ids["work"])
        crisp_base = re.search(r"\(base URL (\S+)\)", self.env.cluster.crisp.logs()).group(1)
        self.assertTrue(crisp_url.startswith(crisp_base.rstrip("/") + "/exec/"),
                        (crisp_url, crisp_base))
        self.assertRegex(runtime_url, r"^http://127\.0\.0\.1:\d+/exec/")
        self.assertFalse(runtime_url.startswith(crisp_base), (runtime_url, crisp_base))
        # A client that upgrades and goes away at once: the token is taken, and
        # crisp lets go of the session it bridged (tearDown).
        host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", crisp_url).groups()
        with socket.create_connection((host, int(port)), timeout=20) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: Upgrade\r\n"
                       "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                       "Sec-WebSocket-Key: Y3Jpc3AtdGVzdC1rZXkxMg==\r\n"
                       "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n" %
                       (path, host, port)).encode())
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 101 "))

    def test_check_config_asks_containerd(self):
        fifo_dir = os.path.join(self.tmp.path, "check-fifos")

        def check(upstream):
            path = os.path.join(self.tmp.path, "check.yaml")
            with open(path, "w") as f:
                f.write("cri:\n  listen: %s/check.sock\n  upstream: %s\n  backend: containerd\n"
                        "runtime:\n  containerd:\n    fifo_dir: %s\n"
                        % (self.tmp.path, upstream, fifo_dir))
            return subprocess.run([ARGS.crisp, "--check-config", path], capture_output=True,
                                  text=True, timeout=30)
        r = check(self.env.containerd.socket)
        self.assertEqual(r.returncode, 0, r)
        self.assertFalse(os.path.exists(fifo_dir), "made by --check-config")
        missing = os.path.join(self.tmp.path, "no-containerd.sock")
        r = check(missing)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(missing, r.stderr)
        self.assertIn("does not answer containerd's API", r.stderr)
        # A fifo_dir crisp could not use.
        with open(fifo_dir, "w") as f:
            f.write("a file")
        try:
            r = check(self.env.containerd.socket)
        finally:
            os.unlink(fifo_dir)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stderr, "crisp: runtime.containerd.fifo_dir: %s: not a directory\n"
                         % fifo_dir)

    def test_runtime_cri_errors_pass_unchanged(self):
        direct = subprocess.run(self.env.containerd.cricall_base() + [
            "exec", "no-such-container", "--", "true"], capture_output=True, text=True,
            timeout=30)
        through = subprocess.run(self.env.containerd.cricall_base(self.env.cluster.cri_socket) + [
            "exec", "no-such-container", "--", "true"], capture_output=True, text=True,
            timeout=30)
        self.assertNotEqual(direct.returncode, 0, direct)
        self.assertEqual((through.returncode, through.stderr), (direct.returncode, direct.stderr))
        self.assertIn("not found", direct.stderr)

    def test_exec_echo_in_the_container(self):
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("exec", v.remotecommand):
                r = self.env.kubectl(v.version, "exec", "work", "--", "sh", "-c",
                                     "echo hello from runc; cat /marker; echo err >&2",
                                     env=v.env)
                self.check(r, 0, "hello from runc\n%s\n" % MARKER)
                self.assertEqual(r.stderr, "err\n")

    def test_exec_exit_code(self):
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("exec", v.remotecommand):
                r = self.env.kubectl(v.version, "exec", "work", "--", "sh", "-c", "exit 7",
                                     env=v.env)
                self.check(r, 7)
                self.assertIn("command terminated with exit code 7", r.stderr)

    def test_exec_piped_stdin_reaches_eof(self):
        data = b"".join(b"line %d\n" % i for i in range(20000))
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("exec", v.remotecommand):
                start = time.monotonic()
                r = self.env.kubectl(v.version, "exec", "-i", "work", "--", "sh", "-c",
                                     "cat; cat /marker; exit 3", stdin_data=data, env=v.env)
                self.check(r, 3, data.decode() + MARKER + "\n")
                self.assertLess(time.monotonic() - start, 30)

    def test_exec_every_kubectl_version_and_toggle(self):
        # The interop matrix's exec column against containerd: every installed
        # kubectl, with each value of its WebSocket toggle, over the protocol
        # it negotiates; stdin to EOF, stdout and stderr apart, the exit code.
        data = b"".join(b"row %d\n" % i for i in range(5000))
        for version in harness.installed_kubectl_versions():
            for toggle, protocol in EXPECTED[version][0].items():
                env = {} if toggle is None else {RC_TOGGLE: toggle}
                with self.subTest(kubectl=version, toggle=toggle), \
                        self.through_crisp("exec", protocol):
                    r = self.env.kubectl(version, "exec", "-i", "work", "--", "sh", "-c",
                                         "cat; cat /marker; echo to-stderr >&2; exit 5",
                                         stdin_data=data, env=env)
                    self.check(r, 5, data.decode() + MARKER + "\n")
                    self.assertTrue(r.stderr.startswith("to-stderr\n"), r.stderr)

    def test_exec_interactive_terminal(self):
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("exec", v.remotecommand):
                term = exec_base.PtyKubectl(self.env.cluster, v.version,
                                            ["exec", "-it", "work", "--", "sh"], rows=33,
                                            cols=101, env=v.env)
                try:
                    term.send("stty size; cat /marker\r")
                    term.expect(rb"33 101\r\n%s\r\n" % MARKER.encode())
                    term.resize(40, 120)
                    # kubectl sends the new size on SIGWINCH; ask until it lands.
                    deadline = time.monotonic() + 15
                    while not re.search(rb"40 120\r\n", term.output):
                        self.assertLess(time.monotonic(), deadline, term.output)
                        term.send("stty size\r")
                        try:
                            term.expect(rb"40 120\r\n", timeout=0.5)
                        except AssertionError:
                            pass
                    term.send("exit 4\r")
                    self.assertEqual(term.wait(), 4)
                finally:
                    term.kill()

    def test_exec_error_status_from_containerd(self):
        # containerd's stream server ends the session with a failure Status:
        # kubectl shows containerd's own words, through crisp.
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("exec", v.remotecommand):
                start = time.monotonic()
                r = self.env.kubectl(v.version, "exec", "work", "--", "/no/such/binary",
                                     env=v.env, timeout=30)
                self.assertNotEqual(r.returncode, 0, str(r))
                self.assertRegex(r.stderr, r"/no/such/binary.*no such file or directory",
                                 str(r))
                self.assertIn("OCI runtime exec failed", r.stderr)
                self.assertLess(time.monotonic() - start, 20)

    def test_exec_fifo_directories_of_a_killed_crisp_go_at_start(self):
        # An exec's FIFO directory stays in runtime.containerd.fifo_dir when
        # crisp is killed under it; the next crisp removes it, and only it.
        cluster = self.env.cluster
        fifo_dir = os.path.join(cluster.dir, "exec-fifos")
        v = VARIANTS[0]
        proc = self.start_exec_in_work(v, "sleep 3")
        try:
            left = os.listdir(fifo_dir)
            self.assertEqual(len(left), 1, left)
            self.assertRegex(left[0], r"^crisp-[0-9a-f]+$")
            self.assertEqual(sorted(os.listdir(os.path.join(fifo_dir, left[0]))),
                             ["stderr", "stdout"])
            self.kill_crisp()
            self.assertEqual(os.listdir(fifo_dir), left, "what the killed crisp left")
            # Not crisp's: stays.
            other = os.path.join(fifo_dir, "crisp-not-an-exec-id")
            os.mkdir(other)
            self.start_crisp_again()
            self.assertEqual(os.listdir(fifo_dir), [os.path.basename(other)])
            self.assertIn("runtime.containerd.fifo_dir: removed 1 exec FIFO directories left in "
                          "%s by an earlier crisp" % fifo_dir, cluster.crisp.logs())
            os.rmdir(other)
            # The new crisp runs exec sessions at once.
            with self.through_crisp("exec", v.remotecommand):
                r = self.env.kubectl(v.version, "exec", "work", "--", "cat", "/marker",
                                     env=self.env.kubectl_env(v.env))
            self.check(r, 0, MARKER + "\n")
            self.assertEqual(os.listdir(fifo_dir), [])
        finally:
            proc.stop()

    def start_exec_in_work(self, v, script):
        """kubectl exec of `sh -c script` in the work container, once the
        session runs; the caller stops the returned process."""
        cluster = self.env.cluster
        proc = harness.Process("exec-%d" % time.monotonic_ns(),
                               cluster.kubectl_argv(v.version, "exec", "work", "--", "sh", "-c",
                                                    "echo started; " + script),
                               cluster.dir, env=self.env.kubectl_env(v.env)).start()
        try:
            pf.wait_for_line(proc.stdout_path, r"started\n", proc)
        except BaseException:
            proc.stop()
            raise
        return proc

    def kill_crisp(self):
        os.kill(self.env.cluster.crisp.pid, signal.SIGKILL)
        self.env.cluster.crisp.stop()

    def start_crisp_again(self):
        """A new crisp on the same configuration, once it is ready."""
        cluster = self.env.cluster
        config = os.path.join(cluster.dir, "crisp.yaml")
        cluster.crisp = harness.Process("crisp-%d" % time.monotonic_ns(),
                                        [ARGS.crisp, "--config", config], cluster.dir).start()
        ready = exec_base.Cluster._wait_for_log(cluster.crisp, r"crisp ready: .* admin (\S+)")
        cluster.admin = ready.group(1)

    def running_exec_ids(self, container_id):
        """The execs running in a container, as containerd's runc shim names
        them (`ctr tasks ps`: ProcessDetails of each exec's process)."""
        return sorted(re.findall(r"ExecID:([^,}\s]+)",
                                 self.env.containerd.ctr("tasks", "ps", container_id)))

    def test_exec_processes_of_a_killed_crisp_end_at_start(self):
        # The process of an exec crisp was killed under keeps running in its
        # container; the next crisp kills and deletes it before it is ready,
        # and leaves another client's exec alone, even one whose id starts
        # like crisp's.
        cluster = self.env.cluster
        fifo_dir = os.path.join(cluster.dir, "exec-fifos")
        work = self.env.pod.container_ids["work"]
        v = VARIANTS[0]
        other = "crisp-other-client"
        self.env.containerd.ctr("tasks", "exec", "--detach", "--exec-id", other, work,
                                "sleep", "1000")
        proc = self.start_exec_in_work(v, "exec sleep 1000")
        try:
            [orphan] = os.listdir(fifo_dir)
            self.assertEqual(self.running_exec_ids(work), sorted([orphan, other]))
            self.kill_crisp()
            # kubectl loses its session; the process in the container stays.
            deadline = time.monotonic() + KUBECTL_TIMEOUT
            while proc.running() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertFalse(proc.running(), "kubectl outlived crisp\n" + proc.logs())
            self.assertEqual(self.running_exec_ids(work), sorted([orphan, other]))
            self.start_crisp_again()
            self.assertEqual(self.running_exec_ids(work), [other])
            logs = cluster.crisp.logs()
            self.assertIn("containerd: ended exec %s in container %s that an earlier crisp left "
                          "running (exit status 137)" % (orphan, work), logs)
            self.assertIn("containerd: ended 1 of 1 execs an earlier crisp left running", logs)
            self.assertNotIn(other, logs)
            # The new crisp runs exec sessions at once.
            with self.through_crisp("exec", v.remotecommand):
                r = self.env.kubectl(v.version, "exec", "work", "--", "cat", "/marker",
                                     env=self.env.kubectl_env(v.env))
            self.check(r, 0, MARKER + "\n")
        finally:
            proc.stop()
            self.env.containerd.ctr("tasks", "kill", "--signal", "SIGKILL", "--exec-id", other,
                                    work)
            deadline = time.monotonic() + 10
            while other in self.running_exec_ids(work) and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                self.env.containerd.ctr("tasks", "delete", "--exec-id", other, work)
            except containerd_env.ContainerdError as e:
                # ctr exits with the deleted process's status: 128 + SIGKILL.
                if " -> 137\n" not in str(e):
                    raise

    def test_attach_interactive_shell(self):
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("attach", v.remotecommand):
                term = exec_base.PtyKubectl(self.env.cluster, v.version,
                                            ["attach", "-it", "shell"], rows=24, cols=80,
                                            env=v.env)
                try:
                    marker = "attached-%s" % v.name.replace(" ", "-").replace(".", "-")
                    term.send("echo %s-$((6*7)); cat %s\r" % (marker, IMAGE_FILE))
                    term.expect((marker + "-42\r\n" + IMAGE_FILE_CONTENT.replace(
                        "\n", "\r\n")).encode())
                finally:
                    term.kill()
                # Detaching leaves the container running.
                self.assertEqual(self.env.container_state("shell")[0], "CONTAINER_RUNNING")

    def test_attach_output_without_terminal(self):
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("attach", v.remotecommand):
                proc = harness.Process("attach-%d" % time.monotonic_ns(),
                                       self.env.cluster.kubectl_argv(v.version, "attach",
                                                                     "ticker"),
                                       self.env.tmp, env=self.env.kubectl_env(v.env)).start()
                try:
                    first = pf.wait_for_line(proc.stdout_path, r"tick-(\d+)\n", proc)
                    pf.wait_for_line(proc.stdout_path,
                                     r"tick-(%d)\n" % (int(first.group(1)) + 5), proc)
                finally:
                    proc.stop()
                self.assertEqual(self.env.container_state("ticker")[0], "CONTAINER_RUNNING")

    @contextlib.contextmanager
    def port_forward(self, variant, port):
        """kubectl port-forward to `port` of the web pod; yields the process
        and its local port, and stops it after the block."""
        proc = harness.Process("port-forward-%d" % time.monotonic_ns(),
                               self.env.cluster.kubectl_argv(
                                   variant.version, "port-forward", "--address", "127.0.0.1",
                                   "pod/web", ":%d" % port),
                               self.env.tmp, env=self.env.kubectl_env(variant.env)).start()
        try:
            m = pf.wait_for_line(proc.stdout_path,
                                 r"Forwarding from 127\.0\.0\.1:(\d+) -> %d\n" % port, proc)
            yield proc, int(m.group(1))
        finally:
            proc.stop()

    def test_port_forward_bytes_both_ways(self):
        upload = os.urandom(3 << 20)
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("portforward", v.portforward), \
                    self.port_forward(v, self.env.web_port) as (proc, local):
                base = "http://127.0.0.1:%d" % local
                # From the container's root filesystem, byte for byte.
                with urllib.request.urlopen(base + "/index.html", timeout=20) as r:
                    self.assertEqual(r.read().decode(), IMAGE_FILE_CONTENT)
                with urllib.request.urlopen(base + "/blob", timeout=60) as r:
                    body = r.read()
                self.assertEqual((len(body), hashlib.sha256(body).hexdigest()),
                                 (len(BLOB), hashlib.sha256(BLOB).hexdigest()))
                # To it: the container's sha256sum of what it received.
                req = urllib.request.Request(base + "/cgi-bin/sha256", data=upload,
                                             method="POST")
                with urllib.request.urlopen(req, timeout=60) as r:
                    self.assertEqual(r.read().decode().strip(),
                                     hashlib.sha256(upload).hexdigest())
                self.assertTrue(proc.running(), proc.logs())

    def test_port_forward_every_kubectl_version_and_toggle(self):
        # The interop matrix's port-forward column against containerd: every
        # installed kubectl with each value of its toggle fetches the blob
        # from the pod, byte for byte.
        for version in harness.installed_kubectl_versions():
            for toggle, protocol in EXPECTED[version][1].items():
                variant = Variant("%s %s" % (version, toggle), version,
                                  {} if toggle is None else {PF_TOGGLE: toggle}, None, protocol)
                with self.subTest(kubectl=version, toggle=toggle), \
                        self.through_crisp("portforward", protocol), \
                        self.port_forward(variant, self.env.web_port) as (proc, local):
                    with urllib.request.urlopen("http://127.0.0.1:%d/blob" % local,
                                                timeout=60) as r:
                        body = r.read()
                    self.assertEqual(hashlib.sha256(body).hexdigest(),
                                     hashlib.sha256(BLOB).hexdigest())
                    self.assertTrue(proc.running(), proc.logs())

    def test_port_forward_to_a_closed_port_reports_containerds_error(self):
        closed = containerd_env.free_port()
        for v in VARIANTS:
            with self.subTest(kubectl=v.name), self.through_crisp("portforward", v.portforward), \
                    self.port_forward(v, closed) as (proc, local):
                with socket.create_connection(("127.0.0.1", local), timeout=20) as s:
                    self.assertEqual(pf.read_to_close(s), b"")
                text = pf.wait_for_line(proc.stderr_path, r"error forwarding port %d[^\n]*"
                                        % closed, proc).group(0)
                self.assertIn("connection refused", text)
                self.assertEqual(text.count("error forwarding port"), 1, text)


def main():
    # --backend is this file's own; the rest is the harness's.
    global BACKEND
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend", choices=["stream-server", "containerd"],
                        default="stream-server")
    args, rest = parser.parse_known_args()
    BACKEND = args.backend
    sys.argv = [sys.argv[0]] + rest
    harness.test_main(("crisp", "devapiserver", "cricall"), share_with=(exec_base, pf))


if __name__ == "__main__":
    main()
