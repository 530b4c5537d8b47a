#!/usr/bin/env bash
# The main job, set-up included: train a wayward prompt on SST-2 whose projection
# reads as a Natural-Instructions definition of an unrelated task.
# Real GPT-2 is used when it can be found (weights/gpt2/, the Hugging Face cache)
# or downloaded; otherwise a small random-weight checkpoint is generated.
# Extra arguments go to train.py, e.g. bash scripts/demo.sh --steps 2000 --model gpt2-large
MINWAY_EXTRAS="[download]"
. "$(dirname "$0")/env.sh"
model=$(python -m weights.demo_checkpoint)
python train.py --task sst2 --model "$model" --k 16 --steps 100 --max-eval 200 --force \
    --target "Write a question about the given fact. The answer to the question must be the fact." "$@"
