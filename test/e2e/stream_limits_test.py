"""crisp's stream limits and timeouts, end to end, as set in its config file.

MaxSessionsTest runs crisp with stream.max_sessions: 2 behind the development
API server: two kubectl exec sessions stay open, a third kubectl exec is refused
with a clear error (for an SPDY-only kubectl and for one that tries WebSocket
first), and succeeds once one of the two ended.

LimitsAndTimeoutsTest runs crisp with small timeouts and frame limits and
speaks to its stream URLs (from cricall) with raw clients: each limit closes
the connection the documented way and is counted on /metrics.

Usage: stream_limits_test.py --crisp PATH --devapiserver PATH --cricall PATH
                             [unittest args]
"""

import os
import re
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kubectl_exec_test as base  # noqa: E402  (Cluster)
import kubectl_websocket_test as ws  # noqa: E402  (RawWebSocket)

ARGS = None
SPDY_KUBECTL = "1.27"
WS_KUBECTL = "1.33"
REFUSAL = "too many streaming sessions (the limit is 2, stream.max_sessions); try again later"

MAX_SESSIONS_CONFIG = """
cri:
  listen: {dir}/crisp.sock
stream:
  listen: 127.0.0.1:0
  max_sessions: 2
admin:
  listen: 127.0.0.1:0
log:
  level: {log_level}
runtime:
  embedded:
    containers:
      - id: demo
        command: ["/bin/sleep", "infinity"]
"""

LIMITS_CONFIG = """
cri:
  listen: {dir}/crisp.sock
stream:
  listen: 127.0.0.1:0
  stream_creation_timeout: 1s
  stream_idle_timeout: 2s
  max_frame_bytes: 65536
  max_header_bytes: 4096
  header_timeout: 1s
admin:
  listen: 127.0.0.1:0
log:
  level: {log_level}
runtime:
  embedded:
    containers:
      - id: demo
        command: ["/bin/sleep", "infinity"]
"""


def limit_hits(cluster, limit):
    return cluster.metric("crisp_stream_limit_hits_total", {"limit": limit})


def wait_for_at_least(cluster, name, want, labels, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        got = cluster.metric(name, labels)
        if got >= want or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


class MaxSessionsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = base.Cluster(cls.tmp.path, MAX_SESSIONS_CONFIG)

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def hold_session(self):
        """A kubectl exec running `cat` with its stdin held open."""
        proc = subprocess.Popen(self.cluster.kubectl_argv(SPDY_KUBECTL, "exec", "-i", "demo",
                                                          "--", "cat"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.cluster.kubectl_env(),
                                start_new_session=True)
        self.addCleanup(self.end, proc)
        return proc

    @staticmethod
    def end(proc):
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in (proc.stdout, proc.stderr):
            f.close()

    def test_third_concurrent_exec_is_refused_until_one_ends(self):
        first = self.hold_session()
        self.hold_session()
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 2), 2)

        for version, attempts in ((SPDY_KUBECTL, 1), (WS_KUBECTL, 2)):
            with self.subTest(kubectl=version):
                hits = limit_hits(self.cluster, "max_sessions")
                start = time.monotonic()
                r = self.cluster.kubectl(version, "exec", "demo", "--", "echo", "hi", timeout=20)
                self.assertNotEqual(r.returncode, 0, str(r))
                self.assertEqual(r.stdout, "", str(r))
                self.assertIn("unable to upgrade connection: " + REFUSAL, r.stderr)
                self.assertLess(time.monotonic() - start, 10)
                # kubectl 1.30+ tries WebSocket first and falls back to SPDY:
                # both attempts are refused, each with a fresh URL.
                self.assertEqual(self.cluster.wait_for_metric(
                    "crisp_stream_limit_hits_total", hits + attempts,
                    labels={"limit": "max_sessions"}), hits + attempts)
                self.assertEqual(self.cluster.metric("crisp_sessions_active"), 2)

        # One session ends: its slot is free for the next exec.
        first.stdin.close()
        self.assertEqual(first.wait(timeout=10), 0)
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 1), 1)
        for version in (SPDY_KUBECTL, WS_KUBECTL):
            with self.subTest(kubectl=version, after="one ended"):
                r = self.cluster.kubectl(version, "exec", "demo", "--", "echo", "hi")
                self.assertEqual((r.returncode, r.stdout), (0, "hi\n"), str(r))
        self.assertGreaterEqual(self.cluster.metric("crisp_stream_requests_total",
                                                    {"result": "too_many_sessions"}), 3)


class LimitsAndTimeoutsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = base.Cluster(cls.tmp.path, LIMITS_CONFIG)

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def url(self, *args):
        r = self.cluster.cricall(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def timeouts(self, kind):
        return self.cluster.metric("crisp_session_timeouts_total", {"kind": kind})

    def test_exec_without_streams_hits_the_creation_timeout(self):
        before = self.timeouts("creation")
        with RawSpdy(self.url("exec", "demo", "--", "true"), "v4.channel.k8s.io") as client:
            start = time.monotonic()
            frames = client.read_frames_until_close(timeout=10)
            elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 5)
        self.assertIn(("goaway", 0), [(f[0], f[2]) for f in frames if f[0] == "goaway"])
        self.assertEqual(wait_for_at_least(self.cluster, "crisp_session_timeouts_total",
                                           before + 1, {"kind": "creation"}), before + 1)

    def test_idle_port_forward_hits_the_idle_timeout(self):
        before = self.timeouts("idle")
        with RawSpdy(self.url("portforward", "demo"), "portforward.k8s.io") as client:
            start = time.monotonic()
            frames = client.read_frames_until_close(timeout=10)
            elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 1.9)
        self.assertLess(elapsed, 6)
        self.assertIn(("goaway", 0), [(f[0], f[2]) for f in frames if f[0] == "goaway"])
        self.assertEqual(wait_for_at_least(self.cluster, "crisp_session_timeouts_total",
                                           before + 1, {"kind": "idle"}), before + 1)

    def test_idle_websocket_exec_hits_the_idle_timeout(self):
        before = self.timeouts("idle")
        url = self.url("exec", "--stdin", "demo", "--", "sleep", "100")
        with ws.RawWebSocket(url, "v4.channel.k8s.io") as client:
            self.assertEqual(client.recv_message(), (0x2, b"\x01"))  # the ready signal
            start = time.monotonic()
            channels, code = client.read_until_close()
            elapsed = time.monotonic() - start
        # The reason on the error channel, then a normal close, so that kubectl
        # shows the reason.
        self.assertEqual(code, 1000)
        self.assertIn(b"crisp ended the session: no input or output for 2s "
                      b"(stream.stream_idle_timeout)", channels.get(3, b""))
        self.assertGreaterEqual(elapsed, 1.9)
        self.assertLess(elapsed, 6)
        self.assertEqual(wait_for_at_least(self.cluster, "crisp_session_timeouts_total",
                                           before + 1, {"kind": "idle"}), before + 1)

    def test_spdy_frame_over_max_frame_bytes_gets_goaway(self):
        before = limit_hits(self.cluster, "frame_bytes")
        with RawSpdy(self.url("exec", "demo", "--", "true"), "v4.channel.k8s.io") as client:
            # A DATA frame header announcing 65537 bytes: refused on the header alone.
            client.sock.sendall(struct.pack("!IBBH", 1, 0, 65537 >> 16, 65537 & 0xFFFF))
            frames = client.read_frames_until_close(timeout=10)
        # GOAWAY with status PROTOCOL_ERROR (1).
        self.assertIn(("goaway", 1), [(f[0], f[2]) for f in frames if f[0] == "goaway"])
        self.assertEqual(wait_for_at_least(self.cluster, "crisp_stream_limit_hits_total",
                                           before + 1, {"limit": "frame_bytes"}), before + 1)

    def test_spdy_frame_of_max_frame_bytes_is_accepted(self):
        before = limit_hits(self.cluster, "frame_bytes")
        with RawSpdy(self.url("exec", "demo", "--", "true"), "v4.channel.k8s.io") as client:
            # A DATA frame of exactly 65536 bytes for a stream never opened:
            # answered with RST_STREAM, the connection stays (until the
            # creation timeout closes it with GOAWAY OK).
            client.sock.sendall(struct.pack("!IBBH", 1, 0, 65536 >> 16, 65536 & 0xFFFF) +
                                b"\0" * 65536)
            frames = client.read_frames_until_close(timeout=10)
        self.assertIn(("rst", 1), [(f[0], f[1]) for f in frames if f[0] == "rst"])
        self.assertIn(("goaway", 0), [(f[0], f[2]) for f in frames if f[0] == "goaway"])
        self.assertEqual(limit_hits(self.cluster, "frame_bytes"), before)

    def test_websocket_message_over_max_frame_bytes_gets_1009(self):
        before = limit_hits(self.cluster, "frame_bytes")
        url = self.url("exec", "--stdin", "demo", "--", "cat")
        with ws.RawWebSocket(url, "v4.channel.k8s.io") as client:
            self.assertEqual(client.recv_message(), (0x2, b"\x01"))
            # Exactly the limit: delivered to cat's stdin and echoed back.
            client.send(0x2, b"\x00" + b"x" * 65535)
            echoed = b""
            while len(echoed) < 65535:
                opcode, payload = client.recv_message()
                self.assertEqual(opcode, 0x2)
                self.assertEqual(payload[:1], b"\x01")
                echoed += payload[1:]
            self.assertEqual(echoed, b"x" * 65535)
            # One byte more.
            client.send(0x2, b"\x00" + b"x" * 65536)
            _, code = client.read_until_close()
        self.assertEqual(code, 1009)
        self.assertEqual(wait_for_at_least(self.cluster, "crisp_stream_limit_hits_total",
                                           before + 1, {"limit": "frame_bytes"}), before + 1)

    def test_request_head_over_max_header_bytes_gets_431(self):
        before = limit_hits(self.cluster, "header_bytes")
        url = self.url("exec", "demo", "--", "true")
        m = re.match(r"^http://([^/:]+):(\d+)(/.*)$", url)
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=10) as s:
            s.sendall(("POST %s HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n" %
                       (m.group(3), "p" * 5000)).encode())
            answer = read_to_eof(s)
        self.assertTrue(answer.startswith(b"HTTP/1.1 431 "), answer)
        self.assertEqual(limit_hits(self.cluster, "header_bytes"), before + 1)

    def test_silent_client_hits_the_header_timeout(self):
        before = limit_hits(self.cluster, "header_timeout")
        url = self.url("exec", "demo", "--", "true")
        m = re.match(r"^http://([^/:]+):(\d+)(/.*)$", url)
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=10) as s:
            s.sendall(b"POST ")
            self.assertEqual(read_to_eof(s), b"")
        self.assertEqual(wait_for_at_least(self.cluster, "crisp_stream_limit_hits_total",
                                           before + 1, {"limit": "header_timeout"}), before + 1)


def read_to_eof(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class RawSpdy:
    """An SPDY/3.1 upgrade to a stream URL with a raw socket; reads frames
    without decoding header blocks (none are needed here)."""

    def __init__(self, url, protocol):
        m = re.match(r"^http://([^/:]+):(\d+)(/.*)$", url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=15)
        self.sock.sendall(("POST %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: Upgrade\r\n"
                           "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: %s\r\n"
                           "Content-Length: 0\r\n\r\n" % (path, host, port, protocol)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError("closed during the upgrade: %r" % self.buf)
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise AssertionError("no upgrade: %r" % head)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()
        return False

    def read_frames_until_close(self, timeout):
        """Every frame until the server closes, as tuples: ("goaway", last_id,
        status), ("rst", stream_id, status), ("data", stream_id, length),
        ("control", type, length)."""
        self.sock.settimeout(timeout)
        data = self.buf + read_to_eof(self.sock)
        frames = []
        while len(data) >= 8:
            word, flags_len = struct.unpack("!II", data[:8])
            length = flags_len & 0xFFFFFF
            payload = data[8:8 + length]
            data = data[8 + length:]
            if word & 0x80000000:
                kind = word & 0xFFFF
                if kind == 7:
                    last, status = struct.unpack("!II", payload[:8])
                    frames.append(("goaway", last, status))
                elif kind == 3:
                    stream, status = struct.unpack("!II", payload[:8])
                    frames.append(("rst", stream, status))
                else:
                    frames.append(("control", kind, length))
            else:
                frames.append(("data", word, length))
        return frames


def main():
    harness.test_main(("crisp", "devapiserver", "cricall"), share_with=(base,))


if __name__ == "__main__":
    main()
