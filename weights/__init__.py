"""Finding, validating, loading and downloading checkpoints: GPT-2, Llama and Qwen 2.

Downloaded checkpoints are kept under this directory, ``weights/<name>/`` (git-ignored).
"""
from weights.checkpoint import load_gpt2, load_token_embeddings
from weights.models import load_model, read_config
from weights.resolve import resolve_checkpoint

__all__ = ["load_gpt2", "load_model", "load_token_embeddings", "read_config", "resolve_checkpoint"]
