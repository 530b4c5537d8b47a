"""The sweep on a real (local, in-process) Ray cluster: a worker killed mid-sweep, whose chunk Ray
retries, every run done and the report made from them."""
import json
import tempfile

import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install minway[ray])")
pytestmark = pytest.mark.slow  # a Ray cluster starts

from fixtures import SHIPPED_PROMPTS, tiny_checkpoint, tiny_data  # noqa: E402,F401
from minway.experiments.report import write_report  # noqa: E402
from minway.experiments.presets import Grid  # noqa: E402
from minway.experiments.plan import expand  # noqa: E402
from minway.experiments.runner import CRASH_ONCE_ENV, run_sweep  # noqa: E402
from test_sweep import assert_report_matches_runs, tiny_fields, write_prompts  # noqa: E402


@pytest.fixture
def ray_tmpdir(monkeypatch):
    # short: Ray's socket paths live under it and must stay under the OS limit of 107 characters
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="ray"))


def plan(root, checkpoint, data_dir):
    prompts = write_prompts(root / "prompts", SHIPPED_PROMPTS)
    grid = Grid(tasks=("sst2",), groups=("PILE-4", "PILE-7"), gammas=(0.01,), seeds=(1,), models=(str(checkpoint),))
    return expand(grid, prompts, tiny_fields(data_dir))


def test_ray_sweep_with_a_worker_killed_writes_the_same_runs_and_report(tmp_path, tiny_checkpoint,  # noqa: F811
                                                                        tiny_data, ray_tmpdir, monkeypatch):
    """One cluster for both (a Ray start costs tens of seconds on two cores): the first chunk to start
    kills its worker, Ray retries it, every run is done and the report is the mean of the runs written."""
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    runs = plan(tmp_path, tiny_checkpoint, tiny_data)
    state = run_sweep(runs, tmp_path / "runs", tmp_path / "sweep", prompts_per_batch=2, ray_address="local",
                      max_retries=2, progress=False)
    assert marker.exists(), "no worker was killed: the test hook did not reach the Ray workers"
    assert state.count("done") == len(runs) == 4 and state.count("failed") == 0
    statuses = [r["status"] for r in json.loads((tmp_path / "sweep" / "sweep.json").read_text())["runs"]]
    assert statuses == ["done"] * len(runs)
    write_report(tmp_path / "sweep")
    report = assert_report_matches_runs(tmp_path / "sweep", tmp_path / "runs")
    assert {row["group"] for row in report["rows"]} == {"PILE-4", "PILE-7"}
