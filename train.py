"""Train a wayward prompt: solve a task while projecting to a chosen text.

    python train.py --task sst2 --target "Write a question about the given fact." [--model gpt2-large]
    python train.py --task sst2 --target "Write a question about the given fact." --model weights/random-demo
    python train.py --task sst2 --target-name subtask047_misc_answering_science_questions
    python train.py --task-file my-task/task.json --target "Write a question about the given fact."
    python train.py --list-targets [TEXT]

--model names GPT-2 (downloaded when it is nowhere here) or a checkpoint directory, such
as weights/random-demo, the random-weight one the demo writes. --target-name picks one
of the paper's target prompts, which ship with minway: the 32 Natural-Instructions
definitions (natural_prompts.json), the PILE sentences (pile.json, and pile_n=L.json of
L tokens) and the tasks' true definitions (good_prompts.json); --list-targets lists them.
--task-file defines a task of your own: its template, label words and data files
(minway/run/task_file.py tells the format).
"""

if __name__ == "__main__":  # first of all: an interrupt while the modules below load ends in one line too
    from minway.run import interrupts
    interrupts.install()

import argparse
import os
import sys
from dataclasses import replace

from minway.experiments.presets import GROUP_FILES
from minway.run.choices import ATTENTIONS, DTYPES, METRICS, TRAIN_SPLITS
from minway.run.cli import Parser, output_dir, progress_bars, run_cli
from minway.run.config import RunConfig
from minway.run.devices import check_device
from minway.errors import MinwayError
from minway.run.run_dirs import require_resumable
from minway.run.targets import resolve_target, target_table
from minway.run.task_file import data_dir_of, read_task_file
from minway.tasks import TASKS
from weights.resolve import resolve_checkpoint


class ListTargets(argparse.Action):
    """--list-targets [TEXT]: print the paper's targets (those whose name or text holds TEXT) and exit,
    as --help does, before the options that must be given are asked for."""

    def __call__(self, parser, namespace, text, option_string=None):
        group_of = {file: group for group, file in GROUP_FILES.items()}
        rows = [("name", "group", "file", "tokens", "text")]
        rows += [(name, group_of.get(file, "-"), file, str(tokens), target)
                 for name, file, tokens, target in target_table(text)]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        try:
            for row in rows:
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4])
            sys.stdout.flush()
        except BrokenPipeError:  # the reader had enough (| head): no error, and none as Python exits
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        parser.exit()


def build_parser():
    p = Parser(description=__doc__)
    task = p.add_argument_group("task (exactly one)").add_mutually_exclusive_group(required=True)
    task.add_argument("--task", help=f"one of {', '.join(TASKS)} (SST-2 etc. accepted)")
    task.add_argument("--task-file", help="a JSON file defining a task of your own (see minway/run/task_file.py)")
    target = p.add_argument_group("target text (exactly one)")
    target.add_argument("--target", help="the text the prompt should project to")
    target.add_argument("--target-file", help="a file holding the target text")
    target.add_argument("--target-name", help="the name of a target in --prompts-file, e.g. one of the paper's "
                                              "(--list-targets lists them)")
    target.add_argument("--prompts-file", help="JSON {name: text} to look --target-name up in: a path, or the name "
                                               "of one of the paper's files, e.g. pile_n=14.json (default: every "
                                               "file of $MINWAY_PROMPTS, else of the paper's, which ship with minway)")
    p.add_argument("--list-targets", nargs="?", const="", metavar="TEXT", action=ListTargets,
                   help="list the paper's target prompts (name, group, file, tokens, text) whose name or text "
                        "holds TEXT (default: all), and exit")
    p.add_argument("--model", default="gpt2-large", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl or a checkpoint dir, "
                                                          "e.g. weights/random-demo")
    p.add_argument("--gamma", type=float, default=0.01, help="weight of the distance to the target (0: unconstrained)")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    p.add_argument("--batch-size", type=int, help="training examples per step (default: the task's, 8; 4 for "
                                                  "agnews and subj, as the released code)")
    p.add_argument("--lr", type=float, default=0.01, help="AdamW's learning rate, decayed linearly to 0")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's weight decay")
    p.add_argument("--dropout", type=float, default=0.1,
                   help="GPT-2's dropout while the prompt trains, as the released code (0: none)")
    p.add_argument("--seed", type=int, default=1, help="seed of the batch order (and of --k's sample)")
    p.add_argument("--metric", choices=METRICS, default="dot", help="nearest neighbour of d-proj (the paper: dot)")
    p.add_argument("--train-split", choices=TRAIN_SPLITS,
                   help="the rows of the training file trained on: released, the released code's split (the first 90 %% "
                        "after its shuffle with NumPy's seed 100; the other 10 %% are a dev set, whose accuracy is "
                        "reported beside the test accuracy), or all, the whole file (default: released for the "
                        "paper's tasks, all for --task-file)")
    p.add_argument("--k", type=int, help="training examples per class, drawn from the rows trained on (default: all)")
    p.add_argument("--label-map", help="train towards permuted labels, e.g. 1,0: positive reviews called negative "
                                       "(default: none)")
    p.add_argument("--data-dir", help="holds <task>/{train,test}.tsv (default: $MINWAY_DATA, else the data that "
                                      "ships with minway); for --task-file, the directory its data files are "
                                      "relative to (default: the task file's)")
    p.add_argument("--max-eval", type=int, help="evaluate on the first N test (and dev) examples only (default: all)")
    p.add_argument("--eval-batch-size", type=int, default=32, help="test examples per forward pass")
    p.add_argument("--eval-every", type=int, default=0, help="test accuracy every N steps (0: at the end only)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--compare", action="store_true", help="also train the unconstrained twin and report the drop")
    p.add_argument("--out", default="runs", help="where run directories go")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--dtype", choices=DTYPES, default="fp32", help="of the model's weights")
    p.add_argument("--attention", choices=ATTENTIONS, default="auto", help="attention implementation")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint (the run "
                                                         "of these very options: a run of other --steps is another)")
    p.add_argument("--force", action="store_true", help="train again even if the run exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (there are none when stderr is not a "
                                                              "terminal)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def parse_label_map(text):
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise MinwayError(f"--label-map {text!r} must be comma-separated label ids, e.g. 1,0") from None


def main(argv=None):
    args = parse_args(argv)
    target = resolve_target(args.target, args.target_file, args.target_name, args.prompts_file)
    task, data_dir = args.task, args.data_dir
    if args.task_file:
        task, data_dir = read_task_file(args.task_file), args.data_dir or data_dir_of(args.task_file)
    # every option is checked, and the run found, before torch is imported: a mistake answers at once
    config = RunConfig(
        task=task, target=target, model=args.model, gamma=args.gamma, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, dropout=args.dropout, seed=args.seed,
        metric=args.metric, k=args.k, train_split=args.train_split, data_dir=data_dir, max_eval=args.max_eval,
        eval_batch_size=args.eval_batch_size, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        device=args.device, dtype=args.dtype, attention=args.attention, target_name=args.target_name,
        label_map=parse_label_map(args.label_map))
    check_device(config.device, config.attention)
    resolve_checkpoint(config.model)
    run_dir = output_dir(args.out, "--out") / config.run_id()
    if args.resume and not args.force:
        require_resumable(args.out, [config, replace(config, gamma=0.0)] if args.compare else [config])
    from minway.evaluation import summary
    from minway.run.identity import check_identity, identity_of
    from minway.run.model_and_data import RANDOM_WEIGHTS_NOTE
    from minway.run.storage import read_results
    from minway.run.training import compare, train

    # a finished run is shown, not trained, when it was trained on the files it would use now
    results = None if args.force else read_results(run_dir)
    if results is not None:
        check_identity(run_dir / "results.json", results.get("identity"), identity_of(config))
    finished = results is not None and (not args.compare or "compare" in results)
    if not finished:
        run = compare if args.compare else train
        # a finished run whose twin was never trained (--compare added later) is kept: only the twin trains
        results = run(config, args.out, args.resume or results is not None, args.force,
                      progress=progress_bars(args.no_progress))
    if results.get("random_weights"):
        print(RANDOM_WEIGHTS_NOTE)
    print(summary(results, target))
    print(f"results: {run_dir / 'results.json'}")
    if "compare" in results:
        twin_dir = run_dir.parent / results["compare"]["unconstrained_run"]
        print(f"results of its unconstrained twin: {twin_dir / 'results.json'}")
    if finished:
        print("this run had finished before, so nothing was trained: pass --force to train it again")


if __name__ == "__main__":
    run_cli(main)
