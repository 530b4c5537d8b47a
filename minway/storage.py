"""What a run keeps on disk, in ``<out>/<run-id>/``, every write atomic (a temporary file, then rename):

    config.json             the RunConfig
    checkpoint.safetensors  prompt + AdamW state + step, every N steps
    log.jsonl               one line of losses per step
    prompt.safetensors      the final prompt, with its metadata (model, task, target, gamma, ...)
    results.json            every measure and the configuration
    summary.txt             the same, for a person
"""
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import minway
from minway.config import RunConfig
from minway.errors import MinwayError
from minway.evaluation import summary


def _atomic(path, write):
    """``write(tmp)``, then rename onto ``path``; a write that fails leaves the old file and no temporary one."""
    tmp = Path(str(path) + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(tensors, path, metadata):
    _atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def atomic_write_text(path, text):
    _atomic(path, lambda tmp: tmp.write_text(text))


def open_run_dir(config, out, resume, force):
    """(run directory, stored results if the run is finished and may be reused, else None)."""
    run_dir = Path(out) / config.run_id()
    if (run_dir / "results.json").exists() and not force:
        if resume:
            return run_dir, json.loads((run_dir / "results.json").read_text())
        raise MinwayError(f"{run_dir} already holds a finished run: pass --force to train it again")
    # a run stopped before its first checkpoint (bad data, say) has nothing to resume: it starts again
    if (run_dir / "checkpoint.safetensors").exists() and not (resume or force):
        raise MinwayError(f"{run_dir} holds an unfinished run: pass --resume to continue it or --force to restart")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2) + "\n")
    return run_dir, None


def save_checkpoint(path, prompt, adam_state, step):
    """Prompt (L, d) and its AdamW state ({} before the first step)."""
    tensors = {"prompt": prompt.detach().cpu().contiguous()}
    if adam_state:
        tensors["exp_avg"] = adam_state["exp_avg"].cpu().contiguous()
        tensors["exp_avg_sq"] = adam_state["exp_avg_sq"].cpu().contiguous()
    adam_step = str(int(adam_state["step"])) if adam_state else "0"
    atomic_save(tensors, path, {"step": str(step), "adam_step": adam_step})


def read_checkpoint(path):
    """(step to continue from, prompt, AdamW state or {})."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        step, prompt = int(meta["step"]), tensors["prompt"]
        adam_state = {}
        if "exp_avg" in tensors:
            adam_state = {"step": float(meta["adam_step"]), "exp_avg": tensors["exp_avg"],
                          "exp_avg_sq": tensors["exp_avg_sq"]}
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise MinwayError(f"{path} is corrupt ({e}): delete it to restart the run from scratch") from None
    return step, prompt, adam_state


def checkpoint_step(path):
    """The step a checkpoint continues from, read from its header alone."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(f.metadata()["step"])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise MinwayError(f"{path} is corrupt ({e}): delete it to restart the run from scratch") from None


def read_log(path, before_step):
    """The log lines of the steps already done; a line cut short by a kill is dropped."""
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


def save_prompt(path, prompt, config, target_ids):
    metadata = {"format": "minway-prompt", "minway_version": minway.__version__,
                "config": json.dumps(asdict(config)), "target_ids": json.dumps(target_ids),
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


def write_results(run_dir, results):
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    atomic_write_text(run_dir / "summary.txt", summary(results, results["config"]["target"]) + "\n")
