"""Which model a checkpoint holds, by its config.json's ``model_type``, and the reader and loader of each:
GPT-2 (``weights.checkpoint``), Llama and Qwen 2 (``weights.llama_checkpoint``)."""
import torch

from minway.errors import MinwayError
from weights.checkpoint import config_values, existing_directory, load_gpt2, read_config as read_gpt2_config
from weights.llama_checkpoint import load_llama, read_llama_config

READERS = {"gpt2": (read_gpt2_config, load_gpt2), "llama": (read_llama_config, load_llama),
           "qwen2": (read_llama_config, load_llama)}


def model_type(directory):
    path, values = config_values(directory)
    if not isinstance(values, dict):
        raise MinwayError(f"{path} holds a JSON {type(values).__name__}, not an object: not a model config")
    if values.get("model_type") not in READERS:
        raise MinwayError(f"{path} has model_type {values.get('model_type')!r}; minway runs GPT-2, Llama and "
                          f"Qwen 2 checkpoints (model_type {', '.join(map(repr, READERS))})")
    return values["model_type"]


def read_config(directory):
    """The config of a checkpoint (a GPT2Config or a LlamaConfig), every value checked."""
    return READERS[model_type(directory)][0](directory)


def load_model(directory, device="cpu", dtype=torch.float32, attention="auto"):
    """The model of a checkpoint directory, every tensor checked."""
    directory = existing_directory(directory)
    return READERS[model_type(directory)][1](directory, device, dtype, attention)
