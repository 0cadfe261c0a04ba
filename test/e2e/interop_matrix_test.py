"""The interop matrix: every installed kubectl (1.27 to 1.33), with each value of
the environment toggles it reads, against one crisp behind the development API
server.

For each combination it runs what users do: exec echo (output byte for byte),
exec with exit code 7, exec -i with piped stdin that reaches EOF, attach -i to a
`cat` container, and port-forward of one HTTP request to a Python server
started here. After each command it reads crisp's /metrics to see which
protocol the session really negotiated (crisp_sessions_total{operation,
protocol}) and compares it with EXPECTED below. The whole matrix (version and
toggle x operation -> protocol, pass or fail) is printed to the test log.

Usage: interop_matrix_test.py --crisp PATH --devapiserver PATH [unittest args]
"""

import argparse
import http.server
import os
import re
import select
import signal
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kubectl_exec_test as base  # noqa: E402  (Cluster)
import kubectl_portforward_test as pf  # noqa: E402  (port-forward helpers)

ARGS = None
KUBECTL_TIMEOUT = 30

RC_TOGGLE = "KUBECTL_REMOTE_COMMAND_WEBSOCKETS"
PF_TOGGLE = "KUBECTL_PORT_FORWARD_WEBSOCKETS"

# Protocol labels of crisp_sessions_total (source/stream/upgrade.cc protocolName()).
SPDY_V4 = "spdy/v4.channel.k8s.io"
WS_V5 = "ws/v5.channel.k8s.io"
SPDY_PF = "spdy/portforward.k8s.io"
WS_TUNNEL = "ws/SPDY/3.1+portforward.k8s.io"

# What crisp serves when kubectl offers the SPDY-over-WebSocket tunnel. While
# crisp refused the tunnel (before the WebSocket port-forward handler was
# wired), kubectl fell back to SPDY: set this to SPDY_PF to describe such a
# build. Every other row follows from PROTOCOLS.md section 9 as is.
PF_TUNNEL = WS_TUNNEL

# The toggle values tried: None = variable unset (the version's default).
# kubectl 1.27 and 1.28 read neither variable (they compare it with "true"
# only to do nothing); 1.29 reads the remote-command one; 1.30+ both.
def rc_toggles(version):
    return [None] if version in ("1.27", "1.28") else [None, "true", "false"]


def pf_toggles(version):
    return [None] if version in ("1.27", "1.28", "1.29") else [None, "true", "false"]


# The protocol each kubectl version negotiates with crisp, per toggle value,
# as in PROTOCOLS.md section 9. The development API server hands every
# upgrade to crisp unchanged (no stream translation), so a WebSocket offer
# reaches crisp itself.
#   exec and attach: 1.27/1.28 SPDY only (v5..v1 offered, v4 chosen); 1.29 SPDY
#     unless the toggle is "true"; 1.30+ WebSocket v5 unless it is "false".
#   port-forward: SPDY up to 1.29; 1.30 tunnel only with "true"; 1.31+ tunnel
#     unless "false".
EXPECTED = {
    # version: ({rc toggle: exec/attach protocol}, {pf toggle: port-forward protocol})
    "1.27": ({None: SPDY_V4}, {None: SPDY_PF}),
    "1.28": ({None: SPDY_V4}, {None: SPDY_PF}),
    "1.29": ({None: SPDY_V4, "true": WS_V5, "false": SPDY_V4}, {None: SPDY_PF}),
    "1.30": ({None: WS_V5, "true": WS_V5, "false": SPDY_V4},
             {None: SPDY_PF, "true": PF_TUNNEL, "false": SPDY_PF}),
    "1.31": ({None: WS_V5, "true": WS_V5, "false": SPDY_V4},
             {None: PF_TUNNEL, "true": PF_TUNNEL, "false": SPDY_PF}),
    "1.32": ({None: WS_V5, "true": WS_V5, "false": SPDY_V4},
             {None: PF_TUNNEL, "true": PF_TUNNEL, "false": SPDY_PF}),
    "1.33": ({None: WS_V5, "true": WS_V5, "false": SPDY_V4},
             {None: PF_TUNNEL, "true": PF_TUNNEL, "false": SPDY_PF}),
}

# The operations, in column order, and the session operation each opens.
OPERATIONS = [
    ("exec-echo", "exec"),
    ("exec-exit7", "exec"),
    ("exec-stdin", "exec"),
    ("attach", "attach"),
    ("port-forward", "portforward"),
]

HELLO = b"hello from the pod\n"


def sessions_by_protocol(cluster):
    """{(operation, protocol): count} from crisp_sessions_total."""
    with urllib.request.urlopen("http://%s/metrics" % cluster.admin, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'^crisp_sessions_total\{operation="([^"]*)",protocol="([^"]*)"\} (\S+)$',
                     line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def new_sessions(before, after):
    """The (operation, protocol) pairs whose count grew, with the growth."""
    return {key: after[key] - before.get(key, 0) for key in after
            if after[key] != before.get(key, 0)}


def toggle_label(short, value):
    """"-" for the default, else "rc=true", "pf=false", ..."""
    return "-" if value is None else "%s=%s" % (short, value)


class InteropMatrixTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = base.Cluster(cls.tmp.path)
        cls.http = pf.start_server(http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                                   pf.HelloHandler))
        # (version, toggle label, operation) -> (protocol seen, passed)
        cls.results = {}

    @classmethod
    def tearDownClass(cls):
        print_matrix(cls.results)
        cls.http.shutdown()
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    # One operation: runs it, then checks what the session negotiated.
    def check(self, version, toggle, operation, expected, run):
        session_op = dict(OPERATIONS)[operation]
        before = sessions_by_protocol(self.cluster)
        seen = "?"
        passed = False
        try:
            with self.subTest(kubectl=version, toggle=toggle, op=operation):
                run()
                after = self.wait_for_new_session(before)
                grown = new_sessions(before, after)
                seen = ",".join(p for (op, p) in grown if op == session_op) or "none"
                self.assertEqual(grown, {(session_op, expected): 1},
                                 "%s %s %s negotiated %s, expected %s" %
                                 (version, toggle, operation, grown, expected))
                passed = True
        finally:
            self.results[(version, toggle, operation)] = (seen, passed)
            # Nothing of this operation is left for the next one.
            self.cluster.wait_for_metric("crisp_sessions_active", 0)

    def wait_for_new_session(self, before, timeout=10):
        total = sum(before.values())
        deadline = time.monotonic() + timeout
        while True:
            after = sessions_by_protocol(self.cluster)
            if sum(after.values()) > total or time.monotonic() > deadline:
                return after
            time.sleep(0.02)

    def kubectl(self, version, env, *args, stdin_data=None):
        return self.cluster.kubectl(version, *args, stdin_data=stdin_data,
                                    timeout=KUBECTL_TIMEOUT, env=env)

    def exec_echo(self, version, env):
        r = self.kubectl(version, env, "exec", "demo", "--", "echo", "hello,", "crisp")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "hello, crisp\n", ""), str(r))

    def exec_exit7(self, version, env):
        r = self.kubectl(version, env, "exec", "demo", "--", "sh", "-c", "exit 7")
        self.assertEqual(r.returncode, 7, str(r))
        self.assertIn("command terminated with exit code 7", r.stderr)

    def exec_stdin(self, version, env):
        start = time.monotonic()
        r = self.kubectl(version, env, "exec", "-i", "demo", "--", "sh", "-c", "cat; exit 3",
                         stdin_data=b"a\nb\n")
        self.assertEqual((r.returncode, r.stdout), (3, "a\nb\n"), str(r))
        self.assertLess(time.monotonic() - start, 10, "stdin's end did not reach cat")

    def attach(self, version, env):
        full_env = self.cluster.kubectl_env()
        full_env.update(env)
        proc = subprocess.Popen(self.cluster.kubectl_argv(version, "attach", "-i", "echoer"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=full_env, start_new_session=True)
        line = ("attach-%s\n" % version).encode()
        try:
            # cat in the container echoes what reaches its stdin; kubectl may
            # print a hint on stderr first. Lines sent before the attach was
            # complete are lost, so keep sending until one comes back.
            deadline = time.monotonic() + 15
            seen = b""
            while line not in seen and time.monotonic() < deadline:
                proc.stdin.write(line)
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    seen += os.read(proc.stdout.fileno(), 65536)
            self.assertIn(line, seen)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

    def port_forward(self, version, env):
        proc, (local,) = pf.Cluster.port_forward(self.cluster, version,
                                                 self.http.server_address[1], env=env)
        try:
            answer = pf.http_get(local)
            self.assertTrue(answer.startswith(b"HTTP/1.0 200 OK\r\n"), answer)
            self.assertTrue(answer.endswith(HELLO), answer)
            self.assertTrue(proc.running(), proc.logs())
        finally:
            proc.stop()

    def test_matrix(self):
        versions = harness.installed_kubectl_versions()
        self.assertTrue(versions, "no kubectl installed under %s" % harness.KUBECTL_DIR)
        for version in versions:
            rc_expected, pf_expected = EXPECTED[version]
            for toggle in rc_toggles(version):
                env = {} if toggle is None else {RC_TOGGLE: toggle}
                label = toggle_label("rc", toggle)
                for operation, run in (("exec-echo", self.exec_echo),
                                       ("exec-exit7", self.exec_exit7),
                                       ("exec-stdin", self.exec_stdin),
                                       ("attach", self.attach)):
                    self.check(version, label, operation, rc_expected[toggle],
                               lambda: run(version, env))
            for toggle in pf_toggles(version):
                env = {} if toggle is None else {PF_TOGGLE: toggle}
                self.check(version, toggle_label("pf", toggle), "port-forward",
                           pf_expected[toggle], lambda: self.port_forward(version, env))


def print_matrix(results):
    """One line per version and toggle, one column per operation:
    the protocol seen and OK/FAIL ("." where the combination does not apply)."""
    rows = []
    for (version, toggle, operation) in results:
        if (version, toggle) not in rows:
            rows.append((version, toggle))
    names = [op for op, _ in OPERATIONS]
    width = max([len(SPDY_V4) + 5, len(WS_TUNNEL) + 5] + [len(n) for n in names])
    lines = ["", "interop matrix (protocol negotiated with crisp; OK / FAIL):",
             "%-7s %-10s " % ("kubectl", "toggle") + " ".join("%-*s" % (width, n)
                                                              for n in names)]
    for version, toggle in rows:
        cells = []
        for name in names:
            if (version, toggle, name) in results:
                seen, passed = results[(version, toggle, name)]
                cells.append("%-*s" % (width, "%s %s" % (seen, "OK" if passed else "FAIL")))
            else:
                cells.append("%-*s" % (width, "."))
        lines.append("%-7s %-10s " % (version, toggle) + " ".join(cells))
    sys.stderr.write("\n".join(lines) + "\n\n")
    sys.stderr.flush()


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--crisp", required=True)
    parser.add_argument("--devapiserver", required=True)
    ARGS, rest = parser.parse_known_args()
    for name in ("crisp", "devapiserver"):
        setattr(ARGS, name, os.path.abspath(getattr(ARGS, name)))
    base.ARGS = ARGS
    pf.ARGS = ARGS
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
