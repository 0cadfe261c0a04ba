"""The interop matrix: every installed kubectl (1.27 to 1.33), with each value of
the environment toggles it reads, against one crisp behind the development API
server.

For each combination it runs what users do: exec echo (output byte for byte),
exec with exit code 7, exec -i with piped stdin that reaches EOF, exec -it in a
pseudo-terminal (terminal size seen by the shell, exit code of `exit 4`),
attach -i to a `cat` container, and port-forward to servers started here: one
HTTP request, 64 MiB echoed byte-exact through one connection, 20 connections
held open at once, and a refused target port followed by another request.
After each command it reads crisp's /metrics to see which protocol the session
really negotiated (crisp_sessions_total{operation, protocol}) and compares it
with EXPECTED below. The whole matrix (version and toggle x operation ->
protocol, pass or fail) is printed to the test log and, when the variable
CRISP_INTEROP_TABLE names a file, written there as Markdown.

Usage: interop_matrix_test.py --crisp PATH --devapiserver PATH [unittest args]
"""

import hashlib
import http.server
import os
import re
import signal
import socket
import subprocess
import sys
import threading
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
    ("exec-tty", "exec"),
    ("attach", "attach"),
    ("pf-http", "portforward"),
    ("pf-64MiB", "portforward"),
    ("pf-20conns", "portforward"),
    ("pf-refused", "portforward"),
]

BIG = 64 << 20
CONCURRENT = 20

# What kubectl does after a forwarded connection whose target port refused:
# crisp writes the kubelet's error text on that connection's error stream, and
# kubectl (SPDY, and SPDY inside the WebSocket tunnel alike) prints it and
# ends the whole session ("lost connection to pod"), so the forward serves no
# following request. True = the session ends, per version and pf toggle.
def refused_ends_session(version, toggle):
    del version, toggle
    return True

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
        cls.echo = pf.start_server(pf.ThreadingServer(("127.0.0.1", 0), pf.EchoHandler))
        # (version, toggle label, operation) -> (protocol seen, passed)
        cls.results = {}

    @classmethod
    def tearDownClass(cls):
        print_matrix(cls.results)
        path = os.environ.get("CRISP_INTEROP_TABLE")
        if path:
            with open(path, "w") as f:
                f.write(markdown_matrix(cls.results))
        cls.http.shutdown()
        cls.echo.shutdown()
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    # One operation: runs it, then checks what the session negotiated. `run`
    # may return a short note on what it saw, shown beside the result.
    def check(self, version, toggle, operation, expected, run):
        session_op = dict(OPERATIONS)[operation]
        before = sessions_by_protocol(self.cluster)
        seen = "?"
        passed = False
        note = ""
        try:
            with self.subTest(kubectl=version, toggle=toggle, op=operation):
                note = run() or ""
                after = self.wait_for_new_session(before)
                grown = new_sessions(before, after)
                seen = ",".join(p for (op, p) in grown if op == session_op) or "none"
                self.assertEqual(grown, {(session_op, expected): 1},
                                 "%s %s %s negotiated %s, expected %s" %
                                 (version, toggle, operation, grown, expected))
                passed = True
        finally:
            self.results[(version, toggle, operation)] = (seen, passed, note)
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

    def exec_tty(self, version, env):
        term = base.PtyKubectl(EnvCluster(self.cluster, env), version,
                               ["exec", "-it", "demo", "--", "sh"], rows=33, cols=91)
        try:
            self.assertEqual(base.wait_for_terminal_size(term, b"33 91"), b"33 91")
            term.send("exit 4\n")
            self.assertEqual(term.wait(), 4)
        finally:
            term.kill()

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
            seen = harness.write_until_echoed(proc, line)
            self.assertIn(line, seen)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

    def forward(self, version, env, *ports):
        return pf.Cluster.port_forward(self.cluster, version, *ports, env=env)

    def pf_big(self, version, env):
        proc, (local,) = self.forward(version, env, self.echo.server_address[1])
        try:
            data = os.urandom(BIG)
            with socket.create_connection(("127.0.0.1", local), timeout=pf.IO_TIMEOUT) as s:
                sender = threading.Thread(target=lambda: (s.sendall(data),
                                                          s.shutdown(socket.SHUT_WR)))
                sender.start()
                got = hashlib.sha256()
                size = 0
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    got.update(chunk)
                    size += len(chunk)
                sender.join()
            self.assertEqual(size, BIG)
            self.assertEqual(got.digest(), hashlib.sha256(data).digest())
            self.assertTrue(proc.running(), proc.logs())
        finally:
            proc.stop()

    def pf_concurrent(self, version, env):
        proc, (local,) = self.forward(version, env, self.echo.server_address[1])
        conns = []
        try:
            for _ in range(CONCURRENT):
                conns.append(socket.create_connection(("127.0.0.1", local),
                                                      timeout=pf.IO_TIMEOUT))
            for i, s in enumerate(conns):
                s.sendall(b"connection %d\n" % i)
            for i, s in enumerate(conns):
                want = b"connection %d\n" % i
                got = b""
                while len(got) < len(want):
                    chunk = s.recv(100)
                    self.assertTrue(chunk, "connection %d closed after %r" % (i, got))
                    got += chunk
                self.assertEqual(got, want)
            # Every one of them is open in crisp at the same time.
            self.assertEqual(self.cluster.metric("crisp_portforward_connections_active"),
                             CONCURRENT)
            self.assertTrue(proc.running(), proc.logs())
        finally:
            for s in conns:
                s.close()
            proc.stop()

    def pf_refused(self, version, env, ends_session):
        port = pf.closed_port()
        proc, (refused, local) = self.forward(version, env, port,
                                              self.echo.server_address[1])
        try:
            with socket.create_connection(("127.0.0.1", refused), timeout=pf.IO_TIMEOUT) as s:
                try:
                    self.assertEqual(s.recv(100), b"")
                except ConnectionResetError:
                    pass
            if ends_session:
                deadline = time.monotonic() + 10
                while proc.running() and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertFalse(proc.running(), "kubectl kept running\n" + proc.logs())
            stderr = pf.read_text(proc.stderr_path).replace('\\"', '"')
            self.assertIn("error forwarding port %d to pod demo" % port, stderr)
            self.assertIn("127.0.0.1:%d: connection refused" % port, stderr)
            if ends_session:
                self.assertIn("lost connection to pod", stderr)
                with self.assertRaises(OSError):
                    socket.create_connection(("127.0.0.1", local), timeout=pf.IO_TIMEOUT)
                return "kubectl exits"
            with socket.create_connection(("127.0.0.1", local), timeout=pf.IO_TIMEOUT) as s:
                s.sendall(b"after refused\n")
                s.shutdown(socket.SHUT_WR)
                got = b""
                while True:
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    got += chunk
            self.assertEqual(got, b"after refused\n")
            self.assertTrue(proc.running(), proc.logs())
            return "keeps serving"
        finally:
            proc.stop()

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
                                       ("exec-tty", self.exec_tty),
                                       ("attach", self.attach)):
                    self.check(version, label, operation, rc_expected[toggle],
                               lambda: run(version, env))
            for toggle in pf_toggles(version):
                env = {} if toggle is None else {PF_TOGGLE: toggle}
                label = toggle_label("pf", toggle)
                ends = refused_ends_session(version, toggle)
                for operation, run in (("pf-http", self.port_forward),
                                       ("pf-64MiB", self.pf_big),
                                       ("pf-20conns", self.pf_concurrent),
                                       ("pf-refused",
                                        lambda v, e: self.pf_refused(v, e, ends))):
                    self.check(version, label, operation, pf_expected[toggle],
                               lambda: run(version, env))


class EnvCluster:
    """A Cluster whose kubectl environment has extra variables (for PtyKubectl)."""

    def __init__(self, cluster, env):
        self.cluster = cluster
        self.env = env

    def kubectl_argv(self, version, *args):
        return self.cluster.kubectl_argv(version, *args)

    def kubectl_env(self):
        full = self.cluster.kubectl_env()
        full.update(self.env)
        return full


def print_matrix(results):
    """The matrix, as the Markdown document below, on the test log."""
    sys.stderr.write("\n" + markdown_matrix(results) + "\n")
    sys.stderr.flush()


def result_rows(results):
    rows = []
    for (version, toggle, _) in results:
        if (version, toggle) not in rows:
            rows.append((version, toggle))
    return rows


def markdown_matrix(results):
    """The matrix as a Markdown document: exec/attach rows and port-forward rows
    in two tables, since each reads its own toggle."""
    lines = [
        "Generated by `//test/e2e:interop_matrix_test`; do not edit by hand.  ",
        "Regenerate: `bazel test --spawn_strategy=standalone "
        "--test_env=CRISP_INTEROP_TABLE=$PWD/docs/interop.md //test/e2e:interop_matrix_test`",
        "",
        "# kubectl interop matrix",
        "",
        "Every installed kubectl against crisp behind the development API server. "
        "Each cell: the protocol crisp's /metrics counted for the session "
        "(crisp_sessions_total), then OK or FAIL. \"-\" in the toggle column means "
        "the variable is unset (the version's default); kubectl 1.27 and 1.28 read "
        "neither toggle, 1.29 only %s." % RC_TOGGLE,
        "",
        "Operations: exec-echo (output byte for byte), exec-exit7 (exit code), "
        "exec-stdin (piped stdin reaches EOF), exec-tty (`exec -it sh` in a pty: "
        "`stty size` matches, `exit 4` gives 4), attach (`attach -i` to a `cat` "
        "container), pf-http (one HTTP request), pf-64MiB (64 MiB echoed through "
        "one forwarded connection, sha256 compared), pf-20conns (20 connections "
        "open at once, each echoed, 20 active in crisp), pf-refused (a second "
        "forwarded port with nothing listening: kubectl prints the refusal; the "
        "note says whether the forward then serves a following request or "
        "kubectl exits).",
        "",
        "A refused target port ends the whole port-forward with every kubectl "
        "listed, over SPDY and over the WebSocket tunnel alike: crisp writes the "
        "kubelet's error text on that connection's error stream, kubectl prints "
        "it, then exits with \"lost connection to pod\" (as it does behind a "
        "kubelet). None of these clients keeps serving the other forwarded ports "
        "after a refused one; the pf-refused cells assert exactly that.",
        "",
        "Over WebSocket, kubectl (client-go, every listed release) starts reading "
        "the connection before it has made its streams and drops every message "
        "that arrives in between, logging `Unknown stream id 1, discarding "
        "message`. The empty message that crisp, like the kubelet, writes on the "
        "first output channel when a session opens is often dropped that way, "
        "which loses nothing. Output would be lost too if it came that early (on "
        "a loaded machine it did: half a megabyte of a fast command's first "
        "output), so crisp starts the command of a WebSocket session 20 ms after "
        "the upgrade, as a runtime's own start usually does. The "
        "cells take the logged lines out of stderr before comparing it and still "
        "compare the output whole.",
        "",
    ]
    names = [op for op, _ in OPERATIONS]
    rows = result_rows(results)
    for title, ops, short in (("exec and attach (%s)" % RC_TOGGLE, names[:5], "rc"),
                              ("port-forward (%s)" % PF_TOGGLE, names[5:], "pf")):
        lines += ["## " + title, "",
                  "| kubectl | toggle | " + " | ".join(ops) + " |",
                  "|---|---|" + "---|" * len(ops)]
        for version, toggle in rows:
            if not (toggle == "-" or toggle.startswith(short + "=")):
                continue
            if not any((version, toggle, op) in results for op in ops):
                continue
            cells = []
            for op in ops:
                if (version, toggle, op) in results:
                    seen, passed, note = results[(version, toggle, op)]
                    cells.append("`%s` %s%s" % (seen, "OK" if passed else "**FAIL**",
                                                " (%s)" % note if note else ""))
                else:
                    cells.append(".")
            lines.append("| %s | %s | %s |" % (version, toggle, " | ".join(cells)))
        lines.append("")
    return "\n".join(lines)


def main():
    harness.test_main(("crisp", "devapiserver"), share_with=(base, pf))


if __name__ == "__main__":
    main()
