"""Re-measure a trained prompt, here or on another machine.

    python eval.py runs/<run-id> [--positions] [--model DIR] [--data-dir DIR]

Recomputes every measure from prompt.safetensors (accuracy, hard-prompt accuracy,
prompt F1 under each metric, matches, c-dist, unreachable tokens). ``--positions``
prints, per position, the target token, its nearest token under each metric, the
score (dot product, squared L2 distance, cosine), the margin to the second nearest,
and the top-5 neighbours.
"""
import json
from dataclasses import asdict, replace
from pathlib import Path

from minway.cli import Parser, run_cli
from minway.errors import MinwayError

SCORE_NAMES = {"dot": "dot", "l2": "distance^2", "cos": "cosine"}  # what nearest_tokens' scores are


def position_table(prompt, target_ids, tokenizer, embeddings):
    from minway.prompt import METRICS, d_proj

    neighbours = {m: d_proj(prompt, embeddings, m, k=5) for m in METRICS}
    shown = lambda i: repr(tokenizer.token_strings([i])[0])  # noqa: E731
    lines = []
    for pos, target in enumerate(target_ids):
        lines.append(f"position {pos}: target {shown(target)} (id {target})")
        for m, nearest in neighbours.items():
            ids, scores = nearest.indices[pos].tolist(), nearest.scores[pos].tolist()
            hit = "=" if ids[0] == target else "x"
            top5 = ", ".join(f"{shown(i)} {s:.3f}" for i, s in zip(ids, scores))
            lines.append(f"  {m:>3} {hit} nearest {shown(ids[0]):<16} {SCORE_NAMES[m]:>10} {scores[0]:9.4f}  "
                         f"margin {float(nearest.margin[pos]):.4f}  top-5: {top5}")
    return "\n".join(lines)


def build_parser():
    p = Parser(description=__doc__)
    p.add_argument("run", help="a run directory holding prompt.safetensors (or the file itself)")
    p.add_argument("--positions", action="store_true", help="print the per-position table")
    p.add_argument("--model", help="checkpoint to use (default: the one the run was trained on)")
    p.add_argument("--data-dir", help="holds <task>/{train,test}.tsv (default: $MINWAY_DATA, else the data that "
                                      "ships with minway)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--max-eval", type=int, help="evaluate on the first N test examples only (default: the run's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # torch comes in with these, after the arguments are read: --help and mistakes answer at once
    from minway.evaluation import measure, summary
    from minway.setup import Setup
    from minway.storage import atomic_write_text, load_prompt

    path = Path(args.run)
    path = path / "prompt.safetensors" if path.is_dir() or not path.suffix else path
    prompt, config, target_ids = load_prompt(path)
    overrides = {k: v for k, v in (("model", args.model), ("data_dir", args.data_dir),
                                   ("max_eval", args.max_eval)) if v is not None}
    config = replace(config, device=args.device, **overrides)
    setup = Setup(config)
    setup.require_memory([config], training=False)
    if setup.target_ids(config) != target_ids:
        raise MinwayError(f"the tokenizer of {setup.checkpoint_dir} encodes the target differently from the one "
                          f"the prompt was trained with: pass --model with the right checkpoint")
    if prompt.shape[1] != setup.model.config.n_embd:
        raise MinwayError(f"the prompt has width {prompt.shape[1]} but the model {config.model} has "
                          f"{setup.model.config.n_embd}: pass --model with the checkpoint it was trained on")
    prompt = prompt.to(setup.device)
    results = measure(setup.model, setup.tokenizer, setup.options, prompt, target_ids, setup.test_inputs,
                      setup.test_labels, config.metric, config.eval_batch_size, progress=not args.no_progress)
    if args.positions:
        print(position_table(prompt, target_ids, setup.tokenizer, setup.model.wte.weight))
    results["config"] = asdict(config)
    print(summary(results, config.target))
    out = path.parent / "eval.json"
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    run_cli(main)
