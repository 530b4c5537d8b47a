"""The wayward prompt tuning objective (paper eq. 5 and 7):

    loss(p) = CE(task; p) + gamma * ||p - c-proj(target)||^2 / L

gamma = 0 is ordinary prompt tuning (the unconstrained prompt p*_c); a large gamma
pins the prompt to the target's embeddings.
"""
from typing import NamedTuple

import torch

from minway.batch import bank_output_nll, output_nll


class Loss(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor
    distance: torch.Tensor


def c_dist(prompt, target_embeds):
    """Squared L2 distance to c-proj(target), divided by the prompt length L."""
    return (prompt - target_embeds).pow(2).sum((-2, -1)) / prompt.shape[-2]


def wayward_loss(model, prompt, target_embeds, inputs, outputs, gamma, dropout=None):
    """The objective of one prompt (L, d) on a batch; ``dropout``: see ``minway.batch.output_nll``."""
    ce = output_nll(model, prompt, inputs, outputs, dropout).mean()
    distance = c_dist(prompt, target_embeds)
    return Loss(ce + gamma * distance, ce, distance)


def bank_losses(model, bank, owner, inputs, outputs, gammas, dropout=None):
    """``wayward_loss`` of each prompt of a PromptBank (K,), its rows of the batch picked by ``owner``,
    all K in one pass of the model. The prompts are independent parameters, so the gradient of the
    sum of these losses with respect to prompt k is the gradient of prompt k's own loss.
    ``dropout``: see ``minway.batch.bank_output_nll``.
    """
    nll = bank_output_nll(model, bank.vectors, bank.lengths, owner, inputs, outputs, dropout)
    ce = torch.stack([nll[owner == k].mean() for k in range(len(bank))])
    distance = torch.stack([c_dist(bank.prompt(k), bank.target(k)) for k in range(len(bank))])
    return Loss(ce + gammas * distance, ce, distance)
