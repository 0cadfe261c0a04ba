#!/usr/bin/env bash
# Streaming figures with real kubectl against a private containerd (its own
# stream server as the reference) and crisp's stream server beside it in the
# same run: exec stdout and port-forward throughput, exec setup latency, and
# the runtime's (containerd + shims) or crisp's CPU seconds per GiB.
#
#   tools/containerd-bench.sh [--bytes N] [--latency-runs N] [--kubectl 1.27,1.33]
#
# Needs root (containerd, runc); installs containerd, runc and busybox-static
# from Debian when missing. Everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
exec bazel run -c opt //test/e2e:containerd_bench -- "$@"
