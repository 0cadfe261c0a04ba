"""crisp in front of a real containerd, with real kubectl, end to end.

A private containerd (containerd_env.py: its own root, state and socket under
a temporary directory; images built from busybox-static; host-network pods)
runs one pod of runc containers. crisp forwards every CRI call to it
(cri.upstream); the development API server sits in front of crisp, and kubectl
1.27 (SPDY) and 1.33 (WebSocket first) exec, attach and port-forward into the
containers.

The same cells run in two modes, chosen by --mode:
- direct: crisp passes Exec, Attach and PortForward through, so the URL kubectl
  is sent to is containerd's own stream server; crisp sees no stream.
- bridged: crisp answers those calls itself and bridges each stream to
  containerd's stream server. The crisp configuration for it is
  BRIDGED_CONFIG below; each cell then also checks that its session went
  through crisp (crisp_sessions_total).

When containerd cannot run here (packages missing and not installable, runc
unable to start a container), the tests are skipped and the reason is
printed; any other failure fails them, with containerd's and crisp's logs.

Usage: containerd_test.py --crisp PATH --devapiserver PATH --cricall PATH
                          [--mode direct|bridged] [unittest args]
"""

import argparse
import os
import re
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

ARGS = None
VERSIONS = ["1.27", "1.33"]
KUBECTL_TIMEOUT = 60

# crisp in front of containerd. {upstream} is containerd's socket; {extra} is
# the mode's addition (nothing in direct mode).
CRISP_CONFIG = """
cri:
  listen: {{dir}}/crisp.sock
  upstream: {upstream}
stream:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
log:
  level: {{log_level}}
{extra}
"""

# The configuration that makes crisp serve Exec, Attach and PortForward itself
# and bridge them to the runtime's stream server. None: crisp has no such
# setting, and --mode bridged stops with that message.
BRIDGED_CONFIG = None

# The pod every test uses, one container per role.
POD = "e2e"
CONTAINERS = [
    # exec target.
    ("work", ["/bin/sleep", "2147483647"], {}),
    # attach -it target: an interactive shell on a terminal.
    ("shell", ["/bin/sh"], {"tty": True, "stdin": True}),
    # attach target without a terminal: a line every 100 ms.
    ("ticker", ["/bin/sh", "-c", "i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done"],
     {}),
]


def crisp_config(mode, upstream):
    if mode == "direct":
        extra = ""
    elif BRIDGED_CONFIG is None:
        raise SystemExit("--mode bridged: crisp has no stream bridge setting yet "
                         "(BRIDGED_CONFIG in %s)" % __file__)
    else:
        extra = BRIDGED_CONFIG
    return CRISP_CONFIG.format(upstream=upstream, extra=extra)


def skip(reason):
    """Skips the tests, with the reason on stderr and in Bazel's test warnings."""
    print("SKIPPED: " + reason, file=sys.stderr)
    warnings = os.environ.get("TEST_WARNINGS_OUTPUT_FILE")
    if warnings:
        with open(warnings, "a") as f:
            f.write(reason + "\n")
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
            self.cluster = exec_base.Cluster(
                self.tmp, crisp_config(ARGS.mode, self.containerd.socket))
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

    def kubectl(self, version, *args, stdin_data=None, timeout=KUBECTL_TIMEOUT):
        return self.cluster.kubectl(version, *args, stdin_data=stdin_data, timeout=timeout)

    def container_state(self, name):
        """(state, started_at_ns) of a container of the pod, from containerd."""
        state, started, _ = self.containerd.cri("status",
                                                self.pod.container_ids[name]).split()
        return state, int(started)

    def crisp_sessions(self):
        return self.cluster.metric("crisp_sessions_total")


class ContainerdCells(unittest.TestCase):
    """Each test runs for kubectl 1.27 and 1.33 (subtests)."""

    env = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir(prefix="crisp-ctd-")
        cls.env = Environment(cls.tmp.path)
        try:
            cls.env.start()
        except BaseException:
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        code = cls.env.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def setUp(self):
        self.sessions_before = self.env.crisp_sessions()
        self.opens_streams = True

    def tearDown(self):
        # The mode is what each cell claims: streams through crisp when bridged,
        # never when direct.
        after = self.env.crisp_sessions()
        if ARGS.mode == "direct" or not self.opens_streams:
            self.assertEqual(after, self.sessions_before, "crisp served a stream in direct mode")
        else:
            self.assertGreater(after, self.sessions_before, "no stream went through crisp")

    def check(self, result, want_code, want_stdout=None):
        msg = "%s\n%s" % (result, self.env.logs() if result.returncode < 0 else "")
        self.assertEqual(result.returncode, want_code, msg)
        if want_stdout is not None:
            self.assertEqual(result.stdout, want_stdout, msg)

    def test_stream_urls_point_at_the_modes_server(self):
        url = self.env.containerd.cri("exec", self.env.pod.container_ids["work"], "--", "true",
                                      socket_path=self.env.cluster.cri_socket)
        self.opens_streams = False
        crisp_base = re.search(r"\(base URL (\S+)\)", self.env.cluster.crisp.logs()).group(1)
        self.assertRegex(url, r"^http://127\.0\.0\.1:\d+/exec/")
        self.assertEqual(url.startswith(crisp_base), ARGS.mode == "bridged", (url, crisp_base))

    def test_exec_echo(self):
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                r = self.env.kubectl(version, "exec", "work", "--", "echo", "hello", "from runc")
                self.check(r, 0, "hello from runc\n")

    def test_exec_exit_code(self):
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                r = self.env.kubectl(version, "exec", "work", "--", "sh", "-c", "exit 7")
                self.check(r, 7)
                self.assertIn("command terminated with exit code 7", r.stderr)

    def test_exec_runs_inside_the_container(self):
        # The image's root filesystem (busybox, no /etc/os-release unlike the
        # host) and the container's own PID namespace.
        r = self.env.kubectl(VERSIONS[0], "exec", "work", "--", "sh", "-c",
                             "readlink /bin/sh; ls /etc/os-release 2>&1 >/dev/null | wc -l; "
                             "cat /proc/1/cmdline | tr '\\0' ' '")
        self.check(r, 0)
        self.assertEqual(r.stdout.splitlines(),
                         ["/bin/busybox", "1", "/bin/sleep 2147483647 "], str(r))

    def test_exec_piped_stdin_reaches_eof(self):
        data = b"".join(b"line %d\n" % i for i in range(20000))
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                start = time.monotonic()
                r = self.env.kubectl(version, "exec", "-i", "work", "--", "sh", "-c",
                                     "cat; echo eof-seen; exit 3", stdin_data=data)
                self.check(r, 3, data.decode() + "eof-seen\n")
                self.assertLess(time.monotonic() - start, 30)

    def test_exec_stdout_and_stderr_stay_apart(self):
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                r = self.env.kubectl(version, "exec", "work", "--", "sh", "-c",
                                     "echo out; echo err >&2")
                self.check(r, 0, "out\n")
                self.assertEqual(r.stderr, "err\n")

    def test_exec_interactive_terminal(self):
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                term = exec_base.PtyKubectl(self.env.cluster, version,
                                            ["exec", "-it", "work", "--", "sh"], rows=33, cols=101)
                try:
                    term.send("stty size; echo typed-$((6*7))\r")
                    term.expect(rb"33 101\r\n")
                    term.expect(rb"typed-42\r\n")
                    term.resize(40, 120)
                    # kubectl sends the new size on SIGWINCH; poll until it lands.
                    deadline = time.monotonic() + 15
                    while not re.search(rb"40 120\r\n", term.output):
                        self.assertLess(time.monotonic(), deadline, term.output)
                        term.send("stty size\r")
                        time.sleep(0.2)
                        try:
                            term.expect(rb"40 120\r\n", timeout=0.5)
                        except AssertionError:
                            pass
                    term.send("exit 4\r")
                    self.assertEqual(term.wait(), 4)
                finally:
                    term.kill()

    def test_attach_interactive_shell(self):
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                term = exec_base.PtyKubectl(self.env.cluster, version,
                                            ["attach", "-it", "shell"], rows=24, cols=80)
                try:
                    marker = "attached-%s" % version.replace(".", "-")
                    term.send("echo %s-$((6*7))\r" % marker)
                    term.expect((marker + "-42\r\n").encode())
                finally:
                    term.kill()
                # Detaching leaves the container running.
                self.assertEqual(self.env.container_state("shell")[0], "CONTAINER_RUNNING")

    def test_attach_output_without_terminal(self):
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                proc = harness.Process("attach-%s" % version, self.env.cluster.kubectl_argv(
                    version, "attach", "ticker"), self.env.tmp,
                    env=self.env.cluster.kubectl_env()).start()
                try:
                    first = pf.wait_for_line(proc.stdout_path, r"tick-(\d+)\n", proc)
                    later = pf.wait_for_line(proc.stdout_path,
                                             r"tick-(%d)\n" % (int(first.group(1)) + 5), proc)
                    self.assertTrue(later)
                finally:
                    proc.stop()
                self.assertEqual(self.env.container_state("ticker")[0], "CONTAINER_RUNNING")

    def port_forward(self, version):
        name = "port-forward-%s-%d" % (version, time.monotonic_ns())
        proc = harness.Process(name, self.env.cluster.kubectl_argv(
            version, "port-forward", "--address", "127.0.0.1", "pod/web",
            ":%d" % self.env.web_port), self.env.tmp, env=self.env.cluster.kubectl_env()).start()
        self.addCleanup(proc.stop)
        m = pf.wait_for_line(proc.stdout_path,
                             r"Forwarding from 127\.0\.0\.1:(\d+) -> %d\n" % self.env.web_port,
                             proc)
        return proc, int(m.group(1))

    def test_port_forward_to_httpd_in_the_pod(self):
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                proc, local = self.port_forward(version)
                base = "http://127.0.0.1:%d" % local
                with urllib.request.urlopen(base + "/", timeout=20) as r:
                    self.assertEqual(r.read(), b"crisp e2e\n")
                # A larger body, and several connections over one session.
                for n in (1, 1 << 20, 8 << 20):
                    with urllib.request.urlopen(base + "/cgi-bin/zero?%d" % n, timeout=60) as r:
                        body = r.read()
                    self.assertEqual((len(body), body.count(b"\0")), (n, n))
                proc.stop()

    def test_port_forward_to_a_closed_port_reports_it(self):
        closed = containerd_env.free_port()
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                proc = harness.Process("pf-closed-%s" % version, self.env.cluster.kubectl_argv(
                    version, "port-forward", "--address", "127.0.0.1", "pod/web",
                    ":%d" % closed), self.env.tmp, env=self.env.cluster.kubectl_env()).start()
                try:
                    m = pf.wait_for_line(proc.stdout_path,
                                         r"Forwarding from 127\.0\.0\.1:(\d+) -> %d\n" % closed,
                                         proc)
                    with self.assertRaises(OSError):
                        with urllib.request.urlopen("http://127.0.0.1:%s/" % m.group(1),
                                                    timeout=20) as r:
                            r.read()
                    # kubectl names the refused port on its stderr.
                    pf.wait_for_line(proc.stderr_path, str(closed), proc)
                finally:
                    proc.stop()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--crisp", required=True)
    parser.add_argument("--devapiserver", required=True)
    parser.add_argument("--cricall", required=True)
    parser.add_argument("--mode", choices=["direct", "bridged"], default="direct")
    ARGS, rest = parser.parse_known_args()
    for name in ("crisp", "devapiserver", "cricall"):
        setattr(ARGS, name, os.path.abspath(getattr(ARGS, name)))
    exec_base.ARGS = ARGS
    pf.ARGS = ARGS
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
