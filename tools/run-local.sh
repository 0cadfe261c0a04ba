#!/usr/bin/env bash
# Installs what is missing, builds crisp, and runs it on this machine with the
# embedded host runtime (configs/crisp-local.yaml) together with the
# development API server, so that real kubectl can exec and attach through it.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
bazel build //source/exe:crisp //tools/devapiserver //tools/cricall
bin="$(bazel info bazel-bin 2>/dev/null)"

config=configs/crisp-local.yaml
work="$(mktemp -d /tmp/crisp-local.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Ctrl-C reaches crisp and the development API server too; the script only
# waits for them to stop and then cleans up.
trap ':' INT TERM

"$bin/source/exe/crisp" --check-config "$config" >/dev/null
"$bin/source/exe/crisp" --config "$config" 2> >(tee "$work/crisp.log" >&2) &
pids+=($!)

# The CRI socket appears once crisp is ready.
socket="$(sed -n 's/^  listen: \(\/.*\.sock\)$/\1/p' "$config" | head -n 1)"
for _ in $(seq 1 100); do
  [[ -S "$socket" ]] && break
  sleep 0.1
done
[[ -S "$socket" ]] || { echo "crisp did not start; see the log above" >&2; exit 1; }

kubeconfig="$work/kubeconfig"
"$bin/tools/devapiserver/devapiserver" --listen 127.0.0.1:0 --cri "$socket" \
  --kubeconfig "$kubeconfig" --ready-file "$work/devapiserver.ready" >"$work/devapiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  [[ -s "$work/devapiserver.ready" ]] && break
  sleep 0.1
done
[[ -s "$work/devapiserver.ready" ]] || { cat "$work/devapiserver.log" >&2; exit 1; }

kubectl="/usr/lib/google-cloud-sdk/bin/kubectl.1.27"
[[ -x "$kubectl" ]] || kubectl="$(command -v kubectl)"
cat <<TRY

crisp is running (CRI socket $socket, config $config).
Try, in another terminal:

  export KUBECONFIG=$kubeconfig
  $kubectl exec demo -- uname -a
  $kubectl exec -it demo -- sh
  $kubectl attach -it demo

Any kubectl from /usr/lib/google-cloud-sdk/bin/ works the same way.
Metrics: curl -s http://127.0.0.1:10351/metrics    Ctrl-C stops everything.
TRY
status=0
wait -n "${pids[@]}" || status=$?
echo "stopping (first process ended with status $status)" >&2
exit "$status"
