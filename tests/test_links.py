"""Links planted where minway keeps a run or a sweep: a run directory, a file of a run, a sweep directory or
its state that is a symbolic link is refused in one line, with and without --force and --resume, and
nothing outside --out is read, written or deleted through it."""
import hashlib

import pytest

from fixtures import assert_one_line_error, run_in_process
from fixtures import tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.run import training
from minway.run.config import RunConfig
from minway.run.storage import RUN_FILES

TARGET = "Write a question about the given fact."


def train_args(checkpoint, data, out, *extra):
    return ["--task", "sst2", "--target", TARGET, "--model", checkpoint, "--data-dir", data, "--device", "cpu",
            "--steps", 2, "--batch-size", 2, "--max-eval", 3, "--checkpoint-every", 1, "--out", out, "--no-progress",
            *extra]


def config_of(checkpoint, data):
    return RunConfig(task="sst2", target=TARGET, model=str(checkpoint), data_dir=str(data), device="cpu", steps=2,
                     batch_size=2, max_eval=3, checkpoint_every=1)


def snapshot(root):
    """Every path under ``root`` (links as links), with the content of each file."""
    return {str(p.relative_to(root)): (str(p.readlink()) if p.is_symlink() else
                                       hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def finished_elsewhere(tiny_checkpoint, tiny_data, tmp_path_factory):  # noqa: F811
    """A finished run, outside the --out of the tests: what a planted link points to."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    config = config_of(tiny_checkpoint, tiny_data)
    training.train(config, elsewhere, progress=False)
    return elsewhere, config


@pytest.mark.parametrize("flags", [(), ("--force",), ("--resume",)], ids=["plain", "force", "resume"])
def test_a_run_directory_that_is_a_link_is_refused_and_what_it_points_to_is_untouched(
        finished_elsewhere, tiny_checkpoint, tiny_data, tmp_path, monkeypatch, capsys, flags):  # noqa: F811
    elsewhere, config = finished_elsewhere
    before = snapshot(elsewhere)
    out = tmp_path / "out"
    out.mkdir()
    (out / config.run_id()).symlink_to(elsewhere / config.run_id(), target_is_directory=True)
    result = run_in_process("train.py", train_args(tiny_checkpoint, tiny_data, out, *flags))
    assert_one_line_error(result, f"the run directory {out / config.run_id()} is a symbolic link", "remove the link")
    assert snapshot(elsewhere) == before


def test_a_dangling_link_as_run_directory_is_refused_and_nothing_is_made_where_it_points(
        tiny_checkpoint, tiny_data, tmp_path, monkeypatch, capsys):  # noqa: F811
    config = config_of(tiny_checkpoint, tiny_data)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / config.run_id()).symlink_to(tmp_path / "nowhere")
    result = run_in_process("train.py", train_args(tiny_checkpoint, tiny_data, tmp_path / "out"))
    assert_one_line_error(result, "is a symbolic link")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name", RUN_FILES)
@pytest.mark.parametrize("flags", [(), ("--force",), ("--resume",)], ids=["plain", "force", "resume"])
def test_a_file_of_a_run_that_is_a_link_is_refused_and_its_target_untouched(
        tiny_checkpoint, tiny_data, tmp_path, monkeypatch, capsys, name, flags):  # noqa: F811
    config = config_of(tiny_checkpoint, tiny_data)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("a file of someone else's\n")
    run_dir = tmp_path / "out" / config.run_id()
    run_dir.mkdir(parents=True)
    (run_dir / name).symlink_to(outside / "victim")
    before = snapshot(outside)
    result = run_in_process("train.py", train_args(tiny_checkpoint, tiny_data, tmp_path / "out", *flags))
    assert_one_line_error(result, f"the run file {run_dir / name} is a symbolic link")
    assert snapshot(outside) == before
    assert (run_dir / name).is_symlink()  # not deleted either: the user decides


def test_a_sweep_run_whose_directory_is_a_link_fails_alone_and_its_target_is_untouched(
        finished_elsewhere, tiny_checkpoint, tiny_data, tmp_path):  # noqa: F811
    from minway.experiments.presets import Grid
    from minway.experiments.plan import expand
    from minway.experiments.runner import run_sweep
    from fixtures import SHIPPED_PROMPTS

    elsewhere, _ = finished_elsewhere
    grid = Grid(tasks=("sst2",), groups=("PILE-4",), gammas=(0.01,), seeds=(1,), models=(str(tiny_checkpoint),),
                targets_limit=1)
    runs = expand(grid, SHIPPED_PROMPTS, {"steps": 1, "batch_size": 2, "max_eval": 2, "k": 2, "device": "cpu",
                                          "data_dir": str(tiny_data)})
    linked, other = runs  # the constrained run and its twin
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / linked.run_id).symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(elsewhere)
    state = run_sweep(runs, tmp_path / "out", tmp_path / "sweep", prompts_per_batch=2, progress=False)
    assert state.entry[other.run_id]["status"] == "done"
    assert state.entry[linked.run_id]["status"] == "failed"
    assert "is a symbolic link" in state.entry[linked.run_id]["error"]
    assert snapshot(elsewhere) == before


@pytest.mark.parametrize("planted", ["sweep directory", "sweep state"])
@pytest.mark.parametrize("mode", ["train", "report only"])
def test_a_sweep_directory_or_state_that_is_a_link_is_refused(tiny_checkpoint, tiny_data, tmp_path, monkeypatch,  # noqa: F811
                                                              capsys, planted, mode):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sweep.json").write_text('{"out": "x", "runs": []}\n')
    if planted == "sweep directory":
        (tmp_path / "sweep").symlink_to(outside, target_is_directory=True)
    else:
        (tmp_path / "sweep").mkdir()
        (tmp_path / "sweep" / "sweep.json").symlink_to(outside / "sweep.json")
    before = snapshot(outside)
    args = ["--tasks", "sst2", "--groups", "PILE-4", "--targets-limit", 1, "--seeds", 1, "--gammas", 0.01,
            "--models", tiny_checkpoint, "--data-dir", tiny_data, "--steps", 1, "--k", 2, "--max-eval", 2,
            "--device", "cpu", "--out", tmp_path / "out", "--sweep-dir", tmp_path / "sweep", "--no-figures",
            "--no-progress", *(["--report-only"] if mode == "report only" else [])]
    result = run_in_process("sweep.py", args)
    assert_one_line_error(result, f"the {planted}", "is a symbolic link")
    assert snapshot(outside) == before
