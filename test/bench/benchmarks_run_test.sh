#!/usr/bin/env bash
# Runs each benchmark binary given as an argument with the smallest time
# budget, and fails when one fails, reports an error, or runs no benchmark.
set -euo pipefail

failed=0
for bin in "$@"; do
  name=$(basename "$bin")
  out="${TEST_TMPDIR:-/tmp}/$name.json"
  if ! "$bin" --benchmark_min_time=0.0001 --benchmark_format=json >"$out" 2>"$out.err"; then
    echo "FAIL $name: exit status $?"
    cat "$out.err"
    failed=$((failed + 1))
    continue
  fi
  runs=$(grep -c '"run_name"' "$out" || true)
  errors=$(grep -c '"error_occurred": true' "$out" || true)
  if [[ "$runs" -eq 0 || "$errors" -ne 0 ]]; then
    echo "FAIL $name: $runs runs, $errors with an error"
    grep -B2 -A2 '"error_message"' "$out" || true
    failed=$((failed + 1))
    continue
  fi
  echo "ok   $name: $runs runs"
done
echo "$(($# - failed)) passed, $failed failed"
[[ $failed -eq 0 ]]
