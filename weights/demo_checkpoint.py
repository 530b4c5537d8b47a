"""Print the checkpoint the demo should use, saying on stderr which one it is.

Real GPT-2 (small) when it is local, cached or downloadable; otherwise a small
random-weight checkpoint written to weights/random-demo/, whose accuracy means nothing.
Its token embeddings are as long as trained GPT-2's (GPT-2's initialisation would make
them about 0.3 long instead of 3.9), so that the distance to the target weighs in the
wayward objective about as it does on GPT-2: the paper's gamma holds the prompt near
its target, and gamma = 0 lets it drift.
"""
import json
import sys

from minway.run.cli import Parser, run_cli
from minway.errors import MinwayError
from weights.random_checkpoint import GPT2_EMBEDDING_NORM, write_random_checkpoint
from weights.resolve import DEMO_NAME, WEIGHTS_DIR, is_checkpoint, resolve_checkpoint

RANDOM_DEMO = WEIGHTS_DIR / DEMO_NAME


def random_demo_checkpoint():
    """weights/random-demo/, written unless it is there already with embeddings at GPT-2's scale."""
    from minway.model import GPT2Config  # torch comes in with it: --help answers at once

    if _embedding_norm(RANDOM_DEMO) != GPT2_EMBEDDING_NORM:
        write_random_checkpoint(RANDOM_DEMO, GPT2Config(n_embd=256, n_layer=4, n_head=4),
                                embedding_norm=GPT2_EMBEDDING_NORM)
    return RANDOM_DEMO


def _embedding_norm(checkpoint):
    """The embedding norm a random checkpoint was written with; None if unknown or no checkpoint."""
    if not is_checkpoint(checkpoint):
        return None
    try:
        return json.loads((checkpoint / "config.json").read_text()).get("minway_embedding_norm")
    except (ValueError, AttributeError):  # not JSON, or not an object
        return None


def main():
    try:
        path = resolve_checkpoint("gpt2")
        print(f"demo: using real GPT-2 weights from {path}", file=sys.stderr)
    except MinwayError:
        path = random_demo_checkpoint()
        print(f"demo: real GPT-2 weights are not available here, so this runs on a RANDOM-WEIGHT checkpoint "
              f"({path}): the pipeline is real, its accuracy means nothing, and its prompt F1 shows only how "
              f"gamma holds a prompt near the target (see README for real weights).", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    Parser(prog="python -m weights.demo_checkpoint", description=__doc__).parse_args()
    run_cli(main)
