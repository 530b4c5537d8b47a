"""K prompts trained in one batch (``train_many``) end where K separate runs end (issue 5).

The three prompts differ in target length (so the bank pads them and every row of the
batch is masked differently), in seed (so each draws its own batches and dropout masks)
and in gamma. They train with dropout, as by default; one test trains them without.
"""
import json
from dataclasses import replace

import pytest
import torch

import minway.run.training
from fixtures import first_rows, tiny_checkpoint, write_tsv  # noqa: F401
from minway.run.config import RunConfig
from minway.prompt import c_proj
from minway.run.model_and_data import Setup
from minway.run.storage import load_prompt
from minway.run.training import train, train_many

STEPS = 5
TARGETS = [("Write a short and positive review of the film.", 0.0, 1),
           ("Yes", 0.05, 2),
           ("Is this movie good?", 0.5, 3)]
PROMPT_TOL = 1e-5
LOSS_TOL = 1e-5
CLIP = 0.05  # the gradient norms of the tiny model are 0.02 to 0.1: some steps are clipped, some not
LOGGED = ("loss", "ce", "distance", "lr", "grad_norm")


@pytest.fixture(scope="module")
def configs(tiny_checkpoint, tmp_path_factory):  # noqa: F811
    # 10 training examples in batches of 4: step 2 ends an epoch with a batch of 2
    data = tmp_path_factory.mktemp("ten-examples")
    write_tsv(data / "sst2" / "train.tsv", first_rows("sst2", "train", 10))
    write_tsv(data / "sst2" / "test.tsv", first_rows("sst2", "test", 12))
    base = RunConfig(task="sst2", target="replaced below", model=str(tiny_checkpoint), data_dir=str(data), steps=STEPS,
                     batch_size=4, lr=0.01, device="cpu", eval_batch_size=16, clip=CLIP)
    return [replace(base, target=target, gamma=gamma, seed=seed) for target, gamma, seed in TARGETS]


@pytest.fixture(scope="module")
def separate(configs, tmp_path_factory):
    out = tmp_path_factory.mktemp("separate")
    return out, [train(c, out, progress=False) for c in configs]


@pytest.fixture(scope="module")
def together(configs, tmp_path_factory):
    out = tmp_path_factory.mktemp("together")
    return out, train_many(configs, out, progress=False)


def prompt_of(out, config):
    return load_prompt(out / config.run_id() / "prompt.safetensors")[0]


def log_of(out, config):
    return [json.loads(line) for line in (out / config.run_id() / "log.jsonl").read_text().splitlines()]


def assert_same_run(out_a, out_b, config):
    torch.testing.assert_close(prompt_of(out_a, config), prompt_of(out_b, config), atol=PROMPT_TOL, rtol=0)
    log_a, log_b = log_of(out_a, config), log_of(out_b, config)
    assert [e["step"] for e in log_a] == [e["step"] for e in log_b] == list(range(STEPS))
    for a, b in zip(log_a, log_b):
        for key in LOGGED:
            assert a[key] == pytest.approx(b[key], abs=LOSS_TOL, rel=LOSS_TOL), (config.target, a["step"], key)
        assert a.get("f1") == b.get("f1"), (config.target, a["step"])


def assert_same_results(a, b):
    assert a["run_id"] == b["run_id"]
    assert a["accuracy"] == b["accuracy"]
    assert a["hard_prompt_accuracy"] == b["hard_prompt_accuracy"]
    assert a["prompt_f1"] == b["prompt_f1"]
    for metric, report in a["projections"].items():
        assert report["ids"] == b["projections"][metric]["ids"], metric
        assert report["f1"] == b["projections"][metric]["f1"], metric
    assert a["c_dist"] == pytest.approx(b["c_dist"], abs=1e-6, rel=1e-4)


def test_the_runs_are_not_trivially_equal(configs, separate):
    """The comparisons below mean something: prompts of several lengths that moved, runs that differ."""
    out, results = separate
    setup = Setup(configs[0])
    lengths = []
    for config in configs:
        prompt, saved_config, target_ids = load_prompt(out / config.run_id() / "prompt.safetensors")
        assert saved_config == config
        lengths.append(len(target_ids))
        moved = (prompt - c_proj(setup.model, target_ids)).abs().max()
        assert moved > 100 * PROMPT_TOL, config.target
    assert len(set(lengths)) == len(configs), lengths
    first_losses = [log_of(out, c)[0]["ce"] for c in configs]
    assert len(set(first_losses)) == len(configs)  # each seed drew its own first batch
    assert len({r["c_dist"] for r in results}) == len(configs)
    norms = [e["grad_norm"] for c in configs for e in log_of(out, c)]
    assert min(norms) < CLIP < max(norms)  # per-prompt clipping is exercised


def test_train_many_equals_separate_runs(configs, separate, together):
    (out_separate, alone), (out_together, grouped) = separate, together
    assert [r["run_id"] for r in grouped] == [c.run_id() for c in configs]
    for config, a, b in zip(configs, alone, grouped):
        assert_same_run(out_separate, out_together, config)
        assert_same_results(a, b)


def test_train_many_equals_separate_runs_without_dropout(configs, separate, tmp_path):
    configs = [replace(c, dropout=0.0) for c in configs]
    alone = [train(c, tmp_path / "alone", progress=False) for c in configs]
    grouped = train_many(configs, tmp_path / "together", progress=False)
    for config, a, b in zip(configs, alone, grouped):
        assert_same_run(tmp_path / "alone", tmp_path / "together", config)
        assert_same_results(a, b)
    # dropout was on in the other runs: it changed where they ended
    out_with_dropout = separate[0]
    for with_dropout, config in zip(separate[1], configs):
        assert with_dropout["run_id"] != config.run_id()
        prompt = load_prompt(out_with_dropout / with_dropout["run_id"] / "prompt.safetensors")[0]
        assert (prompt - prompt_of(tmp_path / "alone", config)).abs().max() > 100 * PROMPT_TOL


def test_order_of_the_group_does_not_matter(configs, together, tmp_path):
    out, grouped = together
    reordered = train_many(configs[::-1], tmp_path, progress=False)[::-1]
    for config, a, b in zip(configs, grouped, reordered):
        assert_same_run(out, tmp_path, config)
        assert_same_results(a, b)


class Killed(Exception):
    pass


def kill_at(monkeypatch, step):
    """Make training die inside the forward pass of ``step`` (counted from 0), as a kill would."""
    real, calls = minway.run.training.bank_losses, []

    def dying(*args, **kwargs):
        if len(calls) == step:
            raise Killed
        calls.append(step)
        return real(*args, **kwargs)
    monkeypatch.setattr(minway.run.training, "bank_losses", dying)


@pytest.mark.parametrize("lose_one_checkpoint", [False, True], ids=["same-step", "mixed-steps"])
def test_resumed_group_ends_where_the_uninterrupted_group_ends(configs, together, tmp_path, monkeypatch,
                                                               lose_one_checkpoint):
    out, grouped = together
    configs = [replace(c, checkpoint_every=2) for c in configs]  # not result-defining: same run ids
    kill_at(monkeypatch, 3)  # after the checkpoint of step 2, with step 2 already in the logs
    with pytest.raises(Killed):
        train_many(configs, tmp_path, progress=False)
    monkeypatch.undo()
    for config in configs:
        run_dir = tmp_path / config.run_id()
        assert not (run_dir / "prompt.safetensors").exists() and not (run_dir / "results.json").exists()
        assert [e["step"] for e in log_of(tmp_path, config)] == [0, 1, 2]
    if lose_one_checkpoint:  # killed before its first checkpoint: it restarts from 0, the others from 2
        (tmp_path / configs[1].run_id() / "checkpoint.safetensors").unlink()

    resumed = train_many(configs, tmp_path, resume=True, progress=False)
    for config, a, b in zip(configs, grouped, resumed):
        assert_same_run(out, tmp_path, config)
        assert_same_results(a, b)


def test_finished_runs_of_a_group_are_reused_on_resume(configs, together, tmp_path):
    out, grouped = together
    train(configs[0], tmp_path, progress=False)
    marker = tmp_path / configs[0].run_id() / "results.json"
    stored = json.loads(marker.read_text())
    again = train_many(configs, tmp_path, resume=True, progress=False)
    assert again[0] == stored and json.loads(marker.read_text()) == stored
    for config, a, b in zip(configs[1:], grouped[1:], again[1:]):
        assert_same_run(out, tmp_path, config)
        assert_same_results(a, b)


@pytest.mark.parametrize("change", [dict(steps=STEPS + 1), dict(model="gpt2-other"), dict(batch_size=2),
                                    dict(lr=0.02), dict(dropout=0.0), dict(dtype="bf16"), dict(task="trec")],
                         ids=lambda change: next(iter(change)))
def test_configs_that_cannot_share_a_batch_are_refused(configs, tmp_path, change):
    mixed = [configs[0], replace(configs[1], **change), configs[2]]
    with pytest.raises(ValueError, match="trained together"):
        train_many(mixed, tmp_path, progress=False)
    assert not any(tmp_path.iterdir())  # refused before any run directory was made


def test_a_config_given_twice_is_trained_once(configs, separate, tmp_path):
    out, alone = separate
    results = train_many([configs[1], configs[1]], tmp_path, progress=False)
    assert results[0] == results[1]
    assert_same_run(out, tmp_path, configs[1])
    assert_same_results(alone[1], results[0])
    assert len(log_of(tmp_path, configs[1])) == STEPS


def test_each_run_keeps_its_own_checkpoint_interval(configs, tmp_path, monkeypatch):
    saved = []
    real = minway.run.training.save_checkpoint

    def spy(path, prompt, adam_state, step, identity):
        saved.append((path.parent.name, step))
        return real(path, prompt, adam_state, step, identity)
    monkeypatch.setattr(minway.run.training, "save_checkpoint", spy)
    first, second = replace(configs[0], checkpoint_every=2), replace(configs[1], checkpoint_every=3)
    train_many([first, second], tmp_path, progress=False)
    assert [s for name, s in saved if name == first.run_id()] == [2, 4, STEPS]
    assert [s for name, s in saved if name == second.run_id()] == [3, STEPS]
