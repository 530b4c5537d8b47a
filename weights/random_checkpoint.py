"""Write a random-weight GPT-2 checkpoint in exactly the Hugging Face layout.

    python -m weights.random_checkpoint OUT_DIR [--size gpt2 | --n-embd 48 --n-layer 2 --n-head 3] \\
        [--embedding-norm 3.9] [--tokenizer DIR] [--seed 0]

The directory gets config.json, model.safetensors (GPT-2's tensor names, Conv1D
weights as (in, out)), vocab.json and merges.txt copied from the tokenizer
directory (default: $MINWAY_TOKENIZER, else GPT-2's files that ship with minway).
Tests and the demo use it, since real weights cannot always be had.

GPT-2's initialisation gives token embeddings far shorter than trained GPT-2's, so
that the distance term of the wayward objective hardly pulls. ``embedding_norm``
scales them to a chosen mean length (``GPT2_EMBEDDING_NORM`` is trained GPT-2
small's), and scales the final layer norm's gain by the inverse, so that the logits,
read through the same (tied) embeddings, keep the size of GPT-2's initialisation.

torch is imported by the functions that build a model, so that ``--help`` and a mistyped
option answer at once.
"""
import json
import shutil
from dataclasses import replace
from pathlib import Path

from minway import resources
from minway.run import validation
from minway.run.choices import SIZES
from minway.run.cli import Parser, output_dir, run_cli
from minway.errors import MinwayError

# The mean L2 norm of a token embedding of trained GPT-2 small, about 3.9; at GPT-2's
# initialisation (N(0, 0.02) per coordinate) it is 0.02 * sqrt(n_embd): 0.55 for d = 768.
GPT2_EMBEDDING_NORM = 3.9


def write_random_checkpoint(directory, config, tokenizer_dir=None, seed=0, embedding_norm=None):
    """``config``: a GPT2Config; ``embedding_norm``: scale the token embeddings to this mean norm (None: GPT-2's
    initialisation)."""
    import torch
    from safetensors.torch import save_file

    from minway.model import GPT2, init_weights
    from weights.checkpoint import CONV1D_WEIGHTS

    directory, tokenizer_dir = Path(directory), resources.tokenizer_dir(tokenizer_dir)
    directory.mkdir(parents=True, exist_ok=True)
    model = init_weights(GPT2(config), seed)
    if embedding_norm:
        with torch.no_grad():
            scale = embedding_norm / float(model.wte.weight.norm(dim=1).mean())
            model.wte.weight.mul_(scale)
            # Unscaled, the logits would grow as much: a model sure of wrong tokens (a cross-entropy
            # near 60 rather than log V), whose gradients would swamp the distance term.
            model.ln_f.weight.div_(scale)
    tensors = {name: (p.T if name.endswith(CONV1D_WEIGHTS) else p).detach().contiguous()
               for name, p in model.named_parameters()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    hf_config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new",
        **config.to_dict(), "n_ctx": config.n_positions, "bos_token_id": 50256, "eos_token_id": 50256,
        "minway_random_weights": True, "minway_embedding_norm": embedding_norm,
    }
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2, allow_nan=False) + "\n")
    for file in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_dir / file, directory / file)
    return directory


def main():
    parser = Parser(prog="python -m weights.random_checkpoint",
                    description="Write a random-weight GPT-2 checkpoint (Hugging Face layout).")
    parser.add_argument("out", help="the directory to write")
    parser.add_argument("--size", choices=SIZES, help="one of the released shapes (overrides the next four)")
    parser.add_argument("--n-embd", type=int, default=48, help="width")
    parser.add_argument("--n-layer", type=int, default=2, help="blocks")
    parser.add_argument("--n-head", type=int, default=3, help="attention heads")
    parser.add_argument("--n-positions", type=int, default=1024, help="context length")
    parser.add_argument("--embedding-norm", type=float,
                        help=f"mean norm of the token embeddings, e.g. {GPT2_EMBEDDING_NORM} as trained GPT-2 "
                             f"small's (default: GPT-2's initialisation, N(0, 0.02) per coordinate)")
    parser.add_argument("--tokenizer", help="directory with vocab.json and merges.txt (default: $MINWAY_TOKENIZER, "
                                            "else GPT-2's files that ship with minway)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights")
    args = parser.parse_args()
    check_arguments(args)
    from minway.model import SIZES as SHAPES, GPT2Config  # torch comes in with it, after the arguments are checked

    config = SHAPES[args.size] if args.size else replace(
        GPT2Config(), n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, n_positions=args.n_positions)
    require_memory(config)
    print(write_random_checkpoint(args.out, config, args.tokenizer, args.seed, args.embedding_norm))


def check_arguments(args):
    """The sizes given within validation.MODEL_SIZES, and the other options in their ranges."""
    if not args.size:
        for key, low, high in validation.MODEL_SIZES:
            if hasattr(args, key):
                validation.whole(validation.flag(key), getattr(args, key), low, high)
        if args.n_embd % args.n_head:
            raise MinwayError(f"--n-embd {args.n_embd} is not divisible by --n-head {args.n_head}")
    if args.embedding_norm is not None:
        validation.real("--embedding-norm", args.embedding_norm, 0, low_open=True)
    validation.whole("--seed", args.seed, 0, validation.MAX_SEED)
    output_dir(args.out, "the output directory")


def require_memory(config):
    """The model and its copy for saving within free memory."""
    import torch

    from minway.run import memory

    memory.require(2 * memory.model_bytes(config, torch.float32), torch.device("cpu"),
                   f"a random checkpoint of {memory.parameters(config):,} parameters",
                   lambda _: "choose smaller --n-embd or --n-layer")


if __name__ == "__main__":
    run_cli(main)
