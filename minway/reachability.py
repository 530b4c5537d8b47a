"""Which target tokens can a d-projection produce at all?

Under the dot product a token t is the projection of some vector q only if its
embedding e_t is a vertex of the convex hull of all embeddings: when e_t lies
inside the hull of the others, every q has q.e_t <= max_v q.e_v for some other
token v. Such a target token is unreachable whatever gamma is, and the prompt F1
has a ceiling below 1 that no training can pass. Under L2 and cosine a token is
reachable unless another embedding coincides with it (ties go to the lowest id).

For the dot product we run Gilbert's algorithm for the distance from e_t to the
hull of the other embeddings, each step asking the projection kernel for the
token of largest dot product. With x the current nearest point found, q = e_t - x
either separates e_t from every other token (reachable, q is the witness) or
yields a token to move x towards. Reaching e_t itself means inside the hull.
"""
import torch

from minway.kernels.projection import nearest_tokens

REACHABLE, UNREACHABLE, UNDECIDED = "reachable", "unreachable", "undecided"


def _best_other(queries, embeddings, tokens):
    """Index and score of the largest dot product of each query over all tokens but its own."""
    nearest = nearest_tokens(queries, embeddings, k=2, metric="dot")
    own = nearest.indices[:, 0] == tokens
    index = torch.where(own, nearest.indices[:, 1], nearest.indices[:, 0])
    score = torch.where(own, nearest.scores[:, 1], nearest.scores[:, 0])
    return index, score


def dot_reachability(tokens, embeddings, max_steps=2000, tolerance=1e-5):
    """Status per token: REACHABLE, UNREACHABLE (inside the hull, within ``tolerance``), or UNDECIDED."""
    E = embeddings.float()
    tokens = torch.as_tensor(tokens, device=E.device)
    targets = E[tokens]
    nearest_point = E[_best_other(targets, E, tokens)[0]]
    status = [UNDECIDED] * len(tokens)
    open_rows = torch.arange(len(tokens), device=E.device)
    scale = targets.pow(2).sum(1).clamp_min(1e-12)
    for _ in range(max_steps):
        if len(open_rows) == 0:
            break
        q = targets[open_rows] - nearest_point[open_rows]
        inside = q.pow(2).sum(1) <= tolerance * scale[open_rows]
        other, other_score = _best_other(q, E, tokens[open_rows])
        separated = (q * targets[open_rows]).sum(1) > other_score
        for row, is_inside, is_separated in zip(open_rows.tolist(), inside.tolist(), separated.tolist()):
            if is_separated:
                status[row] = REACHABLE
            elif is_inside:
                status[row] = UNREACHABLE
        # Gilbert step: the point of the segment [x, e_other] nearest to e_t
        step = E[other] - nearest_point[open_rows]
        fraction = ((q * step).sum(1) / step.pow(2).sum(1).clamp_min(1e-30)).clamp(0, 1)
        nearest_point[open_rows] += fraction[:, None] * step
        open_rows = open_rows[torch.tensor([status[r] == UNDECIDED for r in open_rows.tolist()], device=E.device)]
    return status


def reachability(tokens, embeddings, metric):
    """Status per token of ``tokens`` under ``metric``."""
    if metric == "dot":
        return dot_reachability(tokens, embeddings)
    tokens = torch.as_tensor(tokens, device=embeddings.device)
    own = nearest_tokens(embeddings[tokens].float(), embeddings, k=1, metric=metric).indices[:, 0]
    return [REACHABLE if hit else UNREACHABLE for hit in (own == tokens).tolist()]
