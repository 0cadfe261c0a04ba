"""devapiserver with real kubectl, against a fake CRI runtime.

The fake CRI (tools/devapiserver:fake_cri) serves a fixed container list and
answers Exec/Attach/PortForward with the URL of a stream server run here in
Python, which records every request it gets and either refuses the upgrade
(as the kubelet's stream server refuses an unknown WebSocket subprotocol) or
switches protocols and echoes bytes.

Usage: devapiserver_test.py --devapiserver PATH --fake-cri PATH [unittest args]
"""

import json
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ARGS = None
KUBECTL_TIMEOUT = 30
START_TIMEOUT = 15

# Both ends of the supported range must always be tested.
REQUIRED_VERSIONS = ["1.27", "1.33"]


class StreamServer:
    """A one-thread-per-connection stream server on 127.0.0.1:0 that records
    request heads. mode "refuse": WebSocket offers get a bare 403 and a close
    (like golang.org/x/net/websocket), anything else a 403 with a Status JSON
    body. mode "echo": 101, then every byte back until the client half-closes,
    then b"bye" and close."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.mode = "refuse"
        self.requests = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def take_requests(self):
        with self.lock:
            out, self.requests = self.requests, []
        return out

    def close(self):
        self.sock.close()

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, rest = data.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
            with self.lock:
                self.requests.append({"method": method, "target": target, "headers": headers})
                mode = self.mode
            upgrade = dict((k.lower(), v) for k, v in headers).get("upgrade", "").lower()
            if mode == "refuse":
                if upgrade == "websocket":
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                    return
                body = json.dumps({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                   "status": "Failure", "message": "stream server says no",
                                   "reason": "Forbidden", "code": 403}).encode()
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                return
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Upgrade: SPDY/3.1\r\n\r\n")
            if rest:
                conn.sendall(rest)
            conn.settimeout(None)
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                conn.sendall(chunk)
            conn.sendall(b"bye")


def header_values(request, name):
    return [v for k, v in request["headers"] if k.lower() == name.lower()]


class DevApiServerTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir(prefix="devapi-e2e-")
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.stream = StreamServer()
        cls.addClassCleanup(cls.stream.close)
        d = cls.tmp.path
        cls.cri_socket = os.path.join(d, "cri.sock")
        cls.record = os.path.join(d, "cri-calls.jsonl")
        cls.fake_cri = harness.Process("fake_cri", [
            ARGS.fake_cri, "--socket", cls.cri_socket, "--stream-url",
            cls.stream.url("/exec/tok12345"), "--record", cls.record,
            "--ready-file", os.path.join(d, "cri.ready"),
            "--container", "demo,cid-demo,sid-demo,running",
            "--label", "cid-demo,app=demo",
            "--container", "quiet,cid-quiet,sid-quiet,running",
            "--annotation", "cid-quiet,crisp.dev/stdin=false",
            "--annotation", "cid-quiet,crisp.dev/tty=false",
            "--container", "finished,cid-finished,sid-finished,exited",
            "--container", "busy,cid-busy,sid-busy,running",
            "--fail", "cid-busy,8,maximum number of in-flight requests exceeded",
            "--container", "gone,cid-gone,sid-gone,running",
            "--fail", "cid-gone,5,container cid-gone is not running",
        ], d).start()
        cls.addClassCleanup(cls.fake_cri.stop)
        cls.fake_cri.wait_for_file(os.path.join(d, "cri.ready"), START_TIMEOUT)

        cls.kubeconfig = os.path.join(d, "kubeconfig")
        cls.server = harness.Process("devapiserver", [
            ARGS.devapiserver, "--listen", "127.0.0.1:0", "--cri", cls.cri_socket,
            "--kubeconfig", cls.kubeconfig, "--ready-file", os.path.join(d, "api.ready"),
            "--log-level", "debug",
        ], d).start()
        cls.addClassCleanup(cls.server.stop)
        cls.address = cls.server.wait_for_file(os.path.join(d, "api.ready"),
                                               START_TIMEOUT).strip()
        cls.versions = harness.installed_kubectl_versions()

    def setUp(self):
        self.stream.mode = "refuse"
        self.stream.take_requests()
        self.cri_calls()  # drop calls of earlier tests

    def cri_calls(self):
        try:
            with open(self.record) as f:
                lines = f.readlines()
            os.truncate(self.record, 0)
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def kubectl(self, version, *args, env=None):
        return harness.run_kubectl(version, list(args), self.kubeconfig, KUBECTL_TIMEOUT,
                                   env=env)

    def assertOk(self, result):
        self.assertEqual(result.returncode, 0, "%s\n%s" % (result, self.server.logs()))

    def test_required_kubectl_versions_are_installed(self):
        for version in REQUIRED_VERSIONS:
            self.assertIn(version, self.versions)

    def test_ready_file_stdout_and_kubeconfig_agree(self):
        with open(self.server.stdout_path) as f:
            self.assertEqual(f.readline().strip(), self.address)
        with open(self.kubeconfig) as f:
            config = f.read()
        self.assertIn("server: http://%s\n" % self.address, config)
        self.assertIn("namespace: default\n", config)

    def test_get_pods_table(self):
        for version in self.versions:
            with self.subTest(version=version):
                result = self.kubectl(version, "get", "pods")
                self.assertOk(result)
                lines = result.stdout.splitlines()
                self.assertEqual(lines[0].split(), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"])
                rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
                self.assertEqual(rows["demo"], ["1/1", "Running", "0"])
                self.assertEqual(rows["quiet"], ["1/1", "Running", "0"])
                self.assertEqual(rows["finished"], ["0/1", "Completed", "0"])
                self.assertEqual(len(rows), 5)

    def test_get_pod_json(self):
        for version in self.versions:
            with self.subTest(version=version):
                result = self.kubectl(version, "get", "pod", "demo", "-o", "json")
                self.assertOk(result)
                pod = json.loads(result.stdout)
                self.assertEqual(pod["kind"], "Pod")
                self.assertEqual(pod["metadata"]["name"], "demo")
                self.assertEqual(pod["metadata"]["namespace"], "default")
                self.assertEqual(pod["metadata"]["labels"], {"app": "demo"})
                container = pod["spec"]["containers"][0]
                self.assertEqual(container["name"], "demo")
                self.assertTrue(container["stdin"])
                self.assertTrue(container["tty"])
                self.assertEqual(pod["status"]["phase"], "Running")
                status = pod["status"]["containerStatuses"][0]
                self.assertTrue(status["ready"])
                self.assertIn("running", status["state"])

                quiet = json.loads(self.kubectl(version, "get", "pod", "quiet", "-o",
                                                "json").stdout)
                self.assertFalse(quiet["spec"]["containers"][0]["stdin"])
                self.assertFalse(quiet["spec"]["containers"][0]["tty"])

    def test_get_pods_json_and_selector(self):
        result = self.kubectl("1.33", "get", "pods", "-l", "app=demo", "-o", "json")
        self.assertOk(result)
        items = json.loads(result.stdout)["items"]
        self.assertEqual([p["metadata"]["name"] for p in items], ["demo"])

    def test_get_unknown_pod(self):
        for version in self.versions:
            with self.subTest(version=version):
                result = self.kubectl(version, "get", "pod", "nosuch")
                self.assertEqual(result.returncode, 1, result)
                self.assertEqual(result.stderr,
                                 'Error from server (NotFound): pods "nosuch" not found\n')

    def test_exec_reaches_the_stream_server_with_the_cri_request(self):
        for version in REQUIRED_VERSIONS + ["1.30"]:
            if version not in self.versions:
                continue
            with self.subTest(version=version):
                result = self.kubectl(version, "exec", "demo", "--", "sh", "-c", "echo a b")
                self.assertNotEqual(result.returncode, 0, result)
                self.assertIn("stream server says no", result.stderr)

                calls = self.cri_calls()
                requests = self.stream.take_requests()
                # kubectl 1.30+ tries WebSocket first; the refusal makes it fall back
                # to SPDY with a new request, and so a new CRI Exec.
                websocket_first = version >= "1.30"
                self.assertEqual(len(calls), 2 if websocket_first else 1, calls)
                for call in calls:
                    self.assertEqual(call["method"], "Exec")
                    req = call["request"]
                    self.assertEqual(req["container_id"], "cid-demo")
                    self.assertEqual(req["cmd"], ["sh", "-c", "echo a b"])
                    self.assertEqual((req["stdin"], req["stdout"], req["stderr"], req["tty"]),
                                     (False, True, True, False))
                self.assertEqual(len(requests), len(calls))
                spdy = requests[-1]
                self.assertEqual(spdy["method"], "POST")
                self.assertEqual(spdy["target"], "/exec/tok12345")
                self.assertEqual(header_values(spdy, "Host"), ["127.0.0.1:%d" % self.stream.port])
                self.assertEqual(header_values(spdy, "Upgrade"), ["SPDY/3.1"])
                offered = header_values(spdy, "X-Stream-Protocol-Version")
                self.assertIn("v4.channel.k8s.io", offered)
                if websocket_first:
                    ws = requests[0]
                    self.assertEqual(ws["method"], "GET")
                    self.assertEqual(header_values(ws, "Upgrade")[0].lower(), "websocket")
                    self.assertIn("v5.channel.k8s.io",
                                  header_values(ws, "Sec-WebSocket-Protocol")[0])

    def test_exec_with_stdin_and_kubelet_error_mapping(self):
        result = self.kubectl("1.27", "exec", "-i", "demo", "--", "cat")
        calls = self.cri_calls()
        self.assertEqual(len(calls), 1, result)
        self.assertTrue(calls[0]["request"]["stdin"])

        result = self.kubectl("1.27", "exec", "busy", "--", "true")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("maximum number of in-flight requests exceeded", result.stderr)

        result = self.kubectl("1.27", "exec", "gone", "--", "true")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("container cid-gone is not running", result.stderr)

        result = self.kubectl("1.27", "exec", "nosuch", "--", "true")
        self.assertEqual(result.returncode, 1)
        self.assertIn('pods "nosuch" not found', result.stderr)

    def test_attach_and_port_forward_ask_the_runtime(self):
        for version in REQUIRED_VERSIONS:
            with self.subTest(version=version):
                result = self.kubectl(version, "attach", "demo")
                self.assertNotEqual(result.returncode, 0, result)
                self.assertIn("stream server says no", result.stderr)
                calls = self.cri_calls()
                # 1.30+ offers WebSocket first, then falls back to SPDY: two URLs.
                self.assertEqual(len(calls), 2 if version >= "1.30" else 1, result)
                for call in calls:
                    self.assertEqual(call["method"], "Attach")
                    req = call["request"]
                    self.assertEqual(req["container_id"], "cid-demo")
                    self.assertEqual((req["stdin"], req["stdout"], req["stderr"], req["tty"]),
                                     (False, True, True, False))
                self.stream.take_requests()

                result = self.kubectl(version, "port-forward", "pod/demo", "0:8080")
                self.assertNotEqual(result.returncode, 0, result)
                self.assertIn("stream server says no", result.stderr)
                calls = self.cri_calls()
                requests = self.stream.take_requests()
                # 1.31+ tries the SPDY-over-WebSocket tunnel first, then plain SPDY.
                tunnel_first = version >= "1.31"
                self.assertEqual(len(calls), 2 if tunnel_first else 1, result)
                for call in calls:
                    self.assertEqual(call["method"], "PortForward")
                    self.assertEqual(call["request"]["pod_sandbox_id"], "sid-demo")
                self.assertEqual(header_values(requests[-1], "X-Stream-Protocol-Version"),
                                 ["portforward.k8s.io"])
                if tunnel_first:
                    self.assertEqual(header_values(requests[0], "Sec-WebSocket-Protocol"),
                                     ["SPDY/3.1+portforward.k8s.io"])

    def test_upgraded_stream_is_copied_both_ways_while_other_requests_go_on(self):
        self.stream.mode = "echo"
        host, port = self.address.rsplit(":", 1)
        payload = os.urandom(8 << 20)
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(b"POST /api/v1/namespaces/default/pods/demo/exec?command=cat&stdin=true"
                         b"&stdout=true HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n"
                         b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
                         b"\r\nfirst" % self.address.encode())
            received = b""
            while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < 5:
                chunk = conn.recv(65536)
                self.assertTrue(chunk, received)
                received += chunk
            head, body = received.split(b"\r\n\r\n", 1)
            self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)

            # The stream stays open; other requests are served meanwhile.
            result = self.kubectl("1.33", "get", "pod", "demo")
            self.assertOk(result)

            writer = threading.Thread(target=lambda: (conn.sendall(payload),
                                                      conn.shutdown(socket.SHUT_WR)))
            writer.start()
            while True:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                body += chunk
            writer.join()
        self.assertEqual(len(body), 5 + len(payload) + 3)
        self.assertEqual(body[:5], b"first")
        self.assertTrue(body[5:-3] == payload)
        self.assertEqual(body[-3:], b"bye")


def main():
    harness.test_main(("devapiserver", "fake_cri"))


if __name__ == "__main__":
    main()
