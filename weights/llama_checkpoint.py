"""Read and validate a Llama (model_type ``llama``) or Qwen 2 (``qwen2``) checkpoint in the Hugging Face layout.

The files are laid out as GPT-2's (``weights.checkpoint``): ``config.json``, and ``model.safetensors`` or
shards listed in ``model.safetensors.index.json``, read one tensor at a time into a model built on the meta
device, with the same checks and messages. The tensors are named as ``LlamaForCausalLM`` and
``Qwen2ForCausalLM`` name them: ``model.embed_tokens.weight`` (minway's ``wte.weight``), ``model.layers.<i>.*``
and ``model.norm.weight`` (``layers.<i>.*``, ``norm.weight``), and ``lm_head.weight`` unless the head is
tied to the embedding, as they store linear layers, (out, in).

config.json is read as transformers 4 writes it (``rope_theta``, ``rope_scaling``) and as transformers 5
does (``rope_parameters``); what minway does not compute is refused in one line: another activation than
SiLU, another rotary scheme than Llama's two (``default``, ``llama3``), a partial rotation, Qwen's sliding
window attention.
"""
import re

import torch

from minway.errors import MinwayError
from minway.llama import Llama, Llama3Scaling, LlamaConfig
from minway.run import validation
from weights.checkpoint import config_values, existing_directory, read_state, tensor_files

FAMILIES = {"llama": "Llama", "qwen2": "Qwen 2"}
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
            "max_position_embeddings")
# buffers of older checkpoints, recomputed here from the config
IGNORED = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


def read_llama_config(directory):
    """The LlamaConfig of a checkpoint's config.json, every value checked."""
    path, values = config_values(directory)
    family = values.get("model_type") if isinstance(values, dict) else None
    if family not in FAMILIES:
        raise MinwayError(f"{path} has model_type {family!r}, not one of {', '.join(map(repr, FAMILIES))}")
    missing = [key for key in REQUIRED if key not in values]
    if missing:
        raise MinwayError(f"{path} lacks {', '.join(missing)}: not a {FAMILIES[family]} config")
    values = {"num_key_value_heads": values["num_attention_heads"], **values}
    if values.get("head_dim") is None and isinstance(values["num_attention_heads"], int) \
            and values["num_attention_heads"] > 0 and isinstance(values["hidden_size"], int):
        values["head_dim"] = values["hidden_size"] // values["num_attention_heads"]
    validation.llama_config(values, path)
    if values.get("hidden_act", "silu") != "silu":
        raise MinwayError(f"{path} sets hidden_act to {values['hidden_act']!r}; minway's MLP is SwiGLU (silu)")
    if values.get("use_sliding_window") or any(kind != "full_attention" for kind in values.get("layer_types") or ()):
        raise MinwayError(f"{path} asks for sliding-window attention; minway attends to the whole sequence in "
                          f"every layer (use_sliding_window false)")
    theta, scaling = _rotary(values, path)
    for key in ("tie_word_embeddings", "attention_bias", "mlp_bias"):
        if not isinstance(values.get(key, False), bool):
            raise MinwayError(f"{path}: {key} must be true or false, got {values[key]!r}")
    llama = family == "llama"
    bos = values.get("bos_token_id") if llama else None  # Qwen's tokenizer puts no token before a text
    if bos is not None and not (isinstance(bos, int) and not isinstance(bos, bool) and 0 <= bos < values["vocab_size"]):
        raise MinwayError(f"{path}: bos_token_id {bos!r} is not a token id below vocab_size {values['vocab_size']}")
    return LlamaConfig(
        vocab_size=values["vocab_size"], n_embd=values["hidden_size"], n_layer=values["num_hidden_layers"],
        n_head=values["num_attention_heads"], n_kv_head=values["num_key_value_heads"], head_dim=values["head_dim"],
        n_inner=values["intermediate_size"], max_positions=values["max_position_embeddings"],
        rms_norm_eps=values.get("rms_norm_eps", 1e-6), rope_theta=theta, rope_scaling=scaling,
        tie_word_embeddings=values.get("tie_word_embeddings", False),
        qkv_bias=values.get("attention_bias", False) if llama else True,
        o_bias=values.get("attention_bias", False) if llama else False,
        mlp_bias=values.get("mlp_bias", False) if llama else False, bos_token_id=bos, model_type=family)


def _rotary(values, path):
    """(theta, Llama3Scaling or None) of a config, in either of transformers' layouts."""
    rope = values.get("rope_parameters") or values.get("rope_scaling") or {}
    if not isinstance(rope, dict):
        raise MinwayError(f"{path}: rope_parameters (or rope_scaling) must be an object, got {rope!r}")
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", "llama3"):
        raise MinwayError(f"{path} asks for rotary positions of type {kind!r}; minway computes Llama's, 'default' "
                          f"and 'llama3'")
    if rope.get("partial_rotary_factor", values.get("partial_rotary_factor", 1.0)) != 1.0:
        raise MinwayError(f"{path} rotates part of each head only (partial_rotary_factor); minway rotates it whole")
    try:
        theta = validation.real("rope_theta", rope.get("rope_theta", values.get("rope_theta", 10000.0)), 0,
                                low_open=True)
        if kind == "default":
            return theta, None
        low = validation.real("low_freq_factor", rope.get("low_freq_factor"), 0, low_open=True)
        scaling = Llama3Scaling(
            validation.real("factor", rope.get("factor"), 0, low_open=True), low,
            validation.real("high_freq_factor", rope.get("high_freq_factor"), low, low_open=True),
            validation.whole("original_max_position_embeddings", rope.get("original_max_position_embeddings"), 1))
    except MinwayError as e:
        raise MinwayError(f"{path}: {e}: not Llama 3's rotary scaling, rewrite or re-download it") from None
    return theta, scaling


def stored_name(name):
    """The name of minway's parameter ``name`` in a Hugging Face checkpoint."""
    if name == "wte.weight":
        return "model.embed_tokens.weight"
    return name if name == "lm_head.weight" else f"model.{name}"


def expected_shapes(config):
    """{name as minway calls it: shape}, stored as it is."""
    with torch.device("meta"):
        return {name: tuple(p.shape) for name, p in Llama(config).named_parameters()}


def load_llama(directory, device="cpu", dtype=torch.float32, attention="auto"):
    """Build a Llama (or Qwen 2) from a checkpoint directory, validating every tensor."""
    directory = existing_directory(directory)
    config = read_llama_config(directory)
    files = tensor_files(directory)
    names = {stored_name(name): name for name in expected_shapes(config)}
    ignored = IGNORED.pattern + ("|lm_head\\.weight$" if config.tie_word_embeddings else "")
    stored = {names.get(name, name): name for name in files if not re.match(ignored, name)}
    with torch.device("meta"):
        model = Llama(config, attention=attention)
    state = read_state(directory, files, stored, expected_shapes(config), FAMILIES[config.model_type], device, dtype)
    model.load_state_dict(state, assign=True)
    return model.eval()
