"""configs/daemonset.yaml: accepted by real kubectl, and consistent with crisp.

kubectl apply --dry-run=client needs the API's discovery documents to map each
kind to its resource, and looks each object up once (a 404 makes it a create).
A discovery-only server on 127.0.0.1 (standard library, here) answers exactly
that, for the kinds the manifest uses; kubectl never reaches any other host.
kubectl's schema validation needs the server's OpenAPI documents, which no
server here has, so it runs with --validate=false; what the schema would catch
on the parts crisp depends on is checked below from kubectl's own rendering of
the objects (-o json): the ConfigMap's crisp.yaml passes `crisp --check-config`,
the probes, ports and mounts agree with it, and run.sh parses as sh.

Usage: deployment_manifest_test.py --crisp PATH --manifest PATH
"""

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ARGS = None
VERSIONS = ["1.27", "1.33"]


def _resource(name, kind, namespaced):
    return {"name": name, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update"]}


DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                             "serverAddress": "127.0.0.1:0"}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        _resource("namespaces", "Namespace", False),
        _resource("serviceaccounts", "ServiceAccount", True),
        _resource("configmaps", "ConfigMap", True)]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
        "name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    "/apis/apps/v1": {"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
        _resource("daemonsets", "DaemonSet", True)]},
}


class DiscoveryHandler(http.server.BaseHTTPRequestHandler):
    """Discovery documents; a NotFound Status for anything else."""

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        body = DISCOVERY.get(path)
        code = 200
        if body is None:
            code = 404
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "%s not found" % path}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class ManifestTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = harness.TempDir(prefix="crisp-manifest-")
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DiscoveryHandler)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        cls.kubeconfig = os.path.join(cls.tmp.path, "kubeconfig")
        with open(cls.kubeconfig, "w") as f:
            f.write("""apiVersion: v1
kind: Config
clusters:
- name: discovery
  cluster:
    server: http://127.0.0.1:%d
contexts:
- name: discovery
  context:
    cluster: discovery
    user: nobody
users:
- name: nobody
  user: {}
current-context: discovery
""" % cls.server.server_address[1])

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.tmp.cleanup()

    def apply(self, version, *extra):
        r = harness.run_kubectl(version, ["apply", "--dry-run=client", "--validate=false", "-f",
                                          ARGS.manifest] + list(extra), self.kubeconfig,
                                timeout=60)
        self.assertEqual(r.returncode, 0, str(r))
        return r

    def test_kubectl_accepts_every_object(self):
        for version in VERSIONS:
            with self.subTest(kubectl=version):
                r = self.apply(version)
                self.assertEqual(r.stdout.splitlines(), [
                    "namespace/crisp-system created (dry run)",
                    "serviceaccount/crisp created (dry run)",
                    "configmap/crisp-config created (dry run)",
                    "daemonset.apps/crisp created (dry run)",
                ], str(r))

    def objects(self):
        r = self.apply(VERSIONS[-1], "-o", "json")
        doc = json.loads(r.stdout)
        items = doc["items"] if doc.get("kind") == "List" else [doc]
        return {item["kind"]: item for item in items}

    def test_config_map_holds_a_valid_crisp_config(self):
        data = self.objects()["ConfigMap"]["data"]
        path = os.path.join(self.tmp.path, "crisp.yaml")
        with open(path, "w") as f:
            f.write(data["crisp.yaml"])
        r = subprocess.run([ARGS.crisp, "--check-config", path], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual((r.returncode, r.stdout), (0, "%s: ok\n" % path), r.stderr)
        script = os.path.join(self.tmp.path, "run.sh")
        with open(script, "w") as f:
            f.write(data["run.sh"])
        r = subprocess.run(["/bin/sh", "-n", script], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_pod_agrees_with_the_config(self):
        objects = self.objects()
        config = objects["ConfigMap"]["data"]["crisp.yaml"]
        listen = re.search(r"^  listen: (/\S+)$", config, re.M).group(1)
        upstream = re.search(r"^  upstream: (\S+)$", config, re.M).group(1)
        stream_port = int(re.search(r"^stream:\n(?:    .*\n|  .*\n)*?  listen: [\d.]+:(\d+)$",
                                    config, re.M).group(1))
        admin_port = int(re.search(r"^admin:\n  listen: 127\.0\.0\.1:(\d+)$", config,
                                   re.M).group(1))
        ds = objects["DaemonSet"]
        spec = ds["spec"]["template"]["spec"]
        self.assertEqual(objects["Namespace"]["metadata"]["name"], ds["metadata"]["namespace"])
        self.assertEqual(spec["serviceAccountName"], objects["ServiceAccount"]["metadata"]["name"])
        self.assertTrue(spec["hostNetwork"])
        (container,) = spec["containers"]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            self.assertEqual((get["host"], get["port"], get["path"]),
                             ("127.0.0.1", admin_port, path), probe)
        self.assertIn(stream_port, [p["containerPort"] for p in container["ports"]])
        for kind in ("requests", "limits"):
            self.assertEqual(sorted(container["resources"][kind]), ["cpu", "memory"], kind)
        # Both sockets' directories come from the node.
        host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]
                      if "hostPath" in v}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        for sock in (listen, upstream):
            directory = os.path.dirname(sock)
            self.assertIn(directory, mounts, sock)
            self.assertEqual(host_paths[mounts[directory]], directory, sock)
        config_volume = [v for v in spec["volumes"] if "configMap" in v][0]
        self.assertEqual(config_volume["configMap"]["name"],
                         objects["ConfigMap"]["metadata"]["name"])
        self.assertEqual(mounts["/etc/crisp"], config_volume["name"])


def main():
    harness.test_main(("crisp", "manifest"))


if __name__ == "__main__":
    main()
