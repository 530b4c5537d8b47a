"""A mistake is answered before torch is imported, by every entry point, and so is --help: importing
torch takes seconds (tens on a busy machine), checking a command line microseconds. Each command
runs here where torch cannot be imported at all (a stand-in package that stops the process), so
that an answer that needed torch fails the test instead of being slow."""
import subprocess
import sys

import pytest

from conftest import ROOT
from fixtures import assert_one_line_error, offline_env
from minway.errors import MinwayError
from minway.run import devices

TORCH_STOPS = "torch was imported"
NO_DRIVER = pytest.mark.skipif(devices.has_gpu_driver(), reason="this machine has a GPU driver: --device cuda "
                                                                "is for torch to judge")


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory):
    """An environment in which ``import torch`` ends the process with TORCH_STOPS (exit status 1)."""
    shim = tmp_path_factory.mktemp("no-torch")
    (shim / "torch").mkdir()
    (shim / "torch" / "__init__.py").write_text(f"raise SystemExit({TORCH_STOPS!r})\n")
    env = offline_env(PYTHONPATH=str(shim))
    env.pop("TRITON_INTERPRET", None)  # --attention triton on a CPU is a mistake only outside the interpreter
    return env


def run(command, env, tmp_path):
    """``command`` (a script or ``-m module``, then its arguments; TMP in them stands for tmp_path)."""
    command = [str(tmp_path) + part[3:] if part.startswith("TMP") else part for part in command]
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=120)


TRAIN = ["train.py", "--task", "sst2", "--target", "Write a question.", "--out", "TMP/runs"]
SWEEP = ["sweep.py", "--out", "TMP/runs", "--sweep-dir", "TMP/sweep", "--no-figures"]


@pytest.mark.parametrize("command, fragment", [
    (TRAIN + ["--steps", "0"], "--steps must be at least 1, got 0"),
    (TRAIN + ["--lr", "-1"], "--lr must be > 0"),
    (["train.py", "--task", "sts2", "--target", "x"], "unknown task 'sts2'"),
    (TRAIN + ["--attention", "triton", "--device", "cpu"], "--attention triton runs on a CUDA device"),
    (TRAIN + ["--dropout", "1"], "--dropout must be >= 0 and < 1"),
    (TRAIN + ["--model", "no-such-model"], "no checkpoint 'no-such-model'"),
    (TRAIN + ["--model", "TMP/no-such-dir"], "does not exist"),
    (TRAIN + ["--model", str(ROOT / "weights"), "--resume"], "is not a checkpoint directory"),
    (["train.py", "--task", "sst2", "--target-name", "subtask047"], "did you mean"),
    (["eval.py", "TMP/does-not-exist"], "TMP/does-not-exist does not exist"),
    (["eval.py", "TMP", "--max-eval", "0"], "--max-eval must be at least 1"),
    (["eval.py", "TMP", "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (SWEEP + ["--tasks", "sst3"], "unknown task 'sst3'"),
    (SWEEP + ["--groups", "NI,PIL"], "unknown target group 'PIL'"),
    (SWEEP + ["--steps", "0"], "--steps must be at least 1"),
    (SWEEP + ["--prompts-per-batch", "0"], "--prompts-per-batch must be at least 1"),
    (SWEEP + ["--gammas", "-1"], "each gamma must be a finite number >= 0"),
    (["-m", "minway.run.adapters", "export", "TMP/no-run", "TMP/adapter"], "TMP/no-run does not exist"),
    (["-m", "weights.random_checkpoint", "TMP/out", "--n-embd", "50", "--n-head", "3"], "is not divisible"),
])
def test_a_mistake_is_answered_without_torch(command, fragment, no_torch, tmp_path):
    result = run(command, no_torch, tmp_path)
    assert TORCH_STOPS not in result.stderr, f"{command} imported torch before answering"
    assert_one_line_error(result, fragment.replace("TMP", str(tmp_path)))


@NO_DRIVER
@pytest.mark.parametrize("command", [TRAIN + ["--device", "cuda"], ["eval.py", "TMP", "--device", "cuda:1"],
                                     SWEEP + ["--device", "cuda"]])
def test_cuda_on_a_machine_without_a_gpu_driver_is_answered_without_torch(command, no_torch, tmp_path):
    result = run(command, no_torch, tmp_path)
    assert TORCH_STOPS not in result.stderr
    assert_one_line_error(result, "--device cuda", "no GPU driver", "use --device cpu")


@pytest.mark.parametrize("module", ["minway.run.adapters", "weights.demo_checkpoint", "weights.random_checkpoint",
                                    "minway.kernels.gpu_compile", "minway.experiments.report"])
def test_the_help_of_every_module_entry_point_needs_no_torch_and_names_its_command(module, no_torch, tmp_path):
    result = run(["-m", module, "--help"], no_torch, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module}"), result.stdout[:200]


# ---------------------------------------------------------------- --device cuda, judged without torch

@pytest.fixture
def driver_files(monkeypatch, tmp_path):
    """Which of the files a GPU driver makes "exist": point devices at files in tmp_path."""
    files = [tmp_path / name for name in ("nvidiactl", "version", "kfd", "dxg")]
    monkeypatch.setattr(devices, "GPU_DRIVER_FILES", tuple(map(str, files)))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return files


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_is_refused_only_where_no_driver_is(driver_files, device):
    with pytest.raises(MinwayError, match="no GPU driver"):
        devices.check_device(device, "auto")
    for file in driver_files:  # any one of them: NVIDIA's, ROCm's or WSL's; torch judges the rest
        file.touch()
        devices.check_device(device, "auto")
        file.unlink()


@pytest.mark.parametrize("device, driver, refused", [
    ("cpu", False, True), ("cpu", True, True), ("auto", False, True), ("auto", True, False), ("cuda", True, False)])
def test_triton_attention_is_refused_where_it_would_run_on_a_cpu(driver_files, device, driver, refused,
                                                                  monkeypatch):
    if driver:
        driver_files[0].touch()
    if refused:
        with pytest.raises(MinwayError, match="--attention triton runs on a CUDA device"):
            devices.check_device(device, "triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton's interpreter runs it on a CPU, slowly
    devices.check_device(device, "triton")
