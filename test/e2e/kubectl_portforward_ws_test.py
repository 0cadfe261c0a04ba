"""kubectl port-forward over WebSocket through crisp, end to end.

kubectl 1.31 and later (1.30 when KUBECTL_PORT_FORWARD_WEBSOCKETS=true) first
ask for the SPDY-over-WebSocket tunnel (subprotocol SPDY/3.1+portforward.k8s.io);
the development API server hands the upgrade to crisp unchanged, so these runs
reach crisp's tunnel. Every port-forward test of kubectl_portforward_test.py
runs again here per kubectl version and setting, and each kubectl session must
show up in crisp's metrics under the protocol it was meant to use: the tunnel,
or SPDY when told (a silent fallback fails the test).

A raw WebSocket client (standard library, from kubectl_websocket_test.py)
also speaks the kubelet's WebSocket port-forward protocols (v4.channel.k8s.io,
v4.base64.channel.k8s.io) to a stream URL obtained from crisp's CRI socket with
cricall.

Usage: kubectl_portforward_ws_test.py --crisp PATH --devapiserver PATH
                                      --cricall PATH [unittest args]
"""

import base64
import http.server
import os
import re
import socket
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kubectl_exec_test as exec_base  # noqa: E402
import kubectl_portforward_test as pf  # noqa: E402
import kubectl_websocket_test as ws_base  # noqa: E402  (RawWebSocket)

ARGS = None
TUNNEL = "ws/SPDY/3.1+portforward.k8s.io"
SPDY = "spdy/portforward.k8s.io"
WS_V4 = "ws/portforward/v4.channel.k8s.io"
WS_V4_BASE64 = "ws/portforward/v4.base64.channel.k8s.io"
ENV_TOGGLE = "KUBECTL_PORT_FORWARD_WEBSOCKETS"


def sessions(cluster, protocol):
    return cluster.metric("crisp_sessions_total",
                          {"operation": "portforward", "protocol": protocol})


class ProtocolCheckedTests(pf.PortForwardTests):
    """The port-forward tests, with every kubectl session checked to run over
    PROTOCOL (and none over OTHER)."""

    ENV = {}
    PROTOCOL = TUNNEL
    OTHER = SPDY

    @property
    def SPLICED(self):
        return self.PROTOCOL == SPDY

    def forward(self, *ports):
        before = sessions(self.cluster, self.PROTOCOL)
        other = sessions(self.cluster, self.OTHER)
        proc, local = self.cluster.port_forward(self.VERSION, *ports, env=self.ENV)
        self.addCleanup(proc.stop)
        # kubectl dials its streaming connection before it prints "Forwarding
        # from"; the session is counted from its first moment.
        self.assertEqual(self.cluster.wait_for_metric(
            "crisp_sessions_total", before + 1,
            {"operation": "portforward", "protocol": self.PROTOCOL}), before + 1,
            "no %s session\n%s" % (self.PROTOCOL, proc.logs()))
        self.assertEqual(sessions(self.cluster, self.OTHER), other,
                         "kubectl %s used %s" % (self.VERSION, self.OTHER))
        return proc, local

    def test_session_is_active_under_its_protocol_while_kubectl_runs(self):
        proc, (local,) = self.forward(self.http.server_address[1])
        self.assertTrue(pf.http_get(local).endswith(b"hello from the pod\n"))
        self.assertEqual(self.cluster.metric("crisp_sessions_active",
                                             {"operation": "portforward",
                                              "protocol": self.PROTOCOL}), 1)
        proc.stop()
        self.assertEqual(self.cluster.wait_for_metric(
            "crisp_sessions_active", 0, {"operation": "portforward",
                                         "protocol": self.PROTOCOL}), 0)


class Kubectl133TunnelTest(ProtocolCheckedTests, unittest.TestCase):
    """kubectl 1.33 by default: the tunnel, 1000 connections through one session."""
    VERSION = "1.33"
    SEQUENTIAL_CONNECTIONS = 1000


class Kubectl132TunnelTest(ProtocolCheckedTests, unittest.TestCase):
    VERSION = "1.32"


class Kubectl131TunnelTest(ProtocolCheckedTests, unittest.TestCase):
    VERSION = "1.31"


class Kubectl130OptInTest(ProtocolCheckedTests, unittest.TestCase):
    """kubectl 1.30 tries the tunnel only when asked."""
    VERSION = "1.30"
    ENV = {ENV_TOGGLE: "true"}


class Kubectl133OptOutTest(ProtocolCheckedTests, unittest.TestCase):
    """kubectl 1.33 told to stay on SPDY."""
    VERSION = "1.33"
    ENV = {ENV_TOGGLE: "false"}
    PROTOCOL = SPDY
    OTHER = TUNNEL


def le16(port):
    return struct.pack("<H", port)


class RawWebSocketPortForwardTest(unittest.TestCase):
    """The kubelet's WebSocket port-forward protocols, spoken by a raw client."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = pf.Cluster(cls.tmp.path)
        cls.echo = pf.start_server(pf.ThreadingServer(("127.0.0.1", 0), pf.EchoHandler))
        cls.http = pf.start_server(http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                                   pf.HelloHandler))

    @classmethod
    def tearDownClass(cls):
        cls.echo.shutdown()
        cls.http.shutdown()
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def tearDown(self):
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0,
                                                      {"operation": "portforward"}), 0)
        self.assertEqual(self.cluster.wait_for_metric("crisp_portforward_connections_active",
                                                      0), 0)

    def stream_url(self, *ports):
        r = subprocess.run([ARGS.cricall, "--socket", self.cluster.cri_socket, "portforward",
                            "demo"] + [str(p) for p in ports],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def read_channels(self, client, want, decode_base64=False):
        """Reads data messages until every channel in `want` holds at least
        its number of bytes; returns the bytes per channel and the opcodes."""
        out, opcodes = {}, []
        while any(len(out.get(ch, b"")) < n for ch, n in want.items()):
            opcode, payload = client.recv_message()
            self.assertNotEqual(opcode, 0x8, "closed early: %r %r" % (payload, out))
            opcodes.append(opcode)
            if decode_base64:
                channel, data = payload[0] - ord("0"), base64.b64decode(payload[1:])
            else:
                channel, data = payload[0], payload[1:]
            out[channel] = out.get(channel, b"") + data
        return out, opcodes

    def test_v4_binary_prefixes_echo_and_client_close(self):
        before = sessions(self.cluster, WS_V4)
        spliced_before = self.cluster.metric("crisp_portforward_spliced_bytes_total")
        port = self.echo.server_address[1]
        with ws_base.RawWebSocket(self.stream_url(port), "v4.channel.k8s.io") as client:
            self.assertEqual(client.subprotocol, "v4.channel.k8s.io")
            # The kubelet's first messages: the port, little-endian, on the
            # data channel, then on the error channel.
            self.assertEqual(client.recv_message(), (0x2, b"\x00" + le16(port)))
            self.assertEqual(client.recv_message(), (0x2, b"\x01" + le16(port)))
            data = os.urandom(1 << 20)
            for off in range(0, len(data), 65536):
                client.send(0x2, b"\x00" + data[off:off + 65536])
            out, opcodes = self.read_channels(client, {0: len(data)})
            self.assertEqual(out[0], data)
            self.assertNotIn(1, out)
            self.assertEqual(set(opcodes), {0x2})
            self.assertEqual(self.cluster.metric("crisp_sessions_active",
                                                 {"operation": "portforward",
                                                  "protocol": WS_V4}), 1)
            # The echo server only ends with the client: close the WebSocket.
            client.send(0x8, struct.pack("!H", 1000))
            _, code = client.read_until_close()
            self.assertEqual(code, 1000)
        self.assertEqual(sessions(self.cluster, WS_V4), before + 1)
        # Binary messages on TCP: the echo went back by splice(2).
        self.assertGreater(self.cluster.metric("crisp_portforward_spliced_bytes_total"),
                           spliced_before)

    def test_v4_base64_two_ports_close_after_both_forwards_end(self):
        before = sessions(self.cluster, WS_V4_BASE64)
        spliced_before = self.cluster.metric("crisp_portforward_spliced_bytes_total")
        port = self.http.server_address[1]
        with ws_base.RawWebSocket(self.stream_url(port, port),
                                  "v4.base64.channel.k8s.io") as client:
            self.assertEqual(client.subprotocol, "v4.base64.channel.k8s.io")
            prefix = base64.b64encode(le16(port))
            for channel in b"0123":
                self.assertEqual(client.recv_message(), (0x1, bytes([channel]) + prefix))
            request = base64.b64encode(b"GET / HTTP/1.0\r\n\r\n")
            client.send(0x1, b"0" + request)
            client.send(0x1, b"2" + request)
            messages = []
            out, code = client.read_until_close(decode_base64=True, messages=messages)
        self.assertEqual(code, 1000)
        for channel in (0, 2):
            self.assertTrue(out[channel].startswith(b"HTTP/1.0 200 OK\r\n"), out)
            self.assertTrue(out[channel].endswith(b"hello from the pod\n"), out)
        self.assertNotIn(1, out)
        self.assertNotIn(3, out)
        self.assertTrue(all(opcode == 0x1 for opcode, _ in messages), messages)
        self.assertEqual(sessions(self.cluster, WS_V4_BASE64), before + 1)
        # Base64 rewrites the bytes: nothing was spliced.
        self.assertEqual(self.cluster.metric("crisp_portforward_spliced_bytes_total"),
                         spliced_before)

    def test_refused_port_gets_the_kubelets_text(self):
        port = pf.closed_port()
        with ws_base.RawWebSocket(self.stream_url(port), "v4.channel.k8s.io") as client:
            self.assertEqual(client.recv_message(), (0x2, b"\x00" + le16(port)))
            self.assertEqual(client.recv_message(), (0x2, b"\x01" + le16(port)))
            out, code = client.read_until_close()
        self.assertEqual(code, 1000)
        self.assertEqual(out.get(1, b"").decode(), (
            "error forwarding port %d to pod demo, uid : failed to connect to localhost:%d in "
            "the network of pod sandbox \"demo\": 127.0.0.1:%d: connection refused; "
            "[::1]:%d: connection refused" % (port, port, port, port)))
        self.assertNotIn(0, out)

    def test_request_without_ports_is_closed_with_an_error(self):
        with ws_base.RawWebSocket(self.stream_url(), "v4.channel.k8s.io") as client:
            opcode, payload = client.recv_message()
        self.assertEqual(opcode, 0x8)
        self.assertEqual(struct.unpack("!H", payload[:2])[0], 1011)
        self.assertEqual(payload[2:], b"ws.portforward.no_ports")

    def test_unserved_subprotocol_gets_the_bare_403(self):
        # What makes kubectl fall back: no 101 for a protocol crisp does not serve.
        m = re.match(r"^http://([^/:]+):(\d+)(/.*)$", self.stream_url(self.echo.server_address[1]))
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=15) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: Upgrade\r\n"
                       "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n" %
                       (m.group(3), m.group(1), m.group(2))).encode())
            reply = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        self.assertEqual(reply, b"HTTP/1.1 403 Forbidden\r\n\r\n")


def main():
    harness.test_main(("crisp", "devapiserver", "cricall"), share_with=(pf, exec_base, ws_base))


if __name__ == "__main__":
    main()
