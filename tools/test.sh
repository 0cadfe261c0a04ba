#!/usr/bin/env bash
# Installs what is missing, then builds and runs every test of crisp.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
status=0
bazel test //... "$@" || status=$?
bazel shutdown >/dev/null 2>&1 || true
exit $status
