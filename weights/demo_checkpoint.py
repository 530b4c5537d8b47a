"""Print the checkpoint the demo should use, saying on stderr which one it is.

Real GPT-2 (small) when it is local, cached or downloadable; otherwise a small
random-weight checkpoint written to weights/random-demo/, whose accuracy means nothing.
"""
import sys

from minway.errors import MinwayError
from minway.model import GPT2Config
from weights.random_checkpoint import write_random_checkpoint
from weights.resolve import WEIGHTS_DIR, is_checkpoint, resolve_checkpoint


def main():
    try:
        path = resolve_checkpoint("gpt2")
        print(f"demo: using real GPT-2 weights from {path}", file=sys.stderr)
    except MinwayError:
        path = WEIGHTS_DIR / "random-demo"
        if not is_checkpoint(path):
            write_random_checkpoint(path, GPT2Config(n_embd=256, n_layer=4, n_head=4))
        print(f"demo: real GPT-2 weights are not available here, so this runs on a RANDOM-WEIGHT checkpoint "
              f"({path}): the pipeline is real, its accuracy means nothing. See README for real weights.",
              file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
