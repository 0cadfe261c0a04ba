#!/usr/bin/env bash
# Installs what is missing, then builds and runs every test of crisp three
# times: as built for use, under AddressSanitizer and UndefinedBehaviorSanitizer
# (--config=asan, every test but those tagged no_sanitizers), and under
# ThreadSanitizer (--config=tsan) for the parts where threads meet: the token
# cache, the dispatcher's cross-thread posts, the stream server's workers, the
# CRI server and the embedded runtime's attach, which crosses loops.
#
#   tools/test.sh [BAZEL_TEST_FLAG...]     e.g. --test_output=all
#
# Each configuration has its own Bazel output base (next to the default one,
# or under $CRISP_OUTPUT_BASE), so that switching between them never throws
# the other builds away. Every run goes on after a failure; the exit status is
# that of the first one that failed.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh

base="${CRISP_OUTPUT_BASE:-$(bazel info output_base 2>/dev/null)}"

# Every test that runs crisp's code on more than one thread: the token cache,
# the dispatcher's cross-thread posts, the stream server's workers, the CRI
# server and client (gRPC's threads), the embedded runtime's attach and
# port-forward threads (also under the containerd backend's port-forward), and
# the sessions driven from a test thread.
TSAN_TARGETS=(
  //test/cache:token_cache_test
  //test/common:dispatcher_test
  //test/stream:http1_server_test
  //test/stream:http1_server_limits_test
  //test/stream:http2_server_test
  //test/stream:stream_limits_test
  //test/stream:spdy_remotecommand_test
  //test/stream:ws_remotecommand_test
  //test/stream:portforward_splice_test
  //test/cri:grpc_server_test
  //test/cri:grpc_client_test
  //test/cri:passthrough_test
  //test/cri:runtime_service_test
  //test/runtime/embedded:attach_test
  //test/runtime/embedded:port_forward_test
  //test/runtime/containerd:containerd_port_forward_test
  //test/runtime/streamserver:streamserver_runtime_test
)

# Bazel's convenience symlinks (bazel-bin, bazel-<directory>, ...) point into
# one output base; //... in another would follow them into that base's
# external/ and fail to load its packages (a subtracted pattern does not stop
# the loading). No step here makes them (--symlink_prefix=/), and the
# patterns name the real top-level directories with packages in them instead
# of //..., so that links left by earlier builds are never entered.
PATTERNS=(//:all)
for dir in */; do
  dir="${dir%/}"
  if [[ ! -L "$dir" && -n "$(find "$dir" \( -name BUILD -o -name BUILD.bazel \) -print -quit)" ]]; then
    PATTERNS+=("//$dir/...")
  fi
done

status=0
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
step() {
  local name="$1" output_base="$2"
  shift 2
  local start=$SECONDS
  echo "=== $name" >&2
  local rc=0
  bazel --output_base="$output_base" test --symlink_prefix=/ "$@" 2>&1 \
    | tee "$logs/$name" || rc=$?
  if [[ $status -eq 0 ]]; then
    status=$rc
  fi
  echo "=== $name: $((SECONDS - start)) s, exit $rc" >&2
  bazel --output_base="$output_base" shutdown >/dev/null 2>&1 || true
}

# Whoever reads only the end of the output (a CI page shows its tail) still
# learns what failed: each configuration's tests that did not pass, and the
# last lines of each failed test's output.
summary() {
  local name
  echo "=== summary" >&2
  for name in plain asan tsan; do
    [[ -f "$logs/$name" ]] || continue
    local bad
    bad="$(grep -E '^//[^ ]+ +.*(FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)' "$logs/$name" || true)"
    if [[ -z "$bad" ]]; then
      echo "$name: $(grep -E '^Executed|tests? pass' "$logs/$name" | tail -1)" >&2
      continue
    fi
    echo "$name: not passed:" >&2
    echo "$bad" >&2
    # Per failed test: the lines that name a failure (a server's log may
    # follow them), then the last lines of its output.
    awk -v cfg="$name" '
      /^==================== Test output for / { label = $5; n = 0; m = 0; inside = 1; next }
      inside && /^=+$/ && length($0) == 80 {
        printf "--- %s %s, failure lines:\n", cfg, label
        for (i = 0; i < m; i++) print marks[i]
        printf "--- %s %s, last %d lines:\n", cfg, label, n < 40 ? n : 40
        for (i = (n > 40 ? n - 40 : 0); i < n; i++) print lines[i % 40]
        inside = 0; next
      }
      # Bazel'"'"'s sandbox may append its own debug trace to a failed test.
      inside && /src\/main\/tools\/linux-sandbox/ { next }
      inside && m < 40 && /Failure|FAILED|FAIL:|Traceback|Error:|[Ee]xpected|Which is|AddressSanitizer|runtime error/ {
        marks[m++] = $0
      }
      inside { lines[n % 40] = $0; n++ }
    ' "$logs/$name" >&2
  done
}

step plain "$base" "$@" -- "${PATTERNS[@]}"
step asan "$base-asan" --config=asan --test_tag_filters=-benchmark,-no_sanitizers "$@" \
  -- "${PATTERNS[@]}"
step tsan "$base-tsan" --config=tsan --test_tag_filters=-benchmark,-no_sanitizers "$@" \
  -- "${TSAN_TARGETS[@]}"
summary
exit $status
