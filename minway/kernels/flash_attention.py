"""Causal flash attention over packed rows of different lengths, forward and backward, in Triton.

What it computes (``reference``, below, in a few lines of torch). The rows come packed end to
end, no padding: queries q (Nq, H, D), keys and values k, v (Nk, H_kv, D), H a multiple of
H_kv. Row r's TQ queries are q[q_starts[r]:q_starts[r + 1]] and its TK >= TQ keys
k[k_starts[r]:k_starts[r + 1]]. The queries stand at the row's end, after TK - TQ keys of a
prefix (a prompt, an input its options continue): query i sees keys 0 to TK - TQ + i. Query
head h reads key and value head h // (H // H_kv): grouped-query attention, of which H_kv = H,
plain multi-head attention, is the case of groups of one. A padded (B, H, T, D) batch is the
same with equal offsets, and may leave keys out (``MASKED``: the padding of rows); a query
that sees no key gets a zero output and passes no gradient.

What it costs. For P (query, key) pairs seen per query head (a row of TQ = TK = T: P =
T (T + 1) / 2), with elements of s bytes:
    forward    2 matrix products per block (QK^T, PV):                4 P D FLOPs a head
    backward   7 (QK^T and dO V^T in both kernels, dV, dK, dQ):      14 P D FLOPs a head
and at the least each tensor read or written once: forward q, k, v, o (and the log-sum-exp
of each query, 4 bytes), backward q, k, v, o, dO, dq, dk, dv. One square row of T in 16 bits
does about T / 4 FLOPs per byte forward and T / 2.3 backward: on an H100 (790 TFLOP/s
against 3 TB/s, 260 FLOPs a byte) memory-bound below T ~ 1000 forward and ~ 600 backward.

How. One program per (query block, row, query head) streams over the key blocks of its row
with an online softmax, so no TQ x TK matrix is ever stored; the forward keeps only each
query's log-sum-exp for the backward to rebuild the probabilities from. Key blocks entirely
above the diagonal are skipped; the causal mask is applied only to the blocks that straddle
it. Scores live in the log2 domain (exp2 is the fast instruction). The backward is two
kernels that each recompute the probabilities of their blocks: ``_bwd_dq`` per query block
(it also stores delta = rowsum(dO * O) on its way), then ``_bwd_dkdv`` per key block and
key/value head, streaming over the query blocks at and below the diagonal of each query head
of its group and summing their gradients: no two programs write the same gradient, and no
atomics are needed.
"""
import math
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from minway.kernels.triton_common import check_device, dot, gpu_arch

LOG2E = 1.4426950408889634


def reference(q, k, v, q_starts, k_starts):
    """What the kernels compute, in plain torch: each row alone, its whole score matrix, in float64."""
    group = q.shape[1] // k.shape[1]
    out = []
    for r in range(len(q_starts) - 1):
        qr = q[q_starts[r]:q_starts[r + 1]].double()  # (TQ, H, D)
        # keys and values (TK, H, D), each head repeated for the query heads of its group
        kr, vr = (x[k_starts[r]:k_starts[r + 1]].double().repeat_interleave(group, dim=1) for x in (k, v))
        scores = torch.einsum("qhd,khd->hqk", qr, kr) / math.sqrt(q.shape[-1])
        # query i sees keys 0 to TK - TQ + i
        seen = torch.ones(len(qr), len(kr), dtype=torch.bool, device=q.device).tril(len(kr) - len(qr))
        out.append(torch.einsum("hqk,khd->qhd", scores.masked_fill(~seen, float("-inf")).softmax(-1), vr))
    return torch.cat(out)


@triton.jit
def _scores(q, kt, KEEP, offs_n, pos_m, TK, qk_scale, DIAGONAL: tl.constexpr, MASKED: tl.constexpr,
            PRECISION: tl.constexpr):
    """Scores of a (BLOCK_M, BLOCK_N) block in the log2 domain, -inf where the query does not see the key:
    a key past the row, left out by the mask, or (on the diagonal) after the query."""
    seen = offs_n[None, :] < TK
    if MASKED:
        seen = seen & (tl.load(KEEP + offs_n, mask=offs_n < TK, other=0) != 0)[None, :]
    if DIAGONAL:
        seen = seen & (pos_m[:, None] >= offs_n[None, :])
    return tl.where(seen, dot(q, kt, None, PRECISION) * qk_scale, float("-inf"))


@triton.jit
def _whole_blocks_before(first_pos, BLOCK_N: tl.constexpr):
    """End of the key blocks (of BLOCK_N, from 0) that a query at ``first_pos`` and every later
    one see whole: the blocks that need no causal mask."""
    return (first_pos + 1) // BLOCK_N * BLOCK_N


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, KEEP, pos_m, lo, hi, TK, stride_kt, stride_vt, qk_scale,
               D: tl.constexpr, BLOCK_N: tl.constexpr, DIAGONAL: tl.constexpr, MASKED: tl.constexpr,
               PRECISION: tl.constexpr):
    """The key blocks from lo to hi folded into the running output acc, row sums l_i and row maxima m_i."""
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_row = offs_n < TK
        kt = tl.load(K + offs_n[None, :] * stride_kt + offs_d[:, None], mask=in_row[None, :], other=0.0)
        s = _scores(q, kt, KEEP, offs_n, pos_m, TK, qk_scale, DIAGONAL, MASKED, PRECISION)

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing seen yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=in_row[:, None], other=0.0)
        acc = dot(p.to(v.dtype), v, acc * alpha[:, None], PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["H"])
def _fwd(Q, K, V, Q_STARTS, K_STARTS, KEEP, O, LSE, qk_scale, H, GROUP,
         stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
         D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
         PRECISION: tl.constexpr):
    """O (Nq, H, D) and LSE (Nq, H) of BLOCK_M queries of one row and one query head."""
    # the last query blocks first: blocks further down the diagonal have more keys to visit
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    row, h = tl.program_id(1), tl.program_id(2)
    q_start, k_start = tl.load(Q_STARTS + row), tl.load(K_STARTS + row)
    TQ, TK = tl.load(Q_STARTS + row + 1) - q_start, tl.load(K_STARTS + row + 1) - k_start
    if start_m >= TQ:
        return
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    in_row = offs_m < TQ
    tokens = q_start + offs_m
    q = tl.load(Q + tokens[:, None] * stride_qt + h * stride_qh + offs_d[None, :], mask=in_row[:, None], other=0.0)
    K += k_start * stride_kt + h // GROUP * stride_kh
    V += k_start * stride_vt + h // GROUP * stride_vh
    KEEP += k_start

    acc = tl.zeros((BLOCK_M, D), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    pos_m = offs_m + (TK - TQ)  # each query's position among the row's keys
    diagonal = _whole_blocks_before(start_m + TK - TQ, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, KEEP, pos_m, 0, diagonal, TK, stride_kt, stride_vt,
                               qk_scale, D, BLOCK_N, False, MASKED, PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, KEEP, pos_m, diagonal,
                               tl.minimum(start_m + BLOCK_M + TK - TQ, TK),
                               TK, stride_kt, stride_vt, qk_scale, D, BLOCK_N, True, MASKED, PRECISION)

    nonempty = l_i > 0
    acc = acc / tl.where(nonempty, l_i, 1.0)[:, None]
    lse = tl.where(nonempty, m_i + tl.log2(tl.where(nonempty, l_i, 1.0)), 0.0)
    tl.store(O + (tokens[:, None] * H + h) * D + offs_d[None, :], acc.to(O.dtype.element_ty), mask=in_row[:, None])
    tl.store(LSE + tokens * H + h, lse, mask=in_row)


@triton.jit
def _bwd_dq_inner(dq, q, do, lse, delta, K, V, KEEP, pos_m, lo, hi, TK, stride_kt, stride_vt, qk_scale,
                  D: tl.constexpr, BLOCK_N: tl.constexpr, DIAGONAL: tl.constexpr, MASKED: tl.constexpr,
                  PRECISION: tl.constexpr):
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_row = offs_n < TK
        kt = tl.load(K + offs_n[None, :] * stride_kt + offs_d[:, None], mask=in_row[None, :], other=0.0)
        vt = tl.load(V + offs_n[None, :] * stride_vt + offs_d[:, None], mask=in_row[None, :], other=0.0)
        p = tl.exp2(_scores(q, kt, KEEP, offs_n, pos_m, TK, qk_scale, DIAGONAL, MASKED, PRECISION) - lse[:, None])
        dp = dot(do, vt, None, PRECISION)
        ds = p * (dp - delta[:, None])
        dq = dot(ds.to(kt.dtype), tl.trans(kt), dq, PRECISION)
    return dq


@triton.jit(do_not_specialize=["H"])
def _bwd_dq(Q, K, V, Q_STARTS, K_STARTS, KEEP, O, DO, LSE, DELTA, DQ, sm_scale, qk_scale, H, GROUP,
            stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
            D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
            PRECISION: tl.constexpr):
    """DQ (Nq, H, D) and DELTA (Nq, H) of BLOCK_M queries of one row and one query head."""
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    row, h = tl.program_id(1), tl.program_id(2)
    q_start, k_start = tl.load(Q_STARTS + row), tl.load(K_STARTS + row)
    TQ, TK = tl.load(Q_STARTS + row + 1) - q_start, tl.load(K_STARTS + row + 1) - k_start
    if start_m >= TQ:
        return
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    in_row = offs_m < TQ
    tokens = q_start + offs_m
    rows = (tokens[:, None] * H + h) * D + offs_d[None, :]  # O and DQ are contiguous (Nq, H, D)
    q = tl.load(Q + tokens[:, None] * stride_qt + h * stride_qh + offs_d[None, :], mask=in_row[:, None], other=0.0)
    do = tl.load(DO + tokens[:, None] * stride_dot + h * stride_doh + offs_d[None, :], mask=in_row[:, None],
                 other=0.0)
    o = tl.load(O + rows, mask=in_row[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + tokens * H + h, delta, mask=in_row)
    lse = tl.load(LSE + tokens * H + h, mask=in_row, other=0.0)
    K += k_start * stride_kt + h // GROUP * stride_kh
    V += k_start * stride_vt + h // GROUP * stride_vh
    KEEP += k_start

    dq = tl.zeros((BLOCK_M, D), tl.float32)
    pos_m = offs_m + (TK - TQ)
    diagonal = _whole_blocks_before(start_m + TK - TQ, BLOCK_N)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, KEEP, pos_m, 0, diagonal, TK, stride_kt, stride_vt, qk_scale,
                       D, BLOCK_N, False, MASKED, PRECISION)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, KEEP, pos_m, diagonal, tl.minimum(start_m + BLOCK_M + TK - TQ, TK),
                       TK, stride_kt, stride_vt, qk_scale, D, BLOCK_N, True, MASKED, PRECISION)
    tl.store(DQ + rows, (dq * sm_scale).to(DQ.dtype.element_ty), mask=in_row[:, None])


@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, keep, Q, DO, LSE, DELTA, offs_n, lo, hi, TQ, TK, H, stride_qt, stride_dot,
                    qk_scale, D: tl.constexpr, BLOCK_M: tl.constexpr, DIAGONAL: tl.constexpr,
                    PRECISION: tl.constexpr):
    """The query blocks from lo to hi of one query head: transposed blocks, keys along rows, queries along columns."""
    offs_d = tl.arange(0, D)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        in_row = offs_m < TQ
        qt = tl.load(Q + offs_m[None, :] * stride_qt + offs_d[:, None], mask=in_row[None, :], other=0.0)
        do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=in_row[:, None], other=0.0)
        # queries past TQ get lse = inf, hence probability 0
        lse = tl.load(LSE + offs_m * H, mask=in_row, other=float("inf"))
        delta = tl.load(DELTA + offs_m * H, mask=in_row, other=0.0)
        st = dot(k, qt, None, PRECISION) * qk_scale
        seen = keep[:, None]
        if DIAGONAL:
            seen = seen & (offs_m[None, :] + (TK - TQ) >= offs_n[:, None])
        pt = tl.exp2(tl.where(seen, st, float("-inf")) - lse[None, :])
        dv = dot(pt.to(do.dtype), do, dv, PRECISION)
        dpt = dot(v, tl.trans(do), None, PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk = dot(dst.to(qt.dtype), tl.trans(qt), dk, PRECISION)
    return dk, dv


@triton.jit(do_not_specialize=["H"])
def _bwd_dkdv(Q, K, V, Q_STARTS, K_STARTS, KEEP, DO, LSE, DELTA, DK, DV, sm_scale, qk_scale, H, GROUP,
              stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_dot, stride_doh,
              D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
              PRECISION: tl.constexpr):
    """DK and DV (Nk, H // GROUP, D) of BLOCK_N keys of one row and one key/value head, summed over the
    GROUP query heads that read it."""
    start_n = tl.program_id(0) * BLOCK_N
    row, h_kv = tl.program_id(1), tl.program_id(2)
    q_start, k_start = tl.load(Q_STARTS + row), tl.load(K_STARTS + row)
    TQ, TK = tl.load(Q_STARTS + row + 1) - q_start, tl.load(K_STARTS + row + 1) - k_start
    if start_n >= TK:
        return
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    in_row = offs_n < TK
    keys = k_start + offs_n
    k = tl.load(K + keys[:, None] * stride_kt + h_kv * stride_kh + offs_d[None, :], mask=in_row[:, None], other=0.0)
    v = tl.load(V + keys[:, None] * stride_vt + h_kv * stride_vh + offs_d[None, :], mask=in_row[:, None], other=0.0)
    keep = in_row
    if MASKED:
        keep = keep & (tl.load(KEEP + keys, mask=in_row, other=0) != 0)

    dk = tl.zeros((BLOCK_N, D), tl.float32)
    dv = tl.zeros((BLOCK_N, D), tl.float32)
    # queries (in blocks of BLOCK_M from 0) that see part of this key block, then those that see it whole
    first = tl.maximum(start_n - (TK - TQ), 0) // BLOCK_M * BLOCK_M
    whole = tl.minimum((tl.maximum(start_n + BLOCK_N - 1 - (TK - TQ), 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M, TQ)
    for g in range(GROUP):  # (GROUP = 1, plain multi-head attention, is compiled apart: no loop there)
        h = h_kv * GROUP + g
        Qh = Q + q_start * stride_qt + h * stride_qh
        DOh = DO + q_start * stride_dot + h * stride_doh
        LSEh = LSE + q_start * H + h
        DELTAh = DELTA + q_start * H + h
        dk, dv = _bwd_dkdv_inner(dk, dv, k, v, keep, Qh, DOh, LSEh, DELTAh, offs_n, first, whole,
                                 TQ, TK, H, stride_qt, stride_dot, qk_scale, D, BLOCK_M, True, PRECISION)
        dk, dv = _bwd_dkdv_inner(dk, dv, k, v, keep, Qh, DOh, LSEh, DELTAh, offs_n, whole, TQ,
                                 TQ, TK, H, stride_qt, stride_dot, qk_scale, D, BLOCK_M, False, PRECISION)
    rows = (keys[:, None] * (H // GROUP) + h_kv) * D + offs_d[None, :]  # DK and DV are contiguous (Nk, H_kv, D)
    tl.store(DK + rows, (dk * sm_scale).to(DK.dtype.element_ty), mask=in_row[:, None])
    tl.store(DV + rows, dv.to(DV.dtype.element_ty), mask=in_row[:, None])


def _config(D, dtype, arch, grouped=False):
    """Block sizes and launch options of each kernel, {"fwd", "dq", "dkdv": {...}}, for head dim D,
    inputs of ``dtype`` and key/value heads shared by groups of query heads or not (``grouped``),
    on a GPU of compute capability ``arch`` (None: the interpreter).

    Chosen with ``python -m minway.kernels.gpu_compile``: every one fits the shared memory of sm_80
    and sm_90, and for 16-bit inputs up to D = 64 none spills registers there (the model's
    tensors always have the arguments' 16-byte alignment; without it, dkdv spills 256 B on
    sm_80). With grouped heads dkdv loops over the query heads of its group, which holds more
    registers: it takes 16 queries at a time, not 32 (with 32 it spilled 56 B on sm_80 at D = 64).
    fp32 inputs go through tf32x3, which splits both operands of every product in two, in
    registers: they get small blocks, and some spill a little all the same (benchmarks/README.md).
    """
    if arch is None:  # interpreter: small blocks so that tests cross block edges cheaply
        small = dict(BLOCK_M=32, BLOCK_N=16)
        return dict(fwd=small, dq=small, dkdv=dict(BLOCK_M=16, BLOCK_N=32))
    if dtype == torch.float32:
        small = dict(BLOCK_M=32, BLOCK_N=32, num_warps=8, num_stages=2)
        return dict(fwd=small, dq=small, dkdv=small)
    options = dict(num_warps=8, num_stages=3)
    return dict(fwd=dict(BLOCK_M=128, BLOCK_N=32, **options), dq=dict(BLOCK_M=64, BLOCK_N=32, **options),
                dkdv=dict(BLOCK_M=16 if grouped else 32, BLOCK_N=128 if D <= 64 else 64, **options))


def _precision(dtype):
    # fp32 inputs: three tf32 products give about fp32 accuracy; 16-bit inputs ignore this
    return "tf32x3" if dtype == torch.float32 else "tf32"


class Rows(NamedTuple):
    """The packed rows of a launch: where each row's queries and keys begin (B + 1,), the longest
    row's queries and keys, and which keys to keep (Nk,) bool, or None for all of them."""
    q_starts: torch.Tensor
    k_starts: torch.Tensor
    max_q: int
    max_k: int
    keep: Optional[torch.Tensor] = None


def _forward(q, k, v, rows, arch):
    """o (Nq, H, D) and the log-sum-exp (Nq, H) of attention over the packed rows, on a GPU of
    compute capability ``arch`` (None: the interpreter)."""
    _, H, D = q.shape
    o = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
    config = _config(D, q.dtype, arch, grouped=k.shape[1] < H)["fwd"]
    grid = (triton.cdiv(rows.max_q, config["BLOCK_M"]), len(rows.q_starts) - 1, H)
    if all(grid):  # (no query, or no row: nothing to launch)
        _fwd[grid](q, k, v, rows.q_starts, rows.k_starts, _keep(rows), o, lse, LOG2E / math.sqrt(D), H,
                   H // k.shape[1], q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                   D=D, MASKED=rows.keep is not None, PRECISION=_precision(q.dtype), **config)
    return o, lse


def _backward(q, k, v, o, lse, do, rows, arch):
    """dq, dk and dv given the output gradient do: ``_bwd_dq`` (which also writes delta), then ``_bwd_dkdv``."""
    _, H, D = q.shape
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk, dv = (torch.empty(k.shape, dtype=k.dtype, device=k.device) for _ in range(2))
    delta = torch.empty_like(lse)
    config = _config(D, q.dtype, arch, grouped=k.shape[1] < H)
    sm_scale = 1.0 / math.sqrt(D)
    common = dict(D=D, MASKED=rows.keep is not None, PRECISION=_precision(q.dtype))
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), do.stride(0), do.stride(1))
    n_rows = len(rows.q_starts) - 1
    grid = (triton.cdiv(rows.max_q, config["dq"]["BLOCK_M"]), n_rows, H)
    if all(grid):
        _bwd_dq[grid](q, k, v, rows.q_starts, rows.k_starts, _keep(rows), o, do, lse, delta, dq,
                      sm_scale, sm_scale * LOG2E, H, H // k.shape[1], *strides, **common, **config["dq"])
    grid = (triton.cdiv(rows.max_k, config["dkdv"]["BLOCK_N"]), n_rows, k.shape[1])
    if all(grid):
        _bwd_dkdv[grid](q, k, v, rows.q_starts, rows.k_starts, _keep(rows), do, lse, delta, dk, dv,
                        sm_scale, sm_scale * LOG2E, H, H // k.shape[1], *strides, **common, **config["dkdv"])
    return dq, dk, dv


def _keep(rows):
    return rows.keep if rows.keep is not None else rows.q_starts  # never read when MASKED is off


def _arch(device):
    return gpu_arch(device) if device.type == "cuda" else None


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rows):
        o, lse = _forward(q, k, v, rows, _arch(q.device))
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.rows = rows
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        if do.stride(-1) != 1:
            do = do.contiguous()
        return (*_backward(q, k, v, o, lse, do, ctx.rows, _arch(q.device)), None)


def _check_inputs(q, k, v, what):
    D = q.shape[-1]
    if D not in (16, 32, 64, 128) or q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"the triton backend takes head dims 16, 32, 64, 128 in fp32, bf16 or fp16, "
                         f"got {D} in {q.dtype}: use backend='sdpa'")
    if not k.dtype == v.dtype == q.dtype:
        raise ValueError(f"{what}: q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def _unit_stride(x):
    return x if x.stride(-1) == 1 else x.contiguous()


def flash_attention_varlen(q, k, v, q_starts, k_starts, max_q=None, max_k=None):
    """Causal attention of packed rows: q (Nq, H, D), k and v (Nk, H_kv, D), H a multiple of H_kv
    (query head h reads key/value head h // (H // H_kv)); row r's queries are
    q[q_starts[r]:q_starts[r + 1]], its keys k[k_starts[r]:k_starts[r + 1]], at least as many,
    and its i-th of n queries sees the first m - n + i + 1 of its m keys. ``max_q``, ``max_k``:
    the longest row's queries and keys, when the caller knows them (otherwise they are read
    from the offsets, which waits for the GPU)."""
    check_device(q.device, "varlen attention")
    if not (q.dim() == 3 and k.dim() == 3 and k.shape == v.shape and k.shape[2] == q.shape[2]
            and q.shape[1] % k.shape[1] == 0):
        raise ValueError(f"varlen attention takes q (Nq, H, D) and k, v (Nk, H_kv, D), H a multiple of H_kv, "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q_starts.shape == k_starts.shape and q_starts.dim() == 1 and len(q_starts) >= 1):
        raise ValueError(f"q_starts and k_starts must be (B + 1,) offsets, got {tuple(q_starts.shape)} and "
                         f"{tuple(k_starts.shape)}")
    _check_inputs(q, k, v, "varlen attention")
    if max_q is None or max_k is None:
        q_lengths, k_lengths = (starts.diff().tolist() for starts in (q_starts, k_starts))
        if any(m < n for n, m in zip(q_lengths, k_lengths)):
            raise ValueError(f"each row needs at least as many keys as queries, got {q_lengths} queries and "
                             f"{k_lengths} keys")
        max_q, max_k = max(q_lengths, default=0), max(k_lengths, default=0)
    rows = Rows(q_starts.to(q.device, torch.long), k_starts.to(q.device, torch.long), max_q, max_k)
    return _FlashAttention.apply(*(_unit_stride(x) for x in (q, k, v)), rows)


def flash_attention(q, k, v, key_padding_mask=None):
    """Causal attention of q (B, H, TQ, D) over k, v (B, H_kv, TK, D), TK >= TQ, H a multiple of H_kv;
    see minway.kernels.attention for the semantics. The varlen kernels with rows of equal lengths,
    and keys masked."""
    check_device(q.device, "causal_attention")
    B, H, TQ, D = q.shape
    H_kv, TK = k.shape[1], k.shape[2]
    if not (k.shape == v.shape == (B, H_kv, TK, D) and TK >= TQ and H % H_kv == 0):
        raise ValueError(f"q (B, H, TQ, D) and k, v (B, H_kv, TK >= TQ, D), H a multiple of H_kv, expected, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    _check_inputs(q, k, v, "causal_attention")
    keep = None
    if key_padding_mask is not None:
        if key_padding_mask.shape != (B, TK) or key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be a ({B}, {TK}) bool tensor, got "
                             f"{tuple(key_padding_mask.shape)} {key_padding_mask.dtype}")
        keep = key_padding_mask.reshape(B * TK)
    offsets = torch.arange(B + 1, device=q.device)
    rows = Rows(offsets * TQ, offsets * TK, TQ, TK, keep)

    def packed(x):  # (B, heads, T, D) -> (B * T, heads, D): a view for the (B, T, heads, D) layout of a model
        return _unit_stride(x.transpose(1, 2).reshape(B * x.shape[2], x.shape[1], D))
    o = _FlashAttention.apply(packed(q), packed(k), packed(v), rows)
    return o.view(B, TQ, H, D).transpose(1, 2)
