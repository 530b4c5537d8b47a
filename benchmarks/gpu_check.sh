#!/usr/bin/env bash
# The one prepared GPU check (benchmarks/gpu_check.py): correctness on the GPU, then benchmarks.
#     bash benchmarks/gpu_check.sh              on a GPU machine, with its python3 as it is
#     bash benchmarks/gpu_check.sh --dry-run    on a CPU: tiny sizes, Triton's interpreter (CI)
# Writes benchmarks/results/<device>-<date>-gpu-check*.json (and compile.json), and the same
# under $OUT when it is set; exits non-zero if a correctness check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
