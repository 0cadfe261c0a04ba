"""kubectl exec through crisp's stream server over TLS, end to end.

crisp serves its stream URLs as https://; the development API server reaches
them over TLS (--stream-ca, and --stream-cert/--stream-key where crisp asks
for a client certificate) and relays kubectl's upgrade. Certificates are made
here with the openssl command line. The served certificate is read back with
`openssl s_client` to see reloads (SIGHUP and file changes) take effect.

Usage: kubectl_tls_test.py --crisp PATH --devapiserver PATH --cricall PATH [unittest args]
"""

import hashlib
import json
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

ARGS = None
START_TIMEOUT = 20
KUBECTL_TIMEOUT = 60
SPDY_KUBECTL = "1.27"
NEWEST_KUBECTL = "1.33"
# crisp checks its TLS files every 5 s; a change must be seen well within this.
FILE_CHANGE_TIMEOUT = 20
CLIENT_SUBJECT = "CN=devapiserver,O=system:masters"

CRISP_CONFIG = """
cri:
  listen: {dir}/crisp.sock
stream:
  listen: 127.0.0.1:0
  stream_creation_timeout: 5s
  header_timeout: 5s
  tls:
    cert_file: {dir}/tls/server.crt
    key_file: {dir}/tls/server.key
{client_ca}admin:
  listen: 127.0.0.1:0
log:
  level: debug
audit:
  path: {dir}/audit.log
runtime:
  embedded:
    containers:
      - id: demo
        command: ["/bin/cat"]
        stdin: true
"""


def openssl(args, cwd, stdin=b""):
    r = subprocess.run(["openssl"] + args, cwd=cwd, input=stdin, capture_output=True,
                       timeout=30)
    if r.returncode != 0:
        raise harness.HarnessError("openssl %s failed:\n%s" % (" ".join(args),
                                                              r.stderr.decode()))
    return r.stdout


class Pki:
    """A CA and the certificates it issues, as PEM files in `dir`."""

    def __init__(self, dir):
        self.dir = dir
        os.makedirs(dir, exist_ok=True)
        openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
                 "-subj", "/O=crisp e2e/CN=crisp e2e CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir)
        self.ca = os.path.join(dir, "ca.crt")

    def issue(self, name, subject, serial, server):
        """Writes <name>.crt and <name>.key (each through a rename, as
        certificate tools do) and returns their paths."""
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\n")
            if server:
                f.write("extendedKeyUsage=serverAuth\n"
                        "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
            else:
                f.write("extendedKeyUsage=clientAuth\n")
        openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-nodes", "-keyout", name + ".key.new", "-out", name + ".csr",
                 "-subj", subject], self.dir)
        openssl(["x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-set_serial", "0x%x" % serial, "-days", "1", "-out", name + ".crt.new",
                 "-extfile", name + ".ext"], self.dir)
        paths = []
        for suffix in (".crt", ".key"):
            path = os.path.join(self.dir, name + suffix)
            os.rename(path + ".new", path)
            paths.append(path)
        return paths


def served_serial(address, ca):
    """The serial number (upper-case hex) of the certificate served at
    `address`, read with openssl s_client, which must verify it."""
    r = subprocess.run(["openssl", "s_client", "-connect", address, "-CAfile", ca,
                        "-verify_return_error", "-verify_ip", "127.0.0.1"],
                       input=b"", capture_output=True, timeout=15)
    pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", r.stdout,
                    re.S)
    if pem is None:
        raise AssertionError("no certificate from s_client:\n%s\n%s" %
                             (r.stdout.decode(), r.stderr.decode()))
    out = openssl(["x509", "-noout", "-serial"], None, stdin=pem.group(0)).decode()
    return out.strip().split("=", 1)[1]


class TlsCluster:
    """crisp with TLS on its stream server and the embedded runtime, plus
    development API servers that reach it over TLS."""

    def __init__(self, tmp, verify_clients):
        self.dir = tmp
        self.pki = Pki(os.path.join(tmp, "tls"))
        self.pki.issue("server", "/CN=crisp", 0x1001, server=True)
        self.pki.issue("client", "/O=system:masters/CN=devapiserver", 0x2001, server=False)
        config = os.path.join(tmp, "crisp.yaml")
        client_ca = ("    client_ca_file: %s\n" % self.pki.ca) if verify_clients else ""
        with open(config, "w") as f:
            f.write(CRISP_CONFIG.format(dir=tmp, client_ca=client_ca))
        self.cri_socket = os.path.join(tmp, "crisp.sock")
        self.crisp = harness.Process("crisp", [ARGS.crisp, "--config", config], tmp).start()
        ready = self.wait_for_log(r"crisp ready: .* stream (\S+) \(base URL (\S+)\), admin (\S+)")
        self.stream_address = ready.group(1)
        self.base_url = ready.group(2)
        self.admin = ready.group(3)
        self.devapis = []

    def crisp_log(self):
        with open(self.crisp.stderr_path, "r", errors="replace") as f:
            return f.read()

    def wait_for_log(self, pattern, timeout=START_TIMEOUT, count=1):
        """Waits until `pattern` matched `count` times in crisp's log; returns
        the last match."""
        deadline = time.monotonic() + timeout
        while True:
            matches = list(re.finditer(pattern, self.crisp_log()))
            if len(matches) >= count:
                return matches[-1]
            self.crisp._check_alive(pattern)
            if time.monotonic() > deadline:
                raise harness.HarnessError("no %d lines matching %r\n%s" %
                                           (count, pattern, self.crisp.logs()))
            time.sleep(0.05)

    def devapi(self, name, client_certificate):
        """Starts a development API server reaching crisp over TLS; returns
        its kubeconfig."""
        kubeconfig = os.path.join(self.dir, name + ".kubeconfig")
        ready_file = os.path.join(self.dir, name + ".ready")
        argv = [ARGS.devapiserver, "--listen", "127.0.0.1:0", "--cri", self.cri_socket,
                "--kubeconfig", kubeconfig, "--ready-file", ready_file,
                "--stream-ca", self.pki.ca]
        if client_certificate:
            argv += ["--stream-cert", os.path.join(self.pki.dir, "client.crt"),
                     "--stream-key", os.path.join(self.pki.dir, "client.key")]
        proc = harness.Process(name, argv, self.dir).start()
        self.devapis.append(proc)
        proc.wait_for_file(ready_file, START_TIMEOUT)
        return kubeconfig

    def metric(self, name):
        """The sum of every sample of `name`."""
        with urllib.request.urlopen("http://%s/metrics" % self.admin, timeout=5) as r:
            text = r.read().decode()
        return sum(float(m.group(2))
                   for m in re.finditer(r"^(\w+)(?:\{[^}]*\})? (\S+)$", text, re.M)
                   if m.group(1) == name)

    def port_forward(self, kubeconfig, version, port):
        """Starts `kubectl port-forward demo :port`; returns (process, local port)."""
        env = {"PATH": "/usr/bin:/bin", "HOME": self.dir}
        proc = harness.Process("port-forward-%d" % time.monotonic_ns(),
                               [harness.kubectl_path(version), "--kubeconfig", kubeconfig,
                                "port-forward", "--address", "127.0.0.1", "pod/demo",
                                ":%d" % port], self.dir, env=env).start()
        pattern = r"Forwarding from 127\.0\.0\.1:(\d+) -> %d\n" % port
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with open(proc.stdout_path, "r", errors="replace") as f:
                m = re.search(pattern, f.read())
            if m:
                return proc, int(m.group(1))
            if time.monotonic() > deadline:
                proc.stop()
                raise harness.HarnessError("kubectl port-forward did not start\n" + proc.logs())
            time.sleep(0.05)

    def kubectl(self, kubeconfig, version, *args, stdin_data=None):
        return harness.run_kubectl(version, list(args), kubeconfig, KUBECTL_TIMEOUT,
                                   stdin_data=stdin_data)

    def cricall(self, *args):
        return subprocess.run([ARGS.cricall, "--socket", self.cri_socket] + list(args),
                              capture_output=True, text=True, timeout=20)

    def stop(self):
        for proc in self.devapis:
            proc.stop()
        return self.crisp.stop()


class KubectlTlsTest(unittest.TestCase):
    """TLS without client certificates."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = TlsCluster(cls.tmp.path, verify_clients=False)
        cls.kubeconfig = cls.cluster.devapi("devapiserver", client_certificate=False)

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def exec_echo(self, version=SPDY_KUBECTL, text="hello"):
        r = self.cluster.kubectl(self.kubeconfig, version, "exec", "demo", "--", "echo", text)
        self.assertEqual((r.returncode, r.stdout), (0, text + "\n"), str(r))

    def test_urls_handed_out_are_https(self):
        self.assertEqual(self.cluster.base_url, "https://%s/" % self.cluster.stream_address)
        r = self.cluster.cricall("exec", "demo", "--", "true")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.strip(), r"^https://127\.0\.0\.1:\d+/exec/[A-Za-z0-9_-]{22}$")

    def test_exec_echo_and_exit_code_through_tls(self):
        self.exec_echo()
        r = self.cluster.kubectl(self.kubeconfig, SPDY_KUBECTL, "exec", "demo", "--", "sh", "-c",
                                 "exit 7")
        self.assertEqual(r.returncode, 7, str(r))
        self.assertIn("command terminated with exit code 7", r.stderr)
        r = self.cluster.kubectl(self.kubeconfig, SPDY_KUBECTL, "exec", "-i", "demo", "--",
                                 "sh", "-c", "cat; exit 3")
        self.assertEqual(r.returncode, 3, str(r))

    def test_large_stdin_through_tls_arrives_whole_even_for_a_slow_reader(self):
        # Over TLS stdin is decrypted in user space and copied into the
        # command's pipe; a command that reads nothing for a while must still
        # get every byte in order.
        data = os.urandom(24 << 20)
        r = self.cluster.kubectl(self.kubeconfig, SPDY_KUBECTL, "exec", "-i", "demo", "--",
                                 "sh", "-c", "sleep 1; sha256sum", stdin_data=data)
        self.assertEqual(r.returncode, 0, str(r))
        self.assertEqual(r.stdout.split()[0], hashlib.sha256(data).hexdigest())

    def test_newest_kubectl_through_tls(self):
        if NEWEST_KUBECTL not in harness.installed_kubectl_versions():
            self.skipTest("kubectl %s is not installed" % NEWEST_KUBECTL)
        self.exec_echo(NEWEST_KUBECTL)

    def test_port_forward_download_through_tls_is_whole_and_copied(self):
        # Bytes from the pod are encrypted in crisp on their way to the
        # client: over TLS none is spliced, and every one arrives in order.
        data = os.urandom(16 << 20)
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)

            def serve():
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(data)

            server = threading.Thread(target=serve)
            server.start()
            spliced_before = self.cluster.metric("crisp_portforward_spliced_bytes_total")
            proc, local = self.cluster.port_forward(self.kubeconfig, SPDY_KUBECTL,
                                                    listener.getsockname()[1])
            self.addCleanup(proc.stop)
            got = bytearray()
            with socket.create_connection(("127.0.0.1", local), timeout=KUBECTL_TIMEOUT) as s:
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    got += chunk
            server.join()
        self.assertEqual(len(got), len(data))
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())
        self.assertEqual(self.cluster.metric("crisp_portforward_spliced_bytes_total"),
                         spliced_before)
        self.assertTrue(proc.running(), proc.logs())

    def test_plain_http_gets_no_http_answer(self):
        host, port = self.cluster.stream_address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /exec/x HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while True:
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    break  # crisp closed with the request unread
                if not chunk:
                    break
                data += chunk
        self.assertNotIn(b"HTTP/1.1", data)
        self.cluster.wait_for_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: TLS handshake: ")

    def test_reload_on_sighup_then_on_file_change_and_broken_key_refused(self):
        address, ca = self.cluster.stream_address, self.cluster.pki.ca
        self.assertEqual(served_serial(address, ca), "1001")

        # SIGHUP: new certificate, running crisp, no restart.
        self.cluster.pki.issue("server", "/CN=crisp", 0x1002, server=True)
        os.kill(self.cluster.crisp.pid, signal.SIGHUP)
        self.cluster.wait_for_log(r"TLS reloaded: new connections get certificate .*serial 1002")
        self.assertEqual(served_serial(address, ca), "1002")
        self.exec_echo(text="after-sighup")

        # A file change alone: picked up by the periodic check.
        self.cluster.pki.issue("server", "/CN=crisp", 0x1003, server=True)
        self.cluster.wait_for_log(r"TLS reloaded: new connections get certificate .*serial 1003",
                                  timeout=FILE_CHANGE_TIMEOUT)
        self.assertEqual(served_serial(address, ca), "1003")

        # A broken key is refused with the file named; 1003 stays.
        key = os.path.join(self.cluster.pki.dir, "server.key")
        with open(key + ".new", "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        os.rename(key + ".new", key)
        self.cluster.wait_for_log(r"TLS reload refused, still serving the certificate with "
                                  r"serial 1003: %s: cannot read a PEM private key" %
                                  re.escape(key), timeout=FILE_CHANGE_TIMEOUT)
        self.assertEqual(served_serial(address, ca), "1003")
        self.exec_echo(text="after-broken-key")


class KubectlTlsClientCertificateTest(unittest.TestCase):
    """crisp requires client certificates from its CA."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = TlsCluster(cls.tmp.path, verify_clients=True)

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def test_without_a_client_certificate_exec_is_refused(self):
        kubeconfig = self.cluster.devapi("devapi-anonymous", client_certificate=False)
        r = self.cluster.kubectl(kubeconfig, SPDY_KUBECTL, "exec", "demo", "--", "echo", "hi")
        self.assertNotEqual(r.returncode, 0, str(r))
        self.assertNotIn("hi", r.stdout)
        self.assertIn("certificate required", r.stderr)
        self.cluster.wait_for_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: TLS handshake: "
                                  r"peer did not return a certificate")

    def test_with_a_client_certificate_exec_works_and_the_log_names_it(self):
        kubeconfig = self.cluster.devapi("devapi-with-cert", client_certificate=True)
        r = self.cluster.kubectl(kubeconfig, SPDY_KUBECTL, "exec", "demo", "--", "echo", "hi")
        self.assertEqual((r.returncode, r.stdout), (0, "hi\n"), str(r))
        self.cluster.wait_for_log(r"\[C\d+\] POST /exec/\S+: upgrading to spdy/v4\.channel\.k8s\.io "
                                  r"for client \"%s\"" % re.escape(CLIENT_SUBJECT))
        # The audit log names the client too, on both lines of the session.
        deadline = time.monotonic() + 10
        records = []
        while time.monotonic() < deadline:
            with open(os.path.join(self.cluster.dir, "audit.log")) as f:
                records = [json.loads(line) for line in f if line.strip()]
            records = [r for r in records if r["command"] == ["echo", "hi"]]
            if any(r["event"] == "session_end" for r in records):
                break
            time.sleep(0.05)
        self.assertEqual(sorted(r["event"] for r in records), ["session_end", "session_start"])
        for record in records:
            self.assertEqual(record["client_subject"], CLIENT_SUBJECT, record)


def main():
    harness.test_main(("crisp", "devapiserver", "cricall"))


if __name__ == "__main__":
    main()
