"""kubectl port-forward through crisp, end to end.

Real kubectl binaries talk to the development API server, which asks crisp's
CRI socket for a port-forward URL and hands the upgrade to crisp's stream
server; crisp's embedded runtime connects to servers this test runs on
127.0.0.1 (the "pod" shares crisp's network here). Every assertion is on what
a kubectl user sees: bytes through the local port, kubectl staying up or
exiting, its messages.

kubectl 1.27 speaks SPDY only; kubectl 1.33 uses the SPDY-over-WebSocket
tunnel (kubectl_portforward_ws_test.py checks which protocol each kubectl
version and setting ends up on).

Usage: kubectl_portforward_test.py --crisp PATH --devapiserver PATH [unittest args]
"""

import hashlib
import http.server
import os
import re
import socket
import socketserver
import struct
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ARGS = None
START_TIMEOUT = 20
IO_TIMEOUT = 20
SPDY_KUBECTL = "1.27"
NEWEST_KUBECTL = "1.33"

CRISP_CONFIG = """
cri:
  listen: {dir}/crisp.sock
stream:
  listen: 127.0.0.1:0
admin:
  listen: 127.0.0.1:0
log:
  level: info
runtime:
  embedded:
    containers:
      - id: demo
        command: ["/bin/sleep", "infinity"]
"""


class Cluster:
    """crisp with its embedded runtime plus the development API server."""

    def __init__(self, tmp):
        self.dir = tmp
        config = os.path.join(tmp, "crisp.yaml")
        with open(config, "w") as f:
            f.write(CRISP_CONFIG.format(dir=tmp))
        self.cri_socket = os.path.join(tmp, "crisp.sock")
        self.crisp = harness.Process("crisp", [ARGS.crisp, "--config", config], tmp).start()
        self.admin = wait_for_line(self.crisp.stderr_path, r"crisp ready: .* admin (\S+)",
                                   self.crisp).group(1)
        self.kubeconfig = os.path.join(tmp, "kubeconfig")
        ready_file = os.path.join(tmp, "devapiserver.ready")
        self.devapi = harness.Process("devapiserver", [
            ARGS.devapiserver, "--listen", "127.0.0.1:0", "--cri", self.cri_socket,
            "--kubeconfig", self.kubeconfig, "--ready-file", ready_file], tmp).start()
        self.devapi.wait_for_file(ready_file, START_TIMEOUT)

    def stop(self):
        self.devapi.stop()
        return self.crisp.stop()

    def metric(self, name, labels=None):
        """The sum of every sample of `name` whose labels include `labels`."""
        with urllib.request.urlopen("http://%s/metrics" % self.admin, timeout=5) as r:
            text = r.read().decode()
        total = 0
        for line in text.splitlines():
            m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
            if not m or m.group(1) != name:
                continue
            if labels and not all('%s="%s"' % kv in (m.group(2) or "") for kv in labels.items()):
                continue
            total += float(m.group(3))
        return total

    def wait_for_metric(self, name, want, labels=None, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            got = self.metric(name, labels)
            if got == want or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def port_forward(self, version, *ports, env=None):
        """Starts `kubectl port-forward demo :P...`; returns (process, [local ports]).
        env: extra environment variables (e.g. KUBECTL_PORT_FORWARD_WEBSOCKETS)."""
        full_env = {"PATH": "/usr/bin:/bin", "HOME": self.dir, "KUBECONFIG": self.kubeconfig}
        full_env.update(env or {})
        name = "port-forward-%s-%d" % (version, time.monotonic_ns())
        proc = harness.Process(name, [harness.kubectl_path(version), "--kubeconfig",
                                      self.kubeconfig, "port-forward", "--address", "127.0.0.1",
                                      "pod/demo"] + [":%d" % p for p in ports],
                               self.dir, env=full_env).start()
        local = []
        for remote in ports:
            m = wait_for_line(proc.stdout_path,
                              r"Forwarding from 127\.0\.0\.1:(\d+) -> %d\n" % remote, proc)
            local.append(int(m.group(1)))
        return proc, local


def read_to_close(sock):
    """Reads `sock` until the far end closes or resets it; returns the bytes."""
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except ConnectionResetError:
        return got


def wait_for_line(path, pattern, process, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "r", errors="replace") as f:
                m = re.search(pattern, f.read())
        except FileNotFoundError:
            m = None
        if m:
            return m
        process._check_alive(pattern)
        if time.monotonic() > deadline:
            raise harness.HarnessError("no %r in %s\n%s" % (pattern, path, process.logs()))
        time.sleep(0.02)


def read_text(path):
    with open(path, "r", errors="replace") as f:
        return f.read()


# The "applications in the pod".

class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)
        self.request.shutdown(socket.SHUT_WR)


class HelloHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the pod\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class ResetServer:
    """Accepts and resets every connection (SO_LINGER 0), like an application
    that aborts a connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self):
        self.sock.close()


def start_server(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def http_get(port):
    """One HTTP/1.0 request on a new connection; returns the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return answer
            answer += chunk


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PortForwardTests:
    """The tests, run once per kubectl version (VERSION), each version with a
    crisp of its own so that one cannot hide the other's results."""

    VERSION = None
    # Whether bytes from the pod reach kubectl by splice(2): SPDY straight on
    # TCP does; the SPDY-over-WebSocket tunnel copies them into its messages.
    SPLICED = True
    SEQUENTIAL_CONNECTIONS = 1000

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = Cluster(cls.tmp.path)
        cls.echo = start_server(ThreadingServer(("127.0.0.1", 0), EchoHandler))
        cls.http = start_server(http.server.ThreadingHTTPServer(("127.0.0.1", 0), HelloHandler))
        cls.reset = ResetServer()

    @classmethod
    def tearDownClass(cls):
        cls.echo.shutdown()
        cls.http.shutdown()
        cls.reset.close()
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def setUp(self):
        # Cleanups run last first: this check runs after every kubectl of the
        # test was stopped.
        self.addCleanup(self.check_nothing_left)

    def check_nothing_left(self):
        # Whatever a test did, its kubectl is gone and crisp holds no session.
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0,
                                                      {"operation": "portforward"}), 0)
        self.assertEqual(self.cluster.wait_for_metric("crisp_portforward_connections_active",
                                                      0), 0)

    def forward(self, *ports):
        proc, local = self.cluster.port_forward(self.VERSION, *ports)
        self.addCleanup(proc.stop)
        return proc, local

    def test_echo_is_byte_exact(self):
        before = self.cluster.metric("crisp_sessions_total", {"operation": "portforward"})
        spliced_before = self.cluster.metric("crisp_portforward_spliced_bytes_total")
        proc, (local, _) = self.forward(self.echo.server_address[1], self.http.server_address[1])
        data = os.urandom(4 << 20)
        with socket.create_connection(("127.0.0.1", local), timeout=IO_TIMEOUT) as s:
            sender = threading.Thread(target=lambda: (s.sendall(data),
                                                      s.shutdown(socket.SHUT_WR)))
            sender.start()
            got = bytearray()
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
            sender.join()
        self.assertEqual(len(got), len(data))
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())
        self.assertEqual(self.cluster.metric("crisp_sessions_total",
                                             {"operation": "portforward"}), before + 1)
        spliced = self.cluster.metric("crisp_portforward_spliced_bytes_total") - spliced_before
        if self.SPLICED:
            self.assertGreater(spliced, 0)
        else:
            self.assertEqual(spliced, 0)
        self.assertTrue(proc.running(), proc.logs())

    def test_many_sequential_connections_through_one_session(self):
        # Streaming case B07 at kubectl level: every forwarded connection
        # succeeds and leaves nothing behind in crisp.
        ok_before = self.cluster.metric("crisp_portforward_connections_total", {"result": "ok"})
        proc, (local,) = self.forward(self.http.server_address[1])
        for _ in range(50):  # warm-up
            self.assertTrue(http_get(local).endswith(b"hello from the pod\n"))
        self.assertEqual(self.cluster.wait_for_metric("crisp_portforward_connections_active", 0),
                         0)
        fds = harness.fd_count(self.cluster.crisp.pid)
        rss = harness.rss_kib(self.cluster.crisp.pid)
        for i in range(self.SEQUENTIAL_CONNECTIONS):
            answer = http_get(local)
            self.assertTrue(answer.startswith(b"HTTP/1.0 200 OK\r\n"), (i, answer))
            self.assertTrue(answer.endswith(b"hello from the pod\n"), (i, answer))
        self.assertTrue(proc.running(), proc.logs())
        self.assertEqual(self.cluster.wait_for_metric("crisp_portforward_connections_active", 0),
                         0)
        self.assertEqual(self.cluster.metric("crisp_portforward_connections_total",
                                             {"result": "ok"}),
                         ok_before + 50 + self.SEQUENTIAL_CONNECTIONS)
        # The last connection's socket closes a moment after its pair ended.
        deadline = time.monotonic() + 5
        while harness.fd_count(self.cluster.crisp.pid) > fds and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertLessEqual(harness.fd_count(self.cluster.crisp.pid), fds)
        # Under AddressSanitizer freed memory is held in its quarantine (up
        # to 256 MiB) rather than reused, so RSS grows with any allocation
        # and says nothing about leaks; LeakSanitizer checks them at crisp's
        # exit instead, which tearDownClass requires to be clean.
        if not harness.address_sanitized(self.cluster.crisp.pid):
            self.assertLess(harness.rss_kib(self.cluster.crisp.pid) - rss, 5 * 1024)

    def test_application_reset_keeps_the_session(self):
        # Streaming case B02 at kubectl level. crisp ends a connection the
        # application reset like a close and writes nothing on its error
        # stream, so kubectl keeps its other forwards. (Every kubectl up to
        # 1.35, 1.27 and 1.33 included, closes the whole session on any
        # error-stream text: behind a runtime that reports the reset there, as
        # containerd 2.0 does, both exit with "lost connection to pod".)
        accepted = self.reset.accepted
        proc, (reset_local, http_local) = self.forward(self.reset.port,
                                                       self.http.server_address[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", reset_local), timeout=IO_TIMEOUT) as s:
                s.sendall(b"hello")
                try:
                    self.assertEqual(s.recv(100), b"")
                except ConnectionResetError:
                    pass
            answer = http_get(http_local)
            self.assertTrue(answer.endswith(b"hello from the pod\n"), answer)
        deadline = time.monotonic() + 10
        while self.reset.accepted < accepted + 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.reset.accepted, accepted + 3)
        self.assertTrue(proc.running(), proc.logs())
        self.assertNotIn("lost connection to pod", read_text(proc.stderr_path))

    def test_refused_port_reports_the_kubelets_text(self):
        # A port nothing listens on is a forwarding failure: the kubelet's text
        # on the error stream, which kubectl prints before it ends the session,
        # as it does behind a kubelet.
        port = closed_port()
        refused = self.cluster.metric("crisp_portforward_connections_total",
                                      {"result": "refused"})
        proc, (local,) = self.forward(port)
        with socket.create_connection(("127.0.0.1", local), timeout=IO_TIMEOUT) as s:
            try:
                self.assertEqual(s.recv(100), b"")
            except ConnectionResetError:
                pass
        deadline = time.monotonic() + 10
        while proc.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(proc.running(), "kubectl kept running\n" + proc.logs())
        # Newer kubectl logs structured (quotes escaped), older plain text.
        stderr = read_text(proc.stderr_path).replace('\\"', '"')
        self.assertIn("error forwarding port %d to pod demo, uid : failed to connect to "
                      "localhost:%d in the network of pod sandbox \"demo\": "
                      "127.0.0.1:%d: connection refused" % (port, port, port), stderr)
        self.assertIn("lost connection to pod", stderr)
        self.assertEqual(self.cluster.metric("crisp_portforward_connections_total",
                                             {"result": "refused"}), refused + 1)


class Kubectl127Test(PortForwardTests, unittest.TestCase):
    """SPDY only."""
    VERSION = SPDY_KUBECTL


class Kubectl133Test(PortForwardTests, unittest.TestCase):
    """The SPDY-over-WebSocket tunnel."""
    VERSION = NEWEST_KUBECTL
    SPLICED = False
    SEQUENTIAL_CONNECTIONS = 1500


def main():
    harness.test_main(("crisp", "devapiserver"))


if __name__ == "__main__":
    main()
