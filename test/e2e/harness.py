"""Helpers for end-to-end tests that run crisp's binaries and real kubectl.

Standard library only. Every process started here is stopped by its pid when
the test ends, pass or fail (context manager, explicit stop(), and an atexit
hook as the last resort), and its stdout/stderr are kept in files so that a
failing test can show them.

    with harness.TempDir() as tmp, harness.Process("devapiserver", [...], tmp.path) as srv:
        addr = srv.wait_for_file(os.path.join(tmp.path, "ready"), timeout=10).strip()
        result = harness.run_kubectl("1.33", ["get", "pods"], kubeconfig, timeout=20)
        assert result.returncode == 0, result
"""

import argparse
import atexit
import dataclasses
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

# Where the versioned kubectl binaries live (kubectl.1.27 ... kubectl.1.33).
KUBECTL_DIR = os.environ.get("CRISP_KUBECTL_DIR", "/usr/lib/google-cloud-sdk/bin")
KUBECTL_VERSIONS = ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"]

# How often a wait re-checks its condition. Waits always have a deadline.
_POLL_INTERVAL = 0.01

_live_processes = []


def _stop_all_at_exit():
    for proc in list(_live_processes):
        proc.stop()


atexit.register(_stop_all_at_exit)


class HarnessError(Exception):
    """A process did not start, died early, or a wait ran out of time."""


def kubectl_path(version):
    """The absolute path of kubectl `version` ("1.27"); raises if it is not installed."""
    path = os.path.join(KUBECTL_DIR, "kubectl." + version)
    if not os.access(path, os.X_OK):
        raise HarnessError("kubectl %s not found at %s" % (version, path))
    return path


def installed_kubectl_versions():
    """The versions from KUBECTL_VERSIONS whose binaries exist."""
    return [v for v in KUBECTL_VERSIONS if os.access(os.path.join(KUBECTL_DIR, "kubectl." + v),
                                                     os.X_OK)]


def address_sanitized(pid):
    """Whether the process runs with AddressSanitizer's runtime."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def fd_count(pid):
    """How many descriptors process `pid` holds."""
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kib(pid):
    """The resident memory of process `pid`, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


class TempDir:
    """A short-lived directory under /tmp (short enough for unix socket paths),
    removed on exit."""

    def __init__(self, prefix="crisp-e2e-"):
        self.path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()
        return False


class Process:
    """A child process in its own process group, with logs in files.

    name: used for log file names (<log_dir>/<name>.stdout and .stderr).
    argv: the command; argv[0] is resolved as given (no shell).
    """

    def __init__(self, name, argv, log_dir, env=None):
        self.name = name
        self.argv = list(argv)
        self.stdout_path = os.path.join(log_dir, name + ".stdout")
        self.stderr_path = os.path.join(log_dir, name + ".stderr")
        self._env = env
        self._popen = None

    def start(self):
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=err, env=self._env, start_new_session=True)
        _live_processes.append(self)
        return self

    @property
    def pid(self):
        return self._popen.pid if self._popen else None

    def running(self):
        return self._popen is not None and self._popen.poll() is None

    def logs(self):
        """stdout and stderr so far, as one string for failure messages."""
        parts = []
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                text = "<none>"
            parts.append("--- %s %s ---\n%s" % (self.name, label, text))
        return "\n".join(parts)

    def _check_alive(self, waiting_for):
        if not self.running():
            code = self._popen.returncode if self._popen else None
            raise HarnessError("%s exited (code %s) while waiting for %s\n%s" %
                               (self.name, code, waiting_for, self.logs()))

    def wait_for_file(self, path, timeout):
        """Waits until `path` exists and is non-empty; returns its content.
        Raises HarnessError when the process dies or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path, "r") as f:
                    content = f.read()
                if content:
                    return content
            except FileNotFoundError:
                pass
            self._check_alive(path)
            if time.monotonic() > deadline:
                raise HarnessError("%s: no %s after %ss\n%s" %
                                   (self.name, path, timeout, self.logs()))
            time.sleep(_POLL_INTERVAL)

    def wait_for_port(self, host, port, timeout):
        """Waits until a TCP connection to host:port succeeds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return
            except OSError:
                pass
            self._check_alive("%s:%s" % (host, port))
            if time.monotonic() > deadline:
                raise HarnessError("%s: %s:%s not accepting after %ss\n%s" %
                                   (self.name, host, port, timeout, self.logs()))
            time.sleep(_POLL_INTERVAL)

    def stop(self, grace=5.0):
        """Sends SIGTERM to the process group, then SIGKILL after `grace`
        seconds. Safe to call more than once. Returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            try:
                os.killpg(self._popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self._popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self._popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._popen.wait(timeout=grace)
        if self in _live_processes:
            _live_processes.remove(self)
        return self._popen.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    argv: list
    # kubectl's own log lines of a client-side race, taken out of stderr (see
    # split_client_race()).
    client_race: str = ""

    def __str__(self):
        return "%s -> %s\n--- stdout ---\n%s\n--- stderr ---\n%s%s" % (
            " ".join(self.argv), self.returncode, self.stdout, self.stderr,
            "\n--- taken from stderr ---\n" + self.client_race if self.client_race else "")


# client-go's WebSocket executor starts reading the connection before it has
# made its streams, and drops (with this log line) a message that arrives in
# between: in practice the empty message every server, the kubelet included,
# writes on the first output channel when the session opens. Any server can
# trigger it; whether data was lost shows in stdout, which tests check whole.
CLIENT_RACE_LINE = re.compile(
    r"^E\d{4} [\d:.]+ +\d+ websocket\.go:\d+\] Unknown stream id \d+, discarding message\n",
    re.MULTILINE)


def split_client_race(stderr):
    """Returns (stderr without kubectl's dropped-message lines, those lines)."""
    race = "".join(CLIENT_RACE_LINE.findall(stderr))
    return CLIENT_RACE_LINE.sub("", stderr), race


def run_kubectl(version, args, kubeconfig, timeout, home=None, env=None, stdin_data=None):
    """Runs kubectl `version` with `args` against `kubeconfig` and returns a Result.

    home: HOME for kubectl (its discovery cache lives there); a fresh
    temporary one when None, so runs do not share cached discovery.
    env: extra environment variables (e.g. KUBECTL_REMOTE_COMMAND_WEBSOCKETS).
    A run longer than `timeout` seconds is killed and reported as returncode -9.
    """
    argv = [kubectl_path(version), "--kubeconfig", kubeconfig] + list(args)
    owned_home = None
    if home is None:
        owned_home = tempfile.mkdtemp(prefix="kubectl-home-", dir="/tmp")
        home = owned_home
    full_env = {"PATH": "/usr/bin:/bin", "HOME": home, "KUBECONFIG": kubeconfig}
    full_env.update(env or {})
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin_data is not None else
                                subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=full_env, start_new_session=True)
        try:
            out, err = proc.communicate(input=stdin_data, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            return Result(-9, out.decode("utf-8", "replace"),
                          err.decode("utf-8", "replace") + "\n<killed after %ss>" % timeout,
                          argv)
        stderr, race = split_client_race(err.decode("utf-8", "replace"))
        return Result(proc.returncode, out.decode("utf-8", "replace"), stderr, argv, race)
    finally:
        if owned_home:
            shutil.rmtree(owned_home, ignore_errors=True)


def write_until_echoed(proc, line, timeout=15):
    """Writes `line` (bytes) to `proc`'s stdin, again every second, until its
    stdout has carried it back or `timeout` seconds have passed; returns what
    stdout carried. For attach, whose client may connect after the first
    write has gone to a process nobody was attached to yet."""
    deadline = time.monotonic() + timeout
    seen = b""
    while line not in seen and time.monotonic() < deadline:
        proc.stdin.write(line)
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            seen += os.read(proc.stdout.fileno(), 65536)
    return seen


def test_main(paths, share_with=()):
    """The main() of a test file: parses one required `--<name> PATH` option
    per entry of `paths` ("fake_runtime" is spelled --fake-runtime), makes the
    paths absolute, sets the result as ARGS in the test file and in each module
    of `share_with` (the test bases it imports), and runs unittest with the
    remaining arguments. Returns nothing; unittest exits."""
    parser = argparse.ArgumentParser()
    for name in paths:
        parser.add_argument("--" + name.replace("_", "-"), required=True)
    args, rest = parser.parse_known_args()
    for name in paths:
        setattr(args, name, os.path.abspath(getattr(args, name)))
    for module in (sys.modules["__main__"],) + tuple(share_with):
        module.ARGS = args
    unittest.main(module="__main__", argv=[sys.argv[0]] + rest, verbosity=2)
