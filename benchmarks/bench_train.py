"""The real job: training steps and evaluation on real data, minway against Hugging Face
transformers + PEFT written the padded way a user would write it.

    python benchmarks/bench_train.py [--size gpt2] [--dtype fp32] [--tasks sst2,agnews] [--steps 6]
        [--attention auto] [--json FILE]

Both sides train one prompt of a 14-token target on the task's real training rows with the
paper's settings (the task's batch size, lr 0.01, gamma 0.01, GPT-2's dropout 0.1, gradient
clipping at 1.0, AdamW), the same batches in the same order, on a random-weight GPT-2 of
``--size``, then score every option of ``--eval`` real test examples. ``--attention sdpa,triton``
times a minway side per attention backend (training with dropout takes the naive formula on
every backend: dropout needs the attention probabilities). They take turns, step
by step, in one process, so that both see the same state of the machine. Prints steps per
second, evaluation examples per second and the ratios, and the share of the padded batches
that is real tokens; writes JSON under benchmarks/results/.

``--against DIR`` also times the minway of another checkout (the commit before a change): it
runs in a process of its own, started from this script, and takes its turn with the others.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="gpt2", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl, or tiny (one block "
                                                   "of 32: a dry run)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--tasks", default="sst2,agnews")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per side and task")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.1, help="GPT-2's dropout in training (paper: 0.1)")
    p.add_argument("--eval", type=int, default=64, help="test examples scored per side and task")
    p.add_argument("--sides", default="minway,hf+peft")
    p.add_argument("--attention", default="auto", help="minway's attention backend, or several, comma-separated")
    p.add_argument("--against", metavar="DIR", help="also time the minway of this checkout, in turns")
    p.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)  # the process --against starts
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--json", help="write the results to this file too")
    return p.parse_args()


ARGS = parse_args()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(ARGS.serve).resolve() if ARGS.serve else ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from minway import resources  # noqa: E402
from minway.classify import predict  # noqa: E402
from minway.run.data import load_split  # noqa: E402
from minway.dropout import step_generator  # noqa: E402
from minway.model import GPT2, SIZES, GPT2Config, init_weights  # noqa: E402
from minway.objective import bank_losses  # noqa: E402
from minway.prompt import PromptBank  # noqa: E402
from minway.run.storage import atomic_write_text  # noqa: E402
from minway.tasks import encode_options, get_task  # noqa: E402
from minway.run.tokenizer import load_tokenizer  # noqa: E402
from minway.run.training import BatchSchedule, _clip_each  # noqa: E402

TARGET = "Write a question about the given fact. The answer must be the fact."
GAMMA, LR, CLIP, SEED = 0.01, 0.01, 1.0, 1
TINY = GPT2Config(n_embd=32, n_layer=1, n_head=2)


def commit(root):
    return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Job:
    """A task's real rows, tokenised as minway's Setup does: inputs (text cut, then the part all
    options share) and outputs (the rest of the label's option, then end-of-text)."""

    def __init__(self, task_name, tokenizer, n_eval):
        self.task = get_task(task_name)
        common, self.options = encode_options(self.task, tokenizer)

        def encode(examples):
            return [ids[:self.task.max_input_tokens] + common
                    for ids in tokenizer.encode_batch([e.text for e in examples])]
        train = load_split(self.task, "train")
        test = load_split(self.task, "test")[:n_eval]
        self.train_inputs, self.train_outputs = encode(train), [self.options[e.label] for e in train]
        self.test_inputs = encode(test)
        self.schedule = BatchSchedule(len(train), self.task.batch_size, SEED)
        self.target = tokenizer.encode(TARGET)

    def batch(self, step):
        rows = self.schedule[step].tolist()
        return [self.train_inputs[i] for i in rows], [self.train_outputs[i] for i in rows]

    def real_share(self, steps):
        """Real tokens of the padded training batches (prompt included) over all their positions."""
        real = padded = 0
        for step in range(steps):
            lengths = [len(self.target) + len(i) + len(o) for i, o in zip(*self.batch(step))]
            real, padded = real + sum(lengths), padded + max(lengths) * len(lengths)
        return real / padded


class Minway:
    def __init__(self, model, job, attention):
        self.model, self.job, self.attention = model, job, attention
        self.bank = PromptBank(model, [job.target])
        self.optimizer = torch.optim.AdamW([self.bank.vectors], lr=LR, weight_decay=0.0)
        self.device = model.wte.weight.device

    def step(self, step):
        self.model.set_attention(self.attention)
        inputs, outputs = self.job.batch(step)
        owner = torch.zeros(len(inputs), dtype=torch.long, device=self.device)
        dropout = (ARGS.dropout, [step_generator(SEED, step, self.device)]) if ARGS.dropout else None
        loss = bank_losses(self.model, self.bank, owner, inputs, outputs, torch.tensor([GAMMA], device=self.device),
                           dropout)
        loss.total.sum().backward()
        _clip_each(self.bank.vectors.grad, CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate(self):
        self.model.set_attention(self.attention)
        predict(self.model, self.bank.prompt(0).detach(), self.job.test_inputs, self.job.options, batch_size=32)


class HFPeft:
    """The same job with transformers' GPT2LMHeadModel and PEFT's prompt tuning, rows right-padded."""

    def __init__(self, config, dtype, device, job):
        from peft import PromptTuningConfig, TaskType, get_peft_model
        from transformers import GPT2Config as HFConfig, GPT2LMHeadModel

        hf_config = HFConfig(vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
                             n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=ARGS.dropout,
                             embd_pdrop=ARGS.dropout, attn_pdrop=ARGS.dropout)
        with torch.device(device):  # random weights drawn where they will be used: fast on a GPU
            model = GPT2LMHeadModel(hf_config).to(dtype)
        self.model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                              num_virtual_tokens=len(job.target)))
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=LR, weight_decay=0.0)
        self.device, self.job = device, job
        self.targets = self.model.get_input_embeddings()(torch.tensor(job.target, device=device)).detach().float()

    def padded(self, rows, outputs):
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for b, (row, output) in enumerate(zip(rows, outputs)):
            ids[b, :len(row)] = torch.tensor(row)
            labels[b, len(row) - len(output):len(row)] = torch.tensor(output)
            mask[b, :len(row)] = 1
        return ids.to(self.device), labels.to(self.device), mask.to(self.device)

    def step(self, step):
        self.model.train()
        inputs, outputs = self.job.batch(step)
        ids, labels, mask = self.padded([i + o for i, o in zip(inputs, outputs)], outputs)
        loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
        prompt = self.trainable[0]
        loss = loss + GAMMA * (prompt.float() - self.targets).pow(2).sum() / len(self.job.target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate(self):
        self.model.eval()
        options = self.job.options
        for start in range(0, len(self.job.test_inputs), 32):
            batch = self.job.test_inputs[start:start + 32]
            rows = [i + o for i in batch for o in options]
            ids, labels, mask = self.padded(rows, [o for _ in batch for o in options])
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, len(self.job.target):]
            logp = logits[:, :-1].float().log_softmax(-1)
            chosen = labels[:, 1:]
            nll = -logp.gather(-1, chosen.clamp(min=0)[..., None]).squeeze(-1) * (chosen >= 0)
            (nll.sum(1) / (chosen >= 0).sum(1)).view(len(batch), len(options)).argmin(1).tolist()


class Remote:
    """minway of another checkout, in a process of its own (``serve``); each call returns the
    seconds the other process measured."""

    def __init__(self, root, task_name):
        command = [sys.executable, __file__, "--serve", str(root), "--tasks", task_name, "--size", ARGS.size,
                   "--dtype", ARGS.dtype, "--eval", str(ARGS.eval), "--attention", ARGS.attention.split(",")[0],
                   "--dropout", str(ARGS.dropout)] + (["--device", ARGS.device] if ARGS.device else [])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit(f"the minway of {root} did not start")

    def _call(self, *words):
        self.process.stdin.write(" ".join(map(str, words)) + "\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def step(self, step):
        return self._call("step", step)

    def evaluate(self):
        return self._call("evaluate")


def serve(model, job, device, attention):
    """Answer a Remote: run each step or evaluation asked for on stdin, print its seconds."""
    side = Minway(model, job, attention)
    print("ready", flush=True)
    for line in sys.stdin:
        method, *args = line.split()
        start = time.perf_counter()
        getattr(side, method)(*map(int, args))
        sync(device)
        print(time.perf_counter() - start, flush=True)


def in_turns(sides, method, calls, device):
    """Seconds of each call of ``method`` of each side, the sides taking turns call by call."""
    times = {name: [] for name in sides}
    for call in calls:
        for name, side in sides.items():
            start = time.perf_counter()
            remote_seconds = getattr(side, method)(*call)
            sync(device)
            times[name].append(remote_seconds or time.perf_counter() - start)
    return times


def main():
    device = torch.device(ARGS.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[ARGS.dtype]
    if ARGS.size not in SIZES and ARGS.size != "tiny":
        raise SystemExit(f"error: --size {ARGS.size}: use one of {', '.join(SIZES)} or tiny")
    config = SIZES.get(ARGS.size, TINY)
    torch.manual_seed(0)
    model = init_weights(GPT2(config)).to(device, dtype).freeze()
    tokenizer = load_tokenizer(resources.tokenizer_dir())
    backends = ARGS.attention.split(",")
    if ARGS.serve:
        return serve(model, Job(ARGS.tasks, tokenizer, ARGS.eval), device, backends[0])
    names = [n for side in ARGS.sides.split(",")
             for n in ([side] if side != "minway" or len(backends) == 1 else [f"minway {b}" for b in backends])]
    names += ["minway@against"] if ARGS.against else []
    record = {"args": vars(ARGS), "against_commit": ARGS.against and commit(ARGS.against), "tasks": {}}
    for task_name in ARGS.tasks.split(","):
        job = Job(task_name, tokenizer, ARGS.eval)
        sides = {}
        for name in names:
            if name == "minway@against":
                sides[name] = Remote(ARGS.against, task_name)
            elif name.startswith("minway"):
                sides[name] = Minway(model, job, backends[0] if name == "minway" else name.split()[1])
            else:
                sides[name] = HFPeft(config, dtype, device, job)
        in_turns(sides, "step", [(s,) for s in range(ARGS.warmup)], device)
        steps = in_turns(sides, "step", [(s,) for s in range(ARGS.warmup, ARGS.warmup + ARGS.steps)], device)
        evals = in_turns(sides, "evaluate", [()] * 2, device)
        result = {"batch_size": job.task.batch_size, "real_token_share": job.real_share(ARGS.steps),
                  "steps_per_second": {n: 1 / statistics.median(t) for n, t in steps.items()},
                  "eval_examples_per_second": {n: len(job.test_inputs) / min(t) for n, t in evals.items()},
                  "step_seconds": steps, "eval_seconds": evals}
        record["tasks"][task_name] = result
        print(f"{task_name}: batch {job.task.batch_size}, real tokens in padded batches "
              f"{100 * result['real_token_share']:.1f}%")
        for n in names:
            print(f"  {n:14} {result['steps_per_second'][n]:7.3f} steps/s  "
                  f"{result['eval_examples_per_second'][n]:8.2f} eval examples/s")
        for n in names:
            if n.startswith("minway") and n != "minway@against":
                for other in ("hf+peft", "minway@against"):
                    if other in names:
                        for what in ("steps_per_second", "eval_examples_per_second"):
                            ratio = result[what][n] / result[what][other]
                            result[f"{what}_ratio" + n[len("minway"):].replace(" ", "_") + f"_to_{other}"] = ratio
                            print(f"  {n} / {other}, {what.replace('_', ' ')}: {ratio:.2f}x")
    if ARGS.json:
        atomic_write_text(Path(ARGS.json), json.dumps(record, indent=1, allow_nan=False) + "\n")
    if not ARGS.no_save:
        from common import save
        save(f"train-{ARGS.size}-{ARGS.dtype}" + (f"-dropout{ARGS.dropout:g}" if ARGS.dropout != 0.1 else ""), device,
             record)


if __name__ == "__main__":
    main()
