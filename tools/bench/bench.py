#!/usr/bin/env python3
"""crisp's benchmark run: one command, after the README's set-up.

    tools/bench/bench.py [--json FILE] [--quick] [--only NAME,...] [--reps N] [--crisp BIN]

Builds crisp, the load client and the fake runtime, starts crisp with the
embedded runtime (its own temp dir, its own ports), and measures each figure
beside a reference taken in the same run:

  - throughput (exec stdout/stdin, port-forward): a plain loopback TCP copy of
    the same size, written in the same pieces, read in 64 KiB reads;
  - exec setup latency: the same command started directly with its stdout on a
    freshly connected loopback socket;
  - CRI passthrough: the fake runtime called directly;
  - token cache: an unsharded map under one mutex (the micro benchmark's own
    reference);
  - concurrent and idle sessions: absolute (failures; crisp's RSS per session).

crisp's CPU time (user+system, /proc/<pid>/stat) is read around every
streaming run and reported per GiB streamed. Prints a table; with --json FILE
writes one object per measure: name, value, unit, reference, ratio.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIB = 1 << 30
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bazel_cmd():
    cmd = ["bazel"]
    if os.environ.get("BAZEL_OUTPUT_BASE"):
        cmd.append("--output_base=" + os.environ["BAZEL_OUTPUT_BASE"])
    return cmd


def build():
    targets = [
        "//source/exe:crisp",
        "//tools/bench/loadclient",
        "//test/e2e:fake_runtime",
        "//test/bench:token_cache_benchmark",
    ]
    log("building " + " ".join(targets))
    subprocess.run(bazel_cmd() + ["build", "--symlink_prefix=/"] + targets, cwd=ROOT, check=True)
    out = subprocess.run(bazel_cmd() + ["info", "bazel-bin"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    return {
        "crisp": os.path.join(out, "source/exe/crisp"),
        "loadclient": os.path.join(out, "tools/bench/loadclient/loadclient"),
        "fake_runtime": os.path.join(out, "test/e2e/fake_runtime"),
        "token_cache_benchmark": os.path.join(out, "test/bench/token_cache_benchmark"),
    }


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_fd_limit():
    want = 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_cpu_seconds(pid, children=False):
    """User+system CPU seconds of `pid`, or of its children it has reaped."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15, cutime and cstime 16 and 17; the
    # split starts at field 3.
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / CLK_TCK


def children_cpu_seconds():
    """User+system CPU seconds of this process's reaped children (the load
    client runs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def proc_rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def parse_line(line):
    """`name k=v k="v v" ...` -> (name, dict)."""
    name, _, rest = line.partition(" ")
    out = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] == " ":
            i += 1
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq]
        if eq + 1 < len(rest) and rest[eq + 1] == '"':
            end = rest.find('"', eq + 2)
            end = len(rest) if end < 0 else end
            out[key] = rest[eq + 2:end]
            i = end + 1
        else:
            end = rest.find(" ", eq)
            end = len(rest) if end < 0 else end
            out[key] = rest[eq + 1:end]
            i = end
    return name, out


class Crisp:
    def __init__(self, binary, workdir, name, upstream=None, workers=1):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir)
        self.socket = os.path.join(self.dir, "crisp.sock")
        self.stream_port = free_port()
        self.admin_port = free_port()
        lines = [
            "cri:",
            f"  listen: {self.socket}",
        ]
        if upstream:
            lines.append(f"  upstream: {upstream}")
        lines += [
            "stream:",
            f"  listen: 127.0.0.1:{self.stream_port}",
            f"  workers: {workers}",
            "  stream_creation_timeout: 30s",
            "  stream_idle_timeout: 4h",
            "  max_sessions: 20000",
            "cache:",
            "  ttl: 1m",
            "  shards: 16",
            "  max_in_flight: 20000",
            "admin:",
            f"  listen: 127.0.0.1:{self.admin_port}",
            "log:",
            "  level: warn",
        ]
        if not upstream:
            lines += [
                "runtime:",
                "  embedded:",
                "    containers:",
                "      - id: bench",
                "        name: bench",
                '        command: ["sleep", "1000000"]',
                "        working_dir: /tmp",
                "        image: host",
            ]
        self.config = os.path.join(self.dir, "crisp.yaml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = open(os.path.join(self.dir, "crisp.log"), "w")
        self.proc = subprocess.Popen([binary, "--config", self.config], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"crisp did not start; see {self.log.name}")
            time.sleep(0.05)
        time.sleep(0.2)

    @property
    def pid(self):
        return self.proc.pid

    def cpu(self):
        return proc_cpu_seconds(self.pid)

    def commands_cpu(self):
        """CPU of the commands crisp ran and reaped (dd in the exec runs)."""
        return proc_cpu_seconds(self.pid, children=True)

    def rss(self):
        return proc_rss_bytes(self.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Bench:
    def __init__(self, bins, crisp, reps, quick, workdir):
        self.bins = bins
        self.workdir = workdir
        self.crisp = crisp
        self.reps = reps
        self.quick = quick
        self.results = []
        self.cpu_seconds = 0.0
        self.cpu_bytes = 0

    def client(self, verb, *flags, timeout=900):
        cmd = [self.bins["loadclient"], verb] + [str(f) for f in flags]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        if not lines:
            raise RuntimeError(f"{' '.join(cmd)}: no output; stderr: {p.stderr.strip()[-500:]}")
        name, values = parse_line(lines[-1])
        if p.returncode != 0 or values.get("ok") != "1":
            raise RuntimeError(f"{' '.join(cmd)} failed: {lines[-1]}")
        return values

    def crisp_flags(self):
        return ["--socket", self.crisp.socket, "--container", "bench"]

    def add(self, name, value, unit, reference=None, ratio=None, target=None, note=""):
        self.results.append({
            "name": name,
            "value": value,
            "unit": unit,
            "reference": reference,
            "ratio": ratio,
            "target": target,
            "note": note,
        })

    def throughput(self, name, verb, ref_chunk, size, flags, target):
        """Runs the reference and crisp alternately; medians of MiB/s."""
        refs, runs = [], []
        # CPU seconds per GiB of every process on the path: crisp, the
        # command it ran, the load client, and the reference's two threads.
        cpus = {"crisp": [], "command": [], "client": [], "reference": []}
        gib = size / GIB
        for _ in range(self.reps):
            ref0 = children_cpu_seconds()
            r = self.client("raw-tcp", "--bytes", size, "--chunk", ref_chunk)
            cpus["reference"].append((children_cpu_seconds() - ref0) / gib)
            refs.append(size / float(r["seconds"]) / MIB)
            cpu0, cmd0, client0 = self.crisp.cpu(), self.crisp.commands_cpu(), children_cpu_seconds()
            v = self.client(verb, *self.crisp_flags(), "--bytes", size, *flags)
            cpu = self.crisp.cpu() - cpu0
            cpus["command"].append((self.crisp.commands_cpu() - cmd0) / gib)
            cpus["client"].append((children_cpu_seconds() - client0) / gib)
            self.cpu_seconds += cpu
            self.cpu_bytes += size
            cpus["crisp"].append(cpu / gib)
            runs.append(size / float(v["seconds"]) / MIB)
        ref = statistics.median(refs)
        val = statistics.median(runs)
        cpu = {k: statistics.median(v) for k, v in cpus.items()}
        note = (f"CPU s/GiB: crisp {cpu['crisp']:.2f}, command {cpu['command']:.2f}, "
                f"client {cpu['client']:.2f}; reference {cpu['reference']:.2f}")
        self.add(name, round(val, 1), "MiB/s", round(ref, 1), round(val / ref, 3), target,
                 note=note)
        log(f"  {name}: {val:.0f} MiB/s vs {ref:.0f} MiB/s ({val / ref:.0%}), {note}")

    def run_throughput(self, only):
        scale = 8 if self.quick else 1
        size = GIB // scale
        half = (512 * MIB) // scale
        for proto in ("spdy", "ws"):
            if want(only, "stdout"):
                self.throughput(f"exec_stdout_1MiB_writes_{proto}", "exec-stdout", MIB, size,
                                ["--proto", proto, "--chunk", MIB], ">= 0.70")
                self.throughput(f"exec_stdout_4KiB_writes_{proto}", "exec-stdout", 4096, size,
                                ["--proto", proto, "--chunk", 4096], ">= 0.50")
            if want(only, "stdin"):
                self.throughput(f"exec_stdin_{proto}", "exec-stdin", 64 * 1024, half,
                                ["--proto", proto, "--chunk", 64 * 1024], ">= 0.70")
            if want(only, "portforward"):
                self.throughput(f"portforward_download_{proto}", "portforward", MIB, size,
                                ["--proto", proto, "--chunk", MIB], ">= 0.70")
        if want(only, "portforward"):
            self.throughput("portforward_upload_spdy", "portforward", 64 * 1024, size,
                            ["--proto", "spdy", "--up", "--chunk", 64 * 1024], ">= 0.70")
            self.bare_relay(size)

    def bare_relay(self, size):
        """What any relay costs: port-forward's topology (source, relay, sink
        over loopback TCP) with a relay that only reads and sends, beside the
        same reference as the crisp measures."""
        refs, runs, cpus = [], [], []
        for _ in range(self.reps):
            r = self.client("raw-tcp", "--bytes", size, "--chunk", MIB)
            refs.append(size / float(r["seconds"]) / MIB)
            v = self.client("raw-relay", "--bytes", size, "--chunk", MIB)
            runs.append(size / float(v["seconds"]) / MIB)
            cpus.append(float(v["relay_cpu_seconds"]) / (size / GIB))
        ref = statistics.median(refs)
        val = statistics.median(runs)
        self.add("bare_relay_no_crisp", round(val, 1), "MiB/s", round(ref, 1), round(val / ref, 3),
                 note=f"relay thread CPU {statistics.median(cpus):.2f} s/GiB")
        log(f"  bare_relay_no_crisp: {val:.0f} MiB/s vs {ref:.0f} MiB/s ({val / ref:.0%})")

    def run_cpu(self):
        if self.cpu_bytes:
            per_gib = self.cpu_seconds / (self.cpu_bytes / GIB)
            self.add("crisp_cpu_per_GiB_streamed", round(per_gib, 3), "s/GiB",
                     note="user+system over every streaming run above")
            log(f"  crisp CPU: {per_gib:.3f} s per GiB")

    def run_latency(self):
        count = 50 if self.quick else 300
        for proto in ("spdy", "ws"):
            v = self.client("setup-latency", *self.crisp_flags(), "--proto", proto, "--count",
                            count)
            added = float(v["added_median_us"])
            self.add(f"exec_setup_latency_{proto}", float(v["crisp_median_us"]), "us",
                     float(v["direct_median_us"]),
                     round(float(v["crisp_median_us"]) / float(v["direct_median_us"]), 3),
                     "<= 1000 us added", note=f"added median {added:.0f} us, "
                     f"p90 {float(v['crisp_p90_us']):.0f} us vs {float(v['direct_p90_us']):.0f}")
            log(f"  setup {proto}: {v['crisp_median_us']} us vs direct {v['direct_median_us']} us")

    def run_sessions(self):
        count = 200 if self.quick else 1000
        v = self.client("sessions", *self.crisp_flags(), "--count", count, "--bytes-each", MIB)
        self.add("concurrent_active_sessions", int(v["count"]) - int(v["failures"]), "sessions",
                 count, None, "1000 without a failure",
                 note=f"{v['failures']} failed, at most {v['max_concurrent']} open at once, "
                 f"{v['seconds']} s for {int(v['bytes_received']) // MIB} MiB")
        log(f"  sessions: {v}")

    def run_idle(self):
        count = 1000 if self.quick else 10000
        # crisp holds about five descriptors per session (socket, stdin and
        # stdout pipes, pidfd, watcher); where the hard file limit cannot be
        # raised, fewer sessions are opened and the figure says so.
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        capped = min(count, max(100, (limit - 512) // 5))
        if capped < count:
            log(f"  file limit {limit}: {capped} idle sessions instead of {count}")
            count = capped
        # A crisp of its own: the heap the streaming runs left behind would
        # hide the growth, and would make every fork for a session slower.
        crisp = Crisp(self.bins["crisp"], self.workdir, "idle")
        try:
            self.measure_idle(crisp, count)
        finally:
            crisp.stop()

    def measure_idle(self, crisp, count):
        time.sleep(1)
        rss0 = crisp.rss()
        cmd = [self.bins["loadclient"], "idle", "--socket", crisp.socket, "--container", "bench",
               "--count", str(count)]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = p.stdout.readline()
        _, r = parse_line(ready.strip())
        # Let every process start and every session settle before looking.
        time.sleep(3)
        rss1 = crisp.rss()
        p.stdin.write("go\n")
        p.stdin.flush()
        out = p.stdout.read()
        p.wait()
        lines = [l for l in out.splitlines() if l.strip()]
        _, v = parse_line(lines[-1]) if lines else ("", {"ok": "0"})
        per = (rss1 - rss0) / count / 1024
        self.add("idle_sessions_crisp_memory", round(per, 2), "KiB/session", None, None,
                 "<= 32 KiB", note=f"{r.get('open')} of {count} open in {r.get('seconds')} s; "
                 f"RSS {rss0 // MIB} -> {rss1 // MIB} MiB; ok={v.get('ok')}")
        log(f"  idle: {per:.1f} KiB/session ({r}, {v})")
        if v.get("ok") != "1":
            raise RuntimeError(f"idle sessions failed: {lines[-1] if lines else ready}")

    def run_token_cache(self):
        bin_ = self.bins["token_cache_benchmark"]
        filt = "(BM_TokenCacheIssueTake/shards:16/live:(0|1048576)/getrandom:0" \
               "|BM_ReferenceMapIssueTake/live:(0|1048576))/.*threads:2$"
        p = subprocess.run([bin_, f"--benchmark_filter={filt}", "--benchmark_format=json",
                            "--benchmark_min_time=0.5"], capture_output=True, text=True,
                           check=True)
        data = json.loads(p.stdout)
        ips = {}
        for b in data["benchmarks"]:
            ips[b["name"]] = b.get("items_per_second", 0)
        for live in (0, 1048576):
            cache = next(v for k, v in ips.items() if k.startswith("BM_TokenCache")
                         and f"live:{live}/" in k)
            ref = next(v for k, v in ips.items() if k.startswith("BM_Reference")
                       and f"live:{live}/" in k)
            self.add(f"token_cache_pairs_2_threads_live_{live}", round(cache / 1e6, 2),
                     "M pairs/s", round(ref / 1e6, 2), round(cache / ref, 3), ">= 10 M/s")
            log(f"  token cache live={live}: {cache / 1e6:.2f} M/s vs {ref / 1e6:.2f} M/s")

    def run_passthrough(self, workdir):
        fake_sock = os.path.join(workdir, "fake.sock")
        fake = subprocess.Popen([self.bins["fake_runtime"], fake_sock], stdout=subprocess.PIPE)
        fake.stdout.readline()
        front = None
        try:
            front = Crisp(self.bins["crisp"], workdir, "front", upstream=fake_sock)
            count = 300 if self.quick else 3000
            v = self.client("passthrough", "--via", front.socket, "--direct", fake_sock,
                            "--count", count)
            self.add("cri_passthrough_latency", float(v["via_median_us"]), "us",
                     float(v["direct_median_us"]),
                     round(float(v["via_median_us"]) / float(v["direct_median_us"]), 3),
                     "<= 50 us added", note=f"added median {float(v['added_median_us']):.0f} us")
            log(f"  passthrough: {v}")
        finally:
            if front:
                front.stop()
            fake.terminate()
            fake.wait()


def want(only, name):
    return not only or name in only


def print_table(results):
    print(f"{'measure':44} {'value':>12} {'unit':12} {'reference':>11} {'ratio':>7}  target")
    for r in results:
        ref = "" if r["reference"] is None else str(r["reference"])
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"{r['name']:44} {str(r['value']):>12} {r['unit']:12} {ref:>11} {ratio:>7}  "
              f"{r['target'] or ''}")
        if r["note"]:
            print(f"{'':46}{r['note']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and counts")
    parser.add_argument("--reps", type=int, default=3, help="runs per throughput figure")
    parser.add_argument("--crisp", help="measure this crisp binary instead of the one built "
                        "(an older build, for a before/after comparison in the same conditions)")
    parser.add_argument("--only", default="",
                        help="comma list of stdout,stdin,portforward,latency,sessions,idle,"
                        "tokencache,passthrough")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))

    raise_fd_limit()
    bins = build()
    if args.crisp:
        bins["crisp"] = os.path.abspath(args.crisp)
    workdir = tempfile.mkdtemp(prefix="crisp-bench-")
    crisp = Crisp(bins["crisp"], workdir, "crisp")
    bench = Bench(bins, crisp, args.reps, args.quick, workdir)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    failed = []
    try:
        steps = [
            ("throughput", lambda: bench.run_throughput(only)),
            ("cpu", bench.run_cpu),
            ("latency", bench.run_latency),
            ("sessions", bench.run_sessions),
            ("idle", bench.run_idle),
            ("tokencache", bench.run_token_cache),
            ("passthrough", lambda: bench.run_passthrough(workdir)),
        ]
        for name, step in steps:
            if name == "throughput" and only and not only & {"stdout", "stdin", "portforward"}:
                continue
            if name not in ("throughput", "cpu") and not want(only, name):
                continue
            log(f"{name} ...")
            try:
                step()
            except Exception as e:  # one failed measure does not hide the others
                failed.append(f"{name}: {e}")
                log(f"  FAILED: {e}")
    finally:
        crisp.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"crisp benchmark, {started}, {os.cpu_count()} CPUs ({cpu}), "
          f"kernel {platform.release()}")
    print_table(bench.results)
    for f in failed:
        print(f"FAILED {f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(bench.results, f, indent=1)
            f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
