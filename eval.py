"""Measure a trained prompt: a minway run, here or on another machine, or a soft prompt of PEFT.

    python eval.py runs/<run-id> [--positions] [--model DIR] [--data-dir DIR]
    python eval.py ADAPTER_DIR [--target TEXT] [--task sst2 | --task-file FILE] [--model gpt2]

For a run, recomputes every measure from prompt.safetensors (accuracy, hard-prompt
accuracy, prompt F1 under each metric, matches, c-dist, unreachable tokens) and writes
them to eval.json beside it. ``--positions`` prints, per position, the target token, its
nearest token under each metric, the score (dot product, squared L2 distance, cosine),
the margin to the second nearest, and the top-5 neighbours.

A PEFT prompt-tuning adapter of a GPT-2, Llama or Qwen 2 model (minway/run/adapters.py) gets
that table at once, and the projection under each metric; with --target, its prompt F1
against that text; with --task or --task-file, its continuous and hard-prompt accuracy.
"""
if __name__ == "__main__":  # first of all: an interrupt while the modules below load ends in one line too
    from minway.run import interrupts
    interrupts.install()

from dataclasses import asdict, replace
from pathlib import Path

from minway.run import validation
from minway.run.adapters import is_adapter
from minway.run.choices import METRICS
from minway.run.cli import Parser, progress_bars, run_cli
from minway.run.devices import check_device
from minway.errors import MinwayError
from minway.run.run_dirs import listing, prompt_file, runs_in
from minway.run.targets import resolve_target
from minway.run.task_file import data_dir_of, read_task_file
from minway.tasks import get_task
from weights.resolve import resolve_checkpoint

SCORE_NAMES = {"dot": "dot", "l2": "distance^2", "cos": "cosine"}  # what nearest_tokens' scores are


def position_table(prompt, target_ids, tokenizer, embeddings):
    """``target_ids`` None: the nearest tokens alone (a prompt without a target of its length)."""
    from minway.prompt import d_proj

    neighbours = {m: d_proj(prompt, embeddings, m, k=5) for m in METRICS}
    shown = lambda i: f"'{tokenizer.token_strings([i])[0]}'"  # noqa: E731 - quoted: a leading space shows
    lines = []
    for pos in range(len(prompt)):
        target = None if target_ids is None else target_ids[pos]
        lines.append(f"position {pos}:" + ("" if target is None else f" target {shown(target)} (id {target})"))
        for m, nearest in neighbours.items():
            ids, scores = nearest.indices[pos].tolist(), nearest.scores[pos].tolist()
            hit = " " if target is None else "=" if ids[0] == target else "x"
            top5 = ", ".join(f"{shown(i)} {s:.3f}" for i, s in zip(ids, scores))
            lines.append(f"  {m:>3} {hit} nearest {shown(ids[0]):<16} {SCORE_NAMES[m]:>10} {scores[0]:9.4f}  "
                         f"margin {float(nearest.margin[pos]):.4f}  top-5: {top5}")
    return "\n".join(lines)


def build_parser():
    p = Parser(description=__doc__)
    p.add_argument("run", help="a run directory holding prompt.safetensors (or the file itself), or a PEFT "
                               "prompt-tuning adapter directory (adapter_config.json); a folder of runs lists them")
    p.add_argument("--positions", action="store_true", help="print the per-position table (always for an adapter)")
    p.add_argument("--model", help="checkpoint to use (default: the one the run was trained on; for an adapter, "
                                   "its base model)")
    p.add_argument("--metric", choices=METRICS, help="the main d-proj, of the hard prompt and the summary "
                                                     "(default: the run's; dot for an adapter)")
    adapter = p.add_argument_group("what to measure an adapter against (a run has its own target and task)")
    adapter.add_argument("--target", help="the text its projection is scored against (default: none)")
    task = adapter.add_mutually_exclusive_group()
    task.add_argument("--task", help="the paper's task to measure its accuracy on (default: none)")
    task.add_argument("--task-file", help="a task of your own to measure it on (see minway/run/task_file.py; "
                                          "default: none)")
    p.add_argument("--data-dir", help="holds <task>/{train,test}.tsv (default: $MINWAY_DATA, else the data that "
                                      "ships with minway); for a task file, the directory its data files are "
                                      "relative to (default: the one the run was trained with, or the task file's)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--max-eval", type=int, help="evaluate on the first N test (and dev) examples only (default: the run's)")
    p.add_argument("--json", help="write the measures there (default: eval.json beside a run's prompt; none for "
                                  "an adapter)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (there are none when stderr is not a "
                                                              "terminal)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    target = None if args.target is None else resolve_target(args.target)
    task = None
    if args.task_file:
        task = read_task_file(args.task_file)
    elif args.task:
        task = get_task(args.task).name
    # every option, and the paths, are checked before torch is imported (by measure_*): a mistake answers at once
    check_device(validation.device(args.device), "auto")
    if args.max_eval is not None:
        validation.whole("--max-eval", args.max_eval, 1)
    if args.model is not None:
        resolve_checkpoint(args.model)
    path = Path(args.run)
    if path.is_dir() and not (path / "prompt.safetensors").exists() and runs_in(path):
        print(f"{path} is a folder of runs: pass one of them to measure it")
        print("\n".join(listing(runs_in(path))))
        return
    if is_adapter(path):
        measure_adapter(args, path, target, task)
    elif target is not None or task is not None:
        raise MinwayError("--target, --task and --task-file are for a PEFT adapter: a run is measured against its "
                          "own target and task")
    else:
        measure_run(args, prompt_file(path))


def measure_run(args, path):
    from minway.evaluation import summary
    from minway.run.model_and_data import RANDOM_WEIGHTS_NOTE, Setup
    from minway.run.storage import load_prompt
    from minway.run.training import measure_prompt

    prompt, config, target_ids = load_prompt(path)
    overrides = {k: v for k, v in (("model", args.model), ("data_dir", args.data_dir), ("max_eval", args.max_eval),
                                   ("metric", args.metric)) if v is not None}
    config = replace(config, device=args.device, **overrides)
    setup = Setup(config)
    setup.require_memory([config], training=False)
    require_training_files(args, path.parent, setup.identity)
    if setup.target_ids(config) != target_ids:
        raise MinwayError(f"the tokenizer of {setup.checkpoint_dir} encodes the target differently from the one "
                          f"the prompt was trained with: pass --model with the right checkpoint")
    if prompt.shape[1] != setup.model.config.n_embd:
        raise MinwayError(f"the prompt has width {prompt.shape[1]} but the model {config.model} has "
                          f"{setup.model.config.n_embd}: pass --model with the checkpoint it was trained on")
    prompt = prompt.to(setup.device)
    results = measure_prompt(setup, config, prompt, target_ids, progress=progress_bars(args.no_progress))
    if args.positions:
        print(position_table(prompt, target_ids, setup.tokenizer, setup.model.wte.weight))
    results["config"] = asdict(config)
    if setup.random_weights:
        print(RANDOM_WEIGHTS_NOTE)
    print(summary(results, config.target))
    write_json(results, args.json or path.parent / "eval.json")


def require_training_files(args, run_dir, now):
    """Without --model and --data-dir a run is measured on the files it was trained on: refuse other
    weights or data found under the same names (its results.json keeps their fingerprints)."""
    from minway.run.storage import read_results

    try:
        trained_on = (read_results(run_dir) or {}).get("identity")
    except MinwayError:  # no readable results beside the prompt: nothing to check against
        return
    for key, given, flag, what in (("checkpoint", args.model, "--model", "weights"),
                                   ("data", args.data_dir, "--data-dir", "data")):
        if given is None and isinstance(trained_on, dict) and trained_on.get(key) != now[key]:
            raise MinwayError(f"the {what} {run_dir.name} would be measured on now are not those it was trained on "
                              f"(they changed under the same name): pass {flag} to measure it on them anyway")


def measure_adapter(args, directory, target, task):
    """The adapter's projection; its F1 against ``target`` and accuracy on ``task`` (a name or a task file's
    definition) where they are given."""
    import torch

    from minway.run.adapters import read_adapter
    from minway.evaluation import measure, summary
    from minway.run.bpe_files import checkpoint_tokenizer
    from minway.run.model_and_data import RANDOM_WEIGHTS_NOTE, resolve_device
    from weights import load_model, read_config
    from weights.checkpoint import has_random_weights

    adapter = read_adapter(directory)
    model_name = args.model or adapter.base_model
    if not model_name:
        raise MinwayError(f"{directory} does not name its base model (base_model_name_or_path): pass --model")
    checkpoint = resolve_checkpoint(model_name)
    (length, width), n_embd = adapter.prompt.shape, read_config(checkpoint).n_embd
    if width != n_embd:
        raise MinwayError(f"the prompt of {directory} has width {width} but the checkpoint {checkpoint} has "
                          f"{n_embd}: pass --model with the checkpoint it was made for")
    model = load_model(checkpoint, torch.device(resolve_device(args.device))).freeze()
    tokenizer = checkpoint_tokenizer(checkpoint)
    prompt = adapter.prompt.to(model.wte.weight.device)
    target_ids = None if target is None else tokenizer.encode(target)
    options = inputs = labels = None
    if task is not None:
        data_dir = args.data_dir or (data_dir_of(args.task_file) if args.task_file else None)
        options, inputs, labels = test_set(get_task(task), tokenizer, data_dir, args.max_eval, length,
                                           model.config.n_positions)
    metric = args.metric or "dot"
    results = measure(model, tokenizer, options, prompt, target_ids, inputs, labels, metric,
                      progress=progress_bars(args.no_progress))
    print(f"{directory}: a prompt of {length} vectors of width {width}, read on {checkpoint}")
    same_length = target_ids is not None and len(target_ids) == length
    print(position_table(prompt, target_ids if same_length else None, tokenizer, model.wte.weight))
    if has_random_weights(checkpoint):
        print(RANDOM_WEIGHTS_NOTE)
    print(summary(results, target))
    results.update(adapter=str(directory), checkpoint=str(checkpoint), target=target, task=task)
    if args.json:
        write_json(results, args.json)


def test_set(task, tokenizer, data_dir, max_eval, prompt_length, n_positions):
    """(each label's output, test inputs, labels) of a task, encoded as for training, checked to fit the
    model's context after a prompt of ``prompt_length`` vectors."""
    from minway.run.data import load_split
    from minway.tasks import encode_inputs, encode_options

    common, options = encode_options(task, tokenizer)
    test = load_split(task, "test", data_dir)[:max_eval]
    inputs = encode_inputs(task, tokenizer, [e.text for e in test], common)
    total = prompt_length + max(map(len, inputs)) + max(map(len, options))
    if total > n_positions:
        raise MinwayError(f"prompt ({prompt_length} vectors) + longest input + output = {total} positions exceeds "
                          f"the model's context of {n_positions}")
    return options, inputs, [e.label for e in test]


def write_json(results, path):
    from minway.run.files import atomic_write_json

    atomic_write_json(Path(path), results, "the measures")
    print(f"written: {path}")


if __name__ == "__main__":
    run_cli(main)
