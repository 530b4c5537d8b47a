"""GPT-2's forward pass in plain NumPy: the teaching version.

The whole model on one page, with no autograd, batching or caching, so that
each step of the paper's setting can be read off directly: token and position
embeddings, n_layer pre-norm blocks of causal self-attention and an MLP, a
final layer norm, and logits from the tied token-embedding matrix. Prompt tuning
is one line of it: a continuous prompt is L embedding vectors put before the
embeddings of the text's tokens (``forward``'s ``prompt``), and ``output_loss`` is
the loss of one example as the released code computes it. It loads the same
Hugging Face checkpoint directory (config.json + model.safetensors) as the
PyTorch model, which makes it a second, independent oracle for tests.
"""
import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from minway.errors import MinwayError

CONFIG_KEYS = ("n_embd", "n_head", "n_layer", "n_positions", "vocab_size", "layer_norm_epsilon")
BLOCK_TENSORS = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")


def load(directory, dtype=np.float32) -> tuple[dict[str, np.ndarray], dict]:
    """Parameters keyed by their checkpoint names without the `transformer.` prefix, and the config."""
    directory = Path(directory)
    for name in ("config.json", "model.safetensors"):
        if not (directory / name).is_file():
            raise MinwayError(f"{directory / name} is missing; point to a GPT-2 checkpoint directory")
    config = json.loads((directory / "config.json").read_text())
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise MinwayError(f"{directory / 'config.json'} lacks {', '.join(missing)}; use a GPT-2 config.json")

    params = {name.removeprefix("transformer."): tensor.astype(dtype)
              for name, tensor in load_file(directory / "model.safetensors").items()}
    needed = ["wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"]
    needed += [f"h.{i}.{part}.{kind}" for i in range(config["n_layer"]) for part in BLOCK_TENSORS
               for kind in ("weight", "bias")]
    missing = [name for name in needed if name not in params]
    if missing:
        raise MinwayError(f"{directory / 'model.safetensors'} lacks {missing[0]} (and {len(missing) - 1} more); "
                          "use a GPT-2 checkpoint")
    # lm_head.weight is a copy of wte.weight, attn.bias / attn.masked_bias are mask buffers
    return {name: params[name] for name in needed}, config


def gelu(x):
    """GPT-2's GELU, the tanh approximation."""
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):
    exp = np.exp(x - x.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def layer_norm(x, params, name, eps):
    normalized = (x - x.mean(axis=-1, keepdims=True)) / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
    return normalized * params[f"{name}.weight"] + params[f"{name}.bias"]


def linear(x, params, name):
    # GPT-2's Conv1D layers store the weight as (in, out)
    return x @ params[f"{name}.weight"] + params[f"{name}.bias"]


def attention(x, params, name, n_head):
    T, C = x.shape
    q, k, v = np.split(linear(x, params, f"{name}.c_attn"), 3, axis=-1)
    q, k, v = (m.reshape(T, n_head, C // n_head).transpose(1, 0, 2) for m in (q, k, v))  # (head, T, C/head)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(C // n_head)
    scores = np.where(np.tri(T, dtype=bool), scores, -np.inf)  # position t sees positions <= t
    heads = softmax(scores) @ v
    return linear(heads.transpose(1, 0, 2).reshape(T, C), params, f"{name}.c_proj")


def forward(token_ids, params, config, prompt=None) -> np.ndarray:
    """Logits (T, vocab) for a sequence of token ids, after the L vectors of a continuous ``prompt``
    (L, d) when one is given (it takes the place of a first token: T = L + len(token_ids))."""
    x = params["wte.weight"][np.asarray(token_ids, dtype=int)]
    if prompt is not None:
        x = np.concatenate([np.asarray(prompt, dtype=x.dtype), x])  # embeddings in place of tokens
    if len(x) > config["n_positions"]:
        raise MinwayError(f"{len(x)} positions exceed the model's {config['n_positions']} positions; shorten the text")
    eps = config["layer_norm_epsilon"]
    x = x + params["wpe.weight"][: len(x)]
    for i in range(config["n_layer"]):
        block = f"h.{i}"
        x = x + attention(layer_norm(x, params, f"{block}.ln_1", eps), params, f"{block}.attn", config["n_head"])
        hidden = gelu(linear(layer_norm(x, params, f"{block}.ln_2", eps), params, f"{block}.mlp.c_fc"))
        x = x + linear(hidden, params, f"{block}.mlp.c_proj")
    return layer_norm(x, params, "ln_f", eps) @ params["wte.weight"].T


def output_loss(prompt, input_ids, output_ids, params, config) -> float:
    """The loss of one example, as the released code computes it: the mean cross-entropy of the output
    tokens (a label's words, then end-of-text) after the prompt (L, d) and the input's tokens."""
    logits = forward(list(input_ids) + list(output_ids[:-1]), params, config, prompt)
    first = len(prompt) + len(input_ids) - 1  # the position whose logits predict the first output token
    logits = logits[first:]
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs = log_probs - np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return float(-log_probs[np.arange(len(output_ids)), output_ids].mean())


def generate(token_ids, n_new, params, config) -> list[int]:
    """The n_new tokens greedy decoding appends (the prompt is not repeated)."""
    ids = [int(i) for i in token_ids]
    for _ in range(n_new):
        ids.append(int(forward(ids, params, config)[-1].argmax()))
    return ids[len(ids) - n_new:]
