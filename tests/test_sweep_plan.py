"""Which sweep a sweep directory holds: a sweep's default directory is named after what it sweeps,
its state records its plan, and a sweep refuses (and a dry run points out) a directory holding
another plan's state unless --new-plan says to replace it."""
import argparse
import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from fixtures import assert_one_line_error, run_in_process, tiny_checkpoint, tiny_data  # noqa: F401
from minway.experiments.presets import PRESETS
from minway.run.task_file import read_task_file


def tiny_args(checkpoint, out, *extra):
    """A sweep of 2 runs (one PILE-4 target, its twin) of the tiny model, a few seconds to train."""
    args = ["--models", checkpoint, "--groups", "PILE-4", "--targets-limit", 1, "--gammas", 0.01, "--steps", 2,
            "--batch-size", 2, "--k", 4, "--max-eval", 6, "--device", "cpu", "--no-figures", "--out", out, *extra]
    return [str(a) for a in args]


def sweep_state(sweep_dir):
    return json.loads((Path(sweep_dir) / "sweep.json").read_text())


@pytest.mark.parametrize("preset", list(PRESETS))
def test_the_default_directory_is_the_presets_and_a_task_files_its_own(preset):
    import sweep

    topic = ROOT / "examples" / "topic" / "task.json"
    paper = argparse.Namespace(preset=preset, task_file=None)
    mine = argparse.Namespace(preset=preset, task_file=str(topic))
    assert sweep.default_sweep_dir(paper, PRESETS[preset]) == Path("sweeps") / preset
    grid = type(PRESETS[preset])(**{**PRESETS[preset].__dict__, "tasks": (read_task_file(topic),)})
    assert sweep.default_sweep_dir(mine, grid) == Path("sweeps") / f"{preset}-topic"


def test_a_sweep_of_a_task_file_never_writes_into_the_papers_preset_directory(tiny_checkpoint, tmp_path,
                                                                              monkeypatch, capsys):
    shutil.copytree(ROOT / "examples" / "topic", tmp_path / "topic")
    monkeypatch.chdir(tmp_path)
    args = tiny_args(tiny_checkpoint, tmp_path / "runs", "--task-file", "topic/task.json", "--seeds", 1)
    result = run_in_process("sweep.py", args)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "sweeps" / "main").exists()
    state = sweep_state(tmp_path / "sweeps" / "main-topic")
    assert {r["task"] for r in state["runs"]} == {"topic"} and len(state["runs"]) == 2
    title = (tmp_path / "sweeps" / "main-topic" / "report.md").read_text().splitlines()[0]
    assert title == "# Sweep report: main, with --task-file topic/task.json --groups PILE-4 --seeds 1 --gammas " \
                    f"0.01 --models {tiny_checkpoint} --targets-limit 1"


def test_another_plan_in_a_sweep_directory_is_refused_unless_replaced(tiny_checkpoint, tiny_data, tmp_path,
                                                                      monkeypatch, capsys):
    def sweep(*extra):
        args = tiny_args(tiny_checkpoint, tmp_path / "runs", "--tasks", "sst2", "--data-dir", tiny_data,
                         "--sweep-dir", tmp_path / "sweep", *extra)
        return run_in_process("sweep.py", args)

    assert sweep("--seeds", 1).returncode == 0
    first = sweep_state(tmp_path / "sweep")
    described = f"another plan (main, with --tasks sst2 --groups PILE-4 --seeds 1 --gammas 0.01 --models " \
                f"{tiny_checkpoint} --targets-limit 1: 2 runs, 2 done) than this one (4 runs)"

    planned = sweep("--seeds", "1,2", "--dry-run")  # the plan is listed, and the state there pointed out
    assert planned.returncode == 0 and planned.stdout.splitlines()[-1].startswith(f"note: {tmp_path / 'sweep'} "
                                                                                    f"holds the state of {described}")
    assert "--new-plan" in planned.stdout.splitlines()[-1]
    assert_one_line_error(sweep("--seeds", "1,2"), described, "--sweep-dir DIR", "--new-plan")
    assert sweep_state(tmp_path / "sweep") == first  # refused before anything was written

    same = sweep("--seeds", 1, "--dry-run")
    assert same.returncode == 0 and "note:" not in same.stdout

    assert sweep("--seeds", "1,2", "--new-plan").returncode == 0
    replaced = sweep_state(tmp_path / "sweep")
    assert len(replaced["runs"]) == 4 and replaced["settings"]["plan"].endswith("--seeds 1,2 --gammas 0.01 --models "
                                                                               f"{tiny_checkpoint} --targets-limit 1")
    assert {r["run_id"] for r in first["runs"]} < {r["run_id"] for r in replaced["runs"]}  # the first two reused
    assert all(r["status"] == "done" for r in replaced["runs"])
