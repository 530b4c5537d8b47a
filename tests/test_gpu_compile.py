"""Every kernel configuration the CUDA path can choose compiles for sm_80 and sm_90, within the
shared memory one block may have there, and the hot ones keep their values in registers.

The check is ``python -m minway.kernels.gpu_compile``, run in a process of its own: Triton compiles
nothing under TRITON_INTERPRET, which this test session sets. A few minutes on two cores;
``-m "not compile"`` leaves it out.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.compile
triton = pytest.importorskip("triton")
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


@pytest.mark.skipif(not PTXAS.is_file(), reason=f"this Triton has no bundled ptxas ({PTXAS})")
def test_every_configuration_compiles_within_the_gpu_limits(tmp_path):
    from minway.kernels.gpu_compile import configurations

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "compile.json"
    done = subprocess.run([sys.executable, "-m", "minway.kernels.gpu_compile", "--arch", "80", "90", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.is_file(), done.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert len(results) == len(configurations([80, 90]))
    problems = [f"sm_{r['arch']} {r['name']}: {'; '.join(r['problems'])} {r.get('error', '')[:300]}"
                for r in results if r["problems"]]
    assert problems == [], "\n".join(problems)
    assert all(r["shared"] <= r["shared_limit"] for r in results)
    assert not [r["name"] for r in results if r["hot"] and (r["spill_stores"] or r["spill_loads"])]
    assert done.returncode == 0, done.stdout[-2000:]
    # each distinct configuration compiled once: one projection kernel serves every vocabulary, and
    # grouped heads (a loop over the group in dkdv) compile apart from plain multi-head attention
    by_name = {(r["arch"], r["name"]): r for r in results}
    large = [r for r in results if "vocab" in r]
    assert large and all("same_as" in r and "vocab" not in by_name[r["arch"], r["same_as"]] for r in large)
    grouped = [r for r in results if "heads" in r]
    assert grouped and not [r["name"] for r in grouped if "same_as" in r]
