"""crisp against hostile or broken clients, end to end (docs/security.md).

One crisp with its embedded runtime, at log level trace, and the development
API server. Each test attacks it the way a client on the stream port or the
CRI socket could, and checks what users and operators see: status codes,
/metrics, crisp's descriptors and log, and that honest sessions go on.

Usage: hostile_clients_test.py --crisp PATH --devapiserver PATH --cricall PATH
                               --fake-runtime PATH [unittest args]
"""

import os
import re
import resource
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import kubectl_exec_test as base  # noqa: E402

SPDY_KUBECTL = "1.27"
WS_KUBECTL = "1.33"

# A small cache and a short header timeout so that limits are reached
# quickly; the "jail" container runs as another user in its own directory.
CONFIG = """
cri:
  listen: {{dir}}/crisp.sock
stream:
  listen: 127.0.0.1:0
  header_timeout: 1s
cache:
  max_in_flight: 20
admin:
  listen: 127.0.0.1:0
log:
  level: trace
runtime:
  embedded:
    containers:
      - id: echoer
        command: ["/bin/cat"]
        stdin: true
      - id: jail
        command: ["/bin/sleep", "infinity"]
        working_dir: {{dir}}/jail
        env: ["ONLY=this"]{user}
"""


def can_switch_user(uid):
    """Whether a child may drop to `uid` (not in every sandbox, even as root)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os._exit(0)
        except OSError:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


# nobody when crisp may switch to it, else crisp's own user (the user check
# is then trivial; working directory and environment are still checked).
ARGS = None

JAIL_UID = 65534 if os.getuid() == 0 and can_switch_user(65534) else os.getuid()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_request(port, head, timeout=10):
    """Sends `head` on a new connection; returns everything until EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                return out
            if not chunk:
                return out
            out += chunk


def upgrade_head(path, port):
    return ("POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
            "Content-Length: 0\r\n\r\n" % (path, port)).encode()


class HostileClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir()
        os.makedirs(os.path.join(cls.tmp.path, "jail"))
        os.chmod(cls.tmp.path, 0o755)
        user = '\n        user: "%d"' % JAIL_UID if JAIL_UID != os.getuid() else ""
        config = CONFIG.format(user=user)
        cls.cluster = base.Cluster(cls.tmp.path, config_template=config)
        cls.pid = cls.cluster.crisp.pid

    @classmethod
    def tearDownClass(cls):
        code = cls.cluster.stop()
        cls.tmp.cleanup()
        assert code == 0, "crisp exited with %s" % code

    def log(self):
        with open(self.cluster.crisp.stderr_path, "rb") as f:
            return f.read()

    def stream_url(self, *args):
        r = self.cluster.cricall(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        url = r.stdout.strip()
        m = re.match(r"^http://127\.0\.0\.1:(\d+)(/\w+/([A-Za-z0-9_-]{22}))$", url)
        self.assertIsNotNone(m, url)
        return url, int(m.group(1)), m.group(2), m.group(3)

    def kubectl_ok(self, *args, stdin_data=None, version=SPDY_KUBECTL):
        r = self.cluster.kubectl(version, *args, stdin_data=stdin_data)
        self.assertEqual(r.returncode, 0, str(r))
        return r.stdout

    def test_no_token_or_payload_in_the_log_even_at_trace(self):
        secret = "payload-%d-never-logged" % os.getpid()
        url, port, path, token = self.stream_url("exec", "--stdin", "echoer", "--", "cat")
        self.assertEqual(base.spdy_upgrade(url)[0], 101)
        out = self.kubectl_ok("exec", "-i", "echoer", "--", "cat", stdin_data=secret.encode())
        self.assertEqual(out, secret)
        # A wrong token is not logged either.
        wrong = "A" * 22
        raw_request(port, upgrade_head("/exec/" + wrong, port))
        log = self.log()
        self.assertRegex(log, rb"(?m)^\S+ T ", "the log holds no trace lines")
        self.assertNotIn(token.encode(), log)
        self.assertNotIn(wrong.encode(), log)
        self.assertNotIn(secret.encode(), log)

    def test_other_spellings_of_a_token_path_are_404_and_do_not_burn_it(self):
        url, port, path, token = self.stream_url("exec", "--stdin", "echoer", "--", "cat")
        spellings = [
            "/exec/%" + "%02X" % ord(token[0]) + token[1:],  # percent-encoded character
            "/exec/./" + token,
            "/exec/../exec/" + token,
            "//exec/" + token,
            "/exec//" + token,
            "/exec/" + token + "/",
            "/%65xec/" + token,
            "/EXEC/" + token,
            "/exec/" + token + "%00",
            "/exec/" + token + "/..",
        ]
        before = self.cluster.metric("crisp_stream_requests_total", {"result": "not_found"})
        for spelling in spellings:
            answer = raw_request(port, upgrade_head(spelling, port))
            self.assertTrue(answer.startswith(b"HTTP/1.1 404 "), (spelling, answer[:80]))
        self.assertEqual(self.cluster.metric("crisp_stream_requests_total",
                                             {"result": "not_found"}), before + len(spellings))
        # None of them reached the cache: the exact path still works.
        self.assertEqual(base.spdy_upgrade(url)[0], 101)

    def test_token_used_twice_gets_404(self):
        url, _, _, _ = self.stream_url("exec", "echoer", "--", "true")
        self.assertEqual(base.spdy_upgrade(url)[0], 101)
        self.assertEqual(base.spdy_upgrade(url), (404, b"404 page not found\n"))

    def test_slowloris_is_cut_at_the_header_timeout(self):
        _, port, path, _ = self.stream_url("exec", "echoer", "--", "true")
        before = self.cluster.metric("crisp_stream_requests_total", {"result": "header_timeout"})
        head = upgrade_head(path, port)
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            closed = False
            # One byte every 200 ms: each byte alone is well within any idle
            # limit; the head as a whole must still be done within 1 s.
            for b in head[:-4]:
                try:
                    s.sendall(bytes([b]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                time.sleep(0.2)
                if time.monotonic() - start > 5:
                    break
            if not closed:
                s.settimeout(5)
                try:
                    answer = s.recv(4096)
                except (ConnectionResetError, socket.timeout):
                    answer = b""
                self.assertFalse(answer.startswith(b"HTTP/1.1 101"), answer)
        self.assertLess(time.monotonic() - start, 5, "the trickle was not cut")
        self.assertEqual(self.cluster.wait_for_metric(
            "crisp_stream_requests_total", before + 1, labels={"result": "header_timeout"}),
            before + 1)

    def test_unknown_token_flood_leaves_sessions_alone_and_is_counted(self):
        # 10,000 requests a second, each with a token crisp never issued, from
        # token_flooder (Python's sockets reach a tenth of that).
        _, port, _, _ = self.stream_url("exec", "echoer", "--", "true")

        def counts():
            return {result: self.cluster.metric("crisp_stream_requests_total",
                                                {"result": result})
                    for result in ("not_found", "header_timeout")}

        before = counts()
        flooder = subprocess.Popen(
            [ARGS.token_flooder, "--port", str(port), "--rate", "10000", "--seconds", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Honest sessions during the flood: every one completes, exactly.
        honest = 0
        while flooder.poll() is None:
            out = self.kubectl_ok("exec", "-i", "echoer", "--", "cat", stdin_data=b"still here")
            self.assertEqual(out, "still here")
            honest += 1
        out, err = flooder.communicate()
        print("unknown-token flood: %s; %d honest sessions" % (out.strip(), honest),
              file=sys.stderr)
        # Every request ended with a 404, or, when crisp fell behind so far
        # that it read the head only after its header timeout, with the close
        # that the timeout means.
        self.assertEqual(flooder.returncode, 0, out + err)
        figures = dict(kv.split("=") for kv in out.split())
        self.assertGreater(honest, 0)
        # All 20,000 were sent; the rate they went out at is printed above (it
        # is 10,000 a second unless the machine starves the flooder).
        self.assertEqual(int(figures["started"]), 20000, out)
        self.assertEqual(int(figures["other"]), 0, out)
        want = {"not_found": before["not_found"] + int(figures["not_found"]),
                "header_timeout": before["header_timeout"] + int(figures["failed"])}
        self.cluster.wait_for_metric("crisp_stream_requests_total", want["not_found"],
                                     labels={"result": "not_found"})
        self.assertEqual(counts(), want)

    def test_full_cache_is_resource_exhausted_and_counted(self):
        before = self.cluster.metric("crisp_tokens_refused_total", {"reason": "full"})
        urls = []
        while True:
            r = self.cluster.cricall("exec", "echoer", "--", "true")
            if r.returncode != 0:
                break
            urls.append(r.stdout.strip())
            self.assertLess(len(urls), 100, "the cache never filled")
        self.assertTrue(r.stderr.startswith("RESOURCE_EXHAUSTED: "), r.stderr)
        self.assertEqual(self.cluster.metric("crisp_tokens_refused_total", {"reason": "full"}),
                         before + 1)
        # Using the tokens frees the cache again.
        for url in urls:
            self.assertEqual(base.spdy_upgrade(url)[0], 101)
        self.stream_url("exec", "echoer", "--", "true")

    def test_dropped_connection_kills_the_process_and_frees_everything(self):
        marker = "crisp-e2e-drop-%d" % os.getpid()
        # Warm up, then take the baseline.
        self.kubectl_ok("exec", "echoer", "--", "true")
        time.sleep(0.5)
        fds_before = harness.fd_count(self.pid)
        tokens_before = self.cluster.metric("crisp_tokens_live")
        url, _, _, _ = self.stream_url("exec", "--stdin", "echoer", "--", "sh", "-c",
                                       ": %s; sleep 1000" % marker)
        m = re.match(r"^http://([^/:]+):(\d+)(/.*)$", url)
        s = socket.create_connection((m.group(1), int(m.group(2))), timeout=10)
        s.sendall(upgrade_head(m.group(3), int(m.group(2))))
        self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 101"))
        # Open the v4 stream set with a real SPDY client would take a codec;
        # dropping right after the upgrade must free the half-made session too.
        s.close()
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0), 0)
        # And a session with its process running: kubectl killed outright.
        proc = subprocess.Popen(self.cluster.kubectl_argv(
            SPDY_KUBECTL, "exec", "-i", "echoer", "--", "sh", "-c", ": %s; sleep 1000" % marker),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=self.cluster.kubectl_env())
        deadline = time.monotonic() + 10
        while not base.processes_matching(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertNotEqual(base.processes_matching(marker), [])
        proc.kill()
        proc.wait()
        proc.stdin.close()
        deadline = time.monotonic() + 10
        while base.processes_matching(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(base.processes_matching(marker), [])
        self.assertEqual(self.cluster.wait_for_metric("crisp_sessions_active", 0), 0)
        self.assertEqual(self.cluster.wait_for_metric("crisp_stream_connections_active", 0), 0)
        self.assertEqual(self.cluster.metric("crisp_tokens_live"), tokens_before)
        deadline = time.monotonic() + 10
        while harness.fd_count(self.pid) > fds_before and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertLessEqual(harness.fd_count(self.pid), fds_before)

    def test_descriptor_exhaustion_pauses_accept_and_recovers(self):
        if harness.address_sanitized(self.pid):
            # UBSan's vptr check probes memory through a pipe; with the
            # descriptor table full it cannot make one and reports a valid
            # object as having an invalid vptr. The plain run covers this.
            self.skipTest("the sanitizer runtime needs descriptors of its own")
        _, port, _, _ = self.stream_url("exec", "echoer", "--", "true")
        soft, hard = resource.prlimit(self.pid, resource.RLIMIT_NOFILE)
        used = harness.fd_count(self.pid)
        before = self.cluster.metric("crisp_listener_accept_pauses_total", {"listener": "stream"})
        resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (used + 8, hard))
        held = []
        try:
            # More connections than crisp has descriptors left: they wait in
            # the backlog.
            for _ in range(40):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.5)
            cpu_start = cpu_seconds(self.pid)
            time.sleep(2)
            cpu_used = cpu_seconds(self.pid) - cpu_start
            self.assertLess(cpu_used, 0.5, "crisp spins while its descriptor table is full")
            self.assertGreater(self.cluster.metric("crisp_listener_accept_pauses_total",
                                                   {"listener": "stream"}), before)
        finally:
            for s in held:
                s.close()
            resource.prlimit(self.pid, resource.RLIMIT_NOFILE, (soft, hard))
        # Recovered: a new session works.
        self.assertEqual(self.kubectl_ok("exec", "echoer", "--", "echo", "back").strip(), "back")

    def test_jail_user_directory_and_environment_hold_whatever_the_request(self):
        out = self.kubectl_ok("exec", "jail", "--", "sh", "-c", "id -u; pwd; env | sort")
        lines = out.splitlines()
        self.assertEqual(lines[0], str(JAIL_UID))
        self.assertEqual(lines[1], os.path.join(self.tmp.path, "jail"))
        env = dict(l.split("=", 1) for l in lines[2:] if "=" in l)
        self.assertEqual(env.get("ONLY"), "this")
        for leaked in ("KUBECONFIG", "HOME_OF_CRISP", "TEST_TMPDIR"):
            self.assertNotIn(leaked, env)
        # Crafted commands: an environment assignment is a program name, not
        # a variable, and nothing reaches past the container's user.
        r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "jail", "--", "ONLY=other", "env")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("executable file not found", r.stderr)
        if JAIL_UID != os.getuid():
            r = self.cluster.kubectl(SPDY_KUBECTL, "exec", "jail", "--", "sh", "-c",
                                     "cat /proc/1/environ")
            self.assertNotEqual(r.returncode, 0, "the jail user read another user's memory")


def main():
    harness.test_main(("crisp", "devapiserver", "cricall", "fake_runtime", "token_flooder"),
                      share_with=(base,))


if __name__ == "__main__":
    main()
