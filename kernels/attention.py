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

``varlen_attention`` takes rows of different lengths laid end to end (a packed batch),
each with its own numbers of queries and keys, aligned at the row's end.

A ``dropout`` of the attention probabilities (a function of the (B, H, Tq, Tk)
probabilities, for prompt training) needs the probabilities themselves: with one,
attention takes the naive formula.
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
        weights = dropout(weights)
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


def varlen_attention(q, k, v, lengths, key_lengths, backend="auto", dropout=None):
    """Causal attention of packed rows: q (sum of lengths, H, D), k and v (sum of key_lengths, H, D),
    row r's queries and keys one after another; the i-th of a row's n queries, among its m keys,
    sees the first m - n + i + 1.

    The rows are put in a padded batch for the backends above, each row at the end of its
    padded row (padding on the left), so that one alignment, Tk - Tq, holds for every row.
    """
    Tq, Tk = max(lengths), max(key_lengths)
    at_q, at_k = _left_padded(lengths, Tq, q.device), _left_padded(key_lengths, Tk, q.device)
    q_pad, k_pad, v_pad = (_scatter(x, at, len(lengths) * T).view(len(lengths), T, *x.shape[1:]).transpose(1, 2)
                           for x, at, T in ((q, at_q, Tq), (k, at_k, Tk), (v, at_k, Tk)))
    key_padding_mask = None
    if min(key_lengths) < Tk:
        key_padding_mask = torch.arange(Tk, device=q.device) >= Tk - torch.tensor(key_lengths, device=q.device)[:, None]
    y = causal_attention(q_pad, k_pad, v_pad, key_padding_mask, backend, dropout)
    return y.transpose(1, 2).reshape(-1, *q.shape[1:])[at_q]


def _left_padded(lengths, width, device):
    """Where the packed items of rows of ``lengths`` go in rows of ``width``, right-aligned."""
    return torch.cat([torch.arange(r * width + width - n, (r + 1) * width) for r, n in enumerate(lengths)]).to(device)


def _scatter(x, at, size):
    out = x.new_zeros(size, *x.shape[1:])
    out[at] = x
    return out


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
