"""What a run keeps on disk: atomic writes, locks, checkpoints, prompt files and their corruption."""
import json
import os
import subprocess
import sys
from contextlib import ExitStack

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fixtures import finished_results
from minway.run import files
from minway.run import storage
from minway.run.config import RunConfig
from minway.errors import MinwayError
from minway.run.files import DirectoryLock
from minway.run.storage import (atomic_save, atomic_write_text, load_prompt, read_checkpoint, read_log, save_checkpoint,
                            save_prompt)

CONFIG = RunConfig(task="sst2", target="Write a question about the given fact.", model="gpt2", gamma=0.5,
                   steps=7, seed=3, label_map=(1, 0))
IDENTITY = {"data": "d1", "checkpoint": "c1"}


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


def fail_replace(monkeypatch):
    def replace(src, dst):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(files.os, "replace", replace)


def test_atomic_text_write_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old\n")
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert leftovers(tmp_path) == []


def test_atomic_text_write_dying_before_rename_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_text(path, "old\n")
    fail_replace(monkeypatch)
    with pytest.raises(MinwayError, match=f"cannot write {path} \\(simulated crash"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_atomic_save_dying_before_rename_keeps_old_tensors(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    old = torch.arange(6.0).reshape(2, 3)
    atomic_save({"prompt": old}, path, {"step": "4"})
    assert leftovers(tmp_path) == []
    fail_replace(monkeypatch)
    with pytest.raises(MinwayError, match=f"cannot write {path} \\(simulated crash"):
        atomic_save({"prompt": old + 100}, path, {"step": "6"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["step"] == "4"
        assert torch.equal(f.get_tensor("prompt"), old)
    assert leftovers(tmp_path) == []


def test_a_write_refused_before_the_file_exists_raises_its_own_error(tmp_path):
    # safetensors refuses a non-contiguous tensor before it creates the file: no temporary file to delete
    with pytest.raises(ValueError, match="non contiguous"):
        atomic_save({"prompt": torch.arange(6.0).reshape(2, 3).T}, tmp_path / "checkpoint.safetensors", {})
    assert list(tmp_path.iterdir()) == []


def test_temporary_names_are_unique_and_the_file_and_directory_are_flushed(tmp_path, monkeypatch):
    """Two writers of one file never share a temporary file; the data reaches the disk before the rename,
    and the rename before the write returns."""
    synced, real_fsync, real_replace, temporaries = [], os.fsync, os.replace, []

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        temporaries.append(os.path.basename(src))
        assert os.path.basename(src) in synced[-1]  # the file, flushed first
        real_replace(src, dst)
    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    path = tmp_path / "results.json"
    atomic_write_text(path, "one\n")
    assert synced[-1] == str(tmp_path)  # then the directory
    atomic_write_text(path, "two\n")
    assert len(set(temporaries)) == 2 and all(name != "results.json.tmp" for name in temporaries)
    assert path.read_text() == "two\n" and leftovers(tmp_path) == []
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~files._UMASK)  # not mkstemp's private mode


def test_a_locked_directory_refuses_a_second_holder_and_names_the_first(tmp_path):
    with DirectoryLock(tmp_path):
        with pytest.raises(MinwayError, match=rf"{tmp_path} is in use by process {os.getpid()} on "):
            with DirectoryLock(tmp_path):
                pass
    with DirectoryLock(tmp_path):  # released when its holder is done
        pass


def test_a_lock_left_by_a_killed_process_blocks_nothing(tmp_path):
    code = (f"import os, sys; sys.path.insert(0, {str(storage.Path(files.__file__).parents[1])!r})\n"
            f"from minway.run.files import DirectoryLock\n"
            f"DirectoryLock({str(tmp_path)!r}).__enter__(); print('held', flush=True); os.kill(os.getpid(), 9)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout == "held\n" and result.returncode == -9
    assert "process" in (tmp_path / "lock").read_text()  # the file stays, naming the dead holder
    with DirectoryLock(tmp_path):
        pass


def test_checkpoint_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    prompt = torch.randn(5, 8, generator=g)
    adam = {"step": torch.tensor(12.0), "exp_avg": torch.randn(5, 8, generator=g),
            "exp_avg_sq": torch.rand(5, 8, generator=g)}
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, prompt, adam, 12, IDENTITY)
    step, prompt_back, adam_back = read_checkpoint(path, 12, (5, 8), IDENTITY)
    assert step == 12
    assert torch.equal(prompt_back, prompt)
    assert adam_back["step"] == 12
    assert torch.equal(adam_back["exp_avg"], adam["exp_avg"])
    assert torch.equal(adam_back["exp_avg_sq"], adam["exp_avg_sq"])


@pytest.mark.parametrize("tensor", ["prompt", "exp_avg_sq"])
def test_any_bit_flipped_in_a_checkpoints_tensors_is_refused(tmp_path, tensor):
    """Even a flip that leaves every value finite and in range, which no other check could see."""
    g = torch.Generator().manual_seed(0)
    adam = {"step": torch.tensor(3.0), "exp_avg": torch.randn(5, 8, generator=g),
            "exp_avg_sq": torch.rand(5, 8, generator=g)}
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, torch.randn(5, 8, generator=g), adam, 3, IDENTITY)
    content = bytearray(path.read_bytes())
    header_size = int.from_bytes(content[:8], "little")
    start, end = json.loads(content[8:8 + header_size])[tensor]["data_offsets"]
    content[8 + header_size + (start + end) // 2] ^= 0x01  # a mantissa bit
    path.write_bytes(content)
    with pytest.raises(MinwayError, match="its checksum differs"):
        read_checkpoint(path, 12, (5, 8), IDENTITY)


def test_checkpoint_before_first_step_has_no_adam_state(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, torch.ones(2, 3), {}, 0, IDENTITY)
    step, prompt, adam = read_checkpoint(path, 5, (2, 3), IDENTITY)
    assert (step, adam) == (0, {})
    assert torch.equal(prompt, torch.ones(2, 3))


def test_prompt_round_trip_keeps_config_and_target(tmp_path):
    prompt = torch.randn(4, 6)
    path = tmp_path / "prompt.safetensors"
    save_prompt(path, prompt, CONFIG, [16594, 257, 1808, 546])
    prompt_back, config, target_ids = load_prompt(path)
    assert torch.equal(prompt_back, prompt)
    assert config == CONFIG and config.run_id() == CONFIG.run_id()
    assert target_ids == [16594, 257, 1808, 546]


def assert_one_line_error_naming(path, call):
    with pytest.raises(MinwayError) as error:
        call(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    return message


@pytest.mark.parametrize("keep", [0, 7, 40, -10])  # empty file, cut in the header, cut in the data
def test_truncated_prompt_file_is_a_one_line_error(tmp_path, keep):
    path = tmp_path / "prompt.safetensors"
    save_prompt(path, torch.randn(4, 6), CONFIG, [1, 2, 3, 4])
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    assert_one_line_error_naming(path, load_prompt)


def test_garbage_and_missing_prompt_files_are_one_line_errors(tmp_path):
    garbage = tmp_path / "prompt.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    assert_one_line_error_naming(garbage, load_prompt)
    assert_one_line_error_naming(tmp_path / "none.safetensors", load_prompt)
    # a valid safetensors file that is not a prompt file: no metadata
    other = tmp_path / "weights.safetensors"
    save_file({"prompt": torch.zeros(2, 2)}, str(other))
    assert_one_line_error_naming(other, load_prompt)


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, torch.randn(4, 6), {}, 2, IDENTITY)
    path.write_bytes(path.read_bytes()[:-5])
    assert "delete it" in assert_one_line_error_naming(path, lambda p: read_checkpoint(p, 5, (4, 6), IDENTITY))


ADAM = {"step": torch.tensor(2.0), "exp_avg": torch.zeros(4, 6), "exp_avg_sq": torch.ones(4, 6)}


@pytest.mark.parametrize("case, prompt, adam, step, fragment", [
    ("a step past the run's", torch.ones(4, 6), ADAM, 9, "step 9, outside this run's 0..5"),
    ("a prompt that would broadcast", torch.ones(1, 6), {}, 2, "shape (1, 6), but this run's is (4, 6)"),
    ("a prompt of the wrong length", torch.ones(5, 6), {}, 2, "shape (5, 6)"),
    ("NaN in the prompt", torch.full((4, 6), float("nan")), {}, 2, "NaN"),
    ("inf in the optimiser state", torch.ones(4, 6), {**ADAM, "exp_avg": torch.full((4, 6), float("inf"))}, 2,
     "NaN"),
    ("a negative second moment", torch.ones(4, 6), {**ADAM, "exp_avg_sq": -torch.ones(4, 6)}, 2, "inconsistent"),
    ("an optimiser ahead of the run", torch.ones(4, 6), {**ADAM, "step": torch.tensor(3.0)}, 2, "inconsistent"),
    ("an integer prompt", torch.ones(4, 6, dtype=torch.int8), {}, 2, "not float32 (prompt)"),
])
def test_a_checkpoint_that_does_not_fit_the_run_is_refused(tmp_path, case, prompt, adam, step, fragment):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, prompt, adam, step, IDENTITY)
    message = assert_one_line_error_naming(path, lambda p: read_checkpoint(p, 5, (4, 6), IDENTITY))
    assert fragment in message and "delete it" in message


def test_a_checkpoint_of_other_data_or_weights_is_refused(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, torch.ones(4, 6), {}, 2, IDENTITY)
    for key, what in (("data", "other data"), ("checkpoint", "other weights")):
        changed = {**IDENTITY, key: "changed"}
        message = assert_one_line_error_naming(path, lambda p: read_checkpoint(p, 5, (4, 6), changed))
        assert what in message and "--force" in message


def test_read_log_drops_later_steps_and_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / (s + 1)}) for s in range(5)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "lo')
    assert read_log(path, 3) == lines[:3]
    assert read_log(path, 100) == lines
    assert read_log(tmp_path / "missing.jsonl", 3) == []


@pytest.mark.parametrize("line", ["[1, 2]", '{"step": "x"}', '{"loss": 1.0}', '{"step": -1}', "\udcff\udcfe", "{{"])
def test_a_log_line_that_is_not_a_steps_entry_is_a_corrupt_log_unless_it_is_the_last(tmp_path, line):
    path = tmp_path / "log.jsonl"
    good = json.dumps({"step": 0, "loss": 1.0})
    path.write_bytes(f"{good}\n{line}\n{good}\n".encode("utf-8", "surrogateescape"))
    with pytest.raises(MinwayError, match=r"log.jsonl:2 is not the log entry of a step: delete the log"):
        read_log(path, 3)
    path.write_bytes(f"{good}\n{line}".encode("utf-8", "surrogateescape"))
    if line.startswith("{{") or "\udcff" in line:  # cut short by a kill: dropped
        assert read_log(path, 3) == [good]


@pytest.mark.parametrize("edit, fragment", [
    (lambda r: r.pop("accuracy"), "accuracy must be a finite number, got None"),
    (lambda r: r.update(accuracy="0.9"), "accuracy must be a finite number, got '0.9'"),
    (lambda r: r.update(prompt_f1=1.5), "prompt_f1 must be >= 0 and <= 1, got 1.5"),
    (lambda r: r.update(target_ids=[1, "2"]), "target_ids must be a list of token ids"),
    (lambda r: r["projections"].pop("dot"), "a projection under its metric"),
    (lambda r: r["projections"]["l2"].update(f1=None), "l2 f1 must be a finite number"),
    (lambda r: r.update(compare={"accuracy_constrained": 0.5}), "compare accuracy_unconstrained must be"),
    (lambda r: r.clear(), "must be a finite number"),
])
def test_a_results_file_of_another_shape_is_refused(tmp_path, edit, fragment):
    """What the summary and the report read of a finished run is checked when it is read back, so that an
    edited or foreign results.json is one line, not a traceback."""
    storage.write_results(tmp_path, finished_results())
    assert storage.read_results(tmp_path) == finished_results()
    results = finished_results()
    edit(results)
    (tmp_path / "results.json").write_text(json.dumps(results))
    message = assert_one_line_error_naming(tmp_path / "results.json", lambda path: storage.read_results(path.parent))
    assert fragment in message and "--force" in message


def test_a_run_directory_is_reused_or_refused_but_never_clobbered(tmp_path):
    def reusable(resume=False, force=False, identity=IDENTITY):
        return storage.reusable_results(CONFIG, tmp_path, resume, force, lambda: identity)

    assert reusable() is None and not (tmp_path / CONFIG.run_id()).exists()  # checking makes nothing
    with ExitStack() as locks:
        run_dir, finished = storage.open_run_dir(CONFIG, tmp_path, False, False, IDENTITY, locks)
        assert finished is None and json.loads((run_dir / "config.json").read_text())["seed"] == 3
        with pytest.raises(MinwayError, match="in use by process"):
            storage.open_run_dir(CONFIG, tmp_path, True, False, IDENTITY, ExitStack())
    assert reusable() is None  # stopped before its first checkpoint: nothing to continue, it starts again
    (run_dir / "checkpoint.safetensors").write_text("old")
    with pytest.raises(MinwayError, match="--resume"):
        reusable()
    results = finished_results(identity=IDENTITY)
    (run_dir / "results.json").write_text(json.dumps(results))
    with pytest.raises(MinwayError, match="--force"):
        reusable()
    assert reusable(resume=True) == results
    with pytest.raises(MinwayError, match="other data"):
        reusable(resume=True, identity={**IDENTITY, "data": "d2"})
    assert reusable(force=True) is None
    with ExitStack() as locks:  # training again from scratch keeps nothing of the old run
        assert storage.open_run_dir(CONFIG, tmp_path, False, True, IDENTITY, locks)[1] is None
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "lock"]


def sparse(path, size):
    """A file of ``size`` bytes of which none is written."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.mark.parametrize("name, read, limit", [
    ("results.json", lambda path: storage.read_results(path.parent), 2 ** 30),
    ("log.jsonl", lambda path: read_log(path, 1), 2 ** 31),
    ("prompt.safetensors", load_prompt, 2 ** 30),
    ("checkpoint.safetensors", lambda path: storage.checkpoint_step(path, 3), 2 ** 30),
])
def test_a_state_file_over_its_limit_is_refused_unread(tmp_path, name, read, limit):
    """Limits far above any real file (a log of a million steps is 300 MB), each pinned here by its value."""
    with pytest.raises(MinwayError) as error:
        read(sparse(tmp_path / name, limit + 1))
    assert f"holds {limit + 1:,} bytes, more than the {limit:,} it may" in str(error.value)
