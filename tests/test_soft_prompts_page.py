"""docs/soft-prompts.md ("Reading any soft prompt") runs as written: its bash and Python blocks,
taken from the page itself, in order, in an empty directory that sees the repository's
command lines and examples (offline, on the random checkpoint its first command makes)."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from fixtures import offline_env

pytestmark = pytest.mark.slow
PAGE = ROOT / "docs" / "soft-prompts.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def section_blocks():
    """(language, code) of each bash or python block of the page."""
    text = PAGE.read_text(encoding="utf-8")
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text) if m.group(1) in ("bash", "python")]


def test_the_section_runs_as_written(tmp_path):
    blocks = section_blocks()
    assert [language for language, _ in blocks] == ["bash", "python", "bash", "python"]
    for name in ("train.py", "eval.py", "sweep.py", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # this test's Python
    (tmp_path / "bin" / "python").chmod(0o755)
    env = offline_env(PYTHONPATH=str(ROOT), PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    printed = []
    for language, code in blocks:
        command = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0 and "Traceback" not in result.stderr, code + result.stdout + result.stderr
        printed.append(result.stdout)

    commands, exported = printed[2:]
    assert "position 7:" in commands and "position 8:" not in commands  # the 8 vectors of PEFT's prompt
    assert commands.count("prompt F1 [dot (main)]") == 3  # of PEFT's prompt, of the run trained, measured again
    assert commands.count("task accuracy (continuous prompt)") == 3
    assert "written: adapters/minway-prompt" in commands and "2 done, 0 failed, 0 pending" in commands
    [run] = (tmp_path / "runs").glob("topic-random-gpt2-Say-*")
    target_length = len(json.loads((run / "results.json").read_text())["target_ids"])
    assert exported == f"{target_length} virtual tokens\n"
