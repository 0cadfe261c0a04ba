#!/usr/bin/env bash
# A private containerd (own config, root, state and socket under DIR; CRI stream
# server on 127.0.0.1; host-network pods; images built from busybox-static) for
# trying crisp in front of a real runtime, by hand.
#
#   tools/containerd-env.sh start DIR [--no-pod]   prints KEY=VALUE lines
#   tools/containerd-env.sh stop DIR               ends what start began, removes DIR
#
# start installs containerd, runc and busybox-static from Debian when missing,
# starts containerd and a "demo" pod (a "shell" container with a TTY and a "web"
# container serving HTTP on 127.0.0.1:WEB_PORT), then returns; containerd keeps
# running until stop. Point crisp's cri.upstream at CONTAINERD_SOCKET.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

usage() {
  echo "usage: $0 start DIR [--no-pod] | stop DIR" >&2
  exit 2
}
(($# >= 2)) || usage
cmd=$1
dir=$2
shift 2
case "$cmd" in
  start)
    cricall="${CRICALL:-}"
    if [[ -z "$cricall" ]]; then
      (cd "$root" && bazel build //tools/cricall >&2)
      cricall="$(cd "$root" && bazel info bazel-bin 2>/dev/null)/tools/cricall/cricall"
    fi
    exec /usr/bin/python3 -B "$root/test/e2e/containerd_env.py" start --dir "$dir" \
      --cricall "$cricall" "$@"
    ;;
  stop)
    exec /usr/bin/python3 -B "$root/test/e2e/containerd_env.py" stop --dir "$dir"
    ;;
  *) usage ;;
esac
