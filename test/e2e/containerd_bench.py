"""Streaming figures with real kubectl: containerd's own stream server as the
reference, and crisp bridged to it beside it in the same run.

Rows:
- containerd: the development API server calls containerd's CRI socket
  itself, so kubectl streams go to containerd's stream server with no crisp in
  the path; into runc containers of a private containerd (containerd_env.py).
  The reference.
- crisp-bridged: the same containerd behind crisp (cri.upstream); crisp serves
  every stream and bridges it to containerd's stream server.
- crisp-containerd: the same containerd behind crisp with cri.backend
  containerd; crisp runs exec sessions itself through containerd's task API
  and serves the shim's FIFOs, and connects forwarded ports itself inside the
  pod's network namespace.
- crisp-embedded: crisp's own stream server and embedded runtime (processes on
  the host), the same kubectl and API server path.

kubectl 1.27 speaks SPDY; kubectl 1.33 offers WebSocket first (v5 for exec,
the SPDY tunnel for port-forward): crisp serves that and bridges it to SPDY
toward containerd, while containerd's stream server has neither, so its row
for 1.33 is kubectl's fallback to SPDY.

Figures: kubectl exec stdout throughput (`head -c N /dev/zero`, read from a
pipe), port-forward throughput (HTTP GET of a sparse file of N bytes, which
busybox httpd on 127.0.0.1 in the host-network pod sends with sendfile(2), so
that the source is not what limits), exec setup latency (`kubectl exec --
true`, median and 90th percentile), and CPU seconds per GiB (from
/proc/PID/stat): of exec output, spent by containerd and its shims plus crisp,
and by crisp alone; of a port-forward, spent by each process on its path
(kubectl, the API server, crisp, containerd and its shims, httpd, the reader).

Usage: containerd_bench.py --crisp PATH --devapiserver PATH --cricall PATH
                           [--bytes N] [--latency-runs N] [--kubectl 1.27,1.33]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_env  # noqa: E402
import containerd_test as cells  # noqa: E402
import harness  # noqa: E402
import kubectl_exec_test as exec_base  # noqa: E402
import kubectl_portforward_test as pf  # noqa: E402

ARGS = None
MIB = 1 << 20
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User plus system CPU seconds of `pids` so far (children not included)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


class RuntimeDirect(exec_base.Cluster):
    """The development API server on a runtime's own CRI socket: kubectl
    streams go to the runtime's stream server, no crisp in the path."""

    def __init__(self, tmp, cri_socket):  # pylint: disable=super-init-not-called
        self.dir = tmp
        self.cri_socket = cri_socket
        self.start_devapiserver()

    def stop(self):
        return self.devapi.stop()


class Row:
    """One stream server under measurement: a cluster (crisp + development
    API server), the processes whose CPU is charged to it, and the names of
    the exec target and the port-forward pod."""

    def __init__(self, name, cluster, cpu_pids, exec_target, pf_pod, web_port):
        self.name = name
        self.cluster = cluster
        self.cpu_pids = cpu_pids
        self.exec_target = exec_target
        self.pf_pod = pf_pod
        self.web_port = web_port

    def exec_throughput(self, version, n):
        argv = self.cluster.kubectl_argv(version, "exec", self.exec_target, "--", "head", "-c",
                                         str(n), "/dev/zero")
        pids = self.cpu_pids()
        crisp = [self.cluster.crisp.pid] if getattr(self.cluster, "crisp", None) else []
        cpu0 = cpu_seconds(pids)
        crisp0 = cpu_seconds(crisp)
        kubectl0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=self.cluster.kubectl_env(), start_new_session=True)
        got = 0
        while True:
            chunk = proc.stdout.read1(4 * MIB)
            if not chunk:
                break
            got += len(chunk)
        err = proc.stderr.read()
        code = proc.wait(timeout=600)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(pids) - cpu0
        crisp_cpu = cpu_seconds(crisp) - crisp0
        # kubectl is the only child reaped meanwhile.
        kubectl1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        kubectl_cpu = (kubectl1.ru_utime + kubectl1.ru_stime - kubectl0.ru_utime -
                       kubectl0.ru_stime)
        if (code, got) != (0, n):
            raise RuntimeError("%s: exec got %d of %d bytes, exit %d: %s" %
                               (self.name, got, n, code, err.decode(errors="replace")))
        gib = n / (1 << 30)
        return got / MIB / elapsed, cpu / gib, crisp_cpu / gib, kubectl_cpu / gib

    def port_forward_throughput(self, version, n, httpd_pids):
        """MiB/s of an HTTP download of the pod's `zero.bin` (n bytes) through
        kubectl port-forward, and the CPU seconds per GiB of each process on
        the way, as (name, seconds) pairs."""
        proc = harness.Process("bench-pf-%d" % time.monotonic_ns(), self.cluster.kubectl_argv(
            version, "port-forward", "--address", "127.0.0.1", "pod/" + self.pf_pod,
            ":%d" % self.web_port), self.cluster.dir, env=self.cluster.kubectl_env()).start()
        try:
            m = pf.wait_for_line(proc.stdout_path, r"Forwarding from 127\.0\.0\.1:(\d+) -> ", proc)
            url = "http://127.0.0.1:%s/zero.bin" % m.group(1)
            parts = [("kubectl", [proc.pid]), ("API server", [self.cluster.devapi.pid])]
            if getattr(self.cluster, "crisp", None):
                parts.append(("crisp", [self.cluster.crisp.pid]))
            runtime = [p for p in self.cpu_pids() if p not in [pid for _, pids in parts
                                                                for pid in pids]]
            if runtime:
                parts.append(("containerd+shims", runtime))
            parts.append(("httpd", httpd_pids))
            before = [cpu_seconds(pids) for _, pids in parts]
            reader0 = os.times()
            start = time.monotonic()
            got = 0
            with urllib.request.urlopen(url, timeout=600) as r:
                while True:
                    chunk = r.read(4 * MIB)
                    if not chunk:
                        break
                    got += len(chunk)
            elapsed = time.monotonic() - start
            reader1 = os.times()
            gib = n / (1 << 30)
            cpu = [(name, (cpu_seconds(pids) - b) / gib) for (name, pids), b in zip(parts, before)]
            cpu.append(("reader", (reader1.user + reader1.system - reader0.user - reader0.system) /
                        gib))
        finally:
            proc.stop()
        if got != n:
            raise RuntimeError("%s: port-forward got %d of %d bytes" % (self.name, got, n))
        return got / MIB / elapsed, cpu

    def exec_latency(self, version, runs):
        times = []
        for _ in range(runs):
            start = time.monotonic()
            r = self.cluster.kubectl(version, "exec", self.exec_target, "--", "true")
            times.append(time.monotonic() - start)
            if r.returncode != 0:
                raise RuntimeError("%s: %s" % (self.name, r))
        times.sort()
        return statistics.median(times) * 1000, times[int(0.9 * (len(times) - 1))] * 1000


def report(label, unit, rows, values, higher_is_better=True):
    """One line: the reference (first row) and every other row as a ratio."""
    ref = values[0]
    parts = ["%s %.1f %s" % (rows[0].name, ref, unit)]
    for row, v in zip(rows[1:], values[1:]):
        ratio = v / ref if ref else float("nan")
        parts.append("%s %.1f %s (%.2fx)" % (row.name, v, unit, ratio))
    print("%-44s %s" % (label, " | ".join(parts)), flush=True)


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crisp", required=True)
    parser.add_argument("--devapiserver", required=True)
    parser.add_argument("--cricall", required=True)
    parser.add_argument("--bytes", type=int, default=1 << 30, help="bytes per transfer")
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--kubectl", default="1.27,1.33", help="kubectl versions, comma-separated")
    ARGS = parser.parse_args()
    for name in ("crisp", "devapiserver", "cricall"):
        setattr(ARGS, name, os.path.abspath(getattr(ARGS, name)))
    cells.ARGS = exec_base.ARGS = pf.ARGS = ARGS
    versions = ARGS.kubectl.split(",")

    with harness.TempDir(prefix="crisp-bench-") as tmp:
        env = cells.Environment(os.path.join(tmp.path, "bridged"))
        os.makedirs(env.tmp)
        env.start()
        clusters = []
        try:
            ctd = env.containerd
            sock = ctd.socket

            def containerd_pids():
                return [ctd.process.pid] + containerd_env._pids_with("-address " + sock)

            ddir = os.path.join(tmp.path, "direct")
            os.makedirs(ddir)
            direct = RuntimeDirect(ddir, sock)
            clusters.append(direct)
            cdir = os.path.join(tmp.path, "containerd-backend")
            os.makedirs(cdir)
            task_api = exec_base.Cluster(cdir, cells.CRISP_CONFIG.format(upstream=sock,
                                                                         backend="containerd"))
            clusters.append(task_api)
            edir = os.path.join(tmp.path, "embedded")
            os.makedirs(edir)
            embedded = exec_base.Cluster(edir, exec_base.CRISP_CONFIG.replace("id: echoer",
                                                                              "id: work"))
            clusters.append(embedded)
            rows = [
                Row("containerd", direct, containerd_pids, "work", "web", env.web_port),
                Row("crisp-bridged", env.cluster,
                    lambda: containerd_pids() + [env.cluster.crisp.pid], "work", "web",
                    env.web_port),
                Row("crisp-containerd", task_api,
                    lambda: containerd_pids() + [task_api.crisp.pid], "work", "web",
                    env.web_port),
                # Port-forward on the embedded runtime reaches 127.0.0.1 on the
                # host, where the pod's httpd listens (host network).
                Row("crisp-embedded", embedded, lambda: [embedded.crisp.pid], "work", "demo",
                    env.web_port),
            ]

            size = "%d MiB" % (ARGS.bytes // MIB)
            print("snapshotter %s; %s per transfer; the first row is the reference" %
                  (ctd.snapshotter, size), flush=True)
            for version in versions:
                results = [row.exec_throughput(version, ARGS.bytes) for row in rows]
                report("exec stdout %s, kubectl %s" % (size, version), "MiB/s", rows,
                       [r[0] for r in results])
                report("  CPU s/GiB, all of the row's processes", "s", rows,
                       [r[1] for r in results])
                print("%-44s %s" % ("  of which crisp", " | ".join(
                    "%s %.2f s" % (row.name, r[2]) for row, r in zip(rows, results))), flush=True)
                print("%-44s %s" % ("  kubectl's own CPU s/GiB", " | ".join(
                    "%s %.2f s" % (row.name, r[3]) for row, r in zip(rows, results))), flush=True)
            # The file every port-forward downloads: sparse, so sendfile(2)
            # reads zeros from the page cache at memory speed.
            r = direct.kubectl(versions[0], "exec", "web", "--", "truncate", "-s",
                               str(ARGS.bytes), "/var/www/zero.bin")
            if r.returncode != 0:
                raise RuntimeError("truncate in the web pod: %s" % r)
            httpd_pids = containerd_env._pids_with("httpd -f -p 127.0.0.1:%d" % env.web_port)
            for version in versions:
                results = [row.port_forward_throughput(version, ARGS.bytes, httpd_pids)
                           for row in rows]
                report("port-forward %s, kubectl %s" % (size, version), "MiB/s", rows,
                       [r[0] for r in results])
                for row, (_, cpu) in zip(rows, results):
                    print("%-44s %s" % ("  CPU s/GiB, " + row.name, ", ".join(
                        "%s %.2f" % (name, sec) for name, sec in cpu)), flush=True)
            for version in versions:
                lat = [row.exec_latency(version, ARGS.latency_runs) for row in rows]
                report("exec setup median of %d, kubectl %s" % (ARGS.latency_runs, version),
                       "ms", rows, [x[0] for x in lat])
                report("exec setup p90, kubectl %s" % version, "ms", rows, [x[1] for x in lat])
        finally:
            for cluster in clusters:
                cluster.stop()
            env.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
