"""Training wayward prompts as runs: ``minway.loop.train_prompt``'s loop for K prompts of one
model at once, with checkpoints, logs, resume and results on disk.

``train`` trains one prompt; ``train_many`` trains K prompts at once on the one frozen model:
every step puts the K prompts' batches side by side in one batch (each row led by its own
prompt), so the weights are read once for all K. The prompts are independent (each its own
batches, dropout masks, schedule, AdamW state and gradient clipping), and K prompts trained
together end where K separate runs end; one prompt ends exactly where ``train_prompt`` ends.

The batch order of a run is fixed by its seed, so a run resumed from its checkpoint continues
with the same batches and optimiser state as if it had never stopped (bitwise on CPU when it
resumes in the same group).
"""
import math
import time
from contextlib import ExitStack
from dataclasses import asdict, replace
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import minway
from minway.run.config import RunConfig
from minway.dropout import step_generator
from minway.loop import ADAM_BETAS, BatchSchedule, clip_gradient, learning_rate, released_adam_eps
from minway.errors import MinwayError
from minway.evaluation import measure, null_non_finite, task_accuracy
from minway.run.identity import identity_of
from minway.metrics import prompt_f1, relative_drop
from minway.objective import bank_losses
from minway.prompt import PromptBank, d_proj
from minway.run.files import json_text, writing
from minway.run.model_and_data import Setup
from minway.run.storage import (atomic_write_text, checkpoint_step, open_run_dir, read_checkpoint, read_log,
                                reusable_results, save_checkpoint, save_prompt, write_results)

def train(config: RunConfig, out="runs", resume=False, force=False, progress=True, setup=None):
    """Train one prompt; returns its results dict (also written to disk)."""
    return train_many([config], out, resume, force, progress, setup)[0]


def train_many(configs, out="runs", resume=False, force=False, progress=True, setup=None):
    """Train several prompts of one model and task together; their results dicts, in order."""
    if len({c.setup_key() for c in configs}) > 1 or len({c.schedule_key() for c in configs}) > 1:
        raise ValueError("prompts trained together must share model, task, data, dtype and optimiser schedule")
    results, todo = {}, []
    for config in {c.run_id(): c for c in configs}.values():  # a config given twice is trained once
        finished = reusable_results(config, out, resume, force,
                                    lambda: setup.identity if setup else identity_of(config))
        if finished is not None:
            results[config.run_id()] = finished
        else:
            todo.append(config)
    if todo:
        # every check that can fail comes before a run directory is made: a corrected command is not
        # refused for a directory left by a failed one
        setup = setup or Setup(configs[0])
        setup.require_memory(todo)
        for config in todo:
            setup.target_ids(config)
        with ExitStack() as locks:
            opened = [(config, *open_run_dir(config, out, resume, force, setup.identity, locks)) for config in todo]
            todo = [(config, run_dir) for config, run_dir, finished in opened if finished is None]
            results.update({config.run_id(): finished for config, _, finished in opened if finished is not None})
            # runs killed between two checkpoint writes may stand at different steps: continue them in groups
            start_of = {c.run_id(): _checkpoint_step(d, c.steps) if resume and not force else 0 for c, d in todo}
            todo.sort(key=lambda item: start_of[item[0].run_id()])
            for start, group in groupby(todo, key=lambda item: start_of[item[0].run_id()]):
                for result in _train_group(list(group), start, setup, progress):
                    results[result["run_id"]] = result
    return [results[c.run_id()] for c in configs]


def _checkpoint_step(run_dir, steps):
    checkpoint = run_dir / "checkpoint.safetensors"
    return checkpoint_step(checkpoint, steps) if checkpoint.exists() else 0


def _train_group(todo, start, setup, progress):
    """``minway.loop.train_prompt`` for the prompts of ``todo`` [(config, run directory)] at once, from
    step ``start``, with a log line per step and prompt and checkpoints; their results."""
    configs, run_dirs = [c for c, _ in todo], [d for _, d in todo]
    base, K, model = configs[0], len(configs), setup.model
    targets = [setup.target_ids(c) for c in configs]
    bank = PromptBank(model, targets)
    optimizer = torch.optim.AdamW([bank.vectors], lr=base.lr, betas=ADAM_BETAS, weight_decay=base.weight_decay)
    if start:
        _restore(bank, optimizer, run_dirs, base.steps, setup.identity)
    gammas = torch.tensor([c.gamma for c in configs], device=bank.vectors.device)
    schedules = [BatchSchedule(len(setup.train_inputs), base.batch_size, c.seed) for c in configs]
    logs = _open_logs(run_dirs, start)
    desc = f"{setup.task.name} gamma={base.gamma:g}" if K == 1 else f"{K} prompts"
    # leave=None: the bar stays when it is the only one, and goes when it runs below a sweep's
    bar = tqdm(range(start, base.steps), initial=start, total=base.steps, desc=desc, disable=not progress,
               dynamic_ncols=True, leave=None)
    f1, total = [math.nan] * K, [math.nan] * K
    started = time.time()
    try:
        for step in bar:
            optimizer.param_groups[0].update(lr=learning_rate(base.lr, step, base.steps),
                                             eps=released_adam_eps(step + 1))
            loss = _bank_step_loss(setup, bank, configs, [schedule[step] for schedule in schedules], gammas, step)
            total, ce, distance = (x.detach().tolist() for x in loss)
            _require_finite(total, "loss", run_dirs, step, start, base)
            loss.total.sum().backward()
            grad_norms = _clip_each(bank.vectors.grad, base.clip).tolist()
            _require_finite(grad_norms, "gradient norm", run_dirs, step, start, base)  # before it updates
            _update(optimizer, base)
            optimizer.zero_grad(set_to_none=True)

            for k, config in enumerate(configs):
                entry = {"step": step, "loss": total[k], "ce": ce[k], "distance": distance[k],
                         "lr": optimizer.param_groups[0]["lr"], "grad_norm": grad_norms[k]}
                if step % 10 == 0 or step == base.steps - 1:
                    f1[k] = entry["f1"] = _prompt_f1(setup, bank.prompt(k), targets[k], config.metric)
                if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < base.steps:
                    entry["test"] = measure(model, setup.tokenizer, setup.options, bank.prompt(k), targets[k],
                                            setup.test_inputs, setup.test_labels, config.metric,
                                            config.eval_batch_size, hard_prompt=False)["accuracy"]
                    bar.write(f"{run_dirs[k].name} step {step + 1}: test accuracy {100 * entry['test']:.1f}%")
                _write_log(logs[k], entry)
            bar.set_postfix(loss=f"{np.mean(total):.3f}", ce=f"{np.mean(ce):.3f}", dist=f"{np.mean(distance):.3f}",
                            f1=f"{np.mean(f1):.2f}")
            due = [k for k, c in enumerate(configs) if (step + 1) % c.checkpoint_every == 0]
            if due:
                _save(bank, optimizer, run_dirs, logs, step + 1, due, setup.identity)
    finally:
        for log in logs:
            with writing(log.name, "the log"):
                log.close()
        bar.close()
    if not progress:  # no bar shows where the run got: a line at its end does
        for k, run_dir in enumerate(run_dirs):
            resumed = f" (resumed at step {start})" if start else ""
            print(f"trained {run_dir.name}: {base.steps - start} steps{resumed} in {time.time() - started:.0f} s, "
                  f"last loss {total[k]:.4f}, prompt F1 {f1[k]:.2f}", flush=True)
    _save(bank, optimizer, run_dirs, logs, base.steps, range(K), setup.identity)
    return [finish(c, setup, bank.prompt(k).detach(), targets[k], d, progress)
            for k, (c, d) in enumerate(zip(configs, run_dirs))]


def _bank_step_loss(setup, bank, configs, batches, gammas, step):
    """The losses (K,) of one step: the K prompts' batches side by side, rows grouped by prompt, each
    prompt's dropout masks drawn from its own run's seed and the step."""
    rows = [i for batch in batches for i in batch]
    owner = torch.arange(len(batches), device=gammas.device).repeat_interleave(
        torch.tensor([len(batch) for batch in batches], device=gammas.device))
    p = configs[0].dropout
    dropout = (p, [step_generator(c.seed, step, gammas.device) for c in configs]) if p else None
    return bank_losses(setup.model, bank, owner, [setup.train_inputs[i] for i in rows],
                       [setup.train_outputs[i] for i in rows], gammas, dropout)


def _write_log(log, entry):
    """One line of the log: strict JSON, a value that is not finite (the distance of an unconstrained prompt
    grown past float32) written as null and named under "not_finite"."""
    entry, not_finite = null_non_finite(entry)
    if not_finite:
        entry["not_finite"] = not_finite
    with writing(log.name, "the log"):
        log.write(json_text(entry) + "\n")


def _prompt_f1(setup, prompt, target_ids, metric):
    ids = d_proj(prompt, setup.model.wte.weight, metric).indices[:, 0].tolist()
    return prompt_f1(setup.tokenizer.decode(ids), setup.tokenizer.decode(target_ids))


def _open_logs(run_dirs, start):
    """Each run's log.jsonl, kept to the steps before ``start``, open for appending."""
    logs = []
    for run_dir in run_dirs:
        path = run_dir / "log.jsonl"
        atomic_write_text(path, "".join(line + "\n" for line in read_log(path, start)), "the log")
        with writing(path, "the log"):
            logs.append(open(path, "a"))
    return logs


def _require_finite(values, what, run_dirs, step, start, config):
    """Stop at a loss or gradient that is not finite, one value per prompt. At the first step of a process
    nothing has been updated yet, so the cause is in what the run starts from, not in its learning rate."""
    bad = [k for k, value in enumerate(values) if not math.isfinite(value)]
    if not bad:
        return
    run, value = run_dirs[bad[0]].name, values[bad[0]]
    if step == start:
        source = f"its checkpoint, which may be corrupt (delete it to restart), or the weights of {config.model}" \
            if start else f"the weights of {config.model} (finite, but too large?)"
        raise MinwayError(f"the {what} of {run} is {value} at step {step}, before any update of the prompt: check "
                          f"{source}, and --dtype {config.dtype} and --dropout {config.dropout:g}")
    advice = "lower --lr" + (", or use --dtype fp32" if config.dtype != "fp32" else "")
    raise MinwayError(f"the {what} of {run} became {value} at step {step} (--lr {config.lr:g}, --dtype "
                      f"{config.dtype}); its last good checkpoint is kept: {advice}")


def _update(optimizer, config):
    try:
        optimizer.step()
    except RuntimeError as e:  # AdamW's step size, lr / (1 - beta1^t), past what float32 holds
        if "overflow" not in str(e):
            raise
        raise MinwayError(f"--lr {config.lr:g} makes an update larger than float32 holds: lower --lr (the "
                          f"paper's is 0.01)") from None


def _clip_each(grad, max_norm):
    """Clip each prompt's gradient (K, L_max, d) on its own; their norms (K,)."""
    return torch.stack([clip_gradient(g, max_norm) for g in grad])


def _adam_slice(optimizer, bank, k):
    state = optimizer.state.get(bank.vectors)
    if not state:
        return {}
    L = int(bank.lengths[k])
    return {"step": state["step"], "exp_avg": state["exp_avg"][k, :L], "exp_avg_sq": state["exp_avg_sq"][k, :L]}


def _save(bank, optimizer, run_dirs, logs, step, which, identity):
    """Checkpoint the prompts ``which`` at ``step``, their logs flushed first."""
    for k in which:
        if not logs[k].closed:
            with writing(logs[k].name, "the log"):
                logs[k].flush()
        save_checkpoint(run_dirs[k] / "checkpoint.safetensors", bank.prompt(k), _adam_slice(optimizer, bank, k),
                        step, identity)


def _restore(bank, optimizer, run_dirs, steps, identity):
    states = [read_checkpoint(d / "checkpoint.safetensors", steps, tuple(bank.prompt(k).shape), identity)
              for k, d in enumerate(run_dirs)]
    with torch.no_grad():
        for k, (_, prompt, _) in enumerate(states):
            bank.prompt(k).copy_(prompt)
    if states[0][2]:
        exp_avg, exp_avg_sq = torch.zeros_like(bank.vectors), torch.zeros_like(bank.vectors)
        for k, (_, _, adam) in enumerate(states):
            L = int(bank.lengths[k])
            exp_avg[k, :L], exp_avg_sq[k, :L] = adam["exp_avg"], adam["exp_avg_sq"]
        optimizer.state[bank.vectors] = {"step": torch.tensor(states[0][2]["step"]),
                                         "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def measure_prompt(setup, config, prompt, target_ids, progress):
    """Every measure of a run's prompt: minway.evaluation.measure's on the test set, the accuracy on the dev
    set where the run has one (the released split's 10 %), and what the run trained on."""
    results = measure(setup.model, setup.tokenizer, setup.options, prompt, target_ids, setup.test_inputs,
                      setup.test_labels, config.metric, config.eval_batch_size, progress)
    if setup.dev_inputs:
        results.update(dev_accuracy=task_accuracy(setup.model, prompt.detach().float(), setup.dev_inputs,
                                                  setup.dev_labels, setup.options, config.eval_batch_size, progress,
                                                  "dev"), n_dev=len(setup.dev_labels))
    results["data"] = setup.data
    return results


def finish(config, setup, prompt, target_ids, run_dir, progress):
    save_prompt(run_dir / "prompt.safetensors", prompt, config, target_ids)
    started = time.time()
    results = measure_prompt(setup, config, prompt, target_ids, progress)
    results.update(run_id=config.run_id(), config=asdict(config), target_ids=target_ids,
                   checkpoint=str(setup.checkpoint_dir), identity=setup.identity, random_weights=setup.random_weights,
                   minway_version=minway.__version__, eval_seconds=round(time.time() - started, 2))
    write_results(run_dir, results)
    return results


def compare(config: RunConfig, out="runs", resume=False, force=False, progress=True):
    """Train the unconstrained twin (gamma = 0) and the wayward prompt with the same seed; report the drop."""
    setup = Setup(config)
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
