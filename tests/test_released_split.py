"""The released data protocol: the released code trains on 90 % of each training file, cut by its data
script (NumPy's seed 100), and reports on the other 10 % as a dev set; minway does the same by default,
keeps the whole file a flag away, and never calls a run of one the other."""
import gzip
import json
import re
from collections import defaultdict
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fixtures import SHIPPED_DATA, first_rows, run_in_process, write_tsv
from fixtures import tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.evaluation import summary, task_accuracy
from minway.experiments.presets import PRESETS
from minway.run import training
from minway.run.config import RunConfig
from minway.run.data import SHIPPED_SUBSET_NOTE, Example, released_split, shipped_subset_note, training_rows
from minway.run.model_and_data import Setup
from minway.run.storage import load_prompt
from minway.tasks import get_task

TARGET = "Write a question about the given fact."
# rows of the shipped training files: (trained on, dev) under the released split, measured
RELEASED_ROWS = {"sst2": (6228, 692), "sst5": (7689, 855), "agnews": (18000, 2000), "subj": (7200, 800),
                 "trec": (4906, 546)}


def released_script_cut(lines, per_label):
    """The released data script's own steps, on the lines of a training file (its header left out):
    ``np.random.seed(100)``, then ``np.random.shuffle`` of the lines in place (generate_k_shot_data.py's
    main_for_gao), or, for AG News (prepro_for_zhang), of each label's list in a defaultdict filled in the
    file's order; the first ``int(0.9 * n)`` of each list train, the rest is the dev set."""
    state = np.random.get_state()
    try:
        np.random.seed(100)
        if not per_label:
            lines = list(lines)
            np.random.shuffle(lines)
            return lines[:int(0.9 * len(lines))], lines[int(0.9 * len(lines)):]
        data = defaultdict(list)
        for line in lines:
            data[line.rsplit("\t", 1)[1]].append(line)
        for label in data:
            np.random.shuffle(data[label])
        train = [line for rows in data.values() for line in rows[:int(0.9 * len(rows))]]
        dev = [line for rows in data.values() for line in rows[int(0.9 * len(rows)):]]
        return train, dev
    finally:
        np.random.set_state(state)


def shipped_train_lines(task):
    with gzip.open(SHIPPED_DATA / task / "train.tsv.gz", "rt", encoding="utf-8") as f:
        return f.read().splitlines()[1:]


def as_lines(examples):
    return [f"{e.text}\t{e.label}" for e in examples]


@pytest.mark.parametrize("task", sorted(RELEASED_ROWS))
def test_the_released_split_of_each_shipped_file_is_the_released_scripts_cut(task):
    lines = shipped_train_lines(task)
    want_train, want_dev = released_script_cut(lines, per_label=task == "agnews")
    train, dev, path = training_rows(get_task(task), "released")
    assert as_lines(train) == want_train and as_lines(dev) == want_dev  # the same rows, in the same order
    assert (len(train), len(dev)) == RELEASED_ROWS[task]
    assert sorted(as_lines(train) + as_lines(dev)) == sorted(lines)  # every row once, on one side only
    everything, none, _ = training_rows(get_task(task), "all")
    assert as_lines(everything) == lines and none == []


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 19, 20, 21, 29, 30, 31])
@pytest.mark.parametrize("per_label", [False, True])
def test_the_cut_at_every_size_is_the_released_scripts(n, per_label):
    """The 90 % boundary around multiples of 10, where int(0.9 * n) rounds in floating point, and labels whose
    rows come interleaved (their order of first appearance is the order of the cut)."""
    examples = [Example(f"row {i}", (i * 7 + 1) % 3) for i in range(n)]
    train, dev = released_split(examples, per_label)
    assert (as_lines(train), as_lines(dev)) == released_script_cut(as_lines(examples), per_label)


def test_the_paper_s_tasks_train_on_the_released_split_by_default_and_a_task_file_on_its_whole_file():
    assert RunConfig(task="sst2", target="x").train_split == "released"
    definition = {"name": "mine", "template": " It was {}.", "label_words": ("bad", "good"), "max_input_tokens": 112,
                  "batch_size": 8, "train_file": "train.tsv", "test_file": "test.tsv"}
    assert RunConfig(task=definition, target="x").train_split == "all"


def test_a_run_written_before_the_split_existed_is_read_back_as_one_on_the_whole_file():
    """Its config.json and prompt metadata have no train_split: it trained on the whole file, and keeps its id."""
    old = {"task": "sst2", "target": "Is this movie good?", "gamma": 0.01}
    config = RunConfig.from_dict(old, "config.json")
    assert config.train_split == "all"
    assert config.run_id() == "sst2-gpt2-large-Is-this-movie-good-g0.01-s1-f39344d8"  # the id it was written under
    assert replace(config, train_split="released").run_id() != config.run_id()


def test_a_prompt_file_written_before_the_split_existed_is_measured_on_the_whole_file(tmp_path):
    config = RunConfig(task="sst2", target=TARGET, train_split="all")
    old = {key: value for key, value in asdict(config).items() if key != "train_split"}
    save_file({"prompt": torch.zeros(3, 48)}, str(tmp_path / "prompt.safetensors"),
              metadata={"format": "minway-prompt", "config": json.dumps(old), "target_ids": "[1, 2, 3]"})
    _, read_back, _ = load_prompt(tmp_path / "prompt.safetensors")
    assert read_back.train_split == "all" and read_back.run_id() == config.run_id()


@pytest.fixture(scope="module")
def released_run(tiny_checkpoint, tiny_data, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("runs")
    config = RunConfig(task="sst2", target=TARGET, model=str(tiny_checkpoint), data_dir=str(tiny_data),
                       device="cpu", steps=2, batch_size=2, max_eval=3)
    setup = Setup(config)
    return config, setup, training.train(config, out, progress=False, setup=setup), out


def test_a_run_trains_on_the_released_rows_and_reports_its_dev_accuracy(released_run, tiny_data):
    config, setup, results, out = released_run
    rows = [(text, int(label)) for text, label in first_rows("sst2", "train", 40)]
    train, dev = released_script_cut([f"{t}\t{y}" for t, y in rows], per_label=False)
    assert setup.train_inputs == setup.encode_inputs([Example(*line.rsplit("\t", 1)) for line in train])
    assert (len(setup.train_inputs), results["data"]["dev_rows"], results["data"]["file_rows"]) == (36, 4, 40)
    # the dev accuracy is the prompt's on the dev rows (the first --max-eval of them)
    dev_examples = [Example(text, int(label)) for text, label in (line.rsplit("\t", 1) for line in dev)][:3]
    prompt, _, _ = load_prompt(out / config.run_id() / "prompt.safetensors")
    expected = task_accuracy(setup.model, prompt, setup.encode_inputs(dev_examples), [e.label for e in dev_examples],
                             setup.options)
    assert results["n_dev"] == 3 and results["dev_accuracy"] == expected
    on_disk = json.loads((out / config.run_id() / "results.json").read_text())
    assert on_disk["dev_accuracy"] == expected and on_disk["data"]["train_split"] == "released"
    text = (out / config.run_id() / "summary.txt").read_text()
    assert f"dev accuracy (continuous prompt): {100 * expected:.1f}%  on 3 dev examples" in text
    assert f"training rows: 36 of the 40 of {tiny_data / 'sst2' / 'train.tsv'} (the released split" in text


def test_the_whole_file_is_a_flag_away_and_is_another_run(released_run, tiny_checkpoint, tiny_data,  # noqa: F811
                                                          tmp_path, monkeypatch, capsys):
    config, _, _, _ = released_run
    args = ["--task", "sst2", "--target", TARGET, "--model", tiny_checkpoint, "--data-dir", tiny_data, "--device", "cpu",
            "--steps", 2, "--batch-size", 2, "--max-eval", 3, "--out", tmp_path, "--no-progress"]
    import train as train_cli

    train_cli.main(list(map(str, args + ["--train-split", "all"])))
    whole = json.loads((tmp_path / replace(config, train_split="all").run_id() / "results.json").read_text())
    assert whole["data"]["train_rows"] == 40 and "dev_accuracy" not in whole
    assert not (tmp_path / config.run_id()).exists()  # the released run is another directory
    help_text = run_in_process("train.py", ["--help"]).stdout
    assert "--train-split {released,all}" in help_text and "or all, the whole file" in help_text


def test_the_shipped_agnews_subset_is_said_where_results_are_reported(tiny_checkpoint, tmp_path):  # noqa: F811
    agnews = get_task("agnews")
    assert shipped_subset_note(agnews, SHIPPED_DATA / "agnews" / "train.tsv.gz") == SHIPPED_SUBSET_NOTE["agnews"]
    write_tsv(tmp_path / "data" / "agnews" / "train.tsv", first_rows("agnews", "train", 20))
    assert shipped_subset_note(agnews, tmp_path / "data" / "agnews" / "train.tsv") is None  # a file of your own
    assert shipped_subset_note(get_task("sst2"), SHIPPED_DATA / "sst2" / "train.tsv.gz") is None
    config = RunConfig(task="agnews", target="Is it news?", model=str(tiny_checkpoint), device="cpu", steps=1, k=1,
                       max_eval=2)
    results = training.train(config, tmp_path / "runs", progress=False)
    assert results["data"]["note"] == SHIPPED_SUBSET_NOTE["agnews"]
    assert "20,000-row subset of the official 120,000 rows" in summary(results, "Is it news?")
    assert (results["data"]["file_rows"], results["data"]["train_rows"]) == (20000, 4)


def test_the_data_readme_gives_the_released_split_of_each_file():
    table = (SHIPPED_DATA / "README.md").read_text(encoding="utf-8")
    for task, (train, dev) in RELEASED_ROWS.items():
        assert re.search(rf"^\| \[{task}\].* \| {train:,} / {dev:,} \|$", table, flags=re.M), task


def test_the_presets_average_the_released_train_seeds():
    assert {preset: grid.seeds for preset, grid in PRESETS.items()} == dict.fromkeys(PRESETS, (1, 10, 100))


def test_the_download_command_without_a_network_is_one_line(tmp_path, monkeypatch, capsys):
    from minway.run import data
    from minway.run.cli import run_cli

    monkeypatch.setenv("MINWAY_OFFLINE", "1")
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: data.main(["agnews", "--to", str(tmp_path)]))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: agnews could not be downloaded: `pip install minway[datasets]`")
    assert list(tmp_path.iterdir()) == []
