"""Causal self-attention with a key-padding mask, three interchangeable backends.

``naive``  : the textbook formula, materialises the T x T matrix (the reference).
``sdpa``   : ``torch.nn.functional.scaled_dot_product_attention``.
``triton`` : a fused flash-attention kernel, forward and backward (``kernels.flash_attention``).

All take q of shape (B, H, Tq, D), k and v of shape (B, H, Tk, D) with Tk >= Tq, and
an optional ``key_padding_mask`` of shape (B, Tk), True where a key may be attended
to. The queries are the last Tq of the Tk positions (Tq < Tk when the keys of a
cached prefix come first): query i stands at position Tk - Tq + i and sees the keys
up to there. A query with no key to attend to (a row of a sequence that is all
padding) gets a zero output and no gradient.

A ``dropout`` of the attention probabilities (``minway.dropout.PromptDropout``, prompt
training) needs the probabilities themselves: with one, attention takes the naive formula.
"""
import math

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

BACKENDS = ("naive", "sdpa", "triton")


def _allowed(Tq, Tk, key_padding_mask, device):
    """(B or 1, 1, Tq, Tk) boolean: query i may look at key j."""
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - Tq)[None, None]
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
    return allowed


def naive_attention(q, k, v, key_padding_mask=None, dropout=None):
    return _weighted_values(q, k, v, _allowed(q.shape[-2], k.shape[-2], key_padding_mask, q.device), dropout)


def _weighted_values(q, k, v, allowed, dropout=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.float().masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    if dropout is not None:
        weights = dropout.probabilities(weights)
    return weights.to(v.dtype) @ v


def sdpa_attention(q, k, v, key_padding_mask=None):
    if key_padding_mask is None:
        if q.shape[-2] == k.shape[-2]:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # no mask tensor: on a GPU this keeps the flash and memory-efficient kernels available
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[-2], k.shape[-2]))
    allowed = _allowed(q.shape[-2], k.shape[-2], key_padding_mask, q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    # rows with no allowed key come back as NaN on some backends
    return out.masked_fill(~allowed.any(-1, keepdim=True), 0.0)


def attention_at(q, k, v, query_positions, key_padding_mask=None, dropout=None):
    """Causal attention for a few queries: q (B, H, P, D) stands at ``query_positions`` (B, P)
    of the T keys. P is small (the positions a loss reads), so the (P, T) mask is cheap."""
    T = k.shape[-2]
    allowed = torch.arange(T, device=q.device)[None, None, :] <= query_positions[:, :, None]
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, :]
    allowed = allowed[:, None]
    if dropout is not None:
        return _weighted_values(q, k, v, allowed, dropout)
    # a query with no key would make NaNs, in the backward pass too: let it see every key, then zero it
    nothing = ~allowed.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | nothing)
    return out.masked_fill(nothing, 0.0)


def default_backend(device):
    """PyTorch's fused attention, on every device.

    The Triton kernel passes its tests in the interpreter, but becomes the CUDA default only
    once ``benchmarks/bench_attention.py`` has shown it correct and faster on a real GPU.
    """
    return "sdpa"


def causal_attention(q, k, v, key_padding_mask=None, backend="auto", dropout=None):
    if k.shape[-2] < q.shape[-2]:
        raise ValueError(f"{q.shape[-2]} queries need at least as many keys, got {k.shape[-2]}")
    if dropout is not None:
        return naive_attention(q, k, v, key_padding_mask, dropout)
    if backend == "auto":
        backend = default_backend(q.device)
    if backend == "naive":
        return naive_attention(q, k, v, key_padding_mask)
    if backend == "sdpa":
        return sdpa_attention(q, k, v, key_padding_mask)
    if backend == "triton":
        from kernels.flash_attention import flash_attention
        return flash_attention(q, k, v, key_padding_mask)
    raise ValueError(f"unknown attention backend {backend!r}: use one of {', '.join(BACKENDS)} or auto")
