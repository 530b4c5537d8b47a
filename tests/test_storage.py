"""What a run keeps on disk: atomic writes, checkpoints, prompt files and their corruption."""
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minway import storage
from minway.config import RunConfig
from minway.errors import MinwayError
from minway.storage import (atomic_save, atomic_write_text, load_prompt, read_checkpoint, read_log, save_checkpoint,
                            save_prompt)

CONFIG = RunConfig(task="sst2", target="Write a question about the given fact.", model="gpt2", gamma=0.5,
                   steps=7, seed=3, label_map=(1, 0))


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


def fail_replace(monkeypatch):
    def replace(src, dst):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(storage.os, "replace", replace)


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
    with pytest.raises(OSError, match="simulated"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert leftovers(tmp_path) == []


def test_atomic_save_dying_before_rename_keeps_old_tensors(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    old = torch.arange(6.0).reshape(2, 3)
    atomic_save({"prompt": old}, path, {"step": "4"})
    assert leftovers(tmp_path) == []
    fail_replace(monkeypatch)
    with pytest.raises(OSError, match="simulated"):
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


def test_checkpoint_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    prompt = torch.randn(5, 8, generator=g)
    adam = {"step": torch.tensor(12.0), "exp_avg": torch.randn(5, 8, generator=g),
            "exp_avg_sq": torch.rand(5, 8, generator=g)}
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, prompt, adam, 12)
    step, prompt_back, adam_back = read_checkpoint(path)
    assert step == 12
    assert torch.equal(prompt_back, prompt)
    assert adam_back["step"] == 12
    assert torch.equal(adam_back["exp_avg"], adam["exp_avg"])
    assert torch.equal(adam_back["exp_avg_sq"], adam["exp_avg_sq"])


def test_checkpoint_before_first_step_has_no_adam_state(tmp_path):
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, torch.ones(2, 3), {}, 0)
    step, prompt, adam = read_checkpoint(path)
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
    save_checkpoint(path, torch.randn(4, 6), {}, 2)
    path.write_bytes(path.read_bytes()[:-5])
    assert "delete it" in assert_one_line_error_naming(path, read_checkpoint)


def test_read_log_drops_later_steps_and_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / (s + 1)}) for s in range(5)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "lo')
    assert read_log(path, 3) == lines[:3]
    assert read_log(path, 100) == lines
    assert read_log(tmp_path / "missing.jsonl", 3) == []


def test_open_run_dir_refuses_to_clobber(tmp_path):
    run_dir, finished = storage.open_run_dir(CONFIG, tmp_path, resume=False, force=False)
    assert finished is None and json.loads((run_dir / "config.json").read_text())["seed"] == 3
    # stopped before its first checkpoint (its data unreadable, say): nothing to resume, so it starts again
    assert storage.open_run_dir(CONFIG, tmp_path, resume=False, force=False) == (run_dir, None)
    storage.save_checkpoint(run_dir / "checkpoint.safetensors", torch.zeros(2, 4), {}, 1)
    with pytest.raises(MinwayError, match="holds an unfinished run: pass --resume"):
        storage.open_run_dir(CONFIG, tmp_path, resume=False, force=False)
    (run_dir / "results.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(MinwayError, match="--force"):
        storage.open_run_dir(CONFIG, tmp_path, resume=False, force=False)
    assert storage.open_run_dir(CONFIG, tmp_path, resume=True, force=False)[1] == {"accuracy": 0.5}
    assert storage.open_run_dir(CONFIG, tmp_path, resume=False, force=True)[1] is None
    assert os.path.isdir(run_dir)
