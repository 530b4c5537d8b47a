"""Faults of the machine, not of the input: a full disk, a read-only file system or a file where a directory
is needed at each write of a run is one line that names the file, the reason and what to do, leaves no
temporary file and loses nothing written before; every JSON file minway writes is strict JSON, a measure
that is not finite written as null with a note; a checkpoint or prompt file that holds what no run
writes is refused."""
import ast
import errno
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from conftest import ROOT
from fixtures import assert_one_line_error, run_in_process
from fixtures import tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.errors import MinwayError
from minway.run import files, storage, training
from minway.run.cli import run_cli
from minway.run.config import RunConfig
from minway.run.storage import load_prompt, read_checkpoint, save_checkpoint, save_prompt

pytestmark = pytest.mark.slow  # end to end, fault by fault

TARGET = "Write a question about the given fact."
STEPS = 3
ADVICE = {errno.ENOSPC: "free space on that file system, or write elsewhere",
          errno.EROFS: "that file system is read-only: write elsewhere"}


def train_args(checkpoint, data, out, *extra):
    return ["--task", "sst2", "--target", TARGET, "--model", checkpoint, "--data-dir", data, "--device", "cpu",
            "--steps", STEPS, "--batch-size", 2, "--max-eval", 3, "--checkpoint-every", 1, "--out", out,
            "--no-progress", *extra]


def config_of(checkpoint, data):
    return RunConfig(task="sst2", target=TARGET, model=str(checkpoint), data_dir=str(data), device="cpu",
                     steps=STEPS, batch_size=2, max_eval=3, checkpoint_every=1)


def temporary_files(root):
    return [p for p in Path(root).rglob("*") if ".tmp" in p.name]


def os_error(code):
    return OSError(code, os.strerror(code))


class Fault:
    """Makes the ``nth`` write (from 1) of the file ``name`` fail with the OSError of ``code``, at the point
    where such a write fails: the temporary file's flush to disk of an atomic write, safetensors' own write
    (which reports the OS error as its own error), the append of a log line, the lock's file."""

    def __init__(self, monkeypatch, name, code, nth=1, where="fsync"):
        self.name, self.code, self.nth, self.count = name, code, nth, 0
        install = {"fsync": self._fsync, "safetensors": self._safetensors, "log line": self._log,
                   "lock": self._lock, "mkdir": self._mkdir}[where]
        install(monkeypatch)

    def due(self):
        self.count += 1
        return self.count == self.nth

    def _fsync(self, monkeypatch):
        real = os.fsync

        def fsync(fd):
            if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{self.name}.") and self.due():
                raise os_error(self.code)
            real(fd)
        monkeypatch.setattr(files.os, "fsync", fsync)

    def _safetensors(self, monkeypatch):
        real = storage.save_file

        def save(tensors, path, metadata=None):
            if Path(path).name.startswith(f".{self.name}.") and self.due():
                raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(self.code)} "
                                      f"(os error {self.code})")
            real(tensors, path, metadata=metadata)
        monkeypatch.setattr(storage, "save_file", save)

    def _log(self, monkeypatch):
        fault = self

        class FullLog:
            def __init__(self, path, mode):
                self.file = open(path, mode)
                self.name, self.flush, self.close = self.file.name, self.file.flush, self.file.close

            @property
            def closed(self):
                return self.file.closed

            def write(self, text):
                if fault.due():
                    raise os_error(fault.code)
                return self.file.write(text)
        monkeypatch.setattr(training, "open", FullLog, raising=False)

    def _lock(self, monkeypatch):
        real = os.open

        def open_(path, flags, mode=0o777, **kwargs):
            if str(path).endswith("/" + self.name) and self.due():
                raise os_error(self.code)
            return real(path, flags, mode, **kwargs)
        monkeypatch.setattr(files.os, "open", open_)

    def _mkdir(self, monkeypatch):
        real = Path.mkdir

        def mkdir(path, *args, **kwargs):
            if path.name == self.name and self.due():
                raise os_error(self.code)
            return real(path, *args, **kwargs)
        monkeypatch.setattr(Path, "mkdir", mkdir)


# (file, where its write fails, which write of it, what the error calls it); a run of 3 steps writes
# config.json once, the log once (its steps kept), a line per step, a checkpoint per step, then its results
WRITES = [
    ("checkpoint.safetensors", "safetensors", 2, "the checkpoint"),  # safetensors' own error, on a full disk
    ("checkpoint.safetensors", "fsync", 2, "the checkpoint"),
    ("config.json", "fsync", 1, "the run's configuration"),
    ("log.jsonl", "fsync", 1, "the log"),
    ("log.jsonl", "log line", 2, "the log"),
    ("prompt.safetensors", "safetensors", 1, "the prompt"),
    ("results.json", "fsync", 1, "the results"),
    ("summary.txt", "fsync", 1, "the summary"),
    ("lock", "lock", 1, "the lock"),
]


def train(args):
    import train as train_cli
    train_cli.main(list(map(str, args)))


def stored_step(run_dir):
    """The step of the run's checkpoint, read (and so checked whole) as a resume reads it; None: no checkpoint."""
    path = run_dir / "checkpoint.safetensors"
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        shape, identity = tuple(f.get_slice("prompt").get_shape()), json.loads(f.metadata()["identity"])
    return read_checkpoint(path, STEPS, shape, identity)[0]


# the step of the checkpoint a run holds when that write fails (None: none yet): a checkpoint after every step
STORED_STEP = {("checkpoint.safetensors", "safetensors"): 1, ("checkpoint.safetensors", "fsync"): 1,
               ("config.json", "fsync"): None, ("log.jsonl", "fsync"): None, ("log.jsonl", "log line"): 1,
               ("prompt.safetensors", "safetensors"): STEPS, ("results.json", "fsync"): STEPS,
               ("summary.txt", "fsync"): STEPS, ("lock", "lock"): None}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["full disk", "read-only"])
@pytest.mark.parametrize("name, where, nth, what", WRITES, ids=[f"{w[0]} ({w[1]})" for w in WRITES])
def test_a_write_that_fails_is_one_line_and_the_run_continues_from_what_was_written(
        tiny_checkpoint, tiny_data, tmp_path, monkeypatch, capsys, code, name, where, nth, what):  # noqa: F811
    out = tmp_path / "out"
    run_dir = out / config_of(tiny_checkpoint, tiny_data).run_id()
    with monkeypatch.context() as patch:
        fault = Fault(patch, name, code, nth, where)
        result = run_in_process("train.py", train_args(tiny_checkpoint, tiny_data, out))
    assert fault.count >= nth, "the fault was never reached: the test would mean nothing"
    assert_one_line_error(result, f"cannot write {what} {run_dir / name} ({os.strerror(code)}): {ADVICE[code]}")
    assert temporary_files(tmp_path) == []
    # nothing written before is lost: the checkpoint there is whole, the last before the failed write
    assert stored_step(run_dir) == STORED_STEP[name, where]
    # and with the disk writable again, the same command continues the run from it
    train(train_args(tiny_checkpoint, tiny_data, out, *(["--resume"] if stored_step(run_dir) else [])))
    assert json.loads((run_dir / "results.json").read_text())["config"]["steps"] == STEPS


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["full disk", "read-only"])
def test_a_run_directory_that_cannot_be_made_is_one_line(tiny_checkpoint, tiny_data, tmp_path, monkeypatch,  # noqa: F811
                                                          capsys, code):
    run_id = config_of(tiny_checkpoint, tiny_data).run_id()
    with monkeypatch.context() as patch:
        Fault(patch, run_id, code, where="mkdir")
        result = run_in_process("train.py", train_args(tiny_checkpoint, tiny_data, tmp_path))
    assert_one_line_error(result, f"cannot write the run directory {tmp_path / run_id} ({os.strerror(code)}): "
                                  f"{ADVICE[code]}")


def test_a_file_where_the_run_directory_is_needed_is_one_line(tiny_checkpoint, tiny_data, tmp_path, monkeypatch,  # noqa: F811
                                                              capsys):
    run_id = config_of(tiny_checkpoint, tiny_data).run_id()
    (tmp_path / run_id).write_text("not a directory")
    result = run_in_process("train.py", train_args(tiny_checkpoint, tiny_data, tmp_path))
    assert_one_line_error(result, f"cannot write the run directory {tmp_path / run_id}",
                          "a file stands where a directory is needed: move it away, or write elsewhere")
    assert (tmp_path / run_id).read_text() == "not a directory"


def test_a_file_where_the_sweep_directory_is_needed_is_one_line(tiny_checkpoint, tiny_data, tmp_path, monkeypatch,  # noqa: F811
                                                                capsys):
    (tmp_path / "sweep").write_text("not a directory")
    args = ["--tasks", "sst2", "--groups", "PILE-4", "--targets-limit", 1, "--seeds", 1, "--models", tiny_checkpoint,
            "--data-dir", tiny_data, "--device", "cpu", "--out", tmp_path / "out", "--sweep-dir",
            tmp_path / "sweep" / "inner", "--no-figures", "--no-progress"]
    result = run_in_process("sweep.py", args)
    assert_one_line_error(result, str(tmp_path / "sweep"), "is a file, not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a directory whatever its mode")
def test_a_directory_without_write_permission_is_one_line(tiny_checkpoint, tiny_data, tmp_path, monkeypatch,  # noqa: F811
                                                          capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out").chmod(0o555)
    try:
        result = run_in_process("train.py", train_args(tiny_checkpoint, tiny_data, tmp_path / "out"))
    finally:
        (tmp_path / "out").chmod(0o755)
    assert_one_line_error(result, "cannot write the run directory", "Permission denied", "you may not write there")


def test_eval_json_on_a_read_only_file_system_is_one_line(finished_run, monkeypatch, capsys):
    run_dir = finished_run
    with monkeypatch.context() as patch:
        Fault(patch, "eval.json", errno.EROFS)
        result = run_in_process("eval.py", [run_dir, "--device", "cpu", "--no-progress"])
    assert_one_line_error(result, f"cannot write the measures {run_dir / 'eval.json'} (Read-only file system)")


def test_an_adapter_on_a_full_disk_is_one_line(finished_run, tmp_path, monkeypatch, capsys):
    from minway.run import adapters

    Fault(monkeypatch, "adapter_model.safetensors", errno.ENOSPC, where="safetensors")
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: adapters.main(["export", str(finished_run), str(tmp_path / "adapter")]))
    assert exit_.value.code == 2
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    assert capsys.readouterr().err == \
        f"error: cannot write the adapter {weights} (No space left on device): {ADVICE[errno.ENOSPC]}\n"
    assert temporary_files(tmp_path) == []


# --- strict JSON ---------------------------------------------------------------------------------------

def strict_json(text):
    """JSON as RFC 8259 defines it: Python's parser, told to refuse its NaN and Infinity extensions."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def finished_run(tiny_checkpoint, tiny_data, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("runs")
    config = config_of(tiny_checkpoint, tiny_data)
    training.train(config, out, progress=False)
    return out / config.run_id()


def test_a_prompt_past_float32_measures_to_strict_json_with_nulls_and_a_note(finished_run, tmp_path, capsys):
    import eval as eval_cli

    prompt, config, target_ids = load_prompt(finished_run / "prompt.safetensors")
    (tmp_path / "huge").mkdir()
    save_prompt(tmp_path / "huge" / "prompt.safetensors", prompt * 1e30, config, target_ids)  # finite, as float32
    eval_cli.main([str(tmp_path / "huge"), "--device", "cpu", "--no-progress"])
    measures = strict_json((tmp_path / "huge" / "eval.json").read_text())
    assert measures["c_dist"] is None and measures["not_finite"]["c_dist"] == "inf"
    assert all(measures["not_finite"][where] in ("inf", "-inf", "nan") for where in measures["not_finite"])
    out = capsys.readouterr().out
    assert "c-dist to target: not finite" in out and "not finite, so written as null: c_dist (inf)" in out


def test_a_log_line_of_a_value_past_float32_is_strict_json_with_a_null_and_a_note(tmp_path):
    with open(tmp_path / "log.jsonl", "w") as log:
        training._write_log(log, {"step": 3, "loss": 1.5, "distance": float("inf"), "ce": float("nan")})
    entry = strict_json((tmp_path / "log.jsonl").read_text())
    assert entry == {"step": 3, "loss": 1.5, "distance": None, "ce": None,
                     "not_finite": {"distance": "inf", "ce": "nan"}}


def test_every_json_file_of_a_run_a_sweep_and_eval_is_strict_json(finished_run, tiny_checkpoint, tiny_data,  # noqa: F811
                                                                  tmp_path):
    import eval as eval_cli
    from fixtures import SHIPPED_PROMPTS
    from minway.experiments.presets import Grid
    from minway.experiments.report import write_report
    from minway.experiments.plan import expand
    from minway.experiments.runner import run_sweep

    eval_cli.main([str(finished_run), "--device", "cpu", "--no-progress"])
    grid = Grid(tasks=("sst2",), groups=("PILE-4",), gammas=(0.01,), seeds=(1,), models=(str(tiny_checkpoint),),
                targets_limit=1)
    runs = expand(grid, SHIPPED_PROMPTS, {"steps": 1, "k": 2, "max_eval": 2, "device": "cpu",
                                          "data_dir": str(tiny_data)})
    run_sweep(runs, tmp_path / "out", tmp_path / "sweep", progress=False)
    write_report(tmp_path / "sweep")
    written = [*finished_run.glob("*.json*"), *(tmp_path / "out").rglob("*.json*"), *(tmp_path / "sweep").glob("*.json")]
    assert {p.name for p in written} >= {"config.json", "results.json", "eval.json", "log.jsonl", "sweep.json",
                                         "report.json"}
    for path in written:
        for text in (path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]):
            strict_json(text)


def json_dumps_calls():
    """Every json.dump / json.dumps call of the product's code: (file, line, whether it passes allow_nan=False)."""
    sources = [*ROOT.glob("*.py"), *(ROOT / "minway").rglob("*.py"), *(ROOT / "weights").rglob("*.py"),
               *(ROOT / "benchmarks").rglob("*.py")]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("dump", "dumps") and getattr(node.func.value, "id", None) == "json":
                strict = any(k.arg == "allow_nan" and isinstance(k.value, ast.Constant) and k.value.value is False
                             for k in node.keywords)
                yield source.relative_to(ROOT), node.lineno, strict


def test_every_json_that_minway_writes_refuses_nan_and_infinity():
    """The class, not the instance: a JSON writer added without allow_nan=False fails here (JSON has no NaN
    or Infinity; Python writes them unless told not to)."""
    calls = list(json_dumps_calls())
    assert any(str(f) == "minway/run/files.py" for f, _, _ in calls)  # json_text, which the others use
    assert [(str(f), line) for f, line, strict in calls if not strict] == []
    with pytest.raises(ValueError):
        files.json_text({"c_dist": float("inf")})


# --- what no run writes ----------------------------------------------------------------------------------

IDENTITY = {"data": "d", "checkpoint": "c"}


def test_a_checkpoint_with_a_tensor_no_run_writes_is_refused(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, torch.ones(4, 6), {}, 2, IDENTITY)
    assert read_checkpoint(path, 5, (4, 6), IDENTITY)[0] == 2  # as a run writes it
    tensors = {"prompt": torch.ones(4, 6), "extra": torch.zeros(2)}
    save_file(tensors, str(path), metadata={"step": "2", "adam_step": "0", "identity": json.dumps(IDENTITY)})
    with pytest.raises(MinwayError, match=r"holds tensors a run does not write \(extra\): it is not this run's "
                                          r"checkpoint; delete it"):
        read_checkpoint(path, 5, (4, 6), IDENTITY)


def test_a_checkpoint_or_prompt_of_float64_is_refused(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_file({"prompt": torch.ones(4, 6, dtype=torch.float64)}, str(path),
              metadata={"step": "2", "adam_step": "0", "identity": json.dumps(IDENTITY)})
    with pytest.raises(MinwayError, match=r"holds tensors that are not float32 \(prompt\)"):
        read_checkpoint(path, 5, (4, 6), IDENTITY)
    config = RunConfig(task="sst2", target=TARGET)
    save_prompt(tmp_path / "prompt.safetensors", torch.ones(3, 6), config, [1, 2, 3])
    with safe_open(str(tmp_path / "prompt.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    save_file({"prompt": torch.ones(3, 6, dtype=torch.float64)}, str(tmp_path / "prompt.safetensors"), metadata)
    with pytest.raises(MinwayError, match="type torch.float64 for 3 target tokens .minway writes float32"):
        load_prompt(tmp_path / "prompt.safetensors")
    save_file({"prompt": torch.ones(3, 6), "extra": torch.ones(1)}, str(tmp_path / "prompt.safetensors"), metadata)
    with pytest.raises(MinwayError, match=r"holds tensors besides its prompt \(extra\)"):
        load_prompt(tmp_path / "prompt.safetensors")
