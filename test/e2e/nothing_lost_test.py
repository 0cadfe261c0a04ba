"""Nothing is lost or reordered on the way through crisp, end to end.

Real kubectl moves a large stream through each protocol crisp serves while
the reading side stalls and resumes at random; the far side checks the byte
count and SHA-256 of what arrived:
- exec stdin to stdout of `cat` over SPDY (kubectl 1.27) and over WebSocket
  v5.channel.k8s.io (kubectl 1.33);
- port-forward to an echo server over SPDY (kubectl 1.27) and over
  WebSocket (kubectl 1.33: the SPDY-over-WebSocket tunnel);
- stdout and stderr of one process, interleaved line by line, each arriving
  complete and in order, over SPDY and over WebSocket.

The size is 256 MiB per stream by default so that CI stays within its time
budget; CRISP_NOTHING_LOST_MIB=1024 runs the full GiB.

Usage: nothing_lost_test.py --crisp PATH --devapiserver PATH --cricall PATH
                            --fake-runtime PATH [unittest args]
"""

import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kubectl_exec_test as exec_base  # noqa: E402
import kubectl_portforward_test as pf_base  # noqa: E402

SPDY_KUBECTL = "1.27"
WS_KUBECTL = "1.33"
MIB = int(os.environ.get("CRISP_NOTHING_LOST_MIB", "256"))
CHUNK = 1 << 20
TIMEOUT = 600


def payload_chunks(seed, total):
    """`total` bytes in 1 MiB chunks, pseudo-random from `seed`, made as needed."""
    rng = random.Random(seed)
    left = total
    while left > 0:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def expected_digest(seed, total):
    h = hashlib.sha256()
    for chunk in payload_chunks(seed, total):
        h.update(chunk)
    return h.hexdigest()


class StallingReader:
    """Reads a file object or socket to its end, hashing what arrives, and
    stops reading for 0-300 ms at random moments (about one read in 50)."""

    def __init__(self, read, seed):
        self.read = read
        self.rng = random.Random(seed)
        self.digest = hashlib.sha256()
        self.count = 0
        self.stalls = 0

    def run(self):
        while True:
            if self.rng.random() < 0.02:
                self.stalls += 1
                time.sleep(self.rng.random() * 0.3)
            data = self.read(self.rng.choice((4096, 65536, 1 << 20)))
            if not data:
                return
            self.digest.update(data)
            self.count += len(data)


def feed(write, close, seed, total):
    for chunk in payload_chunks(seed, total):
        write(chunk)
    close()


class ExecThroughput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = exec_base.Cluster(cls.tmp.path)

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def pipe_through_cat(self, version, env=None):
        total = MIB << 20
        seed = "exec-%s" % version
        kubectl_env = self.cluster.kubectl_env()
        kubectl_env.update(env or {})
        proc = subprocess.Popen(self.cluster.kubectl_argv(version, "exec", "-i", "echoer", "--",
                                                          "cat"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=kubectl_env, start_new_session=True)
        reader = StallingReader(proc.stdout.read1, seed + "-reader")
        writer = threading.Thread(target=feed, args=(proc.stdin.write, proc.stdin.close, seed,
                                                     total), daemon=True)
        writer.start()
        reader_thread = threading.Thread(target=reader.run, daemon=True)
        reader_thread.start()
        reader_thread.join(TIMEOUT)
        writer.join(10)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        stderr = proc.stderr.read().decode(errors="replace")
        self.assertFalse(reader_thread.is_alive(), "stdout never ended")
        self.assertEqual(code, 0, stderr)
        self.assertEqual(reader.count, total)
        self.assertEqual(reader.digest.hexdigest(), expected_digest(seed, total))
        self.assertGreater(reader.stalls, 0)

    def interleaved(self, version, env=None):
        lines = 50000
        script = ('i=0; while [ $i -lt %d ]; do echo "out $i"; echo "err $i" >&2; '
                  'i=$((i+1)); done' % lines)
        kubectl_env = self.cluster.kubectl_env()
        kubectl_env.update(env or {})
        r = subprocess.run(self.cluster.kubectl_argv(version, "exec", "echoer", "--", "sh", "-c",
                                                     script),
                           capture_output=True, env=kubectl_env, timeout=TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        want_out = "".join("out %d\n" % i for i in range(lines)).encode()
        want_err = "".join("err %d\n" % i for i in range(lines)).encode()
        self.assertEqual(len(r.stdout), len(want_out))
        self.assertEqual(r.stdout, want_out)
        self.assertEqual(len(r.stderr), len(want_err))
        self.assertEqual(r.stderr, want_err)

    def test_spdy_exec_stdin_to_stdout(self):
        self.pipe_through_cat(SPDY_KUBECTL)

    def test_websocket_v5_exec_stdin_to_stdout(self):
        before = self.cluster.metric("crisp_sessions_total", {"protocol": "ws/v5.channel.k8s.io"})
        self.pipe_through_cat(WS_KUBECTL)
        self.assertEqual(self.cluster.metric("crisp_sessions_total",
                                             {"protocol": "ws/v5.channel.k8s.io"}), before + 1)

    def test_spdy_stdout_and_stderr_interleaved(self):
        self.interleaved(SPDY_KUBECTL)

    def test_websocket_stdout_and_stderr_interleaved(self):
        self.interleaved(WS_KUBECTL)


class PortForwardThroughput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        cls.cluster = pf_base.Cluster(cls.tmp.path)
        cls.echo = pf_base.start_server(pf_base.ThreadingServer(("127.0.0.1", 0),
                                                                pf_base.EchoHandler))

    @classmethod
    def tearDownClass(cls):
        cls.echo.shutdown()
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def echo_through(self, version, env=None):
        total = MIB << 20
        seed = "portforward-%s" % version
        proc, (local,) = self.cluster.port_forward(version, self.echo.server_address[1], env=env)
        self.addCleanup(proc.stop)
        with socket.create_connection(("127.0.0.1", local), timeout=TIMEOUT) as s:
            writer = threading.Thread(target=feed, args=(s.sendall,
                                                         lambda: s.shutdown(socket.SHUT_WR),
                                                         seed, total), daemon=True)
            writer.start()
            reader = StallingReader(s.recv, seed + "-reader")
            reader.run()
            writer.join(10)
        self.assertEqual(reader.count, total)
        self.assertEqual(reader.digest.hexdigest(), expected_digest(seed, total))
        self.assertTrue(proc.running(), proc.logs())

    def test_spdy_port_forward(self):
        self.echo_through(SPDY_KUBECTL)

    def test_websocket_port_forward(self):
        before = self.cluster.metric("crisp_sessions_total", {"operation": "portforward"})
        self.echo_through(WS_KUBECTL)
        self.assertGreater(self.cluster.metric("crisp_sessions_total",
                                               {"operation": "portforward"}), before)


def main():
    harness.test_main(("crisp", "devapiserver", "cricall", "fake_runtime"),
                      share_with=(exec_base, pf_base))


if __name__ == "__main__":
    main()
