"""The real job: training steps and evaluation on real data, minway against Hugging Face
transformers + PEFT written the padded way a user would write it.

    python benchmarks/bench_train.py [--size gpt2] [--dtype fp32] [--tasks sst2,agnews] [--steps 6]

Both sides train one prompt of a 14-token target on the task's real training rows with the
paper's settings (the task's batch size, lr 0.01, gamma 0.01, GPT-2's dropout 0.1, gradient
clipping at 1.0, AdamW), the same batches in the same order, on a random-weight GPT-2 of
``--size``, then score every option of ``--eval`` real test examples. They take turns, step
by step, in one process, so that both see the same state of the machine. Prints steps per
second, evaluation examples per second and the ratios, and the share of the padded batches
that is real tokens; writes JSON under benchmarks/results/.

``--minway-root DIR --sides minway`` times another checkout of minway with this same script
(for a before/after comparison of two commits; run the two in alternation).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="gpt2")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    p.add_argument("--tasks", default="sst2,agnews")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per side and task")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--eval", type=int, default=64, help="test examples scored per side and task")
    p.add_argument("--sides", default="minway,hf+peft")
    p.add_argument("--minway-root", help="import minway from this checkout instead of this one")
    p.add_argument("--no-save", action="store_true")
    return p.parse_args()


ARGS = parse_args()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(ARGS.minway_root).resolve() if ARGS.minway_root else ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

import torch  # noqa: E402

from minway import resources  # noqa: E402
from minway.classify import predict  # noqa: E402
from minway.data import load_split  # noqa: E402
from minway.dropout import step_generator  # noqa: E402
from minway.model import GPT2, SIZES, init_weights  # noqa: E402
from minway.objective import bank_losses  # noqa: E402
from minway.prompt import PromptBank  # noqa: E402
from minway.tasks import encode_options, get_task  # noqa: E402
from minway.tokenizer import load_tokenizer  # noqa: E402
from minway.training import BatchSchedule, _clip_each  # noqa: E402

TARGET = "Write a question about the given fact. The answer must be the fact."
GAMMA, LR, CLIP, DROPOUT, SEED = 0.01, 0.01, 1.0, 0.1, 1


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
    def __init__(self, model, job):
        self.model, self.job = model, job
        self.bank = PromptBank(model, [job.target])
        self.optimizer = torch.optim.AdamW([self.bank.vectors], lr=LR, weight_decay=0.0)
        self.device = model.wte.weight.device

    def step(self, step):
        inputs, outputs = self.job.batch(step)
        owner = torch.zeros(len(inputs), dtype=torch.long, device=self.device)
        dropout = (DROPOUT, [step_generator(SEED, step, self.device)])
        loss = bank_losses(self.model, self.bank, owner, inputs, outputs, torch.tensor([GAMMA], device=self.device),
                           dropout)
        loss.total.sum().backward()
        _clip_each(self.bank.vectors.grad, CLIP)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate(self):
        predict(self.model, self.bank.prompt(0).detach(), self.job.test_inputs, self.job.options, batch_size=32)


class HFPeft:
    """The same job with transformers' GPT2LMHeadModel and PEFT's prompt tuning, rows right-padded."""

    def __init__(self, config, dtype, device, job):
        from peft import PromptTuningConfig, TaskType, get_peft_model
        from transformers import GPT2Config as HFConfig, GPT2LMHeadModel

        hf_config = HFConfig(vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
                             n_layer=config.n_layer, n_head=config.n_head)  # GPT-2's dropout, 0.1
        model = GPT2LMHeadModel(hf_config).to(device, dtype)
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


def in_turns(sides, method, calls, device):
    """Median seconds of ``method`` of each side, the sides taking turns call by call."""
    times = {name: [] for name in sides}
    for call in calls:
        for name, side in sides.items():
            start = time.perf_counter()
            getattr(side, method)(*call)
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def main():
    device = torch.device(ARGS.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[ARGS.dtype]
    config = SIZES[ARGS.size]
    model = init_weights(GPT2(config)).to(device, dtype).freeze()
    tokenizer = load_tokenizer(resources.tokenizer_dir())
    names = ARGS.sides.split(",")
    record = {"args": vars(ARGS), "tasks": {}}
    for task_name in ARGS.tasks.split(","):
        job = Job(task_name, tokenizer, ARGS.eval)
        sides = {}
        for name in names:
            sides[name] = Minway(model, job) if name == "minway" else HFPeft(config, dtype, device, job)
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
            print(f"  {n:8} {result['steps_per_second'][n]:7.3f} steps/s  "
                  f"{result['eval_examples_per_second'][n]:8.2f} eval examples/s")
        if "minway" in names and "hf+peft" in names:
            for what in ("steps_per_second", "eval_examples_per_second"):
                ratio = result[what]["minway"] / result[what]["hf+peft"]
                result[f"{what}_ratio"] = ratio
                print(f"  minway / hf+peft, {what.replace('_', ' ')}: {ratio:.2f}x")
    if not ARGS.no_save and not ARGS.minway_root:
        from common import save
        save(f"train-{ARGS.size}-{ARGS.dtype}", device, record)


if __name__ == "__main__":
    main()
