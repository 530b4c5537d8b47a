"""The whole pipeline: train.py and eval.py as a user runs them, kill and resume, NaN stops,
one-line errors, the gamma trade-off, --compare and --label-map.

Every run uses the tiny random GPT-2 (d=48), or a sharpened copy of it, and a few steps;
what is checked is the pipeline, recomputed here by brute force where it can be, not the
accuracy of a random model.
"""
import importlib
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import ROOT
from fixtures import assert_one_line_error, first_rows, offline_env, run_in_process, run_script, write_tsv
from fixtures import short_context_checkpoint, tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway import loop
from minway.run import training
from minway.run.config import RunConfig
from minway.errors import MinwayError
from minway.metrics import prompt_f1
from minway.objective import Loss
from minway.run.model_and_data import Setup
from minway.run.storage import read_checkpoint, read_log, save_prompt
from minway.run.tokenizer import load_tokenizer

TARGET = "Write a question about the given fact."
METRIC_NAMES = ("dot", "l2", "cos")


def base_args(checkpoint, data_dir, out, **options):
    args = {"task": "sst2", "target": TARGET, "model": checkpoint, "data-dir": data_dir, "out": out,
            "device": "cpu", "batch-size": 2, "max-eval": 8, **options}
    return [x for key, value in args.items() for x in (f"--{key}", value)] + ["--no-progress"]


def config_of(checkpoint, data_dir, **fields):
    """The RunConfig that base_args(...) gives train.py."""
    fields = {"task": "sst2", "target": TARGET, "model": str(checkpoint), "data_dir": str(data_dir),
              "device": "cpu", "batch_size": 2, "max_eval": 8, **fields}
    return RunConfig(**fields)


def read_json(path):
    return json.loads(path.read_text())


def wte(checkpoint):
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        return f.get_tensor("wte.weight").float()


def brute_force_nearest(prompt, E, metric):
    """Nearest token id per row, the obvious way (no kernel, no chunking)."""
    if metric == "dot":
        return (prompt @ E.T).argmax(1).tolist()
    if metric == "l2":
        return torch.cdist(prompt.double(), E.double()).argmin(1).tolist()
    return (torch.nn.functional.normalize(prompt, dim=1) @ torch.nn.functional.normalize(E, dim=1).T).argmax(1).tolist()


def stored_checkpoint(run_dir, steps, setup_identity=None):
    """(step, prompt, AdamW state) of a run's checkpoint, read as a resume reads it."""
    path = run_dir / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as f:
        shape, identity = tuple(f.get_slice("prompt").get_shape()), json.loads(f.metadata()["identity"])
    return read_checkpoint(path, steps, shape, setup_identity or identity)


def strip_volatile(results):
    return {k: v for k, v in results.items() if k != "eval_seconds"}


@pytest.fixture(scope="module")
def sharp_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint made sharp as fixtures.sharp_model is: its predictions depend on the prompt,
    so that training it moves the accuracy (the tiny model's own is near-uniform)."""
    directory = tmp_path_factory.mktemp("sharp-gpt2")
    for name in ("config.json", "vocab.json", "merges.txt"):
        shutil.copy(tiny_checkpoint / name, directory / name)
    tensors = load_file(str(tiny_checkpoint / "model.safetensors"))
    for name in tensors:
        if name in ("wte.weight", "wpe.weight"):
            tensors[name] = tensors[name] * 10
        elif name.endswith("attn.c_attn.weight"):
            tensors[name] = tensors[name] * 3
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


@pytest.fixture(scope="module")
def setup(sharp_checkpoint, tiny_data):
    """One loaded model and data set for the in-process runs (all share config_of's setup key)."""
    return Setup(config_of(sharp_checkpoint, tiny_data))


# --- a full run, then eval.py ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_run(tiny_checkpoint, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = run_script("train.py", *base_args(tiny_checkpoint, tiny_data, out, steps=6, **{"checkpoint-every": 2}))
    assert result.returncode == 0, result.stderr
    run_dir = out / config_of(tiny_checkpoint, tiny_data, steps=6, checkpoint_every=2).run_id()
    return result, run_dir


def test_train_writes_the_run_directory(full_run):
    result, run_dir = full_run
    names = ("config.json", "prompt.safetensors", "results.json", "log.jsonl", "checkpoint.safetensors", "summary.txt",
             "lock")
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(names)  # README.md lists them all
    assert f"{run_dir.name}/results.json" in result.stdout
    results = read_json(run_dir / "results.json")
    # prompt F1 from 0 to 1, in the summary as in results.json
    assert f"prompt F1 [dot (main)]: {results['prompt_f1']:.2f} " in result.stdout
    assert results["run_id"] == run_dir.name
    assert results["config"]["steps"] == 6 and results["config"]["target"] == TARGET
    assert results["minway_version"] and results["random_weights"] is True
    assert results["n_test"] == 8
    for key in ("accuracy", "hard_prompt_accuracy", "c_dist", "prompt_f1"):
        assert isinstance(results[key], float), key
    assert results["prompt_f1"] == results["projections"]["dot"]["f1"]
    assert stored_checkpoint(run_dir, 6)[0] == 6


def test_a_finished_run_shows_its_summary_and_how_to_train_it_again(full_run, tiny_checkpoint, tiny_data, capsys):
    result, run_dir = full_run
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    args = base_args(tiny_checkpoint, tiny_data, run_dir.parent, steps=6, **{"checkpoint-every": 2})
    importlib.import_module("train").main(list(map(str, args)))
    lines = capsys.readouterr().out.splitlines()
    trained, *summary = result.stdout.splitlines()
    assert trained.startswith(f"trained {run_dir.name}: 6 steps in ")  # no bars: a line at the run's end
    assert lines[:-1] == summary  # the summary of the run, nothing trained
    assert "nothing was trained" in lines[-1] and "--force" in lines[-1]
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


def test_progress_bars_name_the_task_and_gamma(sharp_checkpoint, tiny_data, setup, tmp_path, capsys):
    for gamma in (0.0, 0.01):  # the two runs of --compare
        training.train(config_of(sharp_checkpoint, tiny_data, gamma=gamma, steps=2), tmp_path, setup=setup)
    err = capsys.readouterr().err
    assert "sst2 gamma=0: " in err and "sst2 gamma=0.01: " in err and "f1=1.00" in err


@pytest.mark.parametrize("eval_every, evaluated", [(2, [1, 3]), (3, [2]), (0, [])])
def test_eval_every_tests_the_prompt_during_the_run_but_not_twice_at_its_end(sharp_checkpoint, tiny_data, setup,
                                                                             tmp_path, capsys, eval_every, evaluated):
    config = config_of(sharp_checkpoint, tiny_data, steps=6, eval_every=eval_every)
    training.train(config, tmp_path, setup=setup)
    entries = [json.loads(line) for line in read_log(tmp_path / config.run_id() / "log.jsonl", 6)]
    assert [e["step"] for e in entries if "test" in e] == evaluated  # the run's end is tested by results.json
    assert all(0 <= e["test"] <= 1 for e in entries if "test" in e)
    said = "".join(capsys.readouterr())
    assert all(f"step {step + 1}: test accuracy" in said for step in evaluated)
    assert "step 6: test accuracy" not in said


def test_log_has_one_line_per_step(full_run):
    _, run_dir = full_run
    entries = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == list(range(6))
    assert [e["step"] for e in entries if "f1" in e] == [0, 5]  # every 10th step and the last
    assert all(e["loss"] == pytest.approx(e["ce"] + 0.01 * e["distance"]) for e in entries)
    assert entries[0]["distance"] == 0.0  # the prompt starts at c-proj(target)


def test_results_match_a_brute_force_projection_of_the_saved_prompt(full_run, tiny_checkpoint):
    _, run_dir = full_run
    results = read_json(run_dir / "results.json")
    with safe_open(str(run_dir / "prompt.safetensors"), framework="pt") as f:
        prompt, meta = f.get_tensor("prompt"), f.metadata()
    target_ids = json.loads(meta["target_ids"])
    tokenizer = load_tokenizer(tiny_checkpoint)
    assert target_ids == tokenizer.encode(TARGET) == results["target_ids"]
    E = wte(tiny_checkpoint)
    assert results["c_dist"] == pytest.approx(float((prompt - E[target_ids]).pow(2).sum() / len(target_ids)), rel=1e-5)
    for metric in METRIC_NAMES:
        report = results["projections"][metric]
        ids = brute_force_nearest(prompt, E, metric)
        assert report["ids"] == ids, metric
        text = tokenizer.decode(ids)
        assert report["text"] == text
        assert report["f1"] == pytest.approx(prompt_f1(text, TARGET, lemmatize=True))
        assert report["f1_no_lemma"] == pytest.approx(prompt_f1(text, TARGET, lemmatize=False))
        assert report["position_match"] == pytest.approx(sum(a == b for a, b in zip(ids, target_ids)) / len(ids))


@pytest.mark.slow
def test_eval_recomputes_the_results(full_run):
    _, run_dir = full_run
    result = run_script("eval.py", run_dir, "--positions", "--no-progress", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    trained, evaluated = read_json(run_dir / "results.json"), read_json(run_dir / "eval.json")
    for key in ("accuracy", "hard_prompt_accuracy", "prompt_f1", "n_test", "projections"):
        assert evaluated[key] == trained[key], key
    assert evaluated["c_dist"] == pytest.approx(trained["c_dist"], rel=1e-6)
    n_positions = len(trained["target_ids"])
    assert [f"position {i}:" in result.stdout for i in range(n_positions + 1)] == [True] * n_positions + [False]
    assert result.stdout.count("top-5:") == 3 * n_positions
    assert result.stdout.count(" distance^2 ") == n_positions  # L2 scores are squared distances


# --- kill and resume ------------------------------------------------------------------------------

def checkpoint_step(path):
    try:
        with safe_open(str(path), framework="pt") as f:
            return int(f.metadata()["step"])
    except Exception:  # not there yet, or being replaced
        return None


@pytest.mark.slow
def test_killed_run_resumes_bitwise(sharp_checkpoint, tiny_data, setup, tmp_path):
    steps = 10
    args = base_args(sharp_checkpoint, tiny_data, tmp_path / "killed", steps=steps, lr=0.05,
                     **{"checkpoint-every": 2})
    config = config_of(sharp_checkpoint, tiny_data, steps=steps, lr=0.05, checkpoint_every=2)
    run_dir = tmp_path / "killed" / config.run_id()
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, args)], cwd=ROOT,
                               env=offline_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while checkpoint_step(run_dir / "checkpoint.safetensors") is None and time.time() < deadline:
            assert process.poll() is None, "train.py ended before its first checkpoint"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    killed_at = checkpoint_step(run_dir / "checkpoint.safetensors")
    assert killed_at is not None and 0 < killed_at < steps
    assert not (run_dir / "results.json").exists()
    # mark the log lines written before the kill: those of the steps the resumed run must not redo stay marked
    log = run_dir / "log.jsonl"
    log.write_text("".join(json.dumps({**entry, "before_kill": True}) + "\n" for entry in read_entries(log)))

    resumed = run_script("train.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    entries = read_entries(log)
    assert [e["step"] for e in entries if e.pop("before_kill", False)] == list(range(killed_at))

    # the uninterrupted run, and the same configuration once more, both fresh, in this process
    fresh = [training.train(config, tmp_path / name, progress=False, setup=setup) for name in ("fresh1", "fresh2")]
    prompts = [load_prompt_tensor(d / config.run_id()) for d in (tmp_path / "killed", tmp_path / "fresh1",
                                                                  tmp_path / "fresh2")]
    assert torch.equal(prompts[0], prompts[1]) and torch.equal(prompts[1], prompts[2])
    assert not torch.equal(prompts[0], initial_prompt(config, setup))  # it did train
    assert strip_volatile(fresh[0]) == strip_volatile(fresh[1])
    resumed_results = read_json(run_dir / "results.json")
    assert strip_volatile(resumed_results) == strip_volatile(read_json(tmp_path / "fresh1" / config.run_id() /
                                                                       "results.json"))
    # the log of the resumed run is the uninterrupted one: each step once, same losses
    assert entries == read_entries(tmp_path / "fresh1" / config.run_id() / "log.jsonl")
    assert [e["step"] for e in entries] == list(range(steps))


def read_entries(log):
    """The log's entries; a line cut short by a kill is left out."""
    entries = []
    for line in log.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return entries


def load_prompt_tensor(run_dir):
    with safe_open(str(run_dir / "prompt.safetensors"), framework="pt") as f:
        return f.get_tensor("prompt")


def initial_prompt(config, setup):
    return setup.model.wte.weight[setup.target_ids(config)].detach().float()


# --- the learning-rate schedule --------------------------------------------------------------------

def test_the_prompt_f1_is_measured_every_tenth_step_and_at_the_last(sharp_checkpoint, tiny_data, setup, tmp_path):
    config = config_of(sharp_checkpoint, tiny_data, steps=23)
    training.train(config, tmp_path, progress=False, setup=setup)
    entries = [json.loads(line) for line in read_log(tmp_path / config.run_id() / "log.jsonl", 23)]
    assert [e["step"] for e in entries if "f1" in e] == [0, 10, 20, 22]


def test_learning_rate_decays_linearly_to_zero_without_warm_up(sharp_checkpoint, tiny_data, setup, tmp_path,
                                                               monkeypatch):
    config = config_of(sharp_checkpoint, tiny_data, steps=7, lr=0.05)
    used, real_step = [], torch.optim.AdamW.step

    def spy(optimizer, *args, **kwargs):
        used.append(optimizer.param_groups[0]["lr"])
        return real_step(optimizer, *args, **kwargs)
    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    training.train(config, tmp_path, progress=False, setup=setup)
    expected = [0.05 * (1 - step / 7) for step in range(7)]  # get_linear_schedule_with_warmup, 0 warm-up steps
    assert used == pytest.approx(expected, rel=1e-12)
    logged = [json.loads(line)["lr"] for line in read_log(tmp_path / config.run_id() / "log.jsonl", 7)]
    assert logged == pytest.approx(expected, rel=1e-12)


def transformers4_adamw(prompt, gradients, lrs, eps=1e-8, betas=(0.9, 0.999)):
    """The prompt after the updates of transformers 4's AdamW (correct_bias=True, no weight decay), which
    the released code trains with, restated in float64: eps is added to sqrt(v) before the bias correction."""
    p, m, v = prompt.double().clone(), torch.zeros_like(prompt.double()), torch.zeros_like(prompt.double())
    for t, (g, lr) in enumerate(zip(gradients, lrs), start=1):
        g = g.double()
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        step_size = lr * (1 - betas[1] ** t) ** 0.5 / (1 - betas[0] ** t)
        p = p - step_size * m / (v.sqrt() + eps)
    return p


def test_adamw_updates_as_the_released_codes_transformers_adamw():
    """Gradient entries from 1e-9 to 1: below about 1e-5 torch's AdamW as it comes steps elsewhere."""
    g = torch.Generator().manual_seed(0)
    gradients = [torch.randn(4, 6, generator=g) * 10.0 ** -torch.randint(0, 10, (4, 6), generator=g)
                 for _ in range(6)]
    lrs = [0.01 * (1 - t / 6) for t in range(6)]
    expected = transformers4_adamw(torch.zeros(4, 6), gradients, lrs)

    def torch_adamw(eps_of):
        prompt = torch.zeros(4, 6, requires_grad=True)
        optimizer = torch.optim.AdamW([prompt], betas=loop.ADAM_BETAS, weight_decay=0.0)
        for t, (gradient, lr) in enumerate(zip(gradients, lrs), start=1):
            optimizer.param_groups[0].update(lr=lr, eps=eps_of(t))
            prompt.grad = gradient.clone()
            optimizer.step()
        return prompt.detach().double()

    assert torch.allclose(torch_adamw(loop.released_adam_eps), expected, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(torch_adamw(lambda t: loop.ADAM_EPS), expected, rtol=1e-5, atol=1e-8)


def test_training_steps_the_prompt_as_the_released_codes_adamw(sharp_checkpoint, tiny_data, setup, tmp_path,
                                                               monkeypatch):
    """A run's prompt, replayed from its clipped gradients and learning rates with transformers 4's rule."""
    config = config_of(sharp_checkpoint, tiny_data, steps=6, lr=0.05)
    start, gradients, lrs, real_step = [], [], [], torch.optim.AdamW.step

    def spy(optimizer, *args, **kwargs):
        [vectors] = optimizer.param_groups[0]["params"]
        start[:] = start or [vectors.detach().clone()]
        gradients.append(vectors.grad.clone())
        lrs.append(optimizer.param_groups[0]["lr"])
        return real_step(optimizer, *args, **kwargs)
    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    training.train(config, tmp_path, progress=False, setup=setup)
    _, prompt, _ = stored_checkpoint(tmp_path / config.run_id(), 6, setup.identity)
    expected = transformers4_adamw(start[0], gradients, lrs)
    assert torch.allclose(prompt.double(), expected[0], rtol=1e-5, atol=1e-6)


def test_each_step_trains_on_the_batch_its_schedule_gives(sharp_checkpoint, tiny_data, setup, tmp_path, monkeypatch):
    """The rows of step s are those BatchSchedule(n, batch size, seed)[s] names, in that order."""
    config = config_of(sharp_checkpoint, tiny_data, steps=4, batch_size=3, seed=7)
    seen, real = [], training.bank_losses

    def spy(model, bank, owner, inputs, outputs, *args):
        seen.append(inputs)
        return real(model, bank, owner, inputs, outputs, *args)
    monkeypatch.setattr(training, "bank_losses", spy)
    training.train(config, tmp_path, progress=False, setup=setup)
    schedule = training.BatchSchedule(len(setup.train_inputs), 3, 7)
    assert seen == [[setup.train_inputs[i] for i in schedule[step]] for step in range(4)]


@pytest.mark.parametrize("dtype, advice", [("fp32", "lower --lr"), ("bf16", "lower --lr, or use --dtype fp32")])
def test_a_value_that_is_not_finite_names_its_step_and_what_to_do(dtype, advice, tmp_path):
    config = RunConfig(task="sst2", target=TARGET, dtype=dtype)
    runs = [tmp_path / "run-a", tmp_path / "run-b"]
    training._require_finite([1.0, 2.0], "loss", runs, 5, 2, config)  # finite: nothing to say
    with pytest.raises(MinwayError) as later:
        training._require_finite([1.0, float("inf")], "gradient norm", runs, 5, 2, config)
    assert str(later.value) == (f"the gradient norm of run-b became inf at step 5 (--lr 0.01, --dtype {dtype}); its "
                                f"last good checkpoint is kept: {advice}")
    with pytest.raises(MinwayError, match=r"the loss of run-a is nan at step 2, before any update of the prompt: "
                                          r"check its checkpoint"):
        training._require_finite([float("nan"), 1.0], "loss", runs, 2, 2, config)


def test_a_gradient_that_stops_being_finite_stops_the_run_at_its_step(sharp_checkpoint, tiny_data, setup, tmp_path,
                                                                      monkeypatch):
    config = config_of(sharp_checkpoint, tiny_data, steps=4)
    steps, real = [], training._clip_each

    def clip(grad, max_norm):
        norms = real(grad, max_norm)
        steps.append(len(steps))
        return norms * float("inf") if len(steps) == 3 else norms
    monkeypatch.setattr(training, "_clip_each", clip)
    with pytest.raises(MinwayError, match=r"the gradient norm of .* became inf at step 2 \(--lr 0.01"):
        training.train(config, tmp_path, progress=False, setup=setup)


def test_batches_walk_shuffled_epochs_with_a_short_last_batch():
    """As the released code's DataLoader (random sampler, last batch kept): 10 examples in
    batches of 4 make epochs of 4, 4 and 2 examples, each epoch every example once."""
    schedule = training.BatchSchedule(10, 4, seed=3)
    batches = [schedule[step].tolist() for step in range(7)]
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]
    for epoch in (batches[0:3], batches[3:6]):
        assert sorted(i for b in epoch for i in b) == list(range(10))
    assert batches == [training.BatchSchedule(10, 4, seed=3)[step].tolist() for step in range(7)]
    assert batches[0] != training.BatchSchedule(10, 4, seed=4)[0].tolist()
    assert batches[0] != batches[3]  # each epoch has its own order
    assert len(schedule[10 ** 12]) == 4  # any step, drawn on its own


# --- NaN ------------------------------------------------------------------------------------------

def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(sharp_checkpoint, tiny_data, setup, tmp_path,
                                                                   monkeypatch):
    config = config_of(sharp_checkpoint, tiny_data, steps=8, lr=0.05, checkpoint_every=2)
    real_losses, calls, poisoned = training.bank_losses, [], [True]

    def nan_at_step_5(*args, **kwargs):
        loss = real_losses(*args, **kwargs)
        calls.append(None)
        if poisoned[0] and len(calls) == 6:
            return Loss(loss.total * float("nan"), loss.ce, loss.distance)
        return loss

    monkeypatch.setattr(training, "bank_losses", nan_at_step_5)
    with pytest.raises(MinwayError) as error:
        training.train(config, tmp_path / "nan", progress=False, setup=setup)
    message = str(error.value)
    assert "step 5" in message and "nan" in message and "\n" not in message
    run_dir = tmp_path / "nan" / config.run_id()
    step, prompt, adam = stored_checkpoint(run_dir, 8, setup.identity)
    assert step == 4 and bool(torch.isfinite(prompt).all()) and adam["step"] == 4
    assert not (run_dir / "results.json").exists()

    # the kept checkpoint is good: resuming from it (steps 4..7 only) ends where an undisturbed run ends
    poisoned[0], calls[:] = False, []
    resumed = training.train(config, tmp_path / "nan", resume=True, progress=False, setup=setup)
    assert len(calls) == 4
    undisturbed = training.train(config, tmp_path / "clean", progress=False, setup=setup)
    assert torch.equal(load_prompt_tensor(run_dir), load_prompt_tensor(tmp_path / "clean" / config.run_id()))
    assert strip_volatile(resumed) == strip_volatile(undisturbed)


# --- the gamma trade-off --------------------------------------------------------------------------

def test_large_gamma_pins_the_prompt_to_the_target(sharp_checkpoint, tiny_data, setup, tmp_path):
    config = config_of(sharp_checkpoint, tiny_data, gamma=1e3, steps=10, lr=0.01)
    results = training.train(config, tmp_path, progress=False, setup=setup)
    target_ids = setup.tokenizer.encode(TARGET)
    for metric in ("l2", "cos"):
        assert results["projections"][metric]["ids"] == target_ids
        assert results["projections"][metric]["f1"] == 1.0
        assert results["projections"][metric]["position_match"] == 1.0
    # under the dot product: the projection of the target's own embeddings, whatever it is
    E = wte(sharp_checkpoint)
    assert results["projections"]["dot"]["ids"] == brute_force_nearest(E[target_ids], E, "dot")
    # AdamW's steps of about lr keep the prompt jittering round the target: 48 coordinates of
    # ~0.002 at the last steps; a free prompt moves 0.01 to 0.1 per coordinate
    assert results["c_dist"] < 1e-3


def test_unconstrained_prompt_drifts_from_the_target(sharp_checkpoint, tiny_data, setup, tmp_path):
    config = config_of(sharp_checkpoint, tiny_data, gamma=0.0, steps=10, lr=0.1)
    results = training.train(config, tmp_path, progress=False, setup=setup)
    for metric in METRIC_NAMES:
        assert results["projections"][metric]["f1"] < 1.0
        assert results["projections"][metric]["position_match"] < 1.0
    assert results["c_dist"] > 0.01


# --- --compare ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_reports_the_relative_drop(sharp_checkpoint, tmp_path):
    # trained on negative reviews only, the free prompt learns to call more reviews negative and the
    # prompt pinned to the target cannot: accuracies that differ on the 12 test examples
    negative = [row for row in first_rows("sst2", "train", 100) if row[1] == "0"][:30]
    write_tsv(tmp_path / "data" / "sst2" / "train.tsv", negative)
    write_tsv(tmp_path / "data" / "sst2" / "test.tsv", first_rows("sst2", "test", 12))
    config = config_of(sharp_checkpoint, tmp_path / "data", gamma=1e3, steps=12, lr=0.3, max_eval=None)
    constrained = training.compare(config, tmp_path, progress=False)
    twin_id = replace(config, gamma=0.0).run_id()
    assert constrained["compare"]["unconstrained_run"] == twin_id
    acc_u = read_json(tmp_path / twin_id / "results.json")["accuracy"]
    on_disk = read_json(tmp_path / config.run_id() / "results.json")
    acc_c = on_disk["accuracy"]
    assert acc_u != acc_c, "the two runs should differ for this test to mean something"
    assert on_disk["compare"]["relative_drop"] == pytest.approx(100 * (acc_u - acc_c) / acc_u)
    assert on_disk["compare"]["accuracy_unconstrained"] == acc_u
    assert on_disk["compare"]["accuracy_constrained"] == acc_c
    summary = (tmp_path / config.run_id() / "summary.txt").read_text()
    assert "relative drop" in summary
    assert f"prompt F1 {on_disk['compare']['f1_unconstrained']:.2f} -> {on_disk['prompt_f1']:.2f}" in summary


# --- --label-map ----------------------------------------------------------------------------------

def test_label_map_flips_the_labels(sharp_checkpoint, tiny_data, setup):
    flipped = Setup(config_of(sharp_checkpoint, tiny_data, label_map=(1, 0), train_split="all"))  # the file's rows
    test_rows, train_rows = first_rows("sst2", "test", 8), first_rows("sst2", "train", 40)
    original = [int(label) for _, label in test_rows]
    assert setup.test_labels == original and 0 < sum(original) < len(original)
    assert flipped.test_labels == [1 - y for y in original]
    great, terrible = (setup.tokenizer.encode(text) + [setup.tokenizer.eot_id] for text in (" great .", " terrible ."))
    assert flipped.train_outputs == [terrible if int(label) else great for _, label in train_rows]
    assert flipped.test_inputs == setup.test_inputs


# --- one-line errors ------------------------------------------------------------------------------

LONG_TARGET = " ".join(["a long target text of many words"] * 6)


@pytest.fixture(scope="module")
def error_runs(tiny_checkpoint, tiny_data, tmp_path_factory):
    """Failing commands as real processes, all at once (each spends most of its time importing torch):
    what a user sees, warnings and exit code included."""
    tmp = tmp_path_factory.mktemp("errors")
    corrupt = tmp / "corrupt-run"
    corrupt.mkdir()
    save_prompt(corrupt / "prompt.safetensors", torch.zeros(3, 48), config_of(tiny_checkpoint, tiny_data), [1, 2, 3])
    (corrupt / "prompt.safetensors").write_bytes((corrupt / "prompt.safetensors").read_bytes()[:-20])
    train = lambda **o: ("train.py", base_args(tiny_checkpoint, tiny_data, tmp / "runs", steps=3, **o))  # noqa: E731
    cases = {
        "unknown task": train(task="nosuchtask"),
        "missing weights": train(model="no-such-model-xyz"),
        "nan": train(lr=1e30, **{"checkpoint-every": 1}),
        "corrupt prompt": ("eval.py", [corrupt, "--no-progress"]),
    }
    env = offline_env(HF_HOME=str(tmp / "hf-home"), HF_HUB_CACHE=str(tmp / "hf-home" / "hub"))
    processes = {name: subprocess.Popen([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, (script, args) in cases.items()}
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results, tmp


@pytest.mark.slow
@pytest.mark.parametrize("case, fragments", [
    ("unknown task", ["nosuchtask", "sst2, sst5, agnews, subj, trec"]),
    ("missing weights", ["no checkpoint 'no-such-model-xyz'", "could not be downloaded"]),
    ("nan", ["step 1", "lower --lr"]),
    ("corrupt prompt", ["corrupt-run/prompt.safetensors", "not a valid minway prompt file"]),
])
def test_one_line_errors_of_the_scripts(error_runs, case, fragments):
    assert_one_line_error(error_runs[0][case], *fragments)


@pytest.mark.parametrize("case, options, fragments", [
    ("empty target", {"target": "   "}, ["empty"]),
    ("too long", {"target": LONG_TARGET, "model": "SHORT"}, ["exceeds the model's context of 64"]),
    ("missing data", {"data-dir": "NO-DATA"}, ["NO-DATA", "sst2/train.tsv"]),
    ("bad label map", {"label-map": "1,x"}, ["--label-map '1,x'"]),
    ("label map not a permutation", {"label-map": "0,0"}, ["0,0", "not a permutation"]),
    ("no checkpoints", {"checkpoint-every": 0}, ["--checkpoint-every must be at least 1"]),
    ("negative gamma", {"gamma": -1}, ["--gamma must be >= 0"]),
    ("no examples", {"k": 0}, ["--k must be at least 1"]),
])
def test_one_line_errors_of_train(case, options, fragments, tiny_checkpoint, short_context_checkpoint, tiny_data,
                                  tmp_path, monkeypatch, capsys):
    paths = {"SHORT": short_context_checkpoint, "NO-DATA": tmp_path / "no-data"}
    options = {key: paths.get(value, value) for key, value in options.items()}
    fragments = [str(paths.get(f, f)) for f in fragments]
    result = run_in_process("train.py", base_args(tiny_checkpoint, tiny_data, tmp_path, steps=3, **options))
    assert_one_line_error(result, *fragments)


def test_an_out_that_cannot_be_written_is_a_one_line_error(tiny_checkpoint, tiny_data, tmp_path, monkeypatch,
                                                           capsys):
    (tmp_path / "a-file").write_text("")
    result = run_in_process("train.py", base_args(tiny_checkpoint, tiny_data, tmp_path / "a-file", steps=3))
    assert_one_line_error(result, str(tmp_path / "a-file"))


def test_a_target_name_in_several_files_is_refused(monkeypatch, capsys):
    result = run_in_process("train.py", ["--task", "sst2", "--target-name", "prompt00"])
    assert_one_line_error(result, "prompt00 is in 6 prompt files", "pile.json", "pile_n=56.json", "--prompts-file")


def test_eval_of_a_missing_run_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    result = run_in_process("eval.py", [tmp_path / "no-such-run"])
    assert_one_line_error(result, "no-such-run", "does not exist")


@pytest.mark.slow
def test_nan_run_keeps_its_checkpoint(error_runs, tiny_checkpoint, tiny_data):
    config = config_of(tiny_checkpoint, tiny_data, steps=3, lr=1e30, checkpoint_every=1)
    run_dir = error_runs[1] / "runs" / config.run_id()
    step, prompt, _ = stored_checkpoint(run_dir, 3)
    assert step == 1 and bool(torch.isfinite(prompt).all())


def test_train_pys_defaults_are_a_runs():
    """What train.py sets when an option is not given is RunConfig's default, and runs go to runs/."""
    import dataclasses

    import train
    args = train.parse_args(["--task", "sst2", "--target", TARGET])
    assert args.out == "runs"
    run = {field.name: field.default for field in dataclasses.fields(RunConfig)}
    shared = {name: getattr(args, name) for name in run if hasattr(args, name) and name not in ("task", "target")}
    assert {"steps", "gamma", "seed", "checkpoint_every", "eval_every", "device", "attention"} <= set(shared)
    assert shared == {name: run[name] for name in shared}


@pytest.mark.parametrize("options, fragment", [
    (["--device", "cpu", "--attention", "triton"], "--attention triton runs on a CUDA device"),
    (["--device", "cuda", "--attention", "sdpa"], "--device cuda was asked for but this machine has no GPU driver"),
])
def test_the_device_and_attention_asked_for_are_checked_before_anything_loads(tiny_checkpoint, tiny_data,  # noqa: F811
                                                                              tmp_path, options, fragment):
    from minway.run.devices import has_gpu_driver
    if has_gpu_driver():
        pytest.skip("this machine has a GPU driver")
    args = [*base_args(tiny_checkpoint, tiny_data, tmp_path / "runs"), *options]
    env = {k: v for k, v in offline_env().items() if k != "TRITON_INTERPRET"}  # Triton on a CPU needs it
    assert_one_line_error(run_in_process("train.py", args, env=env), fragment)
    assert not (tmp_path / "runs").exists()
