#!/usr/bin/env bash
# Every benchmark in the setting its issue asks for, on this machine's device, one after the
# other; each writes benchmarks/results/<device>-<date>-<name>.json. On a GPU:
#     bash benchmarks/run_all.sh            (then commit benchmarks/results/)
set -euo pipefail
cd "$(dirname "$0")/.."
MINWAY_EXTRAS="[test]" . scripts/env.sh
python -m pip install --quiet peft
python benchmarks/bench_projection.py "$@"
python benchmarks/bench_attention.py "$@"
python benchmarks/bench_attention.py --prefix 14 "$@"   # the text after a cached prompt, as in training
if command -v nvidia-smi >/dev/null 2>&1; then
    python benchmarks/bench_step.py --size gpt2-large --dtype bf16
    python benchmarks/bench_multi_prompt.py --model-size gpt2-large --dtype bf16
else
    python benchmarks/bench_step.py
    python benchmarks/bench_multi_prompt.py
fi
