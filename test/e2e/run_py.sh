#!/usr/bin/env bash
# Runs a Python 3 test script with the system interpreter: run_py.sh SCRIPT [ARGS...]
set -euo pipefail
exec /usr/bin/python3 -B "$@"
