"""The d-projection in Triton: the nearest vocabulary rows of many query vectors, in one pass
over the embedding matrix (``minway.kernels.projection.nearest_tokens`` chooses it for CUDA tensors).

What it computes (``reference``, below, in a few lines of torch). For M queries q (M, d) and
the V rows of an embedding matrix E (V, d): the k rows that score best against each query, by
dot product q.e, squared distance ||q - e||^2 (the least) or cosine, ties going to the lowest
row. Prompt Waywardness maps each continuous prompt vector to its nearest token this way.

What it costs. Reading E once, V d s bytes (s bytes an element), and 2 M V d FLOPs of products,
done three times over for exact fp32 scores (below). The score matrix, M x V, is never
written: the memory traffic is E itself. Per byte of E that is 3 M FLOPs in bf16: 42 for a
prompt of 14 vectors, where an H100 does about 260 per byte it reads (790 TFLOP/s against 3
TB/s). Up to M ~ 88 (in bf16, and in fp32, whose rows are twice the bytes and whose tf32
products run at half the rate) the projection is bound by reading E, and its limit is the
time to read E once: 43 us for GPT-2 large's 50257 rows of 1280 in bf16,
175 us for Llama 3's 128256 rows of 2048, 415 us for 151936 rows of 4096 (Qwen 2.5's
vocabulary); benchmarks/bench_projection.py measures the kernel against that limit.

How. Each program takes a block of queries and a slice of the vocabulary. It scores one tile
of vocabulary rows at a time against all its queries, a (BLOCK_V, BLOCK_M) block on the
tensor cores: vocabulary rows on the long side, so that the tile stays efficient when there
are only a few queries. Each query column keeps its running top-KP in registers. The slices
are there for parallelism when there are few query blocks; their candidates are merged on
the host (a top-k over splits * KP entries per query).

Exact fp32 scores on tensor cores: fp32 and fp16 rows go through the tf32x3 dot (three tf32
products, about fp32 accuracy). For bf16 rows the fp32 queries are split into three bf16
parts whose sum is the query exactly; every bf16 x bf16 product is exact in fp32, so three
bf16 dots give the fp32 result at a fraction of the tf32x3 cost.
"""
import torch
import triton
import triton.language as tl

from minway.kernels.triton_common import dot, gpu_arch


def reference_scores(queries, embeddings, metric, dtype=torch.float64):
    """The (M, V) matrix of what nearest_tokens reports for every pair, q.e, ||q - e||^2 or the cosine,
    computed in ``dtype``."""
    q, E = queries.to(dtype), embeddings.to(dtype)
    scores = q @ E.T
    if metric == "l2":
        return (q * q).sum(1, keepdim=True) - 2 * scores + (E * E).sum(1)
    if metric == "cos":
        norms = q.norm(dim=1, keepdim=True) * E.norm(dim=1)
        return torch.where(norms > 0, scores / norms, 0.0)  # a zero vector has cosine 0 with anything
    return scores


def reference(queries, embeddings, k=1, metric="dot", dtype=torch.float64):
    """What the kernel computes, in plain torch: every score, then the k best of each query (the
    least for l2), ties to the lowest row (a stable sort); indices, scores and the margin between
    the best two, as nearest_tokens returns them, scores and margin in ``dtype``."""
    scores = reference_scores(queries, embeddings, metric, dtype)
    order = scores.sort(dim=1, descending=metric != "l2", stable=True).indices[:, :max(k, 2)]
    best = scores.gather(1, order)
    return order[:, :k], best[:, :k], (best[:, 0] - best[:, 1]).abs()


_BIG = tl.constexpr(2**31 - 1)


@triton.jit
def _score_tile(Q, E, inv_qn, offs_m, offs_v, M, v_hi, D, stride_qp, stride_qm, stride_e,
                METRIC: tl.constexpr, Q_PARTS: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr):
    """Ranking scores (higher is better) of rows offs_v against queries offs_m: (BLOCK_V, BLOCK_M)."""
    acc = tl.zeros((BLOCK_V, BLOCK_M), tl.float32)
    sq = tl.zeros((BLOCK_V,), tl.float32)
    rows = offs_v.to(tl.int64)[:, None] * stride_e
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        e = tl.load(E + rows + offs_d[None, :], mask=(offs_v[:, None] < v_hi) & (offs_d[None, :] < D), other=0.0)
        if METRIC != "dot":
            ef = e.to(tl.float32)
            sq += tl.sum(ef * ef, axis=1)
        if Q_PARTS == 1:
            e = e.to(tl.float32)
        q_mask = (offs_m[None, :] < M) & (offs_d[:, None] < D)
        for p in tl.static_range(Q_PARTS):
            qt = tl.load(Q + p * stride_qp + offs_m[None, :] * stride_qm + offs_d[:, None], mask=q_mask, other=0.0)
            acc = dot(e, qt, acc, PRECISION)
    if METRIC == "l2":
        acc = 2.0 * acc - sq[:, None]
    if METRIC == "cos":
        inv_en = tl.where(sq > 0, tl.div_rn(1.0, tl.sqrt_rn(tl.maximum(sq, 1e-30))), 0.0)
        acc = acc * inv_qn[None, :] * inv_en[:, None]
    return tl.where(offs_v[:, None] < v_hi, acc, float("-inf"))


@triton.jit
def _fold(s, offs_v, best_s, best_i, KP: tl.constexpr):
    """Fold a tile of scores into each query column's running top-KP.

    Each round takes the best remaining tile entry of every column (lowest row on a tie)
    and lets it replace the worst kept entry if it beats it. Rows arrive in increasing
    order, so an equal score never displaces a kept entry, and of equal kept scores the
    highest row is the one to go. A column needs no more rounds than it has entries that
    beat its worst kept one; after the first tiles that is rarely more than one, so the
    loop runs only as many rounds as the neediest column of the tile.
    """
    worst = tl.min(best_s, axis=0)
    rounds = tl.minimum(tl.max(tl.sum((s > worst[None, :]).to(tl.int32), axis=0), axis=0), KP)
    for _ in range(rounds):
        top = tl.max(s, axis=0)
        at = tl.min(tl.where(s == top[None, :], offs_v[:, None], _BIG), axis=0)
        s = tl.where(offs_v[:, None] == at[None, :], float("-inf"), s)
        worst = tl.min(best_s, axis=0)
        drop = tl.max(tl.where(best_s == worst[None, :], best_i, -1), axis=0)
        replace = (best_i == drop[None, :]) & (top > worst)[None, :]
        best_s = tl.where(replace, top[None, :], best_s)
        best_i = tl.where(replace, at[None, :], best_i)
    return best_s, best_i


@triton.jit(do_not_specialize=["V"])  # one compiled kernel for every vocabulary
def _nearest_kernel(Q, E, INV_QN, OUT_S, OUT_I, M, V, D, rows_per_split,
                    stride_qp, stride_qm, stride_e,
                    METRIC: tl.constexpr, Q_PARTS: tl.constexpr, PRECISION: tl.constexpr, KP: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr):
    split = tl.program_id(1)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    v_lo = split * rows_per_split
    v_hi = tl.minimum(v_lo + rows_per_split, V)
    inv_qn = tl.zeros((BLOCK_M,), tl.float32)
    if METRIC == "cos":
        inv_qn = tl.load(INV_QN + offs_m, mask=offs_m < M, other=0.0)

    slots = tl.arange(0, KP)[:, None]
    best_s = tl.full((KP, BLOCK_M), float("-inf"), tl.float32)
    best_i = tl.broadcast_to(V + slots, (KP, BLOCK_M))  # placeholders rank below every real row
    for v0 in range(v_lo, v_hi, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        s = _score_tile(Q, E, inv_qn, offs_m, offs_v, M, v_hi, D, stride_qp, stride_qm, stride_e,
                        METRIC, Q_PARTS, PRECISION, BLOCK_M, BLOCK_V, BLOCK_D)
        best_s, best_i = _fold(s, offs_v, best_s, best_i, KP)

    out = split * M * KP + offs_m[None, :] * KP + slots
    tl.store(OUT_S + out, best_s, mask=offs_m[None, :] < M)
    tl.store(OUT_I + out, best_i, mask=offs_m[None, :] < M)


def _split_bf16(q):
    """Three bf16 tensors whose fp32 sum is q exactly."""
    parts = []
    for _ in range(3):
        parts.append(q.bfloat16())
        q = q - parts[-1].float()
    return torch.stack(parts)


# (BLOCK_V, BLOCK_D, stages) by block of queries, for bf16 rows and for fp32 and fp16 rows,
# chosen with ``python -m minway.kernels.gpu_compile``: none spills registers on sm_80 or sm_90,
# with or without the arguments' 16-byte alignment. fp32 and fp16 rows take smaller tiles:
# tf32x3 splits both operands of each product in two, in registers.
_BLOCKS = {"bf16": {16: (128, 32, 4), 32: (128, 32, 4), 64: (64, 32, 4), 128: (64, 16, 4)},
           "tf32x3": {16: (128, 32, 3), 32: (128, 32, 3), 64: (64, 16, 3), 128: (64, 16, 3)}}


def _config(M, dtype, arch):
    """Block sizes and launch options for M queries against rows of ``dtype`` on a GPU of compute
    capability ``arch`` (None: the interpreter). The tile is (BLOCK_V rows, BLOCK_M queries)."""
    block_m = min(128, max(16, triton.next_power_of_2(M)))
    if arch is None:  # interpreter: small tiles so that tests cover every edge cheaply
        return dict(BLOCK_M=min(64, block_m), BLOCK_V=64, BLOCK_D=32), {}
    block_v, block_d, stages = _BLOCKS["bf16" if dtype == torch.bfloat16 else "tf32x3"][block_m]
    return dict(BLOCK_M=block_m, BLOCK_V=block_v, BLOCK_D=block_d), dict(num_warps=8, num_stages=stages)


def target(device):
    """(compute capability, programs to aim for) of a launch on ``device``: four programs per SM on a
    GPU; the interpreter's three split even a small test vocabulary."""
    if device.type != "cuda":
        return None, 3
    return gpu_arch(device), 4 * torch.cuda.get_device_properties(device).multi_processor_count


def candidates(q, E, kp, metric, inv_qn, arch, programs):
    """Per query, the top-kp (scores, int64 indices) of each vocabulary slice: (M, splits * kp) each.
    q: fp32 (M, d); inv_qn: 1 / ||q|| (M,) for cos, else None; arch, programs: from ``target``."""
    (M, d), V = q.shape, E.shape[0]
    if E.dtype == torch.bfloat16:
        qp, q_parts, precision = _split_bf16(q), 3, "tf32"  # bf16 dots: the precision is unused
    else:
        qp, q_parts, precision = q[None], 1, "tf32x3"
    blocks, options = _config(M, E.dtype, arch)
    m_blocks = triton.cdiv(M, blocks["BLOCK_M"])
    tiles = triton.cdiv(V, blocks["BLOCK_V"])
    tiles_per_split = triton.cdiv(tiles, min(tiles, max(1, programs // m_blocks)))
    splits = triton.cdiv(tiles, tiles_per_split)

    out_s = torch.empty(splits, M, kp, dtype=torch.float32, device=q.device)
    out_i = torch.empty(splits, M, kp, dtype=torch.int32, device=q.device)
    _nearest_kernel[(m_blocks, splits)](qp, E, inv_qn if inv_qn is not None else q, out_s, out_i, M, V, d,
                                        tiles_per_split * blocks["BLOCK_V"], qp.stride(0), qp.stride(1), E.stride(0),
                                        METRIC=metric, Q_PARTS=q_parts, PRECISION=precision, KP=kp, **blocks,
                                        **options)
    return out_s.transpose(0, 1).reshape(M, -1), out_i.transpose(0, 1).reshape(M, -1).long()
