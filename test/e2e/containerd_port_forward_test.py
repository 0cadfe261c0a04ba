"""connectSandboxPort (source/runtime/containerd) against a real, private
containerd whose pod has a network namespace of its own: starts
containerd_env's containerd with
  - a pod on a CNI network (containerd_env's pod network: lo and an eth0 that
    leads nowhere) serving an echo (busybox nc) on every address of the pod and
    busybox httpd on the pod's 127.0.0.1 only;
  - a host-network pod;
  - a pod whose sandbox is stopped;
then runs the gtest binary containerd_port_forward_check, which forwards to
those from the host: byte-exact transfers both ways, the pod's loopback
reachable and the host's not, refused ports, many connections, errors, and
no descriptor left.

Skipped, with the reason, only when containerd cannot run on this machine.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd_env  # noqa: E402

CHECK_TIMEOUT = 300
ECHO_PORT = 8080
HTTP_PORT = 8081
LISTEN_TIMEOUT = 20


def task_pid(env, container_id):
    for line in env.ctr("tasks", "ls").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == container_id:
            return int(fields[1])
    raise containerd_env.ContainerdError("no task for %s" % container_id)


def listening_ports(pid):
    """TCP ports in LISTEN state in the network namespace of process `pid`."""
    ports = set()
    for table in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, table)) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def wait_listening(env, container_id, port):
    pid = task_pid(env, container_id)
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while port not in listening_ports(pid):
        if time.monotonic() > deadline:
            raise containerd_env.ContainerdError("port %d not listening in %s\n%s" %
                                                 (port, container_id, env.logs()))
        time.sleep(0.05)


def setup(env, tmp):
    pod = env.run_pod("pf", [
        ("echo", ["nc", "-ll", "-p", str(ECHO_PORT), "-e", "cat"], {}),
        ("web", ["httpd", "-f", "-p", "127.0.0.1:%d" % HTTP_PORT, "-h", "/var/www"], {}),
    ], pod_network=True)
    host_pod = env.run_pod("pf-host", [("main", ["sleep", "2147483647"], {})])
    stopped = env.run_pod("pf-stopped", [("main", ["sleep", "2147483647"], {})],
                          pod_network=True)
    env.cri("stopp", stopped.sandbox_id)
    wait_listening(env, pod.container_ids["echo"], ECHO_PORT)
    wait_listening(env, pod.container_ids["web"], HTTP_PORT)
    return dict(POD_SANDBOX_ID=pod.sandbox_id,
                POD_ECHO_PORT=str(ECHO_PORT),
                POD_HTTP_PORT=str(HTTP_PORT),
                POD_NETNS="/proc/%d/ns/net" % task_pid(env, pod.container_ids["echo"]),
                HOST_SANDBOX_ID=host_pod.sandbox_id,
                CONTAINER_ID=pod.container_ids["echo"],
                STOPPED_SANDBOX_ID=stopped.sandbox_id)


if __name__ == "__main__":
    sys.exit(containerd_env.run_check("pf", setup, CHECK_TIMEOUT))
