"""Finding, validating, loading and downloading checkpoints: GPT-2, Llama and Qwen 2.

Downloaded checkpoints are kept under this directory, ``weights/<name>/`` (git-ignored).

The names below are imported when first asked for, not with the package: ``weights.checkpoint``
imports torch, which ``python -m weights.random_checkpoint --help`` must not wait for.
"""
import importlib

_MODULE_OF = {"load_gpt2": "weights.checkpoint", "load_token_embeddings": "weights.checkpoint",
              "load_model": "weights.models", "read_config": "weights.models", "resolve_checkpoint": "weights.resolve"}
__all__ = list(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'weights' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
