"""What the commands write for a person to read, on a terminal or in a log file: progress bars on a
terminal only and a line per run instead; both results of --compare; the random-weights note of
eval.py; a folder of runs listed; tokens cut inside a character shown by their bytes; prompt F1
from 0 to 1 in reports; figures whose titles fit."""
import json
import shutil
import sys

import pytest
import torch
from matplotlib.image import imread

from fixtures import offline_env, run_script, tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.experiments import figures
from minway.experiments.report import aggregate, choose_gammas, to_markdown
from minway.run import cli
from minway.run.adapters import write_adapter
from minway.run.model_and_data import RANDOM_WEIGHTS_NOTE
from minway.run.tokenizer import load_checkpoint_tokenizer
from weights import load_token_embeddings

TARGET = "Write a question about the given fact."


def train_args(checkpoint, data_dir, out, *extra):
    """train.py's arguments for 4 steps of the tiny model, without --no-progress."""
    return ["--task", "sst2", "--target", TARGET, "--model", checkpoint, "--data-dir", data_dir, "--out", out,
            "--device", "cpu", "--batch-size", 2, "--max-eval", 8, "--steps", 4, *extra]


@pytest.fixture(scope="module")
def compared(tiny_checkpoint, tiny_data, tmp_path_factory):
    """train.py --compare, its output going to files as a log's would (stderr is not a terminal)."""
    out = tmp_path_factory.mktemp("runs")
    result = run_script("train.py", *train_args(tiny_checkpoint, tiny_data, out, "--compare"))
    assert result.returncode == 0, result.stderr
    return result, out


# ---------------------------------------------------------------- progress, a line per run, --compare

@pytest.mark.parametrize("terminal, no_progress, drawn", [(True, False, True), (True, True, False),
                                                          (False, False, False), (False, True, False)])
def test_progress_bars_are_drawn_on_a_terminal_only(monkeypatch, terminal, no_progress, drawn):
    class Stderr:
        def isatty(self):
            return terminal
    monkeypatch.setattr(sys, "stderr", Stderr())
    assert cli.progress_bars(no_progress) is drawn


def test_a_log_gets_no_progress_bars_but_a_line_per_run(compared):
    result, out = compared
    assert "\r" not in result.stdout + result.stderr and "\x1b[" not in result.stdout + result.stderr
    trained = [line for line in result.stdout.splitlines() if line.startswith("trained ")]
    runs = sorted(d.name for d in out.iterdir())
    assert sorted(line.split(":")[0].removeprefix("trained ") for line in trained) == runs  # the run and its twin
    assert all(": 4 steps in " in line and ", prompt F1 " in line for line in trained)


def test_compare_prints_the_results_of_both_runs(compared):
    result, out = compared
    lines = result.stdout.splitlines()
    constrained = next(line for line in lines if line.startswith("results: ")).removeprefix("results: ")
    twin = next(line for line in lines if line.startswith("results of its unconstrained twin: "))
    twin = twin.removeprefix("results of its unconstrained twin: ")
    assert {json.loads(open(path).read())["config"]["gamma"] for path in (constrained, twin)} == {0.01, 0.0}


def test_a_sweep_in_a_log_says_a_line_per_chunk(tiny_checkpoint, tiny_data, tmp_path):
    args = ["--tasks", "sst2", "--models", tiny_checkpoint, "--groups", "PILE-4", "--targets-limit", 1, "--gammas",
            0.01, "--seeds", 1, "--steps", 2, "--batch-size", 2, "--k", 4, "--max-eval", 6, "--device", "cpu",
            "--data-dir", tiny_data, "--no-figures", "--out", tmp_path / "runs", "--sweep-dir", tmp_path / "sweep"]
    result = run_script("sweep.py", *args)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr and "\x1b[" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("sweep: ")] == ["sweep: 1 of 2 runs done, 0 failed",
                                                                      "sweep: 2 of 2 runs done, 0 failed"]
    assert sum(line.startswith("trained ") for line in lines) == 2


# ---------------------------------------------------------------- eval.py

def test_eval_of_a_random_weight_run_says_so_as_train_does(compared, tiny_checkpoint, tmp_path):
    result, out = compared
    assert RANDOM_WEIGHTS_NOTE in result.stdout.splitlines()
    run = next(d for d in out.iterdir() if "-g0.01-" in d.name)
    evaluated = run_script("eval.py", run, "--json", tmp_path / "eval.json", "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    assert RANDOM_WEIGHTS_NOTE in evaluated.stdout.splitlines()
    real = shutil.copytree(tiny_checkpoint, tmp_path / "real")  # the same weights, not marked random
    config = json.loads((real / "config.json").read_text())
    del config["minway_random_weights"]
    (real / "config.json").write_text(json.dumps(config))
    evaluated = run_script("eval.py", run, "--model", real, "--json", tmp_path / "eval.json", "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "random weights" not in evaluated.stdout


def test_eval_of_a_folder_of_runs_lists_them(compared):
    result, out = compared
    listed = run_script("eval.py", out)
    assert listed.returncode == 0, listed.stderr
    first, *lines = listed.stdout.splitlines()
    assert first == f"{out} is a folder of runs: pass one of them to measure it"
    results = {d: json.loads((d / "results.json").read_text()) for d in sorted(out.iterdir())}
    assert lines == [f"{d}  finished  accuracy {100 * r['accuracy']:.1f}%  prompt F1 {r['prompt_f1']:.2f}"
                     for d, r in results.items()]


def test_a_peft_prompt_cut_inside_a_character_shows_its_bytes(tiny_checkpoint, tmp_path):
    """Two vectors that are the embeddings of "TD" and of the first two bytes of "’" (e2 80): their
    projection under l2 is those tokens, and the table and summary show the bytes, never U+FFFD."""
    tokenizer = load_checkpoint_tokenizer(tiny_checkpoint)
    ids = tokenizer.encode("TD’s")[:2]
    write_adapter(tmp_path / "adapter", load_token_embeddings(tiny_checkpoint)[torch.tensor(ids)],
                  str(tiny_checkpoint))
    result = run_script("eval.py", tmp_path / "adapter", "--target", "TD’s", "--metric", "l2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "\ufffd" not in result.stdout
    assert "l2   nearest 'TD'" in result.stdout and "l2   nearest '\\xe2\\x80'" in result.stdout
    assert "projected: [TD\\xe2\\x80]" in result.stdout


# ---------------------------------------------------------------- reports and figures

def pair(gamma, f1, acc, model="gpt2"):
    return {"model": model, "task": "sst2", "group": "PILE", "gamma": gamma, "seed": 1, "target_name": "prompt00",
            "run_id": f"r{gamma}", "twin": "t", "acc_unconstrained": 0.9, "acc_constrained": acc,
            "relative_drop": 100 * (0.9 - acc) / 0.9, "f1": f1, "f1_unconstrained": 0.1, "length": 4,
            "dev_unconstrained": 0.88, "dev_constrained": acc - 0.02, "random_weights": False}


def test_reports_give_prompt_f1_from_0_to_1_and_accuracies_in_percent():
    rows = aggregate([pair(0.003, 0.5, 0.85), pair(0.01, 0.99, 0.8)])
    report = {"sweep_dir": "sweeps/size", "settings": {"plan": "size"}, "counts": {"done": 4, "failed": 0,
              "pending": 0}, "random_weights": False, "rows": rows, "averages": [], "true_against_irrelevant": [],
              "chosen_gamma": choose_gammas(rows), "failed": [], "data_notes": []}
    markdown = to_markdown(report)
    row = ("| gpt2 | sst2 | PILE | 0.003 | 4.0 | 1 | 5.6 ± 0.0 | 90.0 ± 0.0 → 85.0 ± 0.0 | 0.50 ± 0.00 | "
           "88.0 ± 0.0 → 83.0 ± 0.0 |")
    assert row in markdown
    chosen = ("| gpt2 | sst2 | PILE | 0.01 | 4.0 | 1 | 11.1 ± 0.0 | 90.0 ± 0.0 → 80.0 ± 0.0 | 0.99 ± 0.00 | "
              "88.0 ± 0.0 → 78.0 ± 0.0 | yes |")
    assert chosen in markdown and "| prompt F1 (0 to 1) |" in markdown and "| F1 > 0.98 |" in markdown
    assert "50.0" not in markdown and "99.0" not in markdown


def edges_are_blank(png):
    """Whether the first and last columns of pixels are all background: nothing drawn is cut there."""
    image = imread(png)[..., :3]
    return bool((image[:, :2] == 1).all() and (image[:, -2:] == 1).all())


@pytest.mark.parametrize("name", ["c-random-gpt2-prompt00-g0.01-s1-1d7e22b6",  # the issue's
                                  "topic-a-checkpoint-of-my-own-named-at-some-length-Write-a-question-about-t-g0.01-"
                                  "s1-1d7e22b6"])
def test_the_title_of_the_positions_figure_fits(compared, tmp_path, name):
    _, out = compared
    run = shutil.copytree(next(d for d in out.iterdir() if "-g0.01-" in d.name), tmp_path / name)
    path = figures.positions_figure(figures.require_matplotlib(), run, tmp_path / "positions.png")
    assert edges_are_blank(path)


def test_the_titles_of_the_gamma_figure_fit(tmp_path):
    model = "a-checkpoint-of-my-own-with-a-long-name-in-a-folder-of-checkpoints"
    rows = aggregate([pair(0.003, 0.5, 0.85, model), pair(0.01, 0.99, 0.8, model)])
    path = figures.gamma_figure(figures.require_matplotlib(), rows, tmp_path / "gamma.png")
    assert edges_are_blank(path)
