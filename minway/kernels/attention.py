"""Causal self-attention with a key-padding mask, three interchangeable backends.

``naive``  : the textbook formula, materialises the T x T matrix (the reference).
``sdpa``   : ``torch.nn.functional.scaled_dot_product_attention``.
``triton`` : a fused flash-attention kernel, forward and backward (``minway.kernels.flash_attention``).

All take q of shape (B, H, Tq, D), k and v of shape (B, H_kv, Tk, D) with Tk >= Tq and H a
multiple of H_kv, and an optional ``key_padding_mask`` of shape (B, Tk), True where a key may
be attended to. Query head h reads key and value head h // (H // H_kv) (grouped-query
attention; H_kv = H is plain multi-head attention). The queries are the last Tq of the Tk
positions (Tq < Tk when the keys of a cached prefix come first): query i stands at position
Tk - Tq + i and sees the keys up to there. A query with no key to attend to (a row of a
sequence that is all padding) gets a zero output and no gradient.

``varlen_attention`` takes rows of different lengths laid end to end (a packed batch),
each with its own numbers of queries and keys, aligned at the row's end: the Triton kernel
runs on them as they are, the other backends on a padded batch.

A ``dropout`` of the attention probabilities (a function of the (B, H, Tq, Tk)
probabilities, for prompt training) needs the probabilities themselves: with one,
attention takes the naive formula.
"""
import math
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

BACKENDS = ("naive", "sdpa", "triton")
SDPA_TAKES_GROUPS = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)  # its enable_gqa


def _allowed(Tq, Tk, key_padding_mask, device):
    """(B or 1, 1, Tq, Tk) boolean: query i may look at key j."""
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - Tq)[None, None]
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :]
    return allowed


def naive_attention(q, k, v, key_padding_mask=None, dropout=None):
    k, v = _each_query_head(k, v, q.shape[-3])
    return _weighted_values(q, k, v, _allowed(q.shape[-2], k.shape[-2], key_padding_mask, q.device), dropout)


def _each_query_head(k, v, H):
    """k and v (B, H_kv, T, D) as (B, H, T, D): each key/value head repeated for the H // H_kv query
    heads of its group."""
    group = H // k.shape[-3]
    if group == 1:
        return k, v
    return k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)


def _weighted_values(q, k, v, allowed, dropout=None):
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    scores = scores.float().masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    if dropout is not None:
        weights = dropout(weights)
    return weights.to(v.dtype) @ v


def sdpa_attention(q, k, v, key_padding_mask=None):
    grouped = {}
    if k.shape[-3] != q.shape[-3]:  # grouped heads: SDPA's own enable_gqa, or before torch 2.5 the heads repeated
        if SDPA_TAKES_GROUPS:
            grouped = dict(enable_gqa=True)
        else:
            k, v = _each_query_head(k, v, q.shape[-3])
    if key_padding_mask is None:
        if q.shape[-2] == k.shape[-2]:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, **grouped)
        # no mask tensor: on a GPU this keeps the flash and memory-efficient kernels available
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[-2], k.shape[-2]),
                                              **grouped)
    allowed = _allowed(q.shape[-2], k.shape[-2], key_padding_mask, q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, **grouped)
    # rows with no allowed key come back as NaN on some backends
    return out.masked_fill(~allowed.any(-1, keepdim=True), 0.0)


def varlen_attention(q, k, v, lengths, key_lengths, backend="auto", dropout=None):
    """Causal attention of packed rows: q (sum of lengths, H, D), k and v (sum of key_lengths, H_kv, D),
    H a multiple of H_kv, row r's queries and keys one after another; the i-th of a row's n queries,
    among its m keys, sees the first m - n + i + 1, and query head h reads key/value head h // (H // H_kv).

    The Triton backend takes the packed rows as they are (``flash_attention_varlen``). For the
    others, and with a dropout, the rows are put in padded batches, each row at the end of its
    padded row (padding on the left), so that one alignment, Tk - Tq, holds for every row.
    """
    if any(m < n for n, m in zip(lengths, key_lengths)):
        raise ValueError(f"each row needs at least as many keys as queries, got {list(lengths)} queries and "
                         f"{list(key_lengths)} keys")
    _check_heads(q.shape[-2], k.shape[-2], v.shape[-2])
    if backend == "auto":
        backend = default_backend(q.device)
    if backend == "triton" and dropout is None:
        from minway.kernels.flash_attention import flash_attention_varlen
        q_starts, k_starts = (torch.tensor([0, *accumulate(n)], device=q.device) for n in (lengths, key_lengths))
        return flash_attention_varlen(q, k, v, q_starts, k_starts, max(lengths), max(key_lengths))
    buckets = _buckets(lengths)
    if dropout is not None or len(buckets) == 1:  # a dropout's masks are drawn for one padded batch
        return _padded(q, k, v, lengths, key_lengths, backend, dropout)
    # rows of like query counts attended together: the two queries of an option scored after
    # its input are not padded to the length of the longest input
    q_starts, k_starts = [0, *accumulate(lengths)], [0, *accumulate(key_lengths)]
    outputs, at = [], []
    for rows in buckets:
        at_q, at_k = _items(rows, q_starts, q.device), _items(rows, k_starts, q.device)
        outputs.append(_padded(q[at_q], k[at_k], v[at_k], [lengths[r] for r in rows], [key_lengths[r] for r in rows],
                               backend))
        at.append(at_q)
    return torch.cat(outputs)[torch.cat(at).argsort()]


def _check_heads(H, H_k, H_v):
    if not (H_k == H_v and H % H_k == 0):
        raise ValueError(f"{H} query heads need keys and values of one head count that divides it, got {H_k} "
                         f"and {H_v}: give each group of query heads one key/value head")


def _buckets(lengths):
    """The rows grouped by their number of queries, rounded up to a power of two."""
    buckets = {}
    for r, n in enumerate(lengths):
        buckets.setdefault((n - 1).bit_length(), []).append(r)
    return list(buckets.values())


def _items(rows, starts, device):
    """The packed items of ``rows``, in order, given each row's ``starts`` (and the end of the last)."""
    return torch.cat([torch.arange(starts[r], starts[r + 1]) for r in rows]).to(device)


def _padded(q, k, v, lengths, key_lengths, backend, dropout=None):
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
    _check_heads(q.shape[-3], k.shape[-3], v.shape[-3])
    if dropout is not None:
        return naive_attention(q, k, v, key_padding_mask, dropout)
    if backend == "auto":
        backend = default_backend(q.device)
    if backend == "naive":
        return naive_attention(q, k, v, key_padding_mask)
    if backend == "sdpa":
        return sdpa_attention(q, k, v, key_padding_mask)
    if backend == "triton":
        from minway.kernels.flash_attention import flash_attention
        return flash_attention(q, k, v, key_padding_mask)
    raise ValueError(f"unknown attention backend {backend!r}: use one of {', '.join(BACKENDS)} or auto")
