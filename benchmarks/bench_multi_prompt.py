"""K prompts trained in one batch against K single-prompt steps one after the other (issue 5).

    python benchmarks/bench_multi_prompt.py [--quick] [--device cuda|cpu] [--dtype fp32|bf16]
        [--model-size gpt2] [--ks 1,4,8,16,32]

Both sides run the step of ``minway.run.training``: ``bank_losses`` on a PromptBank, the
backward pass, per-prompt gradient clipping and an AdamW step, on a random-weight
GPT-2. minway: one bank of K prompts, each with its own batch of ``--batch`` rows, in one
forward pass of K x batch rows. Baseline: K banks of one prompt, stepped in turn, which
is what K separate ``train`` runs do. Both do the same number of steps on the same data,
so their prompts must end equal; the largest difference is reported.
"""
import argparse

import torch

from common import bench, print_table, save
from minway.run.model_and_data import DTYPES
from minway.model import GPT2, SIZES, init_weights
from minway.objective import bank_losses
from minway.prompt import PromptBank
from minway.run.training import _clip_each

OUTPUT_TOKENS = 3  # the tail of each row carries the loss, like " great ." and end-of-text
GAMMA, LR, CLIP = 0.01, 0.01, 1.0


class Prompts:
    """A PromptBank and its optimiser; ``step()`` is one training step of all its prompts."""

    def __init__(self, model, targets, inputs, outputs):
        self.model, self.inputs, self.outputs = model, inputs, outputs
        self.bank = PromptBank(model, targets)
        self.optimizer = torch.optim.AdamW([self.bank.vectors], lr=LR)
        device = self.bank.vectors.device
        self.gammas = torch.full((len(targets),), GAMMA, device=device)
        self.owner = torch.arange(len(targets), device=device).repeat_interleave(len(inputs) // len(targets))

    def step(self):
        loss = bank_losses(self.model, self.bank, self.owner, self.inputs, self.outputs, self.gammas)
        loss.total.sum().backward()
        _clip_each(self.bank.vectors.grad, CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def random_runs(K, batch, tokens, prompt_len, vocab, seed=0):
    """K runs of random data: a target of ``prompt_len`` ids and ``batch`` rows of ``tokens`` ids each."""
    g = torch.Generator().manual_seed(seed)
    runs = []
    for _ in range(K):
        target = torch.randint(0, vocab, (prompt_len,), generator=g).tolist()
        rows = torch.randint(0, vocab, (batch, tokens), generator=g).tolist()
        runs.append((target, [r[:-OUTPUT_TOKENS] for r in rows], [r[-OUTPUT_TOKENS:] for r in rows]))
    return runs


def grouped(model, runs):
    return Prompts(model, [t for t, _, _ in runs], [i for _, ins, _ in runs for i in ins],
                   [o for _, _, outs in runs for o in outs])


def measure(model, K, args, device, repeats, warmup):
    runs = random_runs(K, args.batch, args.tokens, args.prompt, model.config.vocab_size)
    together = grouped(model, runs)
    alone = [grouped(model, [run]) for run in runs]
    t_together = bench(together.step, device, repeats, warmup)
    t_alone = bench(lambda: [p.step() for p in alone], device, repeats, warmup)
    # both took warmup + repeats steps on the same batches
    with torch.no_grad():
        diff = max(float((together.bank.prompt(k) - p.bank.prompt(0)).abs().max()) for k, p in enumerate(alone))
    return dict(K=K, together_s=t_together, sequential_s=t_alone, together_prompt_steps_per_s=K / t_together,
                sequential_prompt_steps_per_s=K / t_alone, speedup=t_alone / t_together, max_prompt_diff=diff)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="K in 1 and 8 only, fewer repeats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--model-size", default="gpt2", choices=sorted(SIZES))
    p.add_argument("--ks", default="1,4,8,16,32", help="comma-separated numbers of prompts")
    p.add_argument("--batch", type=int, default=8, help="rows per prompt")
    p.add_argument("--tokens", type=int, default=64, help=f"tokens per row, the last {OUTPUT_TOKENS} the output")
    p.add_argument("--prompt", type=int, default=14, help="prompt length")
    p.add_argument("--attention", default="auto")
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    Ks = [1, 8] if args.quick else [int(k) for k in args.ks.split(",")]
    repeats, warmup = (10, 3) if gpu else (3, 1)
    if args.quick:
        repeats, warmup = (5, 2) if gpu else (1, 1)

    model = init_weights(GPT2(SIZES[args.model_size], attention=args.attention)).to(device, DTYPES[args.dtype])
    model.freeze()
    print(f"{args.model_size} (random weights), {args.dtype}, {device}, batch {args.batch} per prompt, "
          f"{args.tokens} tokens, {args.prompt} prompt tokens; {repeats} timed steps after {warmup}")
    header = ["K", "together ms/step", "sequential ms/K steps", "together prompt-steps/s",
              "sequential prompt-steps/s", "speedup", "max |prompt diff|"]
    rows, records = [], []
    for K in Ks:
        r = measure(model, K, args, device, repeats, warmup)
        records.append(r)
        rows.append([K, f"{1e3 * r['together_s']:.1f}", f"{1e3 * r['sequential_s']:.1f}",
                     f"{r['together_prompt_steps_per_s']:.2f}", f"{r['sequential_prompt_steps_per_s']:.2f}",
                     f"{r['speedup']:.2f}x", f"{r['max_prompt_diff']:.1e}"])
        print(*rows[-1], flush=True)
    print()
    print_table(header, rows)
    target = 4.0 if gpu else 1.5
    at_8 = [r["speedup"] for r in records if r["K"] == 8]
    if at_8:
        print(f"target at K = 8: >= {target}x on {'a GPU' if gpu else 'a CPU'}; measured {at_8[0]:.2f}x")
    save(f"multi-prompt-{args.model_size}-{args.dtype}", device,
         {"quick": args.quick, "args": vars(args), "repeats": repeats, "warmup": warmup, "rows": records})


if __name__ == "__main__":
    main()
