"""Run the paper's experiments as one resumable sweep (minway/experiments/runner.py tells how).

    python sweep.py --preset main --models gpt2-large --device cuda --dtype bf16
    python sweep.py --preset gamma --tasks sst2 --seeds 1 --targets-limit 4 --dry-run
    python sweep.py --preset size --ray auto          # on a running Ray cluster
    python sweep.py --task-file my-task/task.json --groups PILE --seeds 1   # a task of your own

The target prompts are the paper's, which ship with minway (or --prompts-dir).
"""
if __name__ == "__main__":  # first of all: an interrupt while the modules below load ends in one line too
    from minway.run import interrupts
    interrupts.install()

import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

from minway import resources
from minway.run.choices import ATTENTIONS, DTYPES, METRICS, TRAIN_SPLITS
from minway.run.cli import Parser, output_dir, progress_bars, run_cli
from minway.run.devices import check_device, has_gpu_driver
from minway.errors import MinwayError
from minway.experiments.plan import expand, other_plan
from minway.experiments.presets import GROUP_FILES, MODEL_SIZES, PAPER_TASKS, PRESETS
from minway.run.task_file import data_dir_of, read_task_file
from minway.tasks import get_task

# (field of RunConfig, type, default: train.py's, help) of the options every run of the grid takes
RUN_OPTIONS = (
    ("steps", int, 2000, "optimiser steps"),
    ("batch_size", int, None, "training examples per step (default: the task's, 8; 4 for agnews and subj)"),
    ("lr", float, 0.01, "AdamW's learning rate, decayed linearly to 0"),
    ("dropout", float, 0.1, "GPT-2's dropout while the prompt trains, as the released code (0: none)"),
    ("k", int, None, "training examples per class, drawn from the rows trained on (default: all)"),
    ("max_eval", int, None, "evaluate on the first N test (and dev) examples only (default: all)"),
    ("eval_batch_size", int, 32, "test examples per forward pass"),
    ("checkpoint_every", int, 100, "steps between checkpoints"),
    ("data_dir", str, None, "holds <task>/{train,test}.tsv (default: $MINWAY_DATA, else the data that ships "
                            "with minway); for --task-file, the directory its data files are relative to "
                            "(default: the task file's)"),
    ("device", str, "auto", "cuda, cpu or auto"),
)


def build_parser():
    p = Parser(description=__doc__)
    p.add_argument("--preset", choices=PRESETS, default="main",
                   help="main: Table 2; gamma: Fig. 3; length: Fig. 4; size: Fig. 5; true: Tables 4/5")
    grid = p.add_argument_group("grid (comma-separated lists; each defaults to the preset's)")
    preset = " (default: the preset's)"
    tasks = grid.add_mutually_exclusive_group()
    tasks.add_argument("--tasks", help=f"some of {', '.join(PAPER_TASKS)}{preset}")
    tasks.add_argument("--task-file", help="instead of --tasks, a JSON file defining a task of your own "
                                           "(see minway/run/task_file.py; default: none)")
    grid.add_argument("--groups", help=f"target groups: some of {', '.join(GROUP_FILES)}{preset}")
    grid.add_argument("--seeds", help=f"e.g. 1,10,100{preset}")
    grid.add_argument("--gammas", help=f"constrained gammas, e.g. 0.003,0.01; each run gets its gamma = 0 twin{preset}")
    grid.add_argument("--models", "--model", dest="models",
                      help=f"e.g. {','.join(MODEL_SIZES)} or checkpoint dirs{preset}")
    grid.add_argument("--targets-limit", type=int, help="use the first N targets of each group (default: all)")
    grid.add_argument("--prompts-dir", help="the paper's prompt files (default: $MINWAY_PROMPTS, else those that "
                                            "ship with minway)")
    run = p.add_argument_group("every run (the defaults are train.py's)")
    for name, kind, default, text in RUN_OPTIONS:
        run.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)
    run.add_argument("--dtype", choices=DTYPES, default="fp32", help="of the model's weights")
    run.add_argument("--attention", choices=ATTENTIONS, default="auto", help="attention implementation")
    run.add_argument("--metric", choices=METRICS, default="dot", help="nearest neighbour of d-proj (the paper: dot)")
    run.add_argument("--train-split", choices=TRAIN_SPLITS,
                     help="released: the released code's 90 %% of each training file, the other 10 %% a dev set; all: "
                          "the whole file (default: released for the paper's tasks, all for --task-file)")
    p.add_argument("--out", default="runs", help="where run directories go (shared with train.py)")
    p.add_argument("--sweep-dir", help="sweep state, report and figures (default: sweeps/<preset>, or "
                                       "sweeps/<preset>-<task> for --task-file)")
    p.add_argument("--new-plan", action="store_true",
                   help="replace the state a --sweep-dir holds of another plan by this one's (the runs stay in "
                        "--out, and the finished ones are reused)")
    p.add_argument("--prompts-per-batch", type=int,
                   help="K prompts trained together in one batch (default: 8 on a GPU or Ray; 1 on a CPU, "
                        "where a step is compute-bound and batching prompts gains nothing)")
    p.add_argument("--ray", metavar="ADDRESS", help="run on Ray: auto (a running cluster), local, or host:port "
                                                    "(default: train here, without Ray)")
    p.add_argument("--max-retries", type=int, default=3, help="Ray: retries of a chunk whose worker died")
    p.add_argument("--dry-run", action="store_true", help="list the runs and stop")
    p.add_argument("--report-only", action="store_true", help="rewrite the report and figures, train nothing")
    p.add_argument("--report-with", default="", metavar="DIRS",
                   help="comma-separated sweep dirs whose runs the report takes in too (e.g. sweeps/main for "
                        "the true preset's Table 5; default: none)")
    p.add_argument("--no-figures", action="store_true", help="write the report without figures")
    p.add_argument("--positions-run", help="run id of the per-position figure (default: the first done)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (there are none when stderr is not a "
                                                              "terminal: a line per run and per chunk instead)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def _split(text, kind, flag):
    try:
        values = tuple(kind(x.strip()) for x in text.split(",") if x.strip())
    except ValueError:
        raise MinwayError(f"{flag} {text!r} must be a comma-separated list of {kind.__name__}s") from None
    if not values:
        raise MinwayError(f"{flag} is empty")
    return values


GRID_OPTIONS = ("task_file", "tasks", "groups", "seeds", "gammas", "models", "targets_limit", "prompts_dir")


def plan_of(args):
    """What the sweep sweeps, in words: the preset, and the options that change its grid."""
    given = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in GRID_OPTIONS
             if getattr(args, name) is not None]
    return args.preset + (f", with {' '.join(given)}" if given else "")


def default_sweep_dir(args, grid):
    """sweeps/<preset>, or sweeps/<preset>-<task> for a task of a task file: a sweep of a task of one's own
    is never written into the directory of the paper's preset."""
    return Path("sweeps") / (f"{args.preset}-{grid.tasks[0]['name']}" if args.task_file else args.preset)


def grid_from_args(args):
    grid = PRESETS[args.preset]
    overrides = {}
    for flag, kind in (("tasks", str), ("groups", str), ("seeds", int), ("gammas", float), ("models", str)):
        if getattr(args, flag) is not None:
            overrides[flag] = _split(getattr(args, flag), kind, "--" + flag)
    if args.task_file:
        overrides["tasks"] = (read_task_file(args.task_file),)
    if args.targets_limit is not None:
        overrides["targets_limit"] = args.targets_limit
    grid = replace(grid, **overrides)
    for task in grid.tasks:
        get_task(task)
    if not all(math.isfinite(g) and g >= 0 for g in grid.gammas):
        raise MinwayError(f"--gammas {','.join(map(str, grid.gammas))}: each gamma must be a finite number >= 0")
    if grid.targets_limit is not None and grid.targets_limit < 1:
        raise MinwayError("--targets-limit must be at least 1")
    return grid


def run_fields_from_args(args):
    names = [option[0] for option in RUN_OPTIONS] + ["dtype", "attention", "metric", "train_split"]
    fields = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.task_file and args.data_dir is None:
        fields["data_dir"] = data_dir_of(args.task_file)
    return fields


def _dirs(text):
    dirs = [Path(d) for d in text.split(",") if d]
    for d in dirs:
        if not (d / "sweep.json").exists():
            raise MinwayError(f"--report-with {d}: no sweep.json there; run that sweep first")
    return dirs


def main(argv=None):
    args = parse_args(argv)
    # the whole plan is checked before torch is imported: a mistake answers at once
    if args.prompts_per_batch is not None and args.prompts_per_batch < 1:
        raise MinwayError("--prompts-per-batch must be at least 1")
    if args.max_retries < 0:
        raise MinwayError("--max-retries must be at least 0")
    also = _dirs(args.report_with)
    grid = grid_from_args(args)
    sweep_dir = output_dir(args.sweep_dir or default_sweep_dir(args, grid), "--sweep-dir")
    output_dir(args.out, "--out")
    if args.report_only:
        print("written: " + ", ".join(map(str, write_report_and_figures(args, sweep_dir, also))))
        return
    runs = expand(grid, resources.prompts_dir(args.prompts_dir), run_fields_from_args(args))
    check_device(args.device, args.attention)
    other = other_plan(sweep_dir, runs)
    advice = "pass --sweep-dir DIR for this plan, or --new-plan to replace that state (the runs stay in --out)"
    if other and not args.dry_run and not args.new_plan:
        raise MinwayError(f"{other}: {advice}")
    import torch

    from minway.experiments.runner import import_ray, is_finished, make_chunks, print_plan, run_sweep

    if args.prompts_per_batch is None:
        on_gpu = args.ray or (args.device != "cpu" and has_gpu_driver() and torch.cuda.is_available())
        args.prompts_per_batch = 8 if on_gpu else 1
    if args.dry_run:
        todo = [r for r in runs if not is_finished(r, args.out)]
        print_plan(runs, args.out, make_chunks(todo, args.prompts_per_batch))
        if other:
            print(f"note: {other}, which the sweep will refuse: {advice}")
        return
    if not args.no_figures:
        from minway.experiments.figures import require_matplotlib

        require_matplotlib()  # fail now, not after hours of training
    if args.ray:
        import_ray()
    settings = {"preset": args.preset, "plan": plan_of(args), "grid": asdict(grid),
                "run_fields": run_fields_from_args(args)}
    state = run_sweep(runs, args.out, sweep_dir, args.prompts_per_batch, args.ray, args.max_retries, settings,
                      progress=progress_bars(args.no_progress))
    written = write_report_and_figures(args, sweep_dir, also)
    print(f"{state.count('done')} done, {state.count('failed')} failed, {state.count('pending')} pending")
    print("written: " + ", ".join(map(str, written)))
    if state.count("failed"):
        print(f"error: {state.count('failed')} of {len(runs)} runs failed: {state.path} holds their errors",
              file=sys.stderr)
        sys.exit(1)


def write_report_and_figures(args, sweep_dir, also):
    """The paths written."""
    from minway.experiments import figures, report

    written = report.write_report(sweep_dir, also)
    if not args.no_figures:
        written += figures.write_figures(sweep_dir, args.positions_run)
    return written


if __name__ == "__main__":
    run_cli(main)
