"""A sweep's state on disk, ``<sweep-dir>/sweep.json``: the plan and where each run stands
(done, failed with its error, or pending). The sweep writes it; reports read it."""
import math
from pathlib import Path

from minway.run import validation
from minway.errors import MinwayError
from minway.run.files import atomic_write_json, plain_directory, read_json, refuse_link
from minway.run.identity import check_identity, identity_of
from minway.run.storage import MAX_STATE_FILE, read_results
from minway.tasks import get_task

STATUSES = ("done", "failed", "pending")
# what each run's entry holds, and what the report reads of it
RUN_FIELDS = ("run_id", "twin", "group", "task", "model", "target_name", "gamma", "seed", "status", "error")


def is_finished(run, out):
    """Whether the run has finished on the data and weights it would use now (checked from files: no
    model is loaded). A run finished on other files, or whose files cannot be checked, is to be trained,
    and training then says why it cannot be."""
    run_dir = Path(out) / run.run_id
    if not (run_dir / "results.json").exists():
        return False
    try:
        check_identity(run_dir, read_results(run_dir).get("identity"), identity_of(run.config))
    except MinwayError:
        return False
    return True


def _is_entry(r):
    """Whether ``r`` is a run's entry as ``SweepState`` writes it: the types the report reads, and run ids
    that name a directory inside the sweep's --out."""
    def run_id(value):
        return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\0" not in value

    def optional_text(value):
        return value is None or isinstance(value, str)

    return isinstance(r, dict) and set(RUN_FIELDS) <= set(r) and run_id(r["run_id"]) \
        and (r["twin"] is None or run_id(r["twin"])) and all(isinstance(r[k], str) for k in ("group", "task", "model")) \
        and optional_text(r["target_name"]) and optional_text(r["error"]) and r["status"] in STATUSES \
        and isinstance(r["gamma"], (int, float)) and not isinstance(r["gamma"], bool) and math.isfinite(r["gamma"]) \
        and validation.is_count(r["seed"])


class SweepState:
    """``sweep.json``: the plan and where each run stands, rewritten (atomically) after every chunk."""

    def __init__(self, sweep_dir, runs, out, settings):
        self.path = Path(sweep_dir) / "sweep.json"
        old_errors = {r["run_id"]: r.get("error") for r in self.read(sweep_dir)["runs"]} if self.path.exists() else {}
        self.data = {"settings": settings, "out": str(Path(out).resolve()), "runs": []}
        for run in runs:
            done = is_finished(run, out)
            error = None if done else old_errors.get(run.run_id)
            self.data["runs"].append({
                "run_id": run.run_id, "twin": run.twin_id, "group": run.group,
                "task": get_task(run.config.task).name, "model": run.config.model,
                "target_name": run.config.target_name, "gamma": run.config.gamma,
                "seed": run.config.seed, "status": "done" if done else "failed" if error else "pending",
                "error": error})
        self.entry = {r["run_id"]: r for r in self.data["runs"]}

    @staticmethod
    def read(sweep_dir):
        path = refuse_link(refuse_link(sweep_dir, "the sweep directory") / "sweep.json", "the sweep state")
        if not path.exists():
            raise MinwayError(f"{path} does not exist: run the sweep first")
        state = read_json(path, "sweep state", MAX_STATE_FILE, "delete it, and the sweep starts its state again "
                          "from the runs in --out")
        runs = state.get("runs") if isinstance(state, dict) else None
        if not isinstance(state, dict) or not isinstance(state.get("out"), str) or not isinstance(runs, list) \
                or not all(_is_entry(r) for r in runs):
            raise MinwayError(f"{path} is not a sweep state written by minway: delete it, and the sweep starts its "
                              f"state again from the runs in --out")
        return state

    def count(self, status):
        return sum(r["status"] == status for r in self.data["runs"])

    def record(self, errors):
        """Mark the runs of a chunk: {run_id: None (done) or the error}."""
        for run_id, error in errors.items():
            self.entry[run_id].update(status="failed" if error else "done", error=error)

    def save(self):
        plain_directory(self.path.parent, "the sweep directory")
        atomic_write_json(self.path, self.data, "the sweep state", indent=1)
