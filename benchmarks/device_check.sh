#!/usr/bin/env bash
# The accelerator check, in one call of the `device` tool (about 5 minutes on one H200):
#   run(command="bash benchmarks/device_check.sh", timeout_s=540)
# It uses the machine's own Python, jax, flax, optax and torch; nothing is installed or carried
# (the parts of stres_jax it imports need none of ml_collections, av or grain). The table goes
# to stdout and to $OUT/device_check.txt; copy it into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 python3 benchmarks/device_check.py "$@" 2>&1 | tee "${OUT:-/tmp}/device_check.txt"
