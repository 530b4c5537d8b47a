"""The kernel configurations the CUDA path can choose compile for sm_80 and sm_90, within the
shared memory one block may have there, and the hot ones keep their values in registers.

The check is ``python -m minway.kernels.gpu_compile``, run in a process of its own: Triton compiles
nothing under TRITON_INTERPRET, which this test session sets. The suite compiles the pairwise subset
(every pair of settings of the grid, about 50 compiles: half a minute on two cores); the whole grid
(about 400) takes minutes and runs with ``--whole-grid``, as .ci/run does. ``-m "not compile"``
leaves both out.
"""
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from minway.kernels.gpu_compile import configurations, name, pairwise

triton = pytest.importorskip("triton")
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
needs_ptxas = pytest.mark.skipif(not PTXAS.is_file(), reason=f"this Triton has no bundled ptxas ({PTXAS})")


def compiled(tmp_path, *options):
    """The check's results for ``options``, once it has passed."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "compile.json"
    done = subprocess.run([sys.executable, "-m", "minway.kernels.gpu_compile", "--arch", "80", "90", "--json", str(out),
                           *options], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.is_file(), done.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    problems = [f"sm_{r['arch']} {r['name']}: {'; '.join(r['problems'])} {r.get('error', '')[:300]}"
                for r in results if r["problems"]]
    assert problems == [], "\n".join(problems)
    assert all(r["shared"] <= r["shared_limit"] for r in results)
    assert not [r["name"] for r in results if r["hot"] and (r["spill_stores"] or r["spill_loads"])]
    assert done.returncode == 0, done.stdout[-2000:]
    # grouped heads (a loop over the group in dkdv) compile apart from plain multi-head attention
    grouped = [r for r in results if "heads" in r]
    assert grouped and not [r["name"] for r in grouped if "same_as" in r]
    return results


@pytest.mark.compile
@needs_ptxas
def test_every_pair_of_settings_compiles_within_the_gpu_limits(tmp_path):
    results = compiled(tmp_path, "--pairs")
    assert [r["name"] for r in results] == [name(c) for c in pairwise(configurations([80, 90]))]


@pytest.mark.compile
@needs_ptxas
def test_every_configuration_compiles_within_the_gpu_limits(tmp_path, request):
    if not request.config.getoption("--whole-grid"):
        pytest.skip("the whole grid takes minutes: pytest --whole-grid (.ci/run runs it)")
    results = compiled(tmp_path)
    assert len(results) == len(configurations([80, 90]))
    # each distinct configuration compiled once: one projection kernel serves every vocabulary
    by_name = {(r["arch"], r["name"]): r for r in results}
    large = [r for r in results if "vocab" in r]
    assert large and all("same_as" in r and "vocab" not in by_name[r["arch"], r["same_as"]] for r in large)


def settings_pairs(config):
    settings = [(k, str(v)) for k, v in config.items() if k not in ("hot", "vocab", "width", "arch")]
    return set(itertools.combinations(sorted(settings), 2))


@pytest.mark.parametrize("archs", [[80], [90], [80, 90]])
def test_the_pairwise_subset_has_every_pair_of_each_architecture_and_kernel(archs):
    grid = configurations(archs)
    subset = pairwise(grid)
    assert all(any(c is g for g in grid) for c in subset) and len(subset) < len(grid) / 5
    for arch, projection in itertools.product(archs, (True, False)):
        def group(configs):
            return [c for c in configs if c["arch"] == arch and (c["kernel"] == "projection") == projection]
        assert set().union(*map(settings_pairs, group(subset))) == set().union(*map(settings_pairs, group(grid)))


def test_a_pairwise_subset_of_a_small_grid_is_found_by_brute_force():
    """On a grid small enough to try every subset, each pair is covered and no subset of fewer than 4
    configurations covers them all: the greedy choice needs at most 5 (the best has 4: Latin square)."""
    grid = [dict(kernel="projection", arch=80, a=a, b=b, c=c, hot=False) for a in range(2) for b in range(2)
            for c in range(2)]
    subset = pairwise(grid)
    pairs = set().union(*map(settings_pairs, grid))
    assert set().union(*map(settings_pairs, subset)) == pairs
    smallest = min(n for n in range(1, len(grid) + 1) for chosen in itertools.combinations(grid, n)
                   if set().union(*map(settings_pairs, chosen)) == pairs)
    assert smallest == 4 and 4 <= len(subset) <= 5
