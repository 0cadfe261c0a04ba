"""kubectl through crisp in front of a runtime's stream server, end to end.

Two crisp processes: the "runtime" is crisp with its embedded runtime (it
serves the CRI and a stream server, which is what containerd offers); the
front crisp has cri.upstream pointing at the runtime's CRI socket, forwards
Exec, Attach and PortForward there and answers with its own URL, and serves the
client by connecting to the runtime's stream URL itself. Real kubectl talks to
the development API server, which talks to the front crisp.

The runtime advertises its stream server through a small TCP relay run by this
test, so the runtime's stream server can be made to misbehave on demand:
refuse connections, answer the upgrade with 500, never answer, or cut a
session in the middle.

Usage: kubectl_upstream_test.py --crisp PATH --devapiserver PATH [unittest args]
"""

import os
import select
import socket
import socketserver
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kubectl_exec_test as exec_test  # noqa: E402
from kubectl_portforward_test import read_text, read_to_close, wait_for_line  # noqa: E402

ARGS = None
START_TIMEOUT = 20
KUBECTL_TIMEOUT = 60
SPDY_KUBECTL = "1.27"
NEWEST_KUBECTL = "1.33"
# kubectl 1.33 speaking WebSocket v5 to crisp; crisp speaks SPDY v4 upstream.
WS_ENV = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "true"}
# Port-forward over SPDY, and over the SPDY tunnel in WebSocket.
PF_VARIANTS = ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "true"}))

# The runtime: kubectl_exec_test's crisp with its containers, on its own
# socket, advertising the relay.
RUNTIME_CONFIG = exec_test.CRISP_CONFIG.replace("{dir}/crisp.sock", "{dir}/runtime.sock").replace(
    "  stream_creation_timeout: 5s\n", "  advertise: http://127.0.0.1:{relay_port}\n")

FRONT_CONFIG = """
cri:
  listen: {dir}/crisp.sock
  upstream: {dir}/runtime.sock
stream:
  listen: 127.0.0.1:0
  stream_creation_timeout: 5s
admin:
  listen: 127.0.0.1:0
log:
  level: {log_level}
runtime:
  stream_server:
    connect_timeout: 2s
    upgrade_timeout: 2s
"""


class Relay:
    """A TCP relay in front of the runtime's stream server. mode:
    "pass" relays both ways; "refuse" stops listening (connections are
    refused); "close" reads the request head and closes;
    "http500" answers the upgrade with a 500 and a Go-style text body;
    "silent" reads and never answers; "cut" relays until cut_all() is called."""

    def __init__(self):
        self.port = 0
        self.target = None
        self.mode = "pass"
        self.accepted = 0
        self._open = []
        self._lock = threading.Lock()
        self.listener = None
        self._listen()

    def _listen(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, args=(self.listener,), daemon=True).start()

    def _accept_loop(self, listener):
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                mode = self.mode
            threading.Thread(target=self._serve, args=(conn, mode), daemon=True).start()

    def _serve(self, conn, mode):
        if mode in ("close", "http500", "silent"):
            head = b""
            conn.settimeout(10)
            try:
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                if mode == "close":
                    pass
                elif mode == "http500":
                    body = b"runtime exploded on purpose\n"
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\n"
                                 b"Content-Type: text/plain; charset=utf-8\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
                else:
                    time.sleep(8)
            except OSError:
                pass
            conn.close()
            return
        upstream = socket.create_connection(self.target)
        with self._lock:
            self._open.append((conn, upstream))
        pair = {conn: upstream, upstream: conn}
        try:
            while True:
                ready, _, _ = select.select(list(pair), [], [], 60)
                if not ready:
                    break
                done = False
                for s in ready:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        done = True
                        break
                    pair[s].sendall(data)
                if done:
                    break
        except OSError:
            pass
        finally:
            for s in (conn, upstream):
                try:
                    s.close()
                except OSError:
                    pass

    def cut_all(self):
        """Closes every relayed connection at once, as a runtime that dies."""
        with self._lock:
            open_now, self._open = self._open, []
        for conn, upstream in open_now:
            for s in (conn, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def set_mode(self, mode):
        with self._lock:
            old, self.mode = self.mode, mode
        if mode == "refuse" and old != "refuse":
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave the socket listening until then.
            self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
        elif mode != "refuse" and old == "refuse":
            # The same port again: the runtime advertises it.
            self._listen()


class UpstreamCluster(exec_test.Cluster):
    """The runtime crisp (behind the relay), the front crisp and the API server."""

    def __init__(self, tmp):
        self.relay = Relay()
        runtime_config = os.path.join(tmp, "runtime.yaml")
        with open(runtime_config, "w") as f:
            f.write(RUNTIME_CONFIG.format(dir=tmp, relay_port=self.relay.port, log_level="info"))
        self.runtime = harness.Process("runtime", [ARGS.crisp, "--config", runtime_config],
                                       tmp).start()
        ready = self._wait_for_log(self.runtime,
                                   r"crisp ready: .* stream (\S+) \(base URL .*admin (\S+)")
        host, port = ready.group(1).rsplit(":", 1)
        self.relay.target = (host, int(port))
        self.runtime_admin = ready.group(2)
        super().__init__(tmp, FRONT_CONFIG)

    def stop(self):
        code = super().stop()
        runtime_code = self.runtime.stop()
        return code or runtime_code

    def runtime_metric(self, name, labels=None):
        admin, self.admin = self.admin, self.runtime_admin
        try:
            return self.metric(name, labels)
        finally:
            self.admin = admin

    def open_fds(self):
        return len(os.listdir("/proc/%d/fd" % self.crisp.pid))


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class UpstreamTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        exec_test.ARGS = ARGS
        cls.tmp = harness.TempDir()
        cls.cluster = UpstreamCluster(cls.tmp.path)
        # The "pod" shares the network of both crisps: a server on loopback.
        cls.echo = socketserver.ThreadingTCPServer(("127.0.0.1", 0), EchoHandler)
        cls.echo.daemon_threads = True
        threading.Thread(target=cls.echo.serve_forever, daemon=True).start()
        cls.echo_port = cls.echo.server_address[1]
        # The connections crisp keeps (to the runtime's CRI socket) open before
        # the descriptor baseline every test is held to.
        r = cls.cluster.kubectl(SPDY_KUBECTL, "exec", "demo", "--", "true")
        assert r.returncode == 0, str(r)
        cls.fds = cls.cluster.open_fds()

    @classmethod
    def tearDownClass(cls):
        cls.echo.shutdown()
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "a crisp exited with %s" % code

    def setUp(self):
        self.cluster.relay.set_mode("pass")

    def tearDown(self):
        self.cluster.relay.set_mode("pass")
        for metric in ("crisp_sessions_active", "crisp_tokens_live",
                       "crisp_runtime_stream_connections_active"):
            self.assertEqual(self.cluster.wait_for_metric(metric, 0), 0,
                             "front crisp: %s after the test" % metric)
        deadline = time.monotonic() + 10
        while self.cluster.open_fds() > self.fds and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertLessEqual(self.cluster.open_fds(), self.fds,
                             "front crisp: descriptors left open")

    def kubectl(self, version, *args, env=None, **kwargs):
        return self.cluster.kubectl(version, *args, env=env, **kwargs)

    # Through both crisps.

    def test_echo_and_exit_code(self):
        for version, env in ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, WS_ENV)):
            with self.subTest(kubectl=version):
                r = self.kubectl(version, "exec", "demo", "--", "echo", "hello", env=env)
                self.assertEqual((r.returncode, r.stdout), (0, "hello\n"), str(r))
                r = self.kubectl(version, "exec", "demo", "--", "sh", "-c",
                                 "echo out; echo err >&2; exit 7", env=env)
                self.assertEqual((r.returncode, r.stdout), (7, "out\n"), str(r))
                self.assertIn("err\n", r.stderr)
                self.assertIn("command terminated with exit code 7", r.stderr)
        # crisp served kubectl 1.33 over WebSocket v5, and the runtime's own
        # stream server served every session over SPDY v4.
        self.assertGreater(self.cluster.metric("crisp_sessions_total",
                                               {"protocol": "ws/v5.channel.k8s.io"}), 0)
        self.assertEqual(self.cluster.runtime_metric("crisp_sessions_total"),
                         self.cluster.runtime_metric("crisp_sessions_total",
                                                     {"protocol": "spdy/v4.channel.k8s.io"}))
        self.assertGreater(self.cluster.runtime_metric("crisp_sessions_total"), 0)
        self.assertGreater(self.cluster.relay.accepted, 0)

    def test_piped_stdin_reaches_eof(self):
        for version, env in ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, WS_ENV)):
            with self.subTest(kubectl=version):
                start = time.monotonic()
                r = self.kubectl(version, "exec", "-i", "demo", "--", "sh", "-c", "cat; exit 3",
                                 stdin_data=b"a\nb\n", timeout=15, env=env)
                self.assertEqual((r.returncode, r.stdout), (3, "a\nb\n"), str(r))
                self.assertLess(time.monotonic() - start, 10)

    def test_large_output_arrives_whole(self):
        proc = subprocess.run(self.cluster.kubectl_argv(SPDY_KUBECTL, "exec", "demo", "--", "seq",
                                                        "1", "300000"),
                              capture_output=True, env=self.cluster.kubectl_env(),
                              timeout=KUBECTL_TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proc.stdout), len("".join("%d\n" % i for i in range(1, 300001))))

    def test_interactive_tty_with_resize(self):
        for version, env in ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, WS_ENV)):
            with self.subTest(kubectl=version):
                term = exec_test.PtyKubectl(self.cluster, version,
                                            ["exec", "-it", "demo", "--", "sh"], 40, 100, env)
                try:
                    self.assertEqual(exec_test.wait_for_terminal_size(term, b"40 100"), b"40 100")
                    term.resize(50, 120)
                    self.assertEqual(exec_test.wait_for_terminal_size(term, b"50 120"), b"50 120")
                    term.send("exit 4\n")
                    self.assertEqual(term.wait(), 4)
                finally:
                    term.kill()

    def test_attach_to_a_terminal_container(self):
        term = exec_test.PtyKubectl(self.cluster, SPDY_KUBECTL, ["attach", "-it", "demo"],
                                    rows=24, cols=80)
        try:
            term.send("echo attached-$((20+22))\n")
            term.expect(rb"attached-42")
        finally:
            term.kill()

    def test_attach_without_tty_carries_stdin_and_stdout(self):
        for version, env in ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, WS_ENV)):
            with self.subTest(kubectl=version):
                full_env = self.cluster.kubectl_env()
                full_env.update(env or {})
                proc = subprocess.Popen(self.cluster.kubectl_argv(version, "attach", "-i",
                                                                  "echoer"),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=full_env,
                                        start_new_session=True)
                try:
                    seen = harness.write_until_echoed(proc, b"ping-1\n")
                    self.assertIn(b"ping-1\n", seen)
                finally:
                    os.killpg(proc.pid, 9)
                    proc.communicate()

    def port_forward(self, version, port, env=None):
        full_env = self.cluster.kubectl_env()
        full_env.update(env or {})
        name = "port-forward-%s-%d" % (version, time.monotonic_ns())
        proc = harness.Process(name, [harness.kubectl_path(version), "--kubeconfig",
                                      self.cluster.kubeconfig, "port-forward", "--address",
                                      "127.0.0.1", "pod/demo", ":%d" % port],
                               self.cluster.dir, env=full_env).start()
        m = wait_for_line(proc.stdout_path, r"Forwarding from 127\.0\.0\.1:(\d+) -> %d\n" % port,
                          proc)
        return proc, int(m.group(1))

    def test_port_forward_carries_bytes_both_ways(self):
        for version in (SPDY_KUBECTL, NEWEST_KUBECTL):
            with self.subTest(kubectl=version):
                proc, local = self.port_forward(version, self.echo_port)
                try:
                    for i in range(3):
                        with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
                            payload = os.urandom(200000)
                            s.sendall(payload)
                            s.shutdown(socket.SHUT_WR)
                            got = b""
                            while True:
                                chunk = s.recv(65536)
                                if not chunk:
                                    break
                                got += chunk
                            self.assertEqual(got, payload, "connection %d" % i)
                    # One upstream connection carries every forwarded connection.
                    self.assertTrue(proc.running(), proc.logs())
                finally:
                    proc.stop()

    def test_port_forward_refused_port_reports_the_runtimes_error(self):
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        proc, local = self.port_forward(SPDY_KUBECTL, port)
        try:
            with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
                s.settimeout(10)
                try:
                    self.assertEqual(s.recv(100), b"")
                except ConnectionResetError:
                    pass
            text = wait_for_line(proc.stderr_path, r"error forwarding port %d to pod demo[^\n]*"
                                 % port, proc).group(0)
            self.assertIn("connection refused", text)
            # The runtime's text, once: not wrapped again by the front crisp.
            self.assertEqual(text.count("error forwarding port"), 1, text)
        finally:
            proc.stop()

    # The runtime's stream server misbehaving.

    def assert_exec_fails_clearly(self, version, expect, env=None, command=("echo", "hi")):
        start = time.monotonic()
        r = self.kubectl(version, "exec", "demo", "--", *command, env=env, timeout=20)
        self.assertNotEqual(r.returncode, 0, str(r))
        self.assertRegex(r.stderr, expect, str(r))
        self.assertLess(time.monotonic() - start, 10, "no answer in time")

    def test_refused_connection(self):
        # Nothing listens on the advertised port while the relay is stopped.
        self.cluster.relay.set_mode("refuse")
        for version, env in ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, WS_ENV)):
            with self.subTest(kubectl=version):
                self.assert_exec_fails_clearly(
                    version, r"runtime stream server 127\.0\.0\.1:\d+: connect to "
                    r"127\.0\.0\.1:\d+: Connection refused", env)
        self.assertEqual(self.cluster.metric("crisp_runtime_stream_upgrades_total",
                                             {"result": "connect_failed"}), 2)

    def test_connection_closed_before_the_answer(self):
        self.cluster.relay.set_mode("close")
        self.assert_exec_fails_clearly(
            SPDY_KUBECTL, r"closed the connection before answering the upgrade")

    def test_upgrade_answered_with_500(self):
        self.cluster.relay.set_mode("http500")
        for version, env in ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, WS_ENV)):
            with self.subTest(kubectl=version):
                self.assert_exec_fails_clearly(
                    version, r"refused the upgrade: 500 Internal Server Error: runtime exploded "
                    r"on purpose", env)

    def test_upgrade_never_answered_times_out(self):
        self.cluster.relay.set_mode("silent")
        self.assert_exec_fails_clearly(SPDY_KUBECTL, r"no answer to the upgrade within 2000 ms")

    def test_runtime_dies_mid_session(self):
        for version, env in ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, WS_ENV)):
            with self.subTest(kubectl=version):
                full_env = self.cluster.kubectl_env()
                full_env.update(env or {})
                proc = subprocess.Popen(self.cluster.kubectl_argv(
                    version, "exec", "demo", "--", "sh", "-c", "echo started; sleep 30"),
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                    start_new_session=True)
                try:
                    ready, _, _ = select.select([proc.stdout], [], [], 15)
                    self.assertTrue(ready, "exec never started")
                    self.assertEqual(proc.stdout.readline(), b"started\n")
                    self.cluster.relay.cut_all()
                    out, err = proc.communicate(timeout=10)
                    self.assertNotEqual(proc.returncode, 0)
                    self.assertIn(b"lost the connection before the status", err)
                finally:
                    if proc.poll() is None:
                        os.killpg(proc.pid, 9)
                        proc.communicate()

    def test_runtime_error_status_reaches_kubectl(self):
        # The runtime's stream server ends the session with a failure Status
        # of its own: kubectl shows the runtime's words.
        for version, env in ((SPDY_KUBECTL, None), (NEWEST_KUBECTL, WS_ENV)):
            with self.subTest(kubectl=version):
                self.assert_exec_fails_clearly(version, r"/no/such/binary", env,
                                               command=["/no/such/binary"])
        self.assertEqual(self.cluster.runtime_metric("crisp_sessions_active"), 0)

    def test_port_forward_upgrade_refused(self):
        self.cluster.relay.set_mode("http500")
        for version, env in PF_VARIANTS:
            with self.subTest(kubectl=version, env=env):
                proc, local = self.port_forward(version, self.echo_port, env)
                try:
                    with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
                        read_to_close(s)
                    text = wait_for_line(proc.stderr_path, r"error forwarding port[^\n]*",
                                         proc).group(0)
                    self.assertIn("refused the upgrade: 500", text)
                finally:
                    proc.stop()

    def test_port_forward_runtime_dies_mid_connection(self):
        for version, env in PF_VARIANTS:
            with self.subTest(kubectl=version, env=env):
                proc, local = self.port_forward(version, self.echo_port, env)
                try:
                    with socket.create_connection(("127.0.0.1", local), timeout=10) as s:
                        s.settimeout(10)
                        s.sendall(b"before the cut\n")
                        got = b""
                        while len(got) < 15:
                            chunk = s.recv(100)
                            self.assertTrue(chunk, "closed before the echo")
                            got += chunk
                        self.assertEqual(got, b"before the cut\n")
                        self.cluster.relay.cut_all()
                        # The forwarded connection ends; nothing hangs.
                        read_to_close(s)
                    # kubectl says the session is gone and exits.
                    self.assertNotEqual(proc._popen.wait(timeout=20), 0, proc.logs())
                    self.assertRegex(read_text(proc.stderr_path), r"lost connection to pod",
                                     proc.logs())
                finally:
                    proc.stop()


def main():
    harness.test_main(("crisp", "devapiserver"))


if __name__ == "__main__":
    main()
