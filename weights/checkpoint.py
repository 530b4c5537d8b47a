"""Read and validate a GPT-2 checkpoint in the Hugging Face layout.

A checkpoint directory holds ``config.json`` and either ``model.safetensors`` or
shards ``model-0000k-of-0000n.safetensors`` listed in ``model.safetensors.index.json``
(plus ``vocab.json`` and ``merges.txt`` for the tokenizer). Tensor names may carry
the ``transformer.`` prefix of ``GPT2LMHeadModel``. The linear layers are stored as
GPT-2's Conv1D, (in, out), and are transposed into ``nn.Linear``'s (out, in).

Tensors are read one at a time from memory-mapped files (``safe_open``), straight
into a model built on the meta device, so gpt2-xl is never held twice. Only
safetensors are read: no pickle, no ``torch.load``.
"""
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from minway.run import validation
from minway.errors import MinwayError
from minway.run.files import read_json
from minway.model import GPT2, GPT2Config

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# the causal-mask buffers of the reference implementation and its tied head: not parameters here
MAX_JSON = 2 ** 26  # a config.json is a few KB, gpt2-xl's index of shards 30 KB
IGNORED = re.compile(r"(h\.\d+\.attn\.(masked_)?bias|lm_head\.weight)$")
# config.json settings of GPT-2 variants this model does not compute: {key: values that mean released GPT-2}
RELEASED = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "scale_attn_weights": (True,),
            "scale_attn_by_inverse_layer_idx": (False,), "tie_word_embeddings": (True,)}


def read_config(directory):
    """The GPT2Config of a checkpoint's config.json, every value checked."""
    path, values = config_values(directory)
    if not isinstance(values, dict):
        raise MinwayError(f"{path} holds a JSON {type(values).__name__}, not an object: not a GPT-2 config")
    if values.get("model_type") != "gpt2":
        raise MinwayError(f"{path} has model_type {values.get('model_type')!r}; minway runs GPT-2 checkpoints "
                          f"(model_type 'gpt2') only")
    missing = [k for k in ("n_embd", "n_head", "n_layer", "vocab_size") if k not in values]
    if missing:
        raise MinwayError(f"{path} lacks {', '.join(missing)}: not a GPT-2 config")
    for key, released in RELEASED.items():
        if values.get(key, released[0]) not in released:
            raise MinwayError(f"{path} sets {key} to {values[key]!r}; minway computes GPT-2 as released "
                              f"({key} {released[0]!r}) only")
    validation.model_config(values, path)
    if values.get("n_inner") not in (None, 4 * values["n_embd"]):
        raise MinwayError(f"{path} sets n_inner to {values['n_inner']!r}; minway's MLP is 4 * n_embd wide")
    return GPT2Config.from_dict(values)


def has_random_weights(directory):
    """Whether the checkpoint was written by weights.random_checkpoint."""
    return bool(config_values(directory)[1].get("minway_random_weights"))


def config_values(directory):
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise MinwayError(f"{path} is missing: a checkpoint needs config.json next to model.safetensors")
    return path, read_json(path, "checkpoint config", MAX_JSON, "re-download or rewrite it")


def tensor_files(directory):
    """{tensor name as stored: file holding it}."""
    directory = Path(directory)
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return {name: single for name in _open(single).keys()}
    if index.is_file():
        index_values = read_json(index, "safetensors index", MAX_JSON, "re-download it")
        weight_map = index_values.get("weight_map") if isinstance(index_values, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise MinwayError(f"{index} is not a valid safetensors index (no weight_map): re-download it")
        for file in set(weight_map.values()):
            if not (directory / file).is_file():
                raise MinwayError(f"{directory / file}, a shard listed in {index.name}, is missing: re-download it")
        return {name: directory / file for name, file in weight_map.items()}
    raise MinwayError(f"{directory} has no model.safetensors (nor model.safetensors.index.json): "
                      f"minway reads safetensors checkpoints only")


def load_token_embeddings(directory):
    """The token embedding matrix (V, d) alone, in fp32: all that d-proj needs of a checkpoint."""
    files = tensor_files(directory)
    for name in ("wte.weight", "transformer.wte.weight", "model.embed_tokens.weight"):  # GPT-2's, Llama's and Qwen's
        if name in files:
            with _open(files[name]) as f:
                return f.get_tensor(name).float()
    raise MinwayError(f"{directory} holds no token embeddings (wte.weight, model.embed_tokens.weight): not a "
                      f"checkpoint minway reads")


def _open(path):
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as e:
        raise MinwayError(f"{path} is truncated or corrupt ({e}): re-download it") from None


def expected_shapes(config):
    """{name as minway calls it: shape as stored in the checkpoint (Conv1D is (in, out))}."""
    with torch.device("meta"):
        model = GPT2(config)
    shapes = {}
    for name, p in model.named_parameters():
        shape = tuple(p.shape)
        shapes[name] = shape[::-1] if name.endswith(CONV1D_WEIGHTS) else shape
    return shapes


def load_gpt2(directory, device="cpu", dtype=torch.float32, attention="auto"):
    """Build a GPT2 from a checkpoint directory, validating every tensor."""
    directory = existing_directory(directory)
    config = read_config(directory)
    files = tensor_files(directory)
    stored = {_strip(name): name for name in files if not IGNORED.match(_strip(name))}
    with torch.device("meta"):
        model = GPT2(config, attention=attention)
    state = read_state(directory, files, stored, expected_shapes(config), "GPT-2", device, dtype,
                       lambda name, tensor: tensor.T if name.endswith(CONV1D_WEIGHTS) else tensor)
    model.load_state_dict(state, assign=True)
    return model.eval()


def existing_directory(directory):
    directory = Path(directory)
    if not directory.exists():
        raise MinwayError(f"checkpoint directory {directory} does not exist")
    if not directory.is_dir():
        raise MinwayError(f"{directory} is a file; pass the checkpoint directory that holds it")
    return directory


def read_state(directory, files, stored, expected, family, device, dtype, convert=None):
    """{name: tensor} of every name of ``expected`` ({name: shape as stored}), read from its file (``files``:
    {stored name: file}) under its stored name (``stored``: {name: stored name}), each checked: none missing
    or left over, of the expected shape, of floating point, finite. ``convert(name, tensor)``:
    the tensor as the model takes it, where the checkpoint stores it otherwise (GPT-2's Conv1D)."""
    listing = "model.safetensors" if (directory / "model.safetensors").is_file() else "model.safetensors.index.json"
    missing = sorted(set(expected) - set(stored), key=_natural)
    if missing:
        raise MinwayError(f"{listing} in {directory} is missing tensor {missing[0]}"
                          f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''} for the config in config.json")
    unexpected = sorted(set(stored) - set(expected), key=_natural)
    if unexpected:
        raise MinwayError(f"{files[stored[unexpected[0]]].name} in {directory} has unexpected tensor "
                          f"{stored[unexpected[0]]}: not a {family} checkpoint of this config")

    handles = {}
    state = {}
    for name in expected:
        file = files[stored[name]]
        if file not in handles:
            handles[file] = _open(file)
        if stored[name] not in handles[file].keys():
            raise MinwayError(f"{file.name} lacks tensor {stored[name]}, which {listing} places there: re-download it")
        try:
            tensor = handles[file].get_tensor(stored[name])
        except SafetensorError as e:
            raise MinwayError(f"{file} is truncated or corrupt at tensor {stored[name]} ({e}): re-download it") from None
        if tuple(tensor.shape) != expected[name]:
            raise MinwayError(f"tensor {stored[name]} in {file.name} has shape {tuple(tensor.shape)}, expected "
                              f"{expected[name]} for the config in config.json")
        if not tensor.is_floating_point():
            raise MinwayError(f"tensor {stored[name]} in {file} is {str(tensor.dtype).removeprefix('torch.')}: "
                              f"minway reads floating-point weights only (fp32, fp16, bf16); convert or re-download")
        if not all_finite(tensor):
            raise MinwayError(f"tensor {stored[name]} in {file} holds NaN or infinite values: the checkpoint is "
                              f"corrupt, re-download it")
        if convert is not None:
            tensor = convert(name, tensor)
        state[name] = tensor.to(device=device, dtype=dtype).contiguous()
    return state


def all_finite(tensor):
    """Whether every value is finite. A sum with a NaN or an infinity in it is not finite, so one pass of
    a sum answers; only a sum that overflowed asks the exact, slower question."""
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _strip(name):
    return name.removeprefix("transformer.")


def _natural(name):
    """Sort h.2 before h.10 in messages."""
    return [int(part) if part.isdigit() else part for part in name.split(".")]
