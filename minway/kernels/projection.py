"""Nearest vocabulary rows of many query vectors: the d-projection of Prompt Waywardness, on any device.

Every continuous prompt vector is mapped to the vocabulary rows that score best against it.
``minway.kernels.projection_triton`` says what that computes and costs, in a few lines of
torch (``reference``) and in a fused Triton kernel. Two backends give the reference's answer
without ever holding its M x V score matrix:
``triton`` : the fused kernel, used for CUDA tensors;
``torch``  : the reference one chunk of the vocabulary at a time (``_torch_best``), the score
             block kept to a few million entries; on any device, and where Triton is missing.

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
    from minway.kernels.projection_triton import candidates, target
    from minway.kernels.triton_common import check_device

    check_device(q.device, "nearest_tokens")
    return _ranked(*candidates(q, E, kp, metric, inv_qn, *target(q.device)), kp)


def _torch_best(q, E, kp, metric, inv_qn):
    """The reference one chunk of the vocabulary at a time, in fp32: the kp best of each chunk,
    merged with the kp best of the chunks before it. Scores and indices (M, kp), best first."""
    M, V = q.shape[0], E.shape[0]
    # dot on an fp32 E makes only the score block; a 16-bit E is copied to fp32 and l2/cos
    # square it, so there a (chunk, d) block counts too
    width = M if E.dtype == torch.float32 and metric == "dot" else max(M, q.shape[1])
    chunk = max(kp, CHUNK_ELEMENTS // width)
    best_s = q.new_empty(M, 0)
    best_i = torch.empty(M, 0, dtype=torch.int64, device=q.device)
    for start in range(0, V, chunk):
        s, cols = _top(_scores(q, E[start:start + chunk].float(), metric, inv_qn), kp)
        best_s, best_i = _ranked(torch.cat([best_s, s], dim=1), torch.cat([best_i, cols + start], dim=1), kp)
    return best_s, best_i


def _top(s, kp):
    """The kp best entries of each row of a score block (scores, columns), the lowest column first
    among equal scores."""
    values, cols = s.topk(min(kp, s.shape[1]), dim=1)
    # topk takes any of several entries equal to its last value: where it could not take them
    # all, the row is sorted whole (a stable sort keeps equal entries in column order)
    last = values[:, -1:]
    unsure = ((s == last).sum(1) != (values == last).sum(1)).nonzero()[:, 0]
    if len(unsure):
        cols[unsure] = (s[unsure] + 0.0).sort(dim=1, descending=True, stable=True).indices[:, :cols.shape[1]]
    return _ranked(s.gather(1, cols), cols, kp)


def _ranked(scores, indices, kp):
    """The kp best of each row of candidates (scores, indices): the highest score first, and of equal
    scores the lowest index first (a stable sort by score of the candidates in index order)."""
    scores = scores + 0.0  # -0.0 becomes +0.0, which it equals: a GPU's radix sort would rank it below
    by_index = indices.argsort(dim=1)
    scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
    by_score = scores.argsort(dim=1, descending=True, stable=True)[:, :kp]
    return scores.gather(1, by_score), indices.gather(1, by_score)


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
