"""The runs a directory holds, told from their files alone (no torch, no model): what a ``--resume``
of a run that does not exist, or a folder of runs given to ``eval.py``, is answered with."""
import json
from pathlib import Path

from minway.errors import MinwayError
from minway.run.files import read_json
from minway.run.suggest import missing_path_advice
from minway.run.validation import flag

PROMPT = "prompt.safetensors"
MAX_CONFIG = 2 ** 20  # a run's config.json is a few KB (a task file's definition included)
MAX_RESULTS = 2 ** 30  # minway.run.storage.MAX_STATE_FILE


def runs_in(directory):
    """The run directories directly inside ``directory`` (those holding config.json or a prompt), by name."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(d for d in directory.iterdir() if d.is_dir() and not d.is_symlink()
                  and ((d / "config.json").is_file() or (d / PROMPT).is_file()))


def state_of(run_dir):
    run_dir = Path(run_dir)
    if (run_dir / "results.json").is_file():
        return "finished"
    return "unfinished" if (run_dir / "checkpoint.safetensors").is_file() else "not started"


def _stored_config(run_dir):
    try:
        stored = read_json(Path(run_dir) / "config.json", "run configuration", MAX_CONFIG)
    except MinwayError:  # unreadable or absent: not a run to compare with
        return None
    return stored if isinstance(stored, dict) else None


def _shown(name, value):
    if value is None:
        return f"no {flag(name)}"
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"{flag(name)} {value:g}" if isinstance(value, float) else f"{flag(name)} {value}"


def same_prompt_otherwise(out, config):
    """[(run directory, the options that make it another run, as flags)] for each run in ``out`` that
    trains ``config``'s task towards its target with other options (another --steps, say)."""
    wanted = json.loads(json.dumps(config.result_defining(), allow_nan=False))  # as config.json holds it
    found = []
    for run_dir in runs_in(out):
        stored = _stored_config(run_dir)
        if stored is None or stored.get("task") != wanted["task"] or stored.get("target") != wanted["target"]:
            continue
        other = [_shown(name, stored.get(name)) for name in wanted if stored.get(name) != wanted[name]]
        if other and run_dir.name != config.run_id():
            found.append((run_dir, other))
    return found


def require_resumable(out, configs):
    """Refuse ``--resume`` when none of ``configs`` (a run, and its twin with --compare) has a directory in
    ``out``: say which runs of the same task and target exist, and how to train a prompt for longer."""
    out = Path(out)
    if any((out / c.run_id()).is_dir() for c in configs):
        return
    config = configs[0]
    others = same_prompt_otherwise(out, config)
    if not others:
        raise MinwayError(f"--resume: there is no run {out / config.run_id()} to continue, nor any of this task and "
                          f"target in {out}: drop --resume to start it")
    listed = "; ".join(f"{d.name} ({', '.join(other)}, {state_of(d)})" for d, other in others[:5])
    more = f" and {len(others) - 5} more" if len(others) > 5 else ""
    raise MinwayError(f"--resume: there is no run {out / config.run_id()} to continue; {out} holds this task and "
                      f"target with other options: {listed}{more}. To use one of those, pass its options; to start "
                      f"this run, drop --resume (a finished prompt is not trained further: a run of more --steps is "
                      f"another run, its learning rate decaying over all its steps from the first)")


def listing(runs):
    """A line per run: its name, its state and, when it has finished, its accuracy and prompt F1."""
    lines = []
    for run_dir in runs:
        state, measures = state_of(run_dir), ""
        if state == "finished":
            try:
                results = read_json(run_dir / "results.json", "results file", MAX_RESULTS)
            except MinwayError:
                results = None
            if isinstance(results, dict) and all(_is_number(results.get(k)) for k in ("accuracy", "prompt_f1")):
                measures = f"  accuracy {100 * results['accuracy']:.1f}%  prompt F1 {results['prompt_f1']:.2f}"
        lines.append(f"{run_dir}  {state}{measures}")
    return lines


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def prompt_file(given):
    """The prompt.safetensors of a run, given as its directory or as the file. Where there is none, a
    one-line error that says what is there: the paths nearest a missing one, the runs of a folder of
    runs, or the state of a run that has not finished."""
    path = Path(given)
    file = path / PROMPT if path.is_dir() or not path.suffix else path
    if file.exists():
        return file
    if not path.exists():
        raise MinwayError(f"{path} does not exist{missing_path_advice(path)}")
    runs = runs_in(path)
    if runs:
        listed = ", ".join(str(run) for run in runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
        raise MinwayError(f"{path} is a folder of runs, not a run: pass one of them ({listed})")
    if (path / "config.json").is_file():
        raise MinwayError(f"{path} holds no {PROMPT}: the run is {state_of(path)} (train it to its end, with "
                          f"--resume where it has a checkpoint)")
    raise MinwayError(f"{path} holds no {PROMPT}: pass the directory of a finished run")
