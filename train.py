"""Train a wayward prompt: solve a task while projecting to a chosen text.

    python train.py --task sst2 --target "Write a question about the given fact." [--model gpt2-large]
"""
import argparse

from minway.cli import run_cli
from minway.prompt import METRICS
from minway.targets import resolve_target
from minway.tasks import TASKS
from minway.evaluation import summary
from minway.config import RunConfig
from minway.errors import MinwayError
from minway.training import compare, train


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help=f"one of {', '.join(TASKS)} (SST-2 etc. accepted)")
    target = p.add_argument_group("target text (exactly one)")
    target.add_argument("--target", help="the text the prompt should project to")
    target.add_argument("--target-file", help="a file holding the target text")
    target.add_argument("--target-name", help="a name in --prompts-file (default: ../shared/prompts/*.json)")
    target.add_argument("--prompts-file", help="JSON {name: text}, the layout of the paper's prompt files")
    p.add_argument("--model", default="gpt2-large", help="gpt2, gpt2-medium, gpt2-large, gpt2-xl or a checkpoint dir")
    p.add_argument("--gamma", type=float, default=0.01, help="weight of the distance to the target (0: unconstrained)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, help="training examples per step (default: the task's, 8; 4 for "
                                                  "agnews and subj, as the released code)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.1,
                   help="GPT-2's dropout while the prompt trains, as the released code (0: none)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--metric", choices=METRICS, default="dot", help="nearest neighbour of d-proj (the paper: dot)")
    p.add_argument("--k", type=int, help="training examples per class (default: all)")
    p.add_argument("--label-map", help="train towards permuted labels, e.g. 1,0: positive reviews called negative")
    p.add_argument("--data-dir", help="holds <task>/{train,test}.tsv (default: $MINWAY_DATA, data/, ../shared/data)")
    p.add_argument("--max-eval", type=int, help="evaluate on the first N test examples only")
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=0, help="test accuracy every N steps (0: at the end only)")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--compare", action="store_true", help="also train the unconstrained twin and report the drop")
    p.add_argument("--out", default="runs")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--attention", choices=("auto", "naive", "sdpa", "triton"), default="auto")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--force", action="store_true", help="train again even if the run exists")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


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
    config = RunConfig(
        task=args.task, target=target, model=args.model, gamma=args.gamma, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, dropout=args.dropout, seed=args.seed,
        metric=args.metric, k=args.k, data_dir=args.data_dir, max_eval=args.max_eval,
        eval_batch_size=args.eval_batch_size, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
        device=args.device, dtype=args.dtype, attention=args.attention, target_name=args.target_name,
        label_map=parse_label_map(args.label_map))
    run = compare if args.compare else train
    results = run(config, args.out, args.resume, args.force, progress=not args.no_progress)
    if results.get("random_weights"):
        print("NOTE: this checkpoint has random weights: its accuracy means nothing, and neither does its prompt "
              "F1 (random embeddings are far smaller than GPT-2's, so gamma pulls far less); the pipeline is "
              "what ran.")
    print(summary(results, target))
    print(f"results: {args.out}/{results['run_id']}/results.json")


if __name__ == "__main__":
    run_cli(main)
