"""benchmarks/gpu_check.sh --dry-run: the GPU check's whole code path on this CPU, with tiny
sizes and the kernels in Triton's interpreter, so that the script cannot rot between GPU runs."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("triton")
pytestmark = pytest.mark.slow  # about 50 s


def test_the_gpu_check_passes_its_dry_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # the interpreter running this test, whatever python3 is on PATH
    env.update(OUT=str(tmp_path), PYTHON=sys.executable, HF_HUB_CACHE=str(tmp_path / "hub"))
    (tmp_path / "hub" / "models--openai-community--gpt2-large" / "snapshots" / "abc").mkdir(parents=True)
    (tmp_path / "hub" / "models--openai-community--gpt2-large" / "snapshots" / "abc" / "model.safetensors").touch()
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [record] = [json.loads(p.read_text()) for p in tmp_path.glob("*-gpu-check-dry-run.json")]
    assert [c["name"] for c in record["checks"]] == ["compile", "projection", "attention", "model", "train"]
    assert all(c["status"] == "PASS" for c in record["checks"] if c["name"] != "train"), record["checks"]
    # the train step may only be skipped for want of simplemma, which minway's own install brings
    assert record["checks"][-1]["status"] == "PASS", record["checks"][-1]
    assert [b["name"] for b in record["benchmarks"]] == ["projection", "attention", "step", "prompts", "train"]
    assert not [line for b in record["benchmarks"] for line in b["lines"] if line.startswith("ERROR")]
    assert "FAILED" not in done.stdout and "PASS  projection" in done.stdout
    # what a GPU machine's Hugging Face cache holds is listed: real GPT-2 weights there would serve Table 2
    assert record["hub_cache"][str(tmp_path / "hub")] == {"openai-community/gpt2-large": True}
    assert f"Hugging Face cache {tmp_path / 'hub'}: openai-community/gpt2-large" in done.stdout
