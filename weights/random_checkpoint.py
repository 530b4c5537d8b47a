"""Write a random-weight GPT-2 checkpoint in exactly the Hugging Face layout.

    python -m weights.random_checkpoint OUT_DIR [--size gpt2 | --n-embd 48 --n-layer 2 --n-head 3] \\
        [--tokenizer ../shared/gpt2-tokenizer] [--seed 0]

The directory gets config.json, model.safetensors (GPT-2's tensor names, Conv1D
weights as (in, out)), vocab.json and merges.txt copied from the tokenizer
directory. Tests and the demo use it, since real weights cannot always be had.
"""
import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from safetensors.torch import save_file

from minway.errors import MinwayError
from minway.model import GPT2, SIZES, GPT2Config, init_weights
from weights.checkpoint import CONV1D_WEIGHTS

DEFAULT_TOKENIZER = Path(__file__).resolve().parents[1].parent / "shared" / "gpt2-tokenizer"


def write_random_checkpoint(directory, config: GPT2Config, tokenizer_dir=DEFAULT_TOKENIZER, seed=0):
    directory, tokenizer_dir = Path(directory), Path(tokenizer_dir)
    for file in ("vocab.json", "merges.txt"):
        if not (tokenizer_dir / file).is_file():
            raise MinwayError(f"{tokenizer_dir / file} is missing: pass --tokenizer DIR with GPT-2's vocab.json and merges.txt")
    directory.mkdir(parents=True, exist_ok=True)
    model = init_weights(GPT2(config), seed)
    tensors = {name: (p.T if name.endswith(CONV1D_WEIGHTS) else p).detach().contiguous()
               for name, p in model.named_parameters()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    hf_config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new",
        **config.to_dict(), "n_ctx": config.n_positions, "bos_token_id": 50256, "eos_token_id": 50256,
        "minway_random_weights": True,
    }
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    for file in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_dir / file, directory / file)
    return directory


def main():
    parser = argparse.ArgumentParser(description="Write a random-weight GPT-2 checkpoint (Hugging Face layout).")
    parser.add_argument("out")
    parser.add_argument("--size", choices=sorted(SIZES), help="one of the released shapes")
    parser.add_argument("--n-embd", type=int, default=48)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=3)
    parser.add_argument("--n-positions", type=int, default=1024)
    parser.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = SIZES[args.size] if args.size else replace(
        GPT2Config(), n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, n_positions=args.n_positions)
    try:
        print(write_random_checkpoint(args.out, config, args.tokenizer, args.seed))
    except MinwayError as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
