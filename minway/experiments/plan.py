"""A sweep's plan: every run of a grid (minway.experiments.presets), each constrained run with its
unconstrained twin. Free of torch, so that the command line checks a whole plan (its tasks,
target groups and every run's options) before it imports torch."""
from dataclasses import dataclass, replace
from pathlib import Path

from minway.errors import MinwayError
from minway.experiments.presets import GROUP_FILES, Grid
from minway.run.config import RunConfig
from minway.run.files import read_json, refuse_link
from minway.run.suggest import did_you_mean
from minway.run.targets import read_prompts_file
from minway.tasks import canonical_name, get_task


MAX_STATE = 2 ** 30  # minway.run.storage.MAX_STATE_FILE, sweep.json's limit


@dataclass(frozen=True)
class PlannedRun:
    config: RunConfig
    group: str

    @property
    def run_id(self):
        return self.config.run_id()

    @property
    def twin_id(self):
        return replace(self.config, gamma=0.0).run_id()


def group_targets(prompts_dir, group, task):
    """The (name, text) targets of one group; TRUE keeps the definitions of ``task`` only."""
    if group not in GROUP_FILES:
        typo = did_you_mean(group, GROUP_FILES)
        raise MinwayError(f"unknown target group {group!r}{': ' + typo if typo else ''} (the groups are "
                          f"{', '.join(GROUP_FILES)})")
    path = Path(prompts_dir) / GROUP_FILES[group]
    if not path.exists():
        raise MinwayError(f"target group {group} needs {path}, which does not exist")
    targets = read_prompts_file(path).items()
    if group == "TRUE":  # names like "SST-2_0", "agnews_3": the task, then the definition's number
        targets = [(name, text) for name, text in targets
                   if canonical_name(name.rsplit("_", 1)[0]) == get_task(task).name]
    return list(targets)


def expand(grid: Grid, prompts_dir, run_fields=None):
    """Every run of the grid, each constrained run followed by its twin (gamma = 0) once."""
    runs = {}
    for model in grid.models:
        for task in grid.tasks:
            for group in grid.groups:
                targets = group_targets(prompts_dir, group, task)[:grid.targets_limit]
                if not targets:
                    raise MinwayError(f"target group {group} holds no target for task {get_task(task).name}")
                for name, text in targets:
                    for seed in grid.seeds:
                        twin = RunConfig(task=task, target=text, model=model, gamma=0.0, seed=seed,
                                         target_name=name, **(run_fields or {}))
                        for config in [replace(twin, gamma=g) for g in grid.gammas if g > 0] + [twin]:
                            runs.setdefault(config.run_id(), PlannedRun(config, group))
    return list(runs.values())


def other_plan(sweep_dir, runs):
    """What the state in ``sweep_dir`` (sweep.json) was made for, when that is another plan than the one
    of ``runs``; None when it is the same plan, or there is no state. (A state that cannot be read is
    left to the sweep, which says what is wrong with it.)"""
    path = refuse_link(refuse_link(sweep_dir, "the sweep directory") / "sweep.json", "the sweep state")
    try:
        state = read_json(path, "sweep state", MAX_STATE) if path.is_file() else None
    except MinwayError:
        return None
    entries = state.get("runs") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    if {e.get("run_id") for e in entries} == {run.run_id for run in runs}:
        return None
    settings = state.get("settings") if isinstance(state.get("settings"), dict) else {}
    plan = settings.get("plan") or settings.get("preset") or "unknown"
    done = sum(e.get("status") == "done" for e in entries)
    return (f"{sweep_dir} holds the state of another plan ({plan}: {len(entries)} runs, {done} done) than this "
            f"one ({len(runs)} runs)")
