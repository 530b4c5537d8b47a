"""The paper's experiments as one resumable grid of runs (section 4 of Khashabi et al.);
its command line is sweep.py.

    python sweep.py --preset main --models gpt2-large --device cuda --dtype bf16
    python sweep.py --preset gamma --tasks sst2 --seeds 1 --dry-run
    python sweep.py --preset size --ray auto          # on a running Ray cluster

A sweep is a grid (minway.experiments.presets): tasks x target prompts x seeds x gamma x model. The
targets come in groups read from a prompts directory in the layout of the paper's
release: NI (32 Natural Instructions definitions), PILE (30 sentences), TRUE (5 true
definitions of the run's own task) and PILE-4 ... PILE-56 (PILE sentences of exactly
L tokens). Every constrained run has its unconstrained twin: gamma = 0, same target, same
seed, hence same length and same initialisation; the relative drop is per target.

Runs of one model, task and schedule train together, K prompts per batch
(``--prompts-per-batch``). The sweep state, ``<sweep-dir>/sweep.json``, says which
runs are done, failed (with the error) or pending; a finished run is never trained
again, and a killed sweep continues where it stopped. At the end the sweep writes
``report.md``, ``report.json`` and figures (see minway.experiments.report and minway.experiments.figures).
"""
import os
from collections import defaultdict
from pathlib import Path

from tqdm.auto import tqdm

from minway.errors import MinwayError
from minway.run.files import DirectoryLock, plain_directory
from minway.run.model_and_data import Setup
from minway.experiments.state import SweepState, is_finished
from minway.run.training import train, train_many

CRASH_ONCE_ENV = "MINWAY_SWEEP_CRASH_ONCE"


# ---------------------------------------------------------------- the chunks

def make_chunks(runs, prompts_per_batch):
    """Runs that may share a batch (same setup and schedule), in chunks of at most K.

    The runs are sorted by seed and target length before they are cut into chunks, so
    that padding to the longest prompt of a chunk wastes little.
    """
    together = defaultdict(list)
    for run in runs:
        together[run.config.setup_key(), run.config.schedule_key()].append(run)
    chunks = []
    for batchable in together.values():
        batchable.sort(key=lambda r: (r.config.seed, len(r.config.target), r.config.target, r.config.gamma))
        for start in range(0, len(batchable), prompts_per_batch):
            chunks.append(batchable[start:start + prompts_per_batch])
    return chunks


def print_plan(runs, out, chunks):
    done = sum(is_finished(r, out) for r in runs)
    for run in runs:
        print(f"{'done' if is_finished(run, out) else 'todo'}  {run.group:<8} {run.run_id}")
    twins = sum(r.config.gamma == 0 for r in runs)
    print(f"{len(runs)} runs ({len(runs) - twins} constrained, {twins} unconstrained twins), {done} done, "
          f"{len(runs) - done} to train in {len(chunks)} chunks")


# ---------------------------------------------------------------- training a chunk

def describe(error):
    return f"{type(error).__name__}: {error}".strip().splitlines()[0]


def train_chunk(configs, out, make_setup=Setup, progress=False):
    """Train a chunk's prompts together; {run_id: None when finished, else the error}.

    A chunk that fails as a whole (one target too long, a loss that diverges) is
    tried again run by run, so that one bad run does not sink the others.
    """
    run_ids = [c.run_id() for c in configs]
    try:
        setup = make_setup(configs[0])
    except Exception as error:  # noqa: BLE001 - any failure is recorded, the sweep goes on
        return dict.fromkeys(run_ids, describe(error))
    try:
        train_many(configs, out, resume=True, progress=progress, setup=setup)
        return dict.fromkeys(run_ids)
    except Exception as error:  # noqa: BLE001
        if len(configs) == 1:
            return {run_ids[0]: describe(error)}
    return {run_id: _train_alone(config, out, setup, progress) for run_id, config in zip(run_ids, configs)}


def _train_alone(config, out, setup, progress):
    try:
        train(config, out, resume=True, progress=progress, setup=setup)
        return None
    except Exception as error:  # noqa: BLE001
        return describe(error)


def run_locally(chunks, out, on_chunk_done, progress=False):
    setups = {}

    def cached_setup(config):  # chunks come grouped by setup: keep one model in memory at a time
        key = config.setup_key()
        if key not in setups:
            setups.clear()
            setups[key] = Setup(config)
        return setups[key]

    for chunk in chunks:
        on_chunk_done(chunk, train_chunk([r.config for r in chunk], out, cached_setup, progress))


# ---------------------------------------------------------------- training on a Ray cluster

def import_ray():
    try:
        import ray
    except ImportError:
        raise MinwayError("--ray needs Ray, which is not installed: pip install minway[ray]") from None
    return ray


def train_chunk_on_worker(configs, out):
    _crash_once_if_asked()
    return train_chunk(configs, out)


def _crash_once_if_asked():
    """Test hook: with $MINWAY_SWEEP_CRASH_ONCE naming a file that does not exist yet, the first
    chunk to start creates it and kills its worker process, as a lost node would."""
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # only one worker wins the race
    except FileExistsError:
        return
    os._exit(1)


def run_on_ray(chunks, out, address, max_retries, on_chunk_done):
    """Each chunk is one Ray task (one GPU, or one CPU on a cluster without GPUs); a task whose
    worker dies is retried up to ``max_retries`` times and resumes from the runs' checkpoints."""
    ray = import_ray()
    if address == "local":
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        needs = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {"num_cpus": 1}
        task = ray.remote(max_retries=max_retries, **needs)(train_chunk_on_worker)
        out = str(Path(out).resolve())  # the same path on every node: a shared filesystem
        pending = {task.remote([r.config for r in chunk], out): chunk for chunk in chunks}
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            chunk = pending.pop(ready)
            try:
                errors = ray.get(ready)
            except ray.exceptions.RayError as error:  # retries used up
                errors = dict.fromkeys((r.run_id for r in chunk), describe(error))
            on_chunk_done(chunk, errors)
    finally:
        ray.shutdown()


# ---------------------------------------------------------------- the whole sweep

def run_sweep(runs, out, sweep_dir, prompts_per_batch=8, ray_address=None, max_retries=3, settings=None,
              progress=True):
    """Train every unfinished run of the plan; the final SweepState. The progress bar counts runs;
    below it, locally, a bar follows the steps of the chunk in training."""
    with DirectoryLock(plain_directory(sweep_dir, "the sweep directory")):
        return _run_sweep(runs, out, sweep_dir, prompts_per_batch, ray_address, max_retries, settings, progress)


def _run_sweep(runs, out, sweep_dir, prompts_per_batch, ray_address, max_retries, settings, progress):
    state = SweepState(sweep_dir, runs, out, settings or {})
    state.save()
    todo = [run for run in runs if state.entry[run.run_id]["status"] != "done"]
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), unit="run", desc="sweep", disable=not progress,
               dynamic_ncols=True)
    _show(bar, state)

    def on_chunk_done(chunk, errors):
        state.record(errors)
        state.save()
        for run_id, error in errors.items():
            if error:
                bar.write(f"failed: {run_id}: {error}")
        _show(bar, state)
        bar.update(len(chunk))
        if not progress:  # no bar shows where the sweep is: a line after each chunk does
            print(f"sweep: {state.count('done')} of {len(runs)} runs done, {state.count('failed')} failed", flush=True)

    chunks = make_chunks(todo, prompts_per_batch)
    try:
        if ray_address:
            run_on_ray(chunks, out, ray_address, max_retries, on_chunk_done)
        else:
            run_locally(chunks, out, on_chunk_done, progress)  # a bar per chunk, over its steps
    finally:
        bar.close()
    return state


def _show(bar, state):
    failed, done = state.count("failed"), state.count("done")
    bar.set_postfix(done=done, failed=failed, left=len(state.data["runs"]) - done - failed, refresh=False)
