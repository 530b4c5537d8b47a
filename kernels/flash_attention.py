"""Fused causal attention with a key-padding mask, forward and backward, in Triton.

Flash attention: a program owns a block of query rows and streams over the key blocks
with an online softmax, so no TQ x TK matrix is ever stored; the forward keeps only the
log-sum-exp of each row for the backward to rebuild the probabilities from. Key blocks
entirely above the diagonal are skipped; the causal mask is applied only to the blocks
that straddle it. Scores live in the log2 domain (exp2 is the fast instruction).

There may be more keys (TK) than queries (TQ), the first TK - TQ from a cached prefix:
query m then stands at key position m + TK - TQ (``pos_m`` below), and the diagonal
moves right by that much.

Backward, in two kernels that each recompute the probabilities of their blocks:
``_bwd_dq`` per query block (it also stores delta = rowsum(dO * O) on its way), then
``_bwd_dkdv`` per key block, streaming over the query blocks at and below the diagonal.
A query with no key to attend to has lse 0 and probabilities 0: output, and gradients
through it, are zero.
"""
import math

import torch
import triton
import triton.language as tl

from kernels.triton_common import check_device, dot, gpu_arch

LOG2E = 1.4426950408889634


@triton.jit
def _scores(q, kt, keep, pos_m, offs_n, qk_scale, DIAGONAL: tl.constexpr, PRECISION: tl.constexpr):
    """Scores of a (BLOCK_M, BLOCK_N) block in the log2 domain, -inf where the key may not be seen."""
    s = dot(q, kt, None, PRECISION) * qk_scale
    allowed = keep[None, :]
    if DIAGONAL:
        allowed = allowed & (pos_m[:, None] >= offs_n[None, :])
    return tl.where(allowed, s, float("-inf"))


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, K, V, KEEP, pos_m, lo, hi, TK, stride_kt, stride_vt, qk_scale,
               D: tl.constexpr, BLOCK_N: tl.constexpr, DIAGONAL: tl.constexpr, PRECISION: tl.constexpr):
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_t = offs_n < TK
        kt = tl.load(K + offs_n[None, :] * stride_kt + offs_d[:, None], mask=in_t[None, :], other=0.0)
        keep = tl.load(KEEP + offs_n, mask=in_t, other=0) != 0
        s = _scores(q, kt, keep, pos_m, offs_n, qk_scale, DIAGONAL, PRECISION)

        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing allowed yet
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(V + offs_n[:, None] * stride_vt + offs_d[None, :], mask=in_t[:, None], other=0.0)
        acc = dot(p.to(v.dtype), v, acc * alpha[:, None], PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd(Q, K, V, KEEP, O, LSE, qk_scale, TQ, TK, H,
         stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
         D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    # the longest rows first: blocks further down the diagonal have more keys to visit
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=offs_m[:, None] < TQ, other=0.0)
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    KEEP += b * TK

    acc = tl.zeros((BLOCK_M, D), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    pos_m = offs_m + (TK - TQ)
    diagonal = _whole_blocks_before(start_m + TK - TQ, BLOCK_N)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, KEEP, pos_m, 0, diagonal, TK, stride_kt, stride_vt,
                               qk_scale, D, BLOCK_N, False, PRECISION)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, K, V, KEEP, pos_m, diagonal,
                               tl.minimum(start_m + BLOCK_M + TK - TQ, TK),
                               TK, stride_kt, stride_vt, qk_scale, D, BLOCK_N, True, PRECISION)

    nonempty = l_i > 0
    acc = acc / tl.where(nonempty, l_i, 1.0)[:, None]
    lse = tl.where(nonempty, m_i + tl.log2(tl.where(nonempty, l_i, 1.0)), 0.0)
    in_t = offs_m < TQ
    tl.store(O + (bh * TQ + offs_m[:, None]) * D + offs_d[None, :], acc.to(O.dtype.element_ty), mask=in_t[:, None])
    tl.store(LSE + bh * TQ + offs_m, lse, mask=in_t)


@triton.jit
def _whole_blocks_before(first_pos, BLOCK_N: tl.constexpr):
    """End of the key blocks (of BLOCK_N, from 0) that a query at ``first_pos`` and every later
    one see whole: the blocks that need no causal mask."""
    return (first_pos + 1) // BLOCK_N * BLOCK_N


@triton.jit
def _bwd_dq_inner(dq, q, do, lse, delta, K, V, KEEP, pos_m, lo, hi, TK, stride_kt, stride_vt, qk_scale,
                  D: tl.constexpr, BLOCK_N: tl.constexpr, DIAGONAL: tl.constexpr, PRECISION: tl.constexpr):
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        in_t = offs_n < TK
        kt = tl.load(K + offs_n[None, :] * stride_kt + offs_d[:, None], mask=in_t[None, :], other=0.0)
        vt = tl.load(V + offs_n[None, :] * stride_vt + offs_d[:, None], mask=in_t[None, :], other=0.0)
        keep = tl.load(KEEP + offs_n, mask=in_t, other=0) != 0
        p = tl.exp2(_scores(q, kt, keep, pos_m, offs_n, qk_scale, DIAGONAL, PRECISION) - lse[:, None])
        dp = dot(do, vt, None, PRECISION)
        ds = p * (dp - delta[:, None])
        dq = dot(ds.to(kt.dtype), tl.trans(kt), dq, PRECISION)
    return dq


@triton.jit
def _bwd_dq(Q, K, V, KEEP, O, DO, LSE, DELTA, DQ, sm_scale, qk_scale, TQ, TK, H,
            stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
            stride_dob, stride_doh, stride_dot,
            D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    start_m = (tl.num_programs(0) - 1 - tl.program_id(0)) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    in_t = offs_m < TQ
    rows = offs_m[:, None] * D + offs_d[None, :]  # O and DQ are contiguous
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=in_t[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=in_t[:, None], other=0.0)
    o = tl.load(O + bh * TQ * D + rows, mask=in_t[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1)
    tl.store(DELTA + bh * TQ + offs_m, delta, mask=in_t)
    lse = tl.load(LSE + bh * TQ + offs_m, mask=in_t, other=0.0)
    K += b * stride_kb + h * stride_kh
    V += b * stride_vb + h * stride_vh
    KEEP += b * TK

    dq = tl.zeros((BLOCK_M, D), tl.float32)
    pos_m = offs_m + (TK - TQ)
    diagonal = _whole_blocks_before(start_m + TK - TQ, BLOCK_N)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, KEEP, pos_m, 0, diagonal, TK, stride_kt, stride_vt, qk_scale,
                       D, BLOCK_N, False, PRECISION)
    dq = _bwd_dq_inner(dq, q, do, lse, delta, K, V, KEEP, pos_m, diagonal, tl.minimum(start_m + BLOCK_M + TK - TQ, TK),
                       TK, stride_kt, stride_vt, qk_scale, D, BLOCK_N, True, PRECISION)
    tl.store(DQ + bh * TQ * D + rows, (dq * sm_scale).to(DQ.dtype.element_ty), mask=in_t[:, None])


@triton.jit
def _bwd_dkdv_inner(dk, dv, k, v, keep, Q, DO, LSE, DELTA, offs_n, lo, hi, TQ, TK, stride_qt, stride_dot, qk_scale,
                    D: tl.constexpr, BLOCK_M: tl.constexpr, DIAGONAL: tl.constexpr, PRECISION: tl.constexpr):
    """Transposed blocks: keys along rows, queries along columns."""
    offs_d = tl.arange(0, D)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        in_t = offs_m < TQ
        qt = tl.load(Q + offs_m[None, :] * stride_qt + offs_d[:, None], mask=in_t[None, :], other=0.0)
        do = tl.load(DO + offs_m[:, None] * stride_dot + offs_d[None, :], mask=in_t[:, None], other=0.0)
        # rows past TQ get lse = inf, hence probability 0
        lse = tl.load(LSE + offs_m, mask=in_t, other=float("inf"))
        delta = tl.load(DELTA + offs_m, mask=in_t, other=0.0)
        st = dot(k, qt, None, PRECISION) * qk_scale
        allowed = keep[:, None]
        if DIAGONAL:
            allowed = allowed & (offs_m[None, :] + (TK - TQ) >= offs_n[:, None])
        pt = tl.exp2(tl.where(allowed, st, float("-inf")) - lse[None, :])
        dv = dot(pt.to(do.dtype), do, dv, PRECISION)
        dpt = dot(v, tl.trans(do), None, PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk = dot(dst.to(qt.dtype), tl.trans(qt), dk, PRECISION)
    return dk, dv


@triton.jit
def _bwd_dkdv(Q, K, V, KEEP, DO, LSE, DELTA, DK, DV, sm_scale, qk_scale, TQ, TK, H,
              stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
              stride_dob, stride_doh, stride_dot,
              D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    in_t = offs_n < TK
    k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kt + offs_d[None, :],
                mask=in_t[:, None], other=0.0)
    v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vt + offs_d[None, :],
                mask=in_t[:, None], other=0.0)
    keep = tl.load(KEEP + b * TK + offs_n, mask=in_t, other=0) != 0
    Q += b * stride_qb + h * stride_qh
    DO += b * stride_dob + h * stride_doh
    LSE += bh * TQ
    DELTA += bh * TQ

    dk = tl.zeros((BLOCK_N, D), tl.float32)
    dv = tl.zeros((BLOCK_N, D), tl.float32)
    # queries (in blocks of BLOCK_M from 0) that see part of this key block, then those that see it whole
    first = tl.maximum(start_n - (TK - TQ), 0) // BLOCK_M * BLOCK_M
    whole = tl.minimum((tl.maximum(start_n + BLOCK_N - 1 - (TK - TQ), 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M, TQ)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, keep, Q, DO, LSE, DELTA, offs_n, first, whole,
                             TQ, TK, stride_qt, stride_dot, qk_scale, D, BLOCK_M, True, PRECISION)
    dk, dv = _bwd_dkdv_inner(dk, dv, k, v, keep, Q, DO, LSE, DELTA, offs_n, whole, TQ,
                             TQ, TK, stride_qt, stride_dot, qk_scale, D, BLOCK_M, False, PRECISION)
    rows = (bh * TK + offs_n[:, None]) * D + offs_d[None, :]
    tl.store(DK + rows, (dk * sm_scale).to(DK.dtype.element_ty), mask=in_t[:, None])
    tl.store(DV + rows, dv.to(DV.dtype.element_ty), mask=in_t[:, None])


def _config(D, dtype, arch):
    """Block sizes and launch options of each kernel, {"fwd", "dq", "dkdv": {...}}, for head dim D
    and inputs of ``dtype`` on a GPU of compute capability ``arch`` (None: the interpreter).

    Chosen with ``python -m kernels.gpu_compile``: every one fits the shared memory of sm_80
    and sm_90, and for 16-bit inputs none spills registers there, with or without the
    arguments' 16-byte alignment. fp32 inputs go through tf32x3, which splits both operands
    of every product in two, in registers: they get small blocks, and some spill a little
    all the same (benchmarks/README.md).
    """
    if arch is None:  # interpreter: small blocks so that tests cross block edges cheaply
        small = dict(BLOCK_M=32, BLOCK_N=16)
        return dict(fwd=small, dq=small, dkdv=dict(BLOCK_M=16, BLOCK_N=32))
    if dtype == torch.float32:
        small = dict(BLOCK_M=32, BLOCK_N=32, num_warps=8, num_stages=2)
        return dict(fwd=small, dq=small, dkdv=small)
    options = dict(num_warps=8, num_stages=3)
    return dict(fwd=dict(BLOCK_M=128, BLOCK_N=32, **options), dq=dict(BLOCK_M=64, BLOCK_N=32, **options),
                dkdv=dict(BLOCK_M=32, BLOCK_N=128 if D <= 64 else 64, **options))


def _strides(x):
    return x.stride(0), x.stride(1), x.stride(2)


def _precision(dtype):
    # fp32 inputs: three tf32 products give about fp32 accuracy; 16-bit inputs ignore this
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _arch(device):
    return gpu_arch(device) if device.type == "cuda" else None


def forward_launch(q, k, v, keep, o, lse, arch):
    """(grid, arguments, keyword arguments) of ``_fwd`` writing o and lse."""
    B, H, TQ, D = q.shape
    config = _config(D, q.dtype, arch)["fwd"]
    grid = (triton.cdiv(TQ, config["BLOCK_M"]), B * H)
    args = (q, k, v, keep, o, lse, LOG2E / math.sqrt(D), TQ, k.shape[2], H, *_strides(q), *_strides(k), *_strides(v))
    return grid, args, dict(D=D, PRECISION=_precision(q.dtype), **config)


def backward_launches(q, k, v, keep, o, lse, do, delta, dq, dk, dv, arch):
    """[(kernel, grid, arguments, keyword arguments)] of ``_bwd_dq`` (which writes delta and dq),
    then ``_bwd_dkdv`` (dk and dv), in the order they must run."""
    B, H, TQ, D = q.shape
    TK = k.shape[2]
    config = _config(D, q.dtype, arch)
    sm_scale = 1.0 / math.sqrt(D)
    common = (sm_scale, sm_scale * LOG2E, TQ, TK, H, *_strides(q), *_strides(k), *_strides(v), *_strides(do))
    precision = dict(D=D, PRECISION=_precision(q.dtype))
    return [(_bwd_dq, (triton.cdiv(TQ, config["dq"]["BLOCK_M"]), B * H),
             (q, k, v, keep, o, do, lse, delta, dq, *common), dict(**precision, **config["dq"])),
            (_bwd_dkdv, (triton.cdiv(TK, config["dkdv"]["BLOCK_N"]), B * H),
             (q, k, v, keep, do, lse, delta, dk, dv, *common), dict(**precision, **config["dkdv"]))]


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, keep):
        B, H, TQ, D = q.shape
        o = torch.empty(B, H, TQ, D, dtype=q.dtype, device=q.device)
        lse = torch.empty(B, H, TQ, dtype=torch.float32, device=q.device)
        grid, args, kwargs = forward_launch(q, k, v, keep, o, lse, _arch(q.device))
        _fwd[grid](*args, **kwargs)
        ctx.save_for_backward(q, k, v, keep, o, lse)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, keep, o, lse = ctx.saved_tensors
        if do.stride(-1) != 1:
            do = do.contiguous()
        dq = torch.empty_like(q, memory_format=torch.contiguous_format)
        dk, dv = (torch.empty_like(k, memory_format=torch.contiguous_format) for _ in range(2))
        delta = torch.empty_like(lse)
        for kernel, grid, args, kwargs in backward_launches(q, k, v, keep, o, lse, do, delta, dq, dk, dv,
                                                            _arch(q.device)):
            kernel[grid](*args, **kwargs)
        return dq, dk, dv, None


def flash_attention(q, k, v, key_padding_mask=None):
    """Causal attention of q (B, H, TQ, D) over k, v (B, H, TK, D), TK >= TQ; see kernels.attention
    for the semantics."""
    check_device(q.device, "causal_attention")
    B, H, TQ, D = q.shape
    TK = k.shape[2]
    if not (k.shape == v.shape == (B, H, TK, D) and TK >= TQ and k.dtype == v.dtype == q.dtype):
        raise ValueError(f"q (B, H, TQ, D) and k, v (B, H, TK >= TQ, D) must share one dtype, got "
                         f"{tuple(q.shape)} {q.dtype}, {tuple(k.shape)} {k.dtype}, {tuple(v.shape)} {v.dtype}")
    if D not in (16, 32, 64, 128) or q.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"the triton backend takes head dims 16, 32, 64, 128 in fp32, bf16 or fp16, "
                         f"got {D} in {q.dtype}: use backend='sdpa'")
    if key_padding_mask is None:
        keep = torch.ones(B, TK, dtype=torch.bool, device=q.device)
    elif key_padding_mask.shape != (B, TK) or key_padding_mask.dtype != torch.bool:
        raise ValueError(f"key_padding_mask must be a ({B}, {TK}) bool tensor, got "
                         f"{tuple(key_padding_mask.shape)} {key_padding_mask.dtype}")
    else:
        keep = key_padding_mask.contiguous()
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    return _FlashAttention.apply(q, k, v, keep)
