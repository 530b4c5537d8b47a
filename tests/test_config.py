"""RunConfig: a run's defaults, the values it refuses, and the id that names its directory."""
import re
from dataclasses import replace

import pytest

from minway.run.config import RunConfig
from minway.errors import MinwayError


def config(**changes):
    return RunConfig(task="sst2", target="Is this movie good?", **changes)


def test_defaults_are_the_released_codes():
    c = config()
    assert (c.model, c.gamma, c.steps, c.lr, c.weight_decay, c.clip, c.dropout, c.seed, c.metric) == (
        "gpt2-large", 0.01, 2000, 0.01, 0.0, 1.0, 0.1, 1, "dot")
    assert (c.batch_size, RunConfig(task="agnews", target="x").batch_size) == (8, 4)
    # no test-set evaluation while training unless asked; a checkpoint every 100 steps
    assert (c.eval_every, c.checkpoint_every) == (0, 100)
    assert (c.eval_batch_size, c.device, c.dtype, c.attention, c.k, c.max_eval) == (32, "auto", "fp32", "auto", None, None)


@pytest.mark.parametrize("name", ["steps", "batch_size", "checkpoint_every", "eval_batch_size"])
def test_counts_must_be_at_least_one(name):
    assert getattr(config(**{name: 1}), name) == 1
    with pytest.raises(MinwayError, match=f"--{name.replace('_', '-')} must be at least 1, got 0"):
        config(**{name: 0})


RANGES = [(dict(gamma=0.0), False), (dict(gamma=-0.01), True), (dict(lr=1e-6), False), (dict(lr=0.0), True),
          (dict(dropout=0.0), False), (dict(dropout=1.0), True), (dict(dropout=-0.1), True),
          (dict(k=1), False), (dict(k=0), True)]


@pytest.mark.parametrize("changes, refused", RANGES,
                         ids=[f"{k}={v}" for changes, _ in RANGES for k, v in changes.items()])
def test_ranges(changes, refused):
    if refused:
        with pytest.raises(MinwayError, match="--(gamma|lr|dropout|k) must"):
            config(**changes)
    else:
        config(**changes)


def test_run_id_names_task_model_target_gamma_and_seed():
    c = RunConfig(task="SST-2", target="Write a short, positive review of the film!", model="/ckpt/gpt2-medium",
                  gamma=0.05, seed=3)
    assert re.fullmatch(r"sst2-gpt2-medium-Write-a-short-positive-r-g0\.05-s3-[0-9a-f]{8}", c.run_id())
    named = replace(c, target_name="subtask047")
    assert named.run_id() == c.run_id().replace("Write-a-short-positive-r", "subtask047")


def test_run_id_changes_with_what_changes_the_prompt_only():
    c = config()
    assert replace(c, data_dir="elsewhere", eval_every=5, checkpoint_every=7, eval_batch_size=3).run_id() == c.run_id()
    changed = [replace(c, lr=0.02), replace(c, dropout=0.0), replace(c, steps=10), replace(c, label_map=(1, 0)),
               replace(c, train_split="all")]
    assert len({c.run_id(), *(other.run_id() for other in changed)}) == 1 + len(changed)


def test_run_ids_stay_what_they_were():
    # finished runs are found again by their id: a change here orphans every existing run directory. Those
    # written before the released split existed trained on the whole file, and keep their ids
    assert config(train_split="all").run_id() == "sst2-gpt2-large-Is-this-movie-good-g0.01-s1-f39344d8"
    assert config().run_id() == "sst2-gpt2-large-Is-this-movie-good-g0.01-s1-3f6a1d3b"
    named = {name: replace(config(), target_name=name).run_id().split("-g0.01")[0] for name in ("a" * 48, "a" * 49)}
    assert named == {"a" * 48: "sst2-gpt2-large-" + "a" * 48, "a" * 49: "sst2-gpt2-large-" + "a" * 48 + "-1e666934"}
