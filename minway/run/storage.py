"""What a run keeps on disk, in ``<out>/<run-id>/``, every write atomic (minway.run.files):

    lock                    held by the process that trains the run (its pid and host)
    config.json             the RunConfig
    checkpoint.safetensors  prompt + AdamW state + step, every N steps, with a SHA-256 of its tensors
    log.jsonl               one line of losses per step
    prompt.safetensors      the final prompt, with its metadata (model, task, target, gamma, ...)
    results.json            every measure and the configuration
    summary.txt             the same, for a person

The run directory, and each of these files, must not be a symbolic link (``check_run_dir``): minway
never reads, writes or deletes through one, so nothing outside ``--out`` is touched.
"""
import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import minway
from minway.run import validation
from minway.run.config import RunConfig
from minway.errors import MinwayError
from minway.evaluation import summary
from minway.run.files import (LOCK_FILE, DirectoryLock, atomic_write, atomic_write_json, atomic_write_text, json_text,
                              plain_directory, read_json, refuse_link, regular_file)
from minway.run.identity import check_identity

# what a run that trains again from step 0 must not keep: a kill before its end would leave them stale
TRAINED_FILES = ("checkpoint.safetensors", "prompt.safetensors", "results.json", "summary.txt", "eval.json")
RUN_FILES = (LOCK_FILE, "config.json", "log.jsonl", *TRAINED_FILES)
CHECKPOINT_TENSORS = {"prompt", "exp_avg", "exp_avg_sq"}  # every tensor is float32, as the prompt bank's
# far above what minway writes (a prompt of gpt2-xl's context with its AdamW state: 20 MB; a log of
# 10^6 steps: 200 MB): past them a run's file is not one minway wrote
MAX_STATE_FILE, MAX_LOG = 2 ** 30, 2 ** 31


def atomic_save(tensors, path, metadata, what=""):
    atomic_write(path, lambda tmp: _save_file(tensors, tmp, metadata), what)


def _save_file(tensors, path, metadata):
    """safetensors' save_file, whose OS errors (a full disk) come as an OSError, not as its own error."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def check_run_dir(run_dir):
    """Refuse a run directory, or one of its files, that is a symbolic link (``files.refuse_link``)."""
    refuse_link(run_dir, "the run directory")
    for name in RUN_FILES:
        refuse_link(Path(run_dir) / name, "the run file")
    return Path(run_dir)


def read_results(run_dir):
    """A run's results.json, or None when it has none."""
    path = check_run_dir(run_dir) / "results.json"
    if not path.exists() and not path.is_symlink():
        return None
    results = read_json(path, "results file", MAX_STATE_FILE, "pass --force to train the run again")
    return validation.results(results, path)


def reusable_results(config, out, resume, force, identity):
    """The results of the finished run of ``config`` when they may be reused, else None (the run is to
    be trained); refuses a run that must not be touched. ``identity()``: the fingerprints of the files
    the run would train on now, asked for only when there is a finished run to check them against."""
    run_dir = check_run_dir(Path(out) / config.run_id())
    if force:
        return None
    results = read_results(run_dir)
    if results is not None:
        if not resume:
            raise MinwayError(f"{run_dir} already holds a finished run: pass --force to train it again")
        check_identity(run_dir / "results.json", results.get("identity"), identity())
        return results
    # a run stopped before its first checkpoint has nothing to continue: it starts again
    if (run_dir / "checkpoint.safetensors").exists() and not resume:
        raise MinwayError(f"{run_dir} holds an unfinished run: pass --resume to continue it or --force to restart")
    return None


def open_run_dir(config, out, resume, force, identity, locks):
    """Make, lock (in the ExitStack ``locks``) and prepare the run directory of ``config``, which must be
    trained; (run directory, stored results when another process finished it meanwhile, else None)."""
    run_dir = plain_directory(check_run_dir(Path(out) / config.run_id()), "the run directory")
    locks.enter_context(DirectoryLock(run_dir))
    # again, now that it is ours (checked again for links too: nothing is deleted through one)
    finished = reusable_results(config, out, True, force, lambda: identity)
    if finished is not None:
        return run_dir, finished
    if force:
        for name in TRAINED_FILES:
            (run_dir / name).unlink(missing_ok=True)
    atomic_write_json(run_dir / "config.json", asdict(config), "the run's configuration")
    return run_dir, None


def save_checkpoint(path, prompt, adam_state, step, identity):
    """Prompt (L, d) and its AdamW state ({} before the first step), with the identity of the files
    the run trains on."""
    tensors = {"prompt": prompt.detach().cpu().contiguous()}
    if adam_state:
        tensors["exp_avg"] = adam_state["exp_avg"].cpu().contiguous()
        tensors["exp_avg_sq"] = adam_state["exp_avg_sq"].cpu().contiguous()
    adam_step = str(int(adam_state["step"])) if adam_state else "0"
    atomic_save(tensors, path, {"step": str(step), "adam_step": adam_step, "identity": json_text(identity),
                                "sha256": _digest(tensors)}, "the checkpoint")


def _digest(tensors):
    """A checksum of the tensors' bytes: a bit flipped on disk that leaves a value finite shows only here."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path, steps, shape, identity):
    """(step to continue from, prompt, AdamW state or {}), checked against the run: its ``steps``, its
    prompt's ``shape`` (L, d) and the ``identity`` of the files it trains on."""
    regular_file(path, "checkpoint", MAX_STATE_FILE)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        step, prompt = int(meta["step"]), tensors["prompt"]
        adam_state = {}
        if "exp_avg" in tensors:
            adam_state = {"step": float(int(meta["adam_step"])), "exp_avg": tensors["exp_avg"],
                          "exp_avg_sq": tensors["exp_avg_sq"]}
        stored = json.loads(meta["identity"]) if "identity" in meta else None
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise MinwayError(f"{path} is corrupt ({e}): delete it to restart the run from scratch") from None
    if "sha256" in meta and meta["sha256"] != _digest(tensors):  # older checkpoints have no checksum
        raise MinwayError(f"{path} does not hold what was written (its checksum differs): delete it to restart "
                          f"the run from scratch")
    unknown = sorted(set(tensors) - CHECKPOINT_TENSORS)
    other_types = sorted(name for name, t in tensors.items() if t.dtype != torch.float32)
    if unknown or other_types:
        what = f"tensors a run does not write ({', '.join(unknown)})" if unknown else \
            f"tensors that are not float32 ({', '.join(other_types)})"
        raise MinwayError(f"{path} holds {what}: it is not this run's checkpoint; delete it to restart the run "
                          f"from scratch")
    validation.run_checkpoint(path, step, steps, prompt, adam_state, shape)
    check_identity(path, stored, identity)
    return step, prompt, adam_state


def checkpoint_step(path, steps):
    """The step a checkpoint continues from, read from its header alone."""
    regular_file(path, "checkpoint", MAX_STATE_FILE)
    try:
        with safe_open(str(path), framework="pt") as f:
            step = int(f.metadata()["step"])
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise MinwayError(f"{path} is corrupt ({e}): delete it to restart the run from scratch") from None
    if not 0 <= step <= steps:
        raise MinwayError(f"{path} is at step {step}, outside this run's 0..{steps}: delete it to restart the run "
                          f"from scratch")
    return step


def read_log(path, before_step):
    """The log lines of the steps already done. Only the last line may be unreadable (cut short by a
    kill): it is dropped; any other that is not a step's entry is a corrupt log."""
    if not path.exists() and not path.is_symlink():
        return []
    lines = regular_file(path, "log", MAX_LOG).read_bytes().decode("utf-8", "replace").splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            if number == len(lines):
                break
            entry = None
        if not isinstance(entry, dict) or not validation.is_count(entry.get("step")):
            raise MinwayError(f"{path}:{number} is not the log entry of a step: delete the log to continue the run "
                              f"without its history, or pass --force to train it again")
        if entry["step"] < before_step:
            kept.append(line)
    return kept


def save_prompt(path, prompt, config, target_ids):
    metadata = {"format": "minway-prompt", "minway_version": minway.__version__,
                "config": json_text(asdict(config)), "target_ids": json_text(target_ids),
                **{k: str(getattr(config, k)) for k in ("model", "task", "target", "gamma", "seed", "steps", "metric")}}
    atomic_save({"prompt": prompt.detach().float().cpu().contiguous()}, path, metadata, "the prompt")


def load_prompt(path):
    """(prompt (L, d), RunConfig, target ids) from a prompt.safetensors written by ``save_prompt``."""
    if not Path(path).exists():
        raise MinwayError(f"{path} does not exist: pass a run directory holding prompt.safetensors")
    regular_file(path, "prompt file", MAX_STATE_FILE)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta, names, prompt = f.metadata() or {}, set(f.keys()), f.get_tensor("prompt")
        config, target_ids = json.loads(meta["config"]), json.loads(meta["target_ids"])
    except FileNotFoundError:
        raise MinwayError(f"{path} does not exist: pass a run directory holding prompt.safetensors") from None
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:
        raise MinwayError(f"{path} is not a valid minway prompt file ({type(e).__name__}: {e})") from None
    config = RunConfig.from_dict(config, path)
    if not isinstance(target_ids, list) or not target_ids or \
            not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in target_ids):
        raise MinwayError(f"{path} is not a valid minway prompt file (its target ids are not a list of token ids)")
    if names != {"prompt"}:
        raise MinwayError(f"{path} holds tensors besides its prompt ({', '.join(sorted(names - {'prompt'}))}): "
                          f"it is not a prompt file minway wrote")
    if prompt.dim() != 2 or prompt.shape[0] != len(target_ids) or prompt.dtype != torch.float32 \
            or not bool(prompt.isfinite().all()):
        raise MinwayError(f"{path} holds a prompt of shape {tuple(prompt.shape)} and type {prompt.dtype} for "
                          f"{len(target_ids)} target tokens (minway writes float32), or values that are not "
                          f"finite: it is corrupt")
    return prompt, config, target_ids


def write_results(run_dir, results):
    atomic_write_json(run_dir / "results.json", results, "the results")
    atomic_write_text(run_dir / "summary.txt", summary(results, results["config"]["target"]) + "\n", "the summary")
