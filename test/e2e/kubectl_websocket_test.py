"""kubectl exec and attach over WebSocket through crisp, end to end.

kubectl 1.30+ tries WebSocket (v5.channel.k8s.io) first; the development API
server forwards the upgrade to crisp's stream server unchanged, so these runs
reach crisp's WebSocket remotecommand sessions, which run the commands with the
embedded host runtime. Every assertion is on what a user sees (output bytes,
exit codes, timing bounds) plus crisp's own metrics, which name the protocol
each session really used (so a silent fallback to SPDY fails the test).

A raw WebSocket client written here with the standard library also speaks the
older subprotocols (v4.channel.k8s.io, base64.channel.k8s.io) to a stream URL
obtained from crisp's CRI socket with cricall.

Usage: kubectl_websocket_test.py --crisp PATH --devapiserver PATH --cricall PATH
                                 [unittest args]
"""

import base64
import hashlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kubectl_exec_test as base  # noqa: E402  (Cluster, PtyKubectl)

ARGS = None
KUBECTL_TIMEOUT = 60
WS_KUBECTL = "1.33"
SUCCESS_JSON = b'{"metadata":{},"status":"Success"}'
WS_V5 = "ws/v5.channel.k8s.io"
SPDY_V4 = "spdy/v4.channel.k8s.io"


class KubectlWebSocketTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = base.Cluster(cls.tmp.path)

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def setUp(self):
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0), 0,
                         "sessions left over from an earlier test")

    def tearDown(self):
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0), 0,
                         "sessions still active after the test")

    def sessions(self, protocol, operation="exec"):
        return self.cluster.metric("crisp_sessions_total",
                                   {"operation": operation, "protocol": protocol})

    def assert_sessions(self, protocol, want, operation="exec"):
        got = self.cluster.wait_for_metric("crisp_sessions_total", want,
                                           labels={"operation": operation, "protocol": protocol})
        self.assertEqual(got, want, "%s %s sessions" % (operation, protocol))

    def test_echo_and_exit_code_over_v5(self):
        ws, spdy = self.sessions(WS_V5), self.sessions(SPDY_V4)
        r = self.cluster.kubectl(WS_KUBECTL, "exec", "demo", "--", "echo", "hello")
        self.assertEqual((r.returncode, r.stdout), (0, "hello\n"), str(r))
        r = self.cluster.kubectl(WS_KUBECTL, "exec", "demo", "--", "sh", "-c",
                                 "echo out; echo err >&2; exit 7")
        self.assertEqual((r.returncode, r.stdout), (7, "out\n"), str(r))
        self.assertIn("err\n", r.stderr)
        self.assertIn("command terminated with exit code 7", r.stderr)
        self.assert_sessions(WS_V5, ws + 2)
        self.assertEqual(self.sessions(SPDY_V4), spdy, "kubectl fell back to SPDY")

    def test_piped_stdin_reaches_eof_over_v5(self):
        # streaming case B01 over WebSocket v5: the CLOSE signal ends stdin.
        ws = self.sessions(WS_V5)
        start = time.monotonic()
        r = self.cluster.kubectl(WS_KUBECTL, "exec", "-i", "demo", "--", "sh", "-c",
                                 "cat; exit 3", stdin_data=b"a\nb\n", timeout=10)
        self.assertEqual((r.returncode, r.stdout, r.stderr.count("exit code 3")),
                         (3, "a\nb\n", 1), str(r))
        self.assertLess(time.monotonic() - start, 5)
        # B09 with the real client: sort only answers after its stdin ended.
        r = self.cluster.kubectl(WS_KUBECTL, "exec", "-i", "demo", "--", "sh", "-c",
                                 "sort; echo end >&2", stdin_data=b"b\na\n", timeout=10)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "a\nb\n", "end\n"), str(r))
        self.assert_sessions(WS_V5, ws + 2)

    def test_16_mib_of_stdin_comes_back_byte_exact(self):
        ws = self.sessions(WS_V5)
        data = os.urandom(16 << 20)
        proc = subprocess.run(self.cluster.kubectl_argv(WS_KUBECTL, "exec", "-i", "demo", "--",
                                                        "cat"),
                              input=data, capture_output=True, env=self.cluster.kubectl_env(),
                              timeout=KUBECTL_TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proc.stdout), len(data))
        self.assertEqual(hashlib.sha256(proc.stdout).hexdigest(),
                         hashlib.sha256(data).hexdigest())
        self.assert_sessions(WS_V5, ws + 1)

    def test_large_stdout_is_never_truncated(self):
        # streaming case B05 over WebSocket.
        proc = subprocess.run(self.cluster.kubectl_argv(WS_KUBECTL, "exec", "demo", "--", "seq",
                                                        "1", "2000000"),
                              capture_output=True, env=self.cluster.kubectl_env(),
                              timeout=KUBECTL_TIMEOUT)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proc.stdout), 14888896)
        self.assertTrue(proc.stdout.endswith(b"\n2000000\n"))

    def test_interactive_tty_with_resize(self):
        ws = self.sessions(WS_V5)
        term = base.PtyKubectl(self.cluster, WS_KUBECTL, ["exec", "-it", "demo", "--", "sh"],
                               rows=40, cols=100)
        try:
            self.assertEqual(base.wait_for_terminal_size(term, b"40 100"), b"40 100")
            term.resize(50, 120)
            self.assertEqual(base.wait_for_terminal_size(term, b"50 120"), b"50 120")
            term.send("exit 4\n")
            self.assertEqual(term.wait(), 4)
        finally:
            term.kill()
        self.assert_sessions(WS_V5, ws + 1)

    def test_attach_to_a_terminal_container(self):
        ws = self.sessions(WS_V5, "attach")
        term = base.PtyKubectl(self.cluster, WS_KUBECTL, ["attach", "-it", "demo"], rows=24,
                               cols=80)
        try:
            term.send("echo attached-$((20+22))\n")
            term.expect(rb"attached-42")
            self.assert_sessions(WS_V5, ws + 1, "attach")
        finally:
            term.kill()

    def test_attach_without_tty_carries_stdin_and_stdout(self):
        proc = subprocess.Popen(self.cluster.kubectl_argv(WS_KUBECTL, "attach", "-i", "echoer"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.cluster.kubectl_env(),
                                start_new_session=True)
        try:
            seen = harness.write_until_echoed(proc, b"ping-ws\n")
            self.assertIn(b"ping-ws\n", seen)
            self.assertEqual(self.cluster.metric("crisp_sessions_active",
                                                 {"operation": "attach", "protocol": WS_V5}), 1)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        # The container outlives the detached client.
        r = self.cluster.cricall("exec", "echoer", "--", "true")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_kubectl_1_29_uses_websocket_when_asked(self):
        ws, spdy = self.sessions(WS_V5), self.sessions(SPDY_V4)
        r = self.cluster.kubectl("1.29", "exec", "-i", "demo", "--", "sh", "-c", "cat; exit 5",
                                 stdin_data=b"from 1.29\n",
                                 env={"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "true"})
        self.assertEqual((r.returncode, r.stdout), (5, "from 1.29\n"), str(r))
        self.assert_sessions(WS_V5, ws + 1)
        self.assertEqual(self.sessions(SPDY_V4), spdy)

    def test_kubectl_1_30_stays_on_spdy_when_told(self):
        ws, spdy = self.sessions(WS_V5), self.sessions(SPDY_V4)
        r = self.cluster.kubectl("1.30", "exec", "demo", "--", "echo", "spdy",
                                 env={"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"})
        self.assertEqual((r.returncode, r.stdout), (0, "spdy\n"), str(r))
        self.assert_sessions(SPDY_V4, spdy + 1)
        self.assertEqual(self.sessions(WS_V5), ws)

    def test_raw_client_v4_gets_json_status(self):
        ws = self.sessions("ws/v4.channel.k8s.io")
        url = self.stream_url("exec", "--stdin", "--stderr", "demo", "--", "sh", "-c",
                              "head -n 1; echo to-err >&2; exit 3")
        with RawWebSocket(url, "v4.channel.k8s.io") as client:
            self.assertEqual(client.subprotocol, "v4.channel.k8s.io")
            self.assertEqual(client.recv_message(), (0x2, b"\x01"))  # the ready signal
            client.send(0x2, b"\x00line one\nline two\n")
            out, code = client.read_until_close()
        self.assertEqual(code, 1000)
        self.assertEqual(out.get(1), b"line one\n")
        self.assertEqual(out.get(2), b"to-err\n")
        # Go's encoding/json escapes '>' and '&'; so does crisp.
        self.assertEqual(out.get(3), (
            b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero '
            b'exit code: error executing command [sh -c head -n 1; echo to-err \\u003e\\u00262; '
            b'exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":'
            b'"ExitCode","message":"3"}]}}'))
        self.assert_sessions("ws/v4.channel.k8s.io", ws + 1)

    def test_raw_client_base64_gets_text_frames_and_plain_errors(self):
        ws = self.sessions("ws/base64.channel.k8s.io")
        url = self.stream_url("exec", "--stdin", "demo", "--", "sh", "-c", "head -n 1; exit 3")
        # Offered in one header line together with v5: the client's first choice wins,
        # and exactly one value is echoed (streaming case B10 E).
        with RawWebSocket(url, "base64.channel.k8s.io, v5.channel.k8s.io") as client:
            self.assertEqual(client.subprotocol, "base64.channel.k8s.io")
            self.assertEqual(client.recv_message(), (0x1, b"1"))  # the ready signal
            client.send(0x1, b"0" + base64.b64encode(b"over base64\nnot read\n"))
            messages = []
            out, code = client.read_until_close(decode_base64=True, messages=messages)
        self.assertEqual(code, 1000)
        self.assertEqual(out.get(1), b"over base64\n")
        self.assertEqual(out.get(3), b"command terminated with non-zero exit code: error "
                         b"executing command [sh -c head -n 1; exit 3], exit code 3")
        self.assertTrue(all(opcode == 0x1 for opcode, _ in messages), messages)
        self.assert_sessions("ws/base64.channel.k8s.io", ws + 1)

    def test_raw_client_dropping_the_socket_ends_the_exec(self):
        marker = "crisp-e2e-ws-drop-%d" % os.getpid()
        url = self.stream_url("exec", "--stdin", "demo", "--", "sh", "-c",
                              ": %s; sleep 1000" % marker)
        with RawWebSocket(url, "v4.channel.k8s.io") as client:
            self.assertEqual(client.recv_message(), (0x2, b"\x01"))
            deadline = time.monotonic() + 10
            while not base.processes_matching(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertNotEqual(base.processes_matching(marker), [])
        deadline = time.monotonic() + 10
        while base.processes_matching(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(base.processes_matching(marker), [])

    def test_raw_client_gone_while_its_input_waits_ends_the_exec(self):
        # The command reads no input, so crisp stops reading the client once
        # the pipe and its own queue are full. A client whose connection is
        # reset then (a client killed with unread bytes, or one whose closed
        # socket got more data) must still end the session and the command at
        # once, not when the command next reads. (A FIN could not arrive: it
        # waits behind the input crisp does not take.)
        marker = "crisp-e2e-ws-held-%d" % os.getpid()
        url = self.stream_url("exec", "--stdin", "demo", "--", "sh", "-c",
                              ": %s; sleep 1000" % marker)
        with RawWebSocket(url, "v5.channel.k8s.io") as client:
            self.assertEqual(client.recv_message(), (0x2, b"\x01"))  # the ready signal
            deadline = time.monotonic() + 10
            while not base.processes_matching(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertNotEqual(base.processes_matching(marker), [])
            # 64 KiB stdin messages (all zeros, so the masked payload is the
            # mask repeated) until crisp has taken nothing for a second.
            mask = b"\x11\x22\x33\x44"
            frame = struct.pack("!BBQ", 0x82, 0x80 | 127, 65537) + mask + mask * 16384 + mask[:1]
            client.sock.setblocking(False)
            sent = 0
            last_progress = time.monotonic()
            while time.monotonic() - last_progress < 1:
                try:
                    n = client.sock.send(frame)
                except BlockingIOError:
                    time.sleep(0.05)
                    continue
                sent += n
                last_progress = time.monotonic()
                frame = frame[n:] or (struct.pack("!BBQ", 0x82, 0x80 | 127, 65537) + mask +
                                      mask * 16384 + mask[:1])
            self.assertGreater(sent, 1 << 20)
            self.assertEqual(self.cluster.metric("crisp_sessions_active"), 1)
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                   struct.pack("ii", 1, 0))
            client.sock.close()  # a reset
            deadline = time.monotonic() + 5
            while base.processes_matching(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(base.processes_matching(marker), [],
                             "sent %d bytes\n%s" % (sent, self.cluster.crisp.logs()[-6000:]))
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0), 0)

    def stream_url(self, *args):
        r = self.cluster.cricall(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()


class RawWebSocket:
    """A minimal RFC 6455 client over a plain socket: masked frames out,
    unmasked frames in, no extensions. Enough to speak the Kubernetes channel
    protocols to crisp."""

    def __init__(self, url, protocols):
        m = re.match(r"^http://([^/:]+):(\d+)(/.*)$", url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=15)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: Upgrade\r\n"
                           "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n" %
                           (path, host, port, key, protocols)).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError("connection closed during the handshake: %r" % self.buf)
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101 "):
            raise AssertionError("no upgrade: %r" % head)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != [accept]:
            raise AssertionError("bad Sec-WebSocket-Accept in %r" % head)
        protocol = headers.get("sec-websocket-protocol", [""])
        if len(protocol) != 1 or "," in protocol[0]:
            raise AssertionError("not exactly one subprotocol echoed: %r" % head)
        self.subprotocol = protocol[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.sock.close()
        return False

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        b0, b1 = self._read(2)
        if b1 & 0x80:
            raise AssertionError("the server masked a frame")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x80 != 0, b0 & 0x0F, self._read(n)

    def recv_message(self):
        """The next data message as (opcode, payload); answers pings."""
        while True:
            fin, opcode, payload = self.recv_frame()
            if opcode == 0x9:
                self.send(0xA, payload)
                continue
            if opcode == 0x8:
                return opcode, payload
            if not fin:
                while not fin:
                    fin, _, more = self.recv_frame()
                    payload += more
            return opcode, payload

    def read_until_close(self, decode_base64=False, messages=None):
        """Reads messages until the server's close; answers it. Returns the
        payloads per channel and the close code."""
        out = {}
        while True:
            opcode, payload = self.recv_message()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.send(0x8, payload[:2])
                return out, code
            if messages is not None:
                messages.append((opcode, payload))
            if not payload:
                continue
            if decode_base64:
                channel, data = payload[0] - ord("0"), base64.b64decode(payload[1:])
            else:
                channel, data = payload[0], payload[1:]
            out[channel] = out.get(channel, b"") + data


def main():
    harness.test_main(("crisp", "devapiserver", "cricall"), share_with=(base,))


if __name__ == "__main__":
    main()
