"""Finding, validating, loading and downloading GPT-2 checkpoints.

Downloaded checkpoints are kept under this directory, ``weights/<name>/`` (git-ignored).
"""
from weights.checkpoint import load_gpt2, load_token_embeddings, read_config
from weights.resolve import resolve_checkpoint

__all__ = ["load_gpt2", "load_token_embeddings", "read_config", "resolve_checkpoint"]
