"""A private containerd for end-to-end tests and measurements.

Everything lives under one temporary directory: containerd's config, root,
state, socket, runc's state, CNI directories, pod logs, the mounts of the
pods' network namespaces. The system's containerd, its socket and
/var/lib/containerd are never used. The CRI plugin's stream server listens on
127.0.0.1 with a port the kernel picks. Pods run with the host network
namespace, so no network plugin is involved, unless run_pod() is asked for a
pod network: then the CRI plugin makes the pod a network namespace of its own
and sets it up with CNI (POD_NETWORK_CNI below: the standard `loopback` plugin
and a small plugin of this file that gives the pod an eth0 and an address
inside that namespace only; nothing changes in the host's network). The images
(sandbox and test) are one busybox-static image built here and imported with
`ctr images import`: nothing is downloaded.

What this starts it stops by process id: the pods through CRI, then any shim
or container left over (found by this containerd's own socket or runc root),
then containerd itself; then it unmounts what is still mounted under its
directory and removes it.

Usable from Python (tests) and as a command (tools/containerd-env.sh):

    python3 containerd_env.py start --dir D --cricall PATH   # prints KEY=VALUE lines
    python3 containerd_env.py stop --dir D
"""

import argparse
import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Debian packages that provide what this needs, and the files that show each is
# installed.
PACKAGES = {
    "containerd": ["/usr/bin/containerd", "/usr/bin/ctr", "/usr/bin/containerd-shim-runc-v2"],
    "runc": ["/usr/sbin/runc"],
    "busybox-static": ["/bin/busybox"],
}
# What pods with a network of their own need besides.
POD_NETWORK_PACKAGES = {
    "containernetworking-plugins": ["/usr/lib/cni/loopback"],
    "iproute2": ["/usr/sbin/ip"],
    "util-linux": ["/usr/bin/nsenter"],
}

# The sandbox (pause) image and the image test containers run, both built from
# busybox-static. Names that no registry serves, so nothing can be pulled.
PAUSE_IMAGE = "crisp.local/pause:1"
TEST_IMAGE = "crisp.local/busybox:1"
NAMESPACE = "k8s.io"

START_TIMEOUT = 30
CGROUP_ROOT = "/sys/fs/cgroup"
# In the directory: this instance created /run/containerd (see cleanup()).
RUN_MARKER = "made-run-containerd"
CALL_TIMEOUT = 90

# A CGI program in the test image: streams N zero bytes (?N, default 1 MiB)
# over HTTP, for port-forward tests and throughput figures.
ZERO_CGI = b"""#!/bin/sh
n=${QUERY_STRING:-1048576}
printf 'Content-Type: application/octet-stream\\r\\nContent-Length: %s\\r\\n\\r\\n' "$n"
exec head -c "$n" /dev/zero
"""

# Another: the SHA-256 of the request body, for checking uploads byte for byte.
SHA256_CGI = b"""#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
head -c "${CONTENT_LENGTH:-0}" | sha256sum | cut -d' ' -f1
"""

CONFIG_TEMPLATE = """\
version = 2
root = "{dir}/root"
state = "{dir}/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
required_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  disable_cgroup = false
  enable_selinux = false
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{dir}/runc"
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/conf"

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{dir}/certs.d"
"""


# The network plugin of pods with a network of their own. The CRI plugin runs
# the standard `loopback` plugin itself (lo up), then this list, and wants an
# address on the pod's eth0: this plugin makes eth0 one end of a veth pair
# whose other end stays in the same namespace, with an address of the
# documentation range (RFC 5737). Both ends live and die with the pod's
# namespace, so DEL has nothing to undo; nothing routes anywhere.
POD_NETWORK_PLUGIN = "crisp-podnet"
# How the plugin says that the kernel refused it (the machine, not the code).
POD_NETWORK_REFUSED = "crisp-podnet: cannot make"
POD_NETWORK_CONF = """\
{"cniVersion": "0.4.0", "name": "crisp-e2e", "plugins": [{"type": "crisp-podnet"}]}
"""
POD_NETWORK_SCRIPT = r"""#!/bin/sh
# CNI plugin of crisp's private containerd (see containerd_env.py).
set -u
address=192.0.2.2/32
case "${CNI_COMMAND:-}" in
ADD)
  cat >/dev/null
  if ! nsenter --net="$CNI_NETNS" ip link add "$CNI_IFNAME" type veth peer name crisp-peer0 \
       >&2 ||
     ! nsenter --net="$CNI_NETNS" ip addr add "$address" dev "$CNI_IFNAME" >&2; then
    printf '{"cniVersion":"0.4.0","code":11,"msg":"crisp-podnet: cannot make %s in %s"}\n' \
      "$CNI_IFNAME" "$CNI_NETNS"
    exit 1
  fi
  printf '{"cniVersion":"0.4.0","interfaces":[{"name":"%s","sandbox":"%s"}],' \
    "$CNI_IFNAME" "$CNI_NETNS"
  printf '"ips":[{"version":"4","address":"%s","interface":0}]}\n' "$address"
  ;;
DEL|CHECK)
  cat >/dev/null
  ;;
VERSION)
  printf '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}\n'
  ;;
*)
  printf '{"cniVersion":"0.4.0","code":4,"msg":"unknown CNI_COMMAND"}\n'
  exit 1
  ;;
esac
"""


# How containerd reports that runc itself failed to create a container (no
# permission for namespaces, mounts or cgroups): the machine, not the code.
RUNC_REFUSED = "OCI runtime create failed"


class ContainerdUnavailable(Exception):
    """containerd cannot run on this machine (missing packages that cannot be
    installed, or runc cannot create a container here). Tests skip with this
    message; anything else is a failure."""


class ContainerdError(Exception):
    """containerd or a CRI call failed; the message carries the logs."""


def report_skip(reason):
    """Says why a test does not run: on stderr and in Bazel's test warnings."""
    print("SKIPPED: " + reason, file=sys.stderr)
    warnings = os.environ.get("TEST_WARNINGS_OUTPUT_FILE")
    if warnings:
        with open(warnings, "a") as f:
            f.write(reason + "\n")


def _missing_files(packages=PACKAGES):
    return [path for files in packages.values() for path in files if not os.path.exists(path)]


def ensure_installed(log=sys.stderr, packages=PACKAGES):
    """Installs the Debian packages whose files are missing (as root only).
    Raises ContainerdUnavailable when they stay missing."""
    if not _missing_files(packages):
        return
    wanted = sorted(p for p, files in packages.items()
                    if any(not os.path.exists(f) for f in files))
    if os.geteuid() != 0:
        raise ContainerdUnavailable("missing %s and not root to install %s" %
                                    (", ".join(_missing_files(packages)), " ".join(wanted)))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + wanted
    print("containerd_env: installing %s" % " ".join(wanted), file=log)
    r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if _missing_files(packages):
        raise ContainerdUnavailable("cannot install %s: %s" % (" ".join(wanted),
                                                               (r.stderr or r.stdout)[-2000:]))


def overlay_works(directory):
    """Whether an overlay mount succeeds on `directory`'s filesystem here (a
    container may forbid it even where the kernel has overlayfs)."""
    probe = tempfile.mkdtemp(prefix="overlay-probe-", dir=directory)
    try:
        for sub in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(probe, sub))
        opts = "lowerdir={0}/lower,upperdir={0}/upper,workdir={0}/work".format(probe)
        r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts,
                            os.path.join(probe, "merged")], capture_output=True, timeout=20)
        if r.returncode != 0:
            return False
        subprocess.run(["umount", os.path.join(probe, "merged")], capture_output=True, timeout=20)
        return True
    finally:
        shutil.rmtree(probe, ignore_errors=True)


# ---------------------------------------------------------------------------
# The test image, as a docker-archive tar (manifest.json with RepoTags), which
# `ctr images import` reads without any registry.

def _tar_add(tar, name, data=None, mode=0o644, kind=tarfile.REGTYPE, target=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.linkname = target
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _busybox_layer(busybox="/bin/busybox"):
    """A root filesystem: busybox, a link for each of its applets, the usual
    directories, /etc/passwd and the CGI programs."""
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.split()
    with open(busybox, "rb") as f:
        binary = f.read()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "etc",
                  "root", "var", "var/www", "var/www/cgi-bin", "run"):
            _tar_add(tar, d, kind=tarfile.DIRTYPE, mode=0o755)
        _tar_add(tar, "tmp", kind=tarfile.DIRTYPE, mode=0o1777)
        _tar_add(tar, "bin/busybox", binary, mode=0o755)
        for applet in applets:
            if applet != "bin/busybox":
                _tar_add(tar, applet, kind=tarfile.SYMTYPE, target="/bin/busybox", mode=0o777)
        _tar_add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _tar_add(tar, "etc/group", b"root:x:0:\n")
        _tar_add(tar, "var/www/index.html", b"crisp e2e\n")
        _tar_add(tar, "var/www/cgi-bin/zero", ZERO_CGI, mode=0o755)
        _tar_add(tar, "var/www/cgi-bin/sha256", SHA256_CGI, mode=0o755)
    return out.getvalue()


def build_image_archive(path):
    """Writes a docker-archive tar holding one image under both names."""
    layer = _busybox_layer()
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            # The sandbox's process: it only has to stay alive.
            "Cmd": ["/bin/sleep", "2147483647"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "containerd_env.py"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [PAUSE_IMAGE, TEST_IMAGE],
                            "Layers": [layer_digest + "/layer.tar"]}]).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        _tar_add(tar, layer_digest, kind=tarfile.DIRTYPE, mode=0o755)
        _tar_add(tar, layer_digest + "/layer.tar", layer)
        _tar_add(tar, config_name, config)
        _tar_add(tar, "manifest.json", manifest)


# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Pod:
    name: str
    sandbox_id: str
    container_ids: dict  # container name -> id


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Containerd:
    """A private containerd with the CRI plugin, under `directory` (created
    when missing). `cricall`: path of tools/cricall for the CRI calls."""

    def __init__(self, directory, cricall, log=sys.stderr):
        self.dir = directory
        self.cricall_path = cricall
        self.log = log
        self.socket = os.path.join(directory, "containerd.sock")
        self.config_path = os.path.join(directory, "config.toml")
        self.runc_root = os.path.join(directory, "runc")
        self.snapshotter = None
        self.process = None
        self.pods = []

    # --- start ---------------------------------------------------------------

    def start(self):
        """Installs what is missing, writes the config, starts containerd,
        imports the images and checks that a container can run. Raises
        ContainerdUnavailable or ContainerdError."""
        if os.geteuid() != 0:
            raise ContainerdUnavailable("containerd and runc need root (running as uid %d)" %
                                        os.geteuid())
        ensure_installed(self.log)
        for sub in ("root", "state", "runc", "cni/bin", "cni/conf", "certs.d", "logs"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.snapshotter = "overlayfs" if overlay_works(self.dir) else "native"
        if not os.path.exists("/run/containerd"):
            open(os.path.join(self.dir, RUN_MARKER), "w").close()
        with open(self.config_path, "w") as f:
            f.write(CONFIG_TEMPLATE.format(dir=self.dir, pause_image=PAUSE_IMAGE,
                                           snapshotter=self.snapshotter))
        self._write_cni()
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": self.dir,
               "TMPDIR": os.path.join(self.dir, "state")}
        self.process = harness.Process("containerd", ["/usr/bin/containerd", "--config",
                                                      self.config_path], self.dir, env=env)
        self.process.start()
        with open(os.path.join(self.dir, "containerd.pid"), "w") as f:
            f.write("%d\n" % self.process.pid)
        try:
            self._wait_serving()
            archive = os.path.join(self.dir, "images.tar")
            build_image_archive(archive)
            self.ctr("images", "import", "--snapshotter", self.snapshotter, archive)
            os.unlink(archive)
        except (harness.HarnessError, ContainerdError):
            self.stop()
            raise
        return self

    def _write_cni(self):
        """The pod network's CNI config and plugins (used only by pods run
        with pod_network=True; host-network pods never call CNI)."""
        plugin = os.path.join(self.dir, "cni", "bin", POD_NETWORK_PLUGIN)
        with open(plugin, "w") as f:
            f.write(POD_NETWORK_SCRIPT)
        os.chmod(plugin, 0o755)
        loopback = os.path.join(self.dir, "cni", "bin", "loopback")
        if not os.path.lexists(loopback):
            os.symlink(POD_NETWORK_PACKAGES["containernetworking-plugins"][0], loopback)
        with open(os.path.join(self.dir, "cni", "conf", "10-crisp-e2e.conflist"), "w") as f:
            f.write(POD_NETWORK_CONF)

    def _wait_serving(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if os.path.exists(self.socket):
                r = subprocess.run(self.cricall_base() + ["version"], capture_output=True,
                                   text=True, timeout=20)
                if r.returncode == 0:
                    return r.stdout.strip()
            if not self.process.running():
                raise ContainerdError("containerd exited at start\n" + self.process.logs())
            if time.monotonic() > deadline:
                raise ContainerdError("containerd's CRI not serving after %ss\n%s" %
                                      (START_TIMEOUT, self.process.logs()))
            time.sleep(0.1)

    # --- calls ---------------------------------------------------------------

    def ctr(self, *args, timeout=CALL_TIMEOUT):
        argv = ["/usr/bin/ctr", "--address", self.socket, "--namespace", NAMESPACE] + list(args)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise ContainerdError("%s -> %s\n%s%s\n%s" % (" ".join(argv), r.returncode, r.stdout,
                                                         r.stderr, self.logs()))
        return r.stdout

    def cricall_base(self, socket_path=None):
        return [self.cricall_path, "--socket", socket_path or self.socket]

    def cri(self, *args, socket_path=None):
        """One cricall on containerd's socket (or `socket_path`); its stdout."""
        argv = self.cricall_base(socket_path) + list(args)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT + 30)
        except subprocess.TimeoutExpired:
            raise ContainerdError("%s: no answer\n%s" % (" ".join(argv), self.logs()))
        if r.returncode != 0:
            raise ContainerdError("%s -> %s: %s\n%s" % (" ".join(argv), r.returncode,
                                                       r.stderr.strip(), self.logs()))
        return r.stdout.strip()

    def pod_flags(self, pod_network=False):
        return (["--log-dir", os.path.join(self.dir, "logs"),
                 "--cgroup-parent", cgroup_parent(self.dir)] +
                (["--pod-network"] if pod_network else []))

    def run_pod(self, name, containers, socket_path=None, pod_network=False):
        """A pod `name` with `containers`: a list of (container name, command
        list, {"tty": bool, "stdin": bool}). Every container is started. The
        pod shares the host's network, or with `pod_network` has a network
        namespace of its own (see POD_NETWORK_CONF). Returns a Pod; stop()
        removes it. Raises ContainerdUnavailable when runc cannot create the
        pod's first container on this machine, or the pod network's packages
        are missing and cannot be installed."""
        if pod_network:
            ensure_installed(self.log, POD_NETWORK_PACKAGES)
        try:
            sandbox = self.cri("runp", *self.pod_flags(pod_network), name,
                               socket_path=socket_path)
        except ContainerdError as e:
            if RUNC_REFUSED in str(e) and socket_path is None:
                raise ContainerdUnavailable("runc cannot create a container here: %s" %
                                            str(e).splitlines()[0])
            if pod_network and POD_NETWORK_REFUSED in str(e):
                raise ContainerdUnavailable("no pod network here (the kernel refused a veth "
                                            "pair in the pod's namespace): %s" %
                                            str(e).splitlines()[0])
            raise
        pod = Pod(name, sandbox, {})
        self.pods.append(pod)
        for cname, command, opts in containers:
            flags = [f for f in ("tty", "stdin") if opts.get(f)]
            cid = self.cri("create", *self.pod_flags(pod_network), *["--" + f for f in flags],
                           sandbox, name, cname, TEST_IMAGE, "--", *command,
                           socket_path=socket_path)
            pod.container_ids[cname] = cid
            self.cri("start", cid, socket_path=socket_path)
        return pod

    def remove_pod(self, pod):
        for cid in pod.container_ids.values():
            self.cri("stop", cid, "0")
            self.cri("rm", cid)
        self.cri("stopp", pod.sandbox_id)
        self.cri("rmp", pod.sandbox_id)
        self.pods.remove(pod)

    def stream_url(self, container_id):
        """The URL containerd's own stream server hands out for an exec."""
        return self.cri("exec", container_id, "--", "true")

    def logs(self):
        return self.process.logs() if self.process else "<containerd not started>"

    # --- stop ----------------------------------------------------------------

    def stop(self):
        """Removes the pods, ends leftover shims and containers by pid, stops
        containerd, unmounts and removes the directory. Safe to call twice."""
        problems = []
        for pod in list(self.pods):
            try:
                self.remove_pod(pod)
            except (ContainerdError, OSError) as e:
                problems.append(str(e).splitlines()[0])
        problems += cleanup(self.dir, self.process)
        self.process = None
        if problems:
            print("containerd_env: cleanup: " + "; ".join(problems), file=self.log)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def run_check(name, setup, timeout):
    """The body of a test that runs a gtest check binary against this
    containerd: parses --cricall and --check (other arguments go to the
    check), starts containerd under a new /tmp/crisp-ctrd-NAME-* directory
    (not TEST_TMPDIR: containerd's sockets need a short path), calls
    setup(env, tmp) for the check's environment variables besides
    CONTAINERD_SOCKET, runs the check and returns its exit code. containerd's
    log follows a failure. Returns 0, after report_skip(), only when
    containerd cannot run on this machine."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--cricall", required=True)
    parser.add_argument("--check", required=True, help="the gtest binary to run")
    args, rest = parser.parse_known_args()
    tmp = tempfile.mkdtemp(prefix="crisp-ctrd-%s-" % name)
    env = Containerd(os.path.join(tmp, "containerd"), os.path.abspath(args.cricall))
    try:
        try:
            env.start()
            variables = setup(env, tmp)
        except ContainerdUnavailable as e:
            report_skip("containerd cannot run on this machine: %s" % e)
            return 0
        started = time.monotonic()
        r = subprocess.run([os.path.abspath(args.check)] + rest,
                           env=dict(os.environ, CONTAINERD_SOCKET=env.socket, **variables),
                           timeout=timeout)
        print("check took %.1f s" % (time.monotonic() - started))
        if r.returncode != 0:
            print("containerd log:\n" + env.logs(), file=sys.stderr)
        return r.returncode
    finally:
        env.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def cgroup_parent(directory):
    """The cgroup path the pods of the containerd under `directory` use."""
    return "/crisp-e2e-" + os.path.basename(os.path.normpath(directory))


def _cgroup_dirs(directory):
    """That cgroup in every mounted hierarchy where it exists."""
    # cgroup v1 has a hierarchy per controller below the root; v2 one tree.
    roots = [CGROUP_ROOT]
    if os.path.isdir(CGROUP_ROOT):
        roots += [os.path.join(CGROUP_ROOT, h) for h in sorted(os.listdir(CGROUP_ROOT))]
    return [r + cgroup_parent(directory) for r in roots
            if os.path.isdir(r + cgroup_parent(directory))]


def _pids_with(needle):
    """Pids of processes whose command line contains `needle`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if needle.encode() in cmdline:
            pids.append(int(entry))
    return pids


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if os.path.exists("/proc/%d" % p)]
        if not pids:
            return []
        time.sleep(0.05)
    return pids


def cleanup(directory, process=None):
    """Stops whatever the containerd under `directory` left: containers (by
    runc's record of their pids), shims (by their -address argument naming
    this containerd's socket), containerd (by its pid file), then mounts and
    the directory. Returns the problems met, for the log."""
    problems = []
    sock = os.path.join(directory, "containerd.sock")
    runc_root = os.path.join(directory, "runc", NAMESPACE)
    if os.path.isdir(runc_root):
        r = subprocess.run(["/usr/sbin/runc", "--root", runc_root, "list", "--format", "json"],
                           capture_output=True, text=True, timeout=30)
        for c in json.loads(r.stdout or "null") or []:
            if c.get("pid"):
                _kill(int(c["pid"]), signal.SIGKILL)
            subprocess.run(["/usr/sbin/runc", "--root", runc_root, "delete", "--force", c["id"]],
                           capture_output=True, timeout=30)
    shims = _pids_with("-address " + sock)
    for pid in shims:
        _kill(pid, signal.SIGKILL)
    _wait_gone(shims, 10)
    if process is not None:
        code = process.stop(grace=10)
        if code not in (0, None, -signal.SIGTERM):
            problems.append("containerd exited with %s" % code)
    else:
        try:
            with open(os.path.join(directory, "containerd.pid")) as f:
                pid = int(f.read())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                ours = (os.path.join(directory, "config.toml")).encode() in f.read()
            if ours:
                _kill(pid, signal.SIGTERM)
                if _wait_gone([pid], 10):
                    _kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
    # Deepest first, so that nested mounts go before their parents.
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == directory or point.startswith(directory.rstrip("/") + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        r = subprocess.run(["umount", point], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=30)
    # The pods' cgroups (runc removes the containers' own, not their parent).
    for parent in _cgroup_dirs(directory):
        for path, _, _ in sorted(os.walk(parent), key=lambda w: len(w[0]), reverse=True):
            try:
                os.rmdir(path)
            except OSError as e:
                problems.append("cgroup %s: %s" % (path, e.strerror))
    if os.path.exists(os.path.join(directory, RUN_MARKER)):
        # Shim sockets of containerd 1.6 live under /run/containerd/s whatever
        # the state directory, and each shim removes its own. The directories
        # go only when this instance made them and they are empty.
        for leftover in ("/run/containerd/s", "/run/containerd"):
            try:
                os.rmdir(leftover)
            except OSError:
                pass
    shutil.rmtree(directory, ignore_errors=True)
    if os.path.exists(directory):
        problems.append("could not remove %s" % directory)
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start containerd and a demo pod; print its settings")
    start.add_argument("--dir", required=True, help="directory of its own (created)")
    start.add_argument("--cricall", required=True, help="path of the cricall binary")
    start.add_argument("--no-pod", action="store_true", help="start no demo pod")
    stop = sub.add_parser("stop", help="stop everything started under --dir and remove it")
    stop.add_argument("--dir", required=True)
    args = parser.parse_args()
    directory = os.path.abspath(args.dir)
    if args.command == "stop":
        problems = cleanup(directory)
        for p in problems:
            print("containerd-env: " + p, file=sys.stderr)
        return 1 if problems else 0
    os.makedirs(directory, exist_ok=True)
    env = Containerd(directory, os.path.abspath(args.cricall))
    try:
        env.start()
        print("CONTAINERD_SOCKET=%s" % env.socket)
        print("CONTAINERD_PID=%d" % env.process.pid)
        print("SNAPSHOTTER=%s" % env.snapshotter)
        if not args.no_pod:
            port = free_port()
            pod = env.run_pod("demo", [
                ("shell", ["/bin/sh"], {"tty": True, "stdin": True}),
                ("web", ["httpd", "-f", "-p", "127.0.0.1:%d" % port, "-h", "/var/www"], {}),
            ])
            print("SANDBOX_ID=%s" % pod.sandbox_id)
            print("SHELL_ID=%s" % pod.container_ids["shell"])
            print("WEB_ID=%s" % pod.container_ids["web"])
            print("WEB_PORT=%d" % port)
            print("STREAM_URL=%s" % env.stream_url(pod.container_ids["shell"]))
    except (ContainerdUnavailable, ContainerdError, harness.HarnessError) as e:
        print("containerd-env: %s" % e, file=sys.stderr)
        cleanup(directory, env.process)
        return 1
    # The processes outlive this command; `stop --dir` ends them.
    if env.process in harness._live_processes:
        harness._live_processes.remove(env.process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
