"""Write a random-weight Llama 3 or Qwen 2.5 checkpoint in exactly the Hugging Face layout.

    python -m weights.random_llama OUT_DIR [--family llama | qwen2] [--n-embd 64 --n-layer 2 --n-head 4
        --n-kv-head 2 --n-inner 172 --max-positions 2048] [--tie | --no-tie] [--embedding-norm N] [--seed 0]

The directory gets config.json as the Hub's checkpoints of the family have it, model.safetensors
(``LlamaForCausalLM``'s and ``Qwen2ForCausalLM``'s tensor names) and a tokenizer in the family's
layout, made of GPT-2's 50,256 regular tokens (the BPE files that ship with minway):

* llama: tokenizer.json, with Llama 3's split pattern, and <|begin_of_text|> and <|end_of_text|> after
  the regular tokens (a vocabulary of 50,258), which Hugging Face's tokenizer puts first as Llama 3's
  does; the begin-of-text token in config.json too, as Llama's rotary scaling;
* qwen2: vocab.json and merges.txt, with <|endoftext|> after the regular tokens, the embedding padded
  to 50,304 rows (a multiple of 128, as Qwen 2.5 pads its own) and tied to the head, as Qwen 2.5 0.5B's.

Tests use it, and so can anyone without the real weights: the pipeline runs, its accuracy means
nothing. ``embedding_norm`` scales the token embeddings as ``weights.random_checkpoint`` does.
"""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from minway import resources
from minway.errors import MinwayError
from minway.llama import Llama, Llama3Scaling, LlamaConfig, init_weights
from minway.run import memory, validation
from minway.run.bpe_files import LLAMA3_SPLIT_PATTERN
from minway.run.cli import Parser, output_dir, run_cli
from minway.run.tokenizer import EOT
from weights.llama_checkpoint import stored_name

REGULAR_TOKENS = 50256  # GPT-2's: the 256 bytes and 50,000 merges
BEGIN, END = "<|begin_of_text|>", "<|end_of_text|>"
FAMILIES = {  # as the Hub's checkpoints have them: Llama 3.2's rotary scaling, Qwen 2.5's theta and tied head
    "llama": LlamaConfig(vocab_size=REGULAR_TOKENS + 2, n_embd=64, n_layer=2, n_head=4, n_kv_head=2, head_dim=16,
                         n_inner=172, max_positions=2048, rms_norm_eps=1e-5, rope_theta=500000.0,
                         rope_scaling=Llama3Scaling(32.0, 1.0, 4.0, 2048 // 16), bos_token_id=REGULAR_TOKENS),
    "qwen2": LlamaConfig(vocab_size=50304, n_embd=64, n_layer=2, n_head=4, n_kv_head=2, head_dim=16, n_inner=172,
                         max_positions=2048, rope_theta=1000000.0, tie_word_embeddings=True, qkv_bias=True,
                         model_type="qwen2"),
}


def write_random_llama(directory, config: LlamaConfig, seed=0, embedding_norm=None):
    """``config``: of either family (``FAMILIES``' shapes, or any other with their vocabulary sizes)."""
    directory = Path(directory)
    if config.vocab_size < FAMILIES[config.model_type].vocab_size:
        raise MinwayError(f"a random {config.model_type} checkpoint has GPT-2's tokens and its family's special "
                          f"ones: vocab_size must be at least {FAMILIES[config.model_type].vocab_size}")
    directory.mkdir(parents=True, exist_ok=True)
    model = init_weights(Llama(config), seed)
    if embedding_norm:
        with torch.no_grad():
            scale = embedding_norm / float(model.wte.weight.norm(dim=1).mean())
            model.wte.weight.mul_(scale)
            if config.tie_word_embeddings:  # the logits keep the size of the initialisation's
                model.norm.weight.div_(scale)
    tensors = {stored_name(name): p.detach().contiguous() for name, p in model.named_parameters()}
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    hf_config = {**hub_config(config), "minway_random_weights": True, "minway_embedding_norm": embedding_norm}
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2, allow_nan=False) + "\n")
    gpt2 = resources.tokenizer_dir()
    if config.model_type == "qwen2":  # GPT-2's vocab.json ends in <|endoftext|>, where Qwen 2.5 has it
        for file in resources.TOKENIZER_FILES:
            shutil.copyfile(gpt2 / file, directory / file)
    else:
        write_llama3_tokenizer(directory, gpt2)
    return directory


def hub_config(config: LlamaConfig):
    """config.json as the Hub's checkpoints of the family write it (transformers 4's keys)."""
    values = {
        "architectures": ["Qwen2ForCausalLM" if config.model_type == "qwen2" else "LlamaForCausalLM"],
        "model_type": config.model_type, "vocab_size": config.vocab_size, "hidden_size": config.n_embd,
        "intermediate_size": config.n_inner, "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head, "num_key_value_heads": config.n_kv_head,
        "max_position_embeddings": config.max_positions, "hidden_act": "silu", "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta, "tie_word_embeddings": config.tie_word_embeddings, "torch_dtype": "float32",
    }
    if config.model_type == "qwen2":  # Qwen 2.5's config.json names no head_dim, which is hidden_size / heads
        if config.head_dim != config.n_embd // config.n_head:
            values["head_dim"] = config.head_dim
        return {**values, "bos_token_id": REGULAR_TOKENS, "eos_token_id": REGULAR_TOKENS, "use_sliding_window": False,
                "sliding_window": config.max_positions, "max_window_layers": config.n_layer}
    s = config.rope_scaling
    return {**values, "head_dim": config.head_dim, "bos_token_id": config.bos_token_id,
            "eos_token_id": REGULAR_TOKENS + 1, "attention_bias": config.qkv_bias, "mlp_bias": config.mlp_bias,
            "rope_scaling": None if s is None else {
                "rope_type": "llama3", "factor": s.factor, "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor, "original_max_position_embeddings": s.original_max_positions}}


def write_llama3_tokenizer(directory, gpt2):
    """tokenizer.json and tokenizer_config.json of a Llama 3 tokenizer whose regular tokens are GPT-2's."""
    vocab = json.loads((gpt2 / "vocab.json").read_text(encoding="utf-8"))
    del vocab[EOT]
    merges = [line.split(" ") for line in (gpt2 / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]
    specials = {BEGIN: REGULAR_TOKENS, END: REGULAR_TOKENS + 1}
    added = [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for token, i in specials.items()]
    begin = {"SpecialToken": {"id": BEGIN, "type_id": 0}}
    described = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing", "single": [begin, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [begin, {"Sequence": {"id": "A", "type_id": 0}}, begin,
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {BEGIN: {"id": BEGIN, "ids": [REGULAR_TOKENS], "tokens": [BEGIN]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }
    (directory / "tokenizer.json").write_text(json.dumps(described, ensure_ascii=False, allow_nan=False),
                                              encoding="utf-8")
    special = {"bos_token": BEGIN, "eos_token": END, "tokenizer_class": "PreTrainedTokenizerFast"}
    (directory / "tokenizer_config.json").write_text(json.dumps(special, indent=2, allow_nan=False) + "\n")


def main():
    parser = Parser(description="Write a random-weight Llama 3 or Qwen 2.5 checkpoint (Hugging Face layout).")
    parser.add_argument("out", help="the directory to write")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="llama", help="Llama 3 or Qwen 2.5")
    parser.add_argument("--n-embd", type=int, default=64, help="width (hidden_size)")
    parser.add_argument("--n-layer", type=int, default=2, help="blocks")
    parser.add_argument("--n-head", type=int, default=4, help="query heads")
    parser.add_argument("--n-kv-head", type=int, default=2, help="key and value heads, dividing --n-head")
    parser.add_argument("--n-inner", type=int, default=172, help="width of the MLP (intermediate_size)")
    parser.add_argument("--max-positions", type=int, default=2048, help="context length")
    parser.add_argument("--tie", action="store_true", default=None,
                        help="tie the head to the token embedding (default: the family's, untied for llama, tied "
                             "for qwen2)")
    parser.add_argument("--no-tie", dest="tie", action="store_false", help="give the head a matrix of its own")
    parser.add_argument("--embedding-norm", type=float,
                        help="mean norm of the token embeddings (default: the initialisation's, N(0, 0.02) per "
                             "coordinate)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights")
    args = parser.parse_args()
    family = FAMILIES[args.family]
    config = replace(family, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, n_kv_head=args.n_kv_head,
                     head_dim=args.n_embd // args.n_head if args.n_head > 0 else 0, n_inner=args.n_inner,
                     max_positions=args.max_positions,
                     tie_word_embeddings=family.tie_word_embeddings if args.tie is None else args.tie)
    if config.rope_scaling:  # the context it was trained on, a sixteenth of the one it reaches, as Llama 3.2's
        config = replace(config, rope_scaling=config.rope_scaling._replace(
            original_max_positions=max(1, args.max_positions // 16)))
    check_arguments(args, config)
    print(write_random_llama(args.out, config, args.seed, args.embedding_norm))


def check_arguments(args, config):
    """The sizes within validation.LLAMA_SIZES, and the model and its copy for saving within free memory."""
    for flag, value, key in (("--n-embd", args.n_embd, "hidden_size"), ("--n-layer", args.n_layer, "num_hidden_layers"),
                             ("--n-head", args.n_head, "num_attention_heads"),
                             ("--n-kv-head", args.n_kv_head, "num_key_value_heads"),
                             ("--n-inner", args.n_inner, "intermediate_size"),
                             ("--max-positions", args.max_positions, "max_position_embeddings")):
        low, high = next((low, high) for name, low, high in validation.LLAMA_SIZES if name == key)
        validation.whole(flag, value, low, high)
    if args.n_embd % args.n_head or config.head_dim % 2:
        raise MinwayError(f"--n-embd {args.n_embd} must be --n-head {args.n_head} heads of an even width")
    if args.n_head % args.n_kv_head:
        raise MinwayError(f"--n-kv-head {args.n_kv_head} does not divide --n-head {args.n_head}")
    if args.embedding_norm is not None:
        validation.real("--embedding-norm", args.embedding_norm, 0, low_open=True)
    validation.whole("--seed", args.seed, 0, validation.MAX_SEED)
    output_dir(args.out, "the output directory")
    memory.require(2 * memory.model_bytes(config, torch.float32), torch.device("cpu"),
                   f"a random checkpoint of {memory.parameters(config):,} parameters",
                   lambda _: "choose smaller --n-embd or --n-layer")


if __name__ == "__main__":
    run_cli(main)
