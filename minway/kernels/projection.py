"""Nearest vocabulary rows of many query vectors, in one pass over the embedding matrix.

This is the d-projection of Prompt Waywardness: every continuous prompt vector is mapped
to the token whose embedding scores best against it. The M x V score matrix is never
built: the vocabulary is read in blocks and each query keeps a running top-k.

Two backends give the same answer:
``triton`` : a fused kernel (``minway.kernels.projection_triton``), used for CUDA tensors;
``torch``  : a loop over vocabulary chunks whose score block stays at a few million entries.

Scores are accumulated in fp32 whatever the storage type of the embeddings. Ties go to
the lowest vocabulary index.
"""
import importlib.util
import warnings
from typing import NamedTuple

import torch

METRICS = ("dot", "l2", "cos")
BACKENDS = ("auto", "triton", "torch")
MAX_K = 8
# Neither the score block (M x chunk) nor the fp32 copy of an embedding chunk (chunk x d)
# of the torch path grows beyond this many elements.
CHUNK_ELEMENTS = 1 << 22


class Nearest(NamedTuple):
    indices: torch.Tensor  # (M, k) int64, best first
    scores: torch.Tensor  # (M, k) float32: q.e for dot, ||q - e||^2 for l2, cosine for cos
    margin: torch.Tensor  # (M,) float32: |best score - second best score|


@torch.no_grad()
def nearest_tokens(queries, embeddings, k=1, metric="dot", backend="auto") -> Nearest:
    """The k embedding rows nearest to each query: dot and cos pick the highest score, l2 the lowest."""
    _check(queries, embeddings, k, metric, backend)
    q = queries.float().contiguous()
    E = embeddings if embeddings.stride(1) == 1 else embeddings.contiguous()
    # The margin needs the runner-up even for k=1, and the kernel wants a power of two.
    kp = 1 << (max(k, 2) - 1).bit_length()
    inv_qn = _inverse_norms(q) if metric == "cos" else None

    chosen = _auto_backend(q) if backend == "auto" else backend
    if chosen == "triton":
        try:
            scores, indices = _triton_best(q, E, kp, metric, inv_qn)
        except Exception as error:
            if backend != "auto":
                raise
            # a run must not die at its evaluation because the kernel failed to build on this GPU
            _TRITON_FAILURES.append(error)
            warnings.warn(f"the Triton projection kernel failed ({type(error).__name__}: {error}); "
                          "using the torch path from now on")
            chosen = "torch"
    if chosen == "torch":
        scores, indices = _torch_best(q, E, kp, metric, inv_qn)

    if metric == "l2":
        # the kernels rank by 2 q.e - ||e||^2, which orders like -||q - e||^2
        scores = ((q * q).sum(1, keepdim=True) - scores).clamp_min(0.0)
    margin = (scores[:, 0] - scores[:, 1]).abs()
    return Nearest(indices[:, :k], scores[:, :k].contiguous(), margin)


_TRITON_FAILURES = []  # errors of the Triton path in this process; after one, "auto" means torch


def _auto_backend(q):
    usable = q.is_cuda and importlib.util.find_spec("triton") is not None and not _TRITON_FAILURES
    return "triton" if usable else "torch"


def _triton_best(q, E, kp, metric, inv_qn):
    if importlib.util.find_spec("triton") is None:
        raise ValueError("backend='triton' needs the triton package: install it, or use backend='torch'")
    from minway.kernels.projection_triton import candidates
    return _best(*candidates(q, E, kp, metric, inv_qn), kp)


def _check(queries, embeddings, k, metric, backend):
    if not (isinstance(queries, torch.Tensor) and queries.dim() == 2 and queries.shape[0] > 0):
        raise ValueError(f"queries must be a non-empty (M, d) tensor, got {_shape(queries)}: "
                         "reshape a batch of prompts to (-1, d)")
    if not queries.is_floating_point():
        raise ValueError(f"queries must be floating point, got {queries.dtype}: convert them with .float()")
    if not (isinstance(embeddings, torch.Tensor) and embeddings.dim() == 2):
        raise ValueError(f"embeddings must be a (V, d) tensor, got {_shape(embeddings)}: "
                         "pass the token embedding matrix itself")
    if embeddings.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"embeddings must be float32, bfloat16 or float16, got {embeddings.dtype}: "
                         "convert them with .float()")
    if queries.shape[1] != embeddings.shape[1]:
        raise ValueError(f"queries have d={queries.shape[1]} but embeddings have d={embeddings.shape[1]}: "
                         "use the embedding matrix of the model the prompt was trained for")
    if queries.device != embeddings.device:
        raise ValueError(f"queries are on {queries.device} but embeddings on {embeddings.device}: "
                         "move both to the same device")
    if not (isinstance(k, int) and 1 <= k <= MAX_K):
        raise ValueError(f"k must be an int from 1 to {MAX_K}, got {k!r}: ask for fewer neighbours")
    if embeddings.shape[0] < max(k, 2):
        raise ValueError(f"embeddings have {embeddings.shape[0]} rows, fewer than max(k, 2) = {max(k, 2)}: "
                         "lower k or pass the full vocabulary")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")


def _shape(x):
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _inverse_norms(x):
    """1 / ||row||, and 0 for a zero row so that its cosine with anything is 0."""
    sq = (x * x).sum(1)
    return torch.where(sq > 0, 1.0 / sq.sqrt(), 0.0)


def _scores(q, e, metric, inv_qn):
    """Ranking scores, higher is better, of fp32 queries against fp32 embedding rows.

    The Triton kernel computes the same expressions in the same order.
    """
    s = q @ e.T
    if metric == "l2":
        return 2.0 * s - (e * e).sum(1)
    if metric == "cos":
        return s * inv_qn[:, None] * _inverse_norms(e)
    return s


def _torch_best(q, E, kp, metric, inv_qn):
    M, V = q.shape[0], E.shape[0]
    # dot on an fp32 E makes only the score block; a 16-bit E is copied to fp32 and l2/cos
    # square it, so there a (chunk, d) block counts too
    width = M if E.dtype == torch.float32 and metric == "dot" else max(M, q.shape[1])
    chunk = max(kp, CHUNK_ELEMENTS // width)
    best = torch.empty(M, 0, dtype=torch.int64, device=q.device)
    for start in range(0, V, chunk):
        e = E[start:start + chunk].float()
        keys = torch.cat([best, _chunk_keys(_scores(q, e, metric, inv_qn), start, kp)], dim=1)
        best = keys.topk(min(kp, keys.shape[1]), dim=1).values
    return _unkey(best)


def _chunk_keys(s, start, kp):
    """Keys of the kp best entries of each row of a score chunk that starts at vocabulary row start."""
    values, cols = s.topk(min(kp, s.shape[1]), dim=1)
    # topk takes any of several entries equal to its last value: where it could not take
    # them all, redo the row with keys, which break the tie to the lowest index
    last = values[:, -1:]
    unsure = ((s == last).sum(1) != (values == last).sum(1)).nonzero()[:, 0]
    if len(unsure):
        all_cols = torch.arange(s.shape[1], device=s.device)
        cols[unsure] = _unkey(_keys(s[unsure], all_cols).topk(cols.shape[1], dim=1).values)[1]
    return _keys(s.gather(1, cols), cols + start)


def _best(scores, indices, kp):
    """The kp best of each row of candidate (scores, indices), sorted best first."""
    return _unkey(_keys(scores, indices).topk(kp, dim=1).values)


# One int64 per candidate that orders like (score descending, index ascending): the float
# bits of the score, flipped for negatives so that they sort as integers, above the
# complement of the index. topk over these keys is exact and breaks ties to the lowest index.
_LOW = 0xFFFFFFFF


def _keys(scores, indices):
    bits = (scores + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (bits.long() << 32) | (_LOW - indices.long())


def _unkey(keys):
    bits = (keys >> 32).int()
    scores = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).view(torch.float32)
    return scores, _LOW - (keys & _LOW)
