"""The runs an --out holds, told from their files: --resume of a run that does not exist (another
--steps, say) is refused with the runs of the same task and target there; a missing run given
to eval.py or to the adapter export gets the nearest names."""
import json
import subprocess
import sys
from dataclasses import asdict, replace

import pytest

from conftest import ROOT
from fixtures import assert_one_line_error, offline_env, run_in_process, run_script
from fixtures import tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.errors import MinwayError
from minway.run.config import RunConfig
from minway.run.run_dirs import require_resumable

TARGET = "Write a question about the given fact."


def args_of(checkpoint, data_dir, out, steps, *extra):
    return ["--task", "sst2", "--target", TARGET, "--model", checkpoint, "--data-dir", data_dir, "--out", out,
            "--device", "cpu", "--batch-size", 2, "--max-eval", 4, "--steps", steps, "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished(tiny_checkpoint, tiny_data, tmp_path_factory):
    """runs/ holding one finished run of 4 steps."""
    out = tmp_path_factory.mktemp("runs")
    result = run_script("train.py", *args_of(tiny_checkpoint, tiny_data, out, 4))
    assert result.returncode == 0, result.stderr
    [run] = out.iterdir()
    return out, run


@pytest.mark.parametrize("changed", [["--steps", 8], ["--steps", 2], ["--lr", 0.02]])
def test_resume_of_a_run_of_other_options_names_the_run_there_and_trains_nothing(finished, tiny_checkpoint,
                                                                                 tiny_data, monkeypatch, capsys,
                                                                                 changed):
    out, run = finished
    steps = changed[1] if changed[0] == "--steps" else 4
    args = args_of(tiny_checkpoint, tiny_data, out, steps, *([] if changed[0] == "--steps" else changed), "--resume")
    result = run_in_process("train.py", args)
    shown = "--steps 4" if changed[0] == "--steps" else "--lr 0.01"
    line = assert_one_line_error(result, "--resume: there is no run", f"{run.name} ({shown}, finished)",
                                 "drop --resume", "a run of more --steps is another run")
    assert line.count("(") == 2  # the one run there, and the note on a finished prompt
    assert [d.name for d in out.iterdir()] == [run.name]


def test_resume_of_a_target_with_no_run_at_all_says_so(finished, tiny_checkpoint, tiny_data, monkeypatch, capsys):
    out, run = finished
    args = args_of(tiny_checkpoint, tiny_data, out, 4, "--resume")
    args[args.index(TARGET)] = "Another target."
    result = run_in_process("train.py", args)
    assert_one_line_error(result, "nor any of this task and target", "drop --resume to start it")
    assert [d.name for d in out.iterdir()] == [run.name]


def config_dir(out, config, *files):
    directory = out / config.run_id()
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(asdict(config)))
    for name in files:
        (directory / name).write_text("")
    return directory


@pytest.mark.parametrize("present", ["run", "twin", "both"])
def test_resume_goes_on_where_the_run_or_with_compare_its_twin_has_a_directory(tmp_path, present):
    config = RunConfig(task="sst2", target=TARGET, model="gpt2", steps=8)
    twin = replace(config, gamma=0.0)
    for which in ("run", "twin"):
        if present in (which, "both"):
            config_dir(tmp_path, config if which == "run" else twin, "checkpoint.safetensors")
    require_resumable(tmp_path, [config, twin])
    if present != "twin":
        require_resumable(tmp_path, [config])
    else:
        with pytest.raises(MinwayError, match=r"\(--gamma 0, unfinished\)"):
            require_resumable(tmp_path, [config])  # without --compare the twin is another run


def test_resume_lists_five_runs_of_other_options_and_counts_the_rest(tmp_path):
    config = RunConfig(task="sst2", target=TARGET, model="gpt2")
    for steps in range(10, 17):
        config_dir(tmp_path, replace(config, steps=steps))
    config_dir(tmp_path, replace(config, target="Something else."))  # not of this target: not listed
    with pytest.raises(MinwayError) as error:
        require_resumable(tmp_path, [config])
    message = str(error.value)
    assert message.count("(--steps 1") == 5 and "and 2 more" in message and "Something" not in message


def python(*args):
    """``python args...`` in the repository root, offline."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env=offline_env(), timeout=300)


@pytest.mark.parametrize("command", [["eval.py"], ["-m", "minway.run.adapters", "export"]])
def test_a_missing_run_gets_the_runs_closest_to_it(finished, tmp_path, command):
    out, run = finished
    typed = out / run.name[:-3]  # its hash cut short
    result = python(*command, typed, *([tmp_path / "adapter"] if "export" in command else []))
    assert_one_line_error(result, f"{typed} does not exist: did you mean {run}?")


def test_exporting_a_folder_of_runs_names_some_of_them(finished, tmp_path):
    out, run = finished
    result = python("-m", "minway.run.adapters", "export", out, tmp_path / "adapter")
    assert_one_line_error(result, f"{out} is a folder of runs, not a run: pass one of them ({run})")
