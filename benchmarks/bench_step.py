"""One whole prompt-tuning step, minway against Hugging Face transformers + peft.

Both sides get the same random-weight GPT-2 configuration, batch, sequence length,
prompt length and dtype: forward, backward to the prompt, AdamW step. The loss is
the same too: cross-entropy on the last few tokens of each row (the output text).

    pip install transformers peft        # the baseline only, never needed by minway
    python benchmarks/bench_step.py [--size gpt2] [--batch 8] [--tokens 64] [--prompt 14] [--dtype fp32]

On a GPU the paper's setting is ``--size gpt2-large --dtype bf16``.
"""
import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minway.model import GPT2, SIZES, init_weights  # noqa: E402
from minway.objective import bank_losses  # noqa: E402
from minway.prompt import PromptBank  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
OUTPUT_TOKENS = 3  # " great ." and end-of-text carry the loss


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(steps, device, repeats, warmup):
    """Median seconds per step of each of ``steps`` ({name: step}), taken in turns so that
    every side sees the same state of the machine."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    sync(device)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def minway_step(config, ids, n_prompt, dtype, device, attention):
    """The step of ``minway.run.training``: a PromptBank of one prompt and its objective."""
    model = init_weights(GPT2(config, attention=attention)).to(device, dtype).freeze()
    bank = PromptBank(model, [list(range(n_prompt))])
    optimizer = torch.optim.AdamW(bank.parameters(), lr=0.01)
    rows = ids.tolist()
    inputs, outputs = [r[:-OUTPUT_TOKENS] for r in rows], [r[-OUTPUT_TOKENS:] for r in rows]
    owner, gammas = torch.zeros(len(rows), dtype=torch.long, device=device), torch.full((1,), 0.01, device=device)

    def step():
        loss = bank_losses(model, bank, owner, inputs, outputs, gammas).total.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(bank.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def hf_peft_step(config, ids, n_prompt, dtype, device):
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import GPT2Config as HFConfig, GPT2LMHeadModel

    # no dropout, as in minway: both sides do the same arithmetic
    hf_config = HFConfig(vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
                         n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0)
    with torch.device(device):  # initialised where it runs: on a CPU, gpt2-large's init takes long
        model = GPT2LMHeadModel(hf_config).to(dtype)
    model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=n_prompt))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    labels = torch.full_like(ids, -100)
    labels[:, -OUTPUT_TOKENS:] = ids[:, -OUTPUT_TOKENS:]
    mask = torch.ones_like(ids)

    def step():
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="gpt2", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--prompt", type=int, default=14)
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--attention", default="auto")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()

    device, dtype, config = torch.device(args.device), DTYPES[args.dtype], SIZES[args.size]
    ids = torch.randint(0, config.vocab_size, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    steps = {"hf+peft": hf_peft_step(config, ids, args.prompt, dtype, device),
             "minway": minway_step(config, ids, args.prompt, dtype, device, args.attention)}
    seconds = time_steps(steps, device, args.repeats, args.warmup)
    speedup = seconds["hf+peft"] / seconds["minway"]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{torch.get_num_threads()}threads"
    print(f"{args.size}, batch {args.batch}, {args.tokens} tokens, {args.prompt} prompt tokens, {args.dtype}, "
          f"{device_name}")
    print(f"{'':10} {'s/step':>9}")
    for name, s in seconds.items():
        print(f"{name:10} {s:9.3f}")
    print(f"speed-up of minway: {speedup:.2f}x")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out = ROOT / "benchmarks" / "results" / f"{device_name.replace(' ', '_')}-{date.today()}-step-{args.size}-{args.dtype}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "prompt-tuning step", "device": device_name, "date": str(date.today()), "commit": commit,
        "torch": torch.__version__, "platform": platform.platform(), "args": vars(args),
        "seconds_per_step": seconds, "speedup": speedup}, indent=2, allow_nan=False) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
