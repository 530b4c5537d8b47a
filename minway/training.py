"""One wayward prompt tuning run, from configuration to results on disk.

A run lives in ``<out>/<run-id>/``:

    checkpoint.safetensors  prompt + AdamW state + step, written atomically every N steps
    log.jsonl               one line of losses per step
    prompt.safetensors      the final prompt, with its metadata (model, task, target, gamma, ...)
    results.json            every measure and the configuration
    summary.txt             the same, for a person

The batch order is fixed by the seed before training starts, so a run resumed
from its checkpoint continues exactly as if it had never stopped.
"""
import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

import minway
from minway.data import load_split, sample_per_class
from minway.errors import MinwayError
from minway.evaluation import measure, summary
from minway.metrics import prompt_f1, relative_drop
from minway.objective import wayward_loss
from minway.prompt import METRICS, c_proj, d_proj, init_prompt
from minway.tasks import get_task
from minway.tokenizer import load_tokenizer
from weights import load_gpt2, resolve_checkpoint

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class RunConfig:
    task: str
    target: str
    model: str = "gpt2-large"
    gamma: float = 0.01
    steps: int = 2000
    batch_size: int = 8
    lr: float = 0.01
    weight_decay: float = 0.0
    clip: float = 1.0
    seed: int = 1
    metric: str = "dot"
    k: int | None = None
    data_dir: str | None = None
    max_eval: int | None = None
    eval_batch_size: int = 32
    eval_every: int = 0
    checkpoint_every: int = 100
    device: str = "auto"
    dtype: str = "fp32"
    attention: str = "auto"
    target_name: str | None = None

    def run_id(self):
        """Readable and unique: what identifies the result, plus a hash of everything else."""
        digest = hashlib.sha1(json.dumps(self.result_defining(), sort_keys=True).encode()).hexdigest()[:8]
        name = self.target_name or re.sub(r"[^A-Za-z0-9]+", "-", self.target).strip("-")[:24]
        return f"{get_task(self.task).name}-{Path(self.model).name}-{name}-g{self.gamma:g}-s{self.seed}-{digest}"

    def result_defining(self):
        """The fields that change the trained prompt (not where data comes from or how often we log)."""
        fields = asdict(self)
        for key in ("data_dir", "eval_every", "checkpoint_every", "eval_batch_size", "target_name"):
            fields.pop(key)
        return fields


class Setup:
    """The frozen model, tokenizer, task and encoded data of a run."""

    def __init__(self, config: RunConfig, progress=True):
        self.task = get_task(config.task)
        if config.metric not in METRICS:
            raise MinwayError(f"unknown metric {config.metric!r}: use one of {', '.join(METRICS)}")
        if not config.target.strip():
            raise MinwayError("the target text is empty: pass --target TEXT (or --target-file / --target-name)")
        self.device = torch.device(resolve_device(config.device))
        self.checkpoint_dir = resolve_checkpoint(config.model)
        if config.dtype not in DTYPES:
            raise MinwayError(f"unknown dtype {config.dtype!r}: use fp32 or bf16")
        self.model = load_gpt2(self.checkpoint_dir, self.device, DTYPES[config.dtype], config.attention).freeze()
        self.tokenizer = load_tokenizer(self.checkpoint_dir)
        self.target_ids = self.tokenizer.encode(config.target)
        self.options = [self.tokenizer.encode(self.task.output_text(c)) for c in range(self.task.n_classes)]

        train = load_split(self.task, "train", config.data_dir)
        if config.k:
            train = sample_per_class(train, config.k, config.seed)
        test = load_split(self.task, "test", config.data_dir)[:config.max_eval]
        self.train_inputs = self.encode_inputs(train)
        self.train_outputs = [self.options[e.label] for e in train]
        self.test_inputs, self.test_labels = self.encode_inputs(test), [e.label for e in test]
        self.check_length()

    def encode_inputs(self, examples):
        return [ids[:self.task.max_input_tokens] for ids in self.tokenizer.encode_batch([e.text for e in examples])]

    def check_length(self):
        longest_input = max(len(i) for i in self.train_inputs + self.test_inputs)
        longest_output = max(len(o) for o in self.options)
        total = len(self.target_ids) + longest_input + longest_output
        if total > self.model.config.n_positions:
            raise MinwayError(f"target ({len(self.target_ids)} tokens) + longest input ({longest_input}) + output "
                              f"({longest_output}) = {total} tokens exceeds the model's context of "
                              f"{self.model.config.n_positions}: use a shorter target")


def resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MinwayError("--device cuda was asked for but torch sees no CUDA device: use --device cpu")
    return device


def batch_schedule(n_examples, steps, batch_size, seed):
    """(steps, batch_size) example indices: shuffled epochs, drawn once from the seed."""
    rng = np.random.default_rng(seed)
    epochs = math.ceil(steps * batch_size / n_examples)
    order = np.concatenate([rng.permutation(n_examples) for _ in range(epochs)])
    return order[:steps * batch_size].reshape(steps, batch_size)


def atomic_save(tensors, path, metadata):
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def atomic_write_text(path, text):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(path, prompt, optimizer, step):
    state = optimizer.state.get(prompt, {})
    tensors = {"prompt": prompt.detach().cpu().contiguous()}
    if state:
        tensors["exp_avg"] = state["exp_avg"].cpu().contiguous()
        tensors["exp_avg_sq"] = state["exp_avg_sq"].cpu().contiguous()
    atomic_save(tensors, path, {"step": str(step), "adam_step": str(int(state["step"])) if state else "0"})


def load_checkpoint(path, prompt, optimizer):
    """Restore prompt and AdamW state in place; returns the step to continue from."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise MinwayError(f"{path} is corrupt ({e}): delete it to restart the run from scratch") from None
    with torch.no_grad():
        prompt.copy_(tensors["prompt"])
    if "exp_avg" in tensors:
        device = prompt.device
        optimizer.state[prompt] = {"step": torch.tensor(float(meta["adam_step"])),
                                   "exp_avg": tensors["exp_avg"].to(device),
                                   "exp_avg_sq": tensors["exp_avg_sq"].to(device)}
    return int(meta["step"])


def read_log(path, before_step):
    """The log lines of steps already done; a line cut by a kill is dropped."""
    lines = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("step", math.inf) < before_step:
                lines.append(line)
    return lines


def train(config: RunConfig, out="runs", resume=False, force=False, progress=True, setup=None):
    """Train one prompt; returns its results dict (also written to disk)."""
    run_dir = Path(out) / config.run_id()
    if (run_dir / "results.json").exists() and not force:
        if resume:
            return json.loads((run_dir / "results.json").read_text())
        raise MinwayError(f"{run_dir} already holds a finished run: pass --force to train it again")
    if run_dir.exists() and not (resume or force):
        raise MinwayError(f"{run_dir} holds an unfinished run: pass --resume to continue it or --force to restart")
    run_dir.mkdir(parents=True, exist_ok=True)
    setup = setup or Setup(config, progress)
    torch.manual_seed(config.seed)

    target_embeds = c_proj(setup.model, setup.target_ids)
    prompt = init_prompt(setup.model, setup.target_ids)
    optimizer = torch.optim.AdamW([prompt], lr=config.lr, weight_decay=config.weight_decay)
    checkpoint = run_dir / "checkpoint.safetensors"
    start = load_checkpoint(checkpoint, prompt, optimizer) if resume and checkpoint.exists() and not force else 0
    log_path = run_dir / "log.jsonl"
    atomic_write_text(log_path, "".join(line + "\n" for line in read_log(log_path, start)))
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")

    schedule = batch_schedule(len(setup.train_inputs), config.steps, config.batch_size, config.seed)
    target_text = setup.tokenizer.decode(setup.target_ids)
    embeddings = setup.model.wte.weight
    f1 = math.nan
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=config.run_id()[:40],
               disable=not progress, dynamic_ncols=True)
    with open(log_path, "a") as log:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * (1 - step / config.steps)  # linear decay, no warm-up
            batch = schedule[step]
            loss = wayward_loss(setup.model, prompt, target_embeds, [setup.train_inputs[i] for i in batch],
                                [setup.train_outputs[i] for i in batch], config.gamma)
            if not torch.isfinite(loss.total):
                log.flush()
                raise MinwayError(f"the loss became {float(loss.total)} at step {step}; the last good checkpoint "
                                  f"is kept in {checkpoint}: lower --lr or use --dtype fp32")
            loss.total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_([prompt], config.clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            entry = {"step": step, **{name: float(value.detach()) for name, value in
                                      zip(("loss", "ce", "distance"), loss)},
                     "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm)}
            if step % 10 == 0 or step == config.steps - 1:
                ids = d_proj(prompt, embeddings, config.metric).indices[:, 0].tolist()
                f1 = entry["f1"] = prompt_f1(setup.tokenizer.decode(ids), target_text)
            if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
                entry["test"] = measure(setup.model, setup.tokenizer, setup.task, prompt, setup.target_ids,
                                        setup.test_inputs, setup.test_labels, config.metric,
                                        config.eval_batch_size, hard_prompt=False)["accuracy"]
                bar.write(f"step {step + 1}: test accuracy {100 * entry['test']:.1f}%")
            log.write(json.dumps(entry) + "\n")
            bar.set_postfix(loss=f"{entry['loss']:.3f}", ce=f"{entry['ce']:.3f}", dist=f"{entry['distance']:.3f}",
                            f1=f"{f1:.2f}")
            if (step + 1) % config.checkpoint_every == 0:
                log.flush()
                save_checkpoint(checkpoint, prompt, optimizer, step + 1)
    bar.close()
    save_checkpoint(checkpoint, prompt, optimizer, config.steps)
    return finish(config, setup, prompt, run_dir, progress)


def finish(config, setup, prompt, run_dir, progress):
    save_prompt(run_dir / "prompt.safetensors", prompt, config, setup)
    started = time.time()
    results = measure(setup.model, setup.tokenizer, setup.task, prompt, setup.target_ids, setup.test_inputs,
                      setup.test_labels, config.metric, config.eval_batch_size, progress)
    results.update(run_id=config.run_id(), config=asdict(config), target_ids=setup.target_ids,
                   checkpoint=str(setup.checkpoint_dir), random_weights=is_random(setup.checkpoint_dir),
                   minway_version=minway.__version__, eval_seconds=round(time.time() - started, 2))
    write_results(run_dir, results)
    return results


def write_results(run_dir, results):
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(run_dir / "summary.txt", summary(results, results["config"]["target"]) + "\n")


def is_random(checkpoint_dir):
    return bool(json.loads((Path(checkpoint_dir) / "config.json").read_text()).get("minway_random_weights"))


def save_prompt(path, prompt, config, setup):
    metadata = {"format": "minway-prompt", "minway_version": minway.__version__,
                "config": json.dumps(asdict(config)), "target_ids": json.dumps(setup.target_ids),
                **{k: str(getattr(config, k)) for k in ("model", "task", "target", "gamma", "seed", "steps", "metric")}}
    atomic_save({"prompt": prompt.detach().float().cpu().contiguous()}, path, metadata)


def load_prompt(path):
    """(prompt (L, d), RunConfig, target ids) from a prompt.safetensors written by ``save_prompt``."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, prompt = f.metadata() or {}, f.get_tensor("prompt")
        config = RunConfig(**json.loads(meta["config"]))
        return prompt, config, json.loads(meta["target_ids"])
    except FileNotFoundError:
        raise MinwayError(f"{path} does not exist: pass a run directory holding prompt.safetensors") from None
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise MinwayError(f"{path} is not a valid minway prompt file ({type(e).__name__}: {e})") from None


def compare(config: RunConfig, out="runs", resume=False, force=False, progress=True):
    """Train the unconstrained twin (gamma = 0) and the wayward prompt with the same seed; report the drop."""
    setup = Setup(config, progress)
    # the twin's id depends only on its configuration: a finished one is reused
    unconstrained = train(replace(config, gamma=0.0), out, not force, force, progress, setup)
    constrained = train(config, out, resume, force, progress, setup)
    constrained["compare"] = {
        "accuracy_unconstrained": unconstrained["accuracy"],
        "accuracy_constrained": constrained["accuracy"],
        "relative_drop": relative_drop(unconstrained["accuracy"], constrained["accuracy"]),
        "f1_unconstrained": unconstrained["prompt_f1"],
        "unconstrained_run": unconstrained["run_id"],
    }
    write_results(Path(out) / config.run_id(), constrained)
    return constrained
