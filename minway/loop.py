"""Training one wayward prompt, as the released code trains it (paper section 4.1):

    p <- c-proj(target)                                    the prompt starts on its target
    for step t = 0 .. T - 1:
        x, y <- the step's batch                           shuffled epochs, fixed by the seed
        loss = CE(y | p, x) + gamma * c-dist(p, target)    minway.objective.wayward_loss
        clip the gradient of p to norm 1
        AdamW step, learning rate lr * (1 - t / T)         linear decay to 0, no warm-up

No files, logs or resume: ``minway.run.training`` is this loop for K prompts of one model at once
(each its own batches, masks, clipping and AdamW state), with checkpoints, logs, resume and
results on disk. For one prompt it ends exactly where this loop ends (tests/test_loop.py).
"""
import math
from typing import NamedTuple

import numpy as np
import torch

from minway.dropout import step_generator
from minway.objective import wayward_loss
from minway.prompt import c_proj

ADAM_EPS, ADAM_BETAS = 1e-8, (0.9, 0.999)  # the released code's AdamW


class BatchSchedule:
    """The example indices of each step, fixed by the seed: epochs in shuffled order, each cut
    into batches; as in the released code's data loader, an epoch whose size is not a multiple
    of the batch size ends in a shorter batch. Any step's batch is drawn on its own, so that
    nothing is built ahead (a run may be long) and a resumed run starts where it stopped."""

    def __init__(self, n_examples, batch_size, seed):
        self.n_examples, self.batch_size, self.seed = n_examples, batch_size, seed
        self.per_epoch = math.ceil(n_examples / batch_size)

    def __getitem__(self, step):
        epoch, index = divmod(step, self.per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n_examples)
        return order[index * self.batch_size:(index + 1) * self.batch_size]


def learning_rate(lr, step, steps):
    """Linear decay from ``lr`` at step 0 towards 0 at the last step, no warm-up."""
    return lr * (1 - step / steps)


def released_adam_eps(t):
    """The eps that makes update t (1, 2, ...) of torch's AdamW the released code's.

    The released code trains with transformers' AdamW, which adds eps to sqrt(v) before correcting
    v's bias; torch's adds it after. The same 1e-8 there is worth 1e-8 / sqrt(1 - beta2^t) here
    (3.2e-7 at the first update): not a rounding matter, since it changes the update of every
    gradient entry below about 1e-5 by a sizeable part of the learning rate.
    """
    return ADAM_EPS / math.sqrt(1 - ADAM_BETAS[1] ** t)


def clip_gradient(grad, max_norm):
    """Scale ``grad`` in place to norm ``max_norm`` when it is longer, as torch's clip_grad_norm_ does
    for one tensor; the norm before."""
    norm = grad.norm()
    grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm


class Trained(NamedTuple):
    prompt: torch.Tensor  # (L, d)
    losses: list          # the Loss of each step, detached


def train_prompt(model, target_ids, inputs, outputs, gamma=0.01, steps=2000, batch_size=8, lr=0.01,
                 weight_decay=0.0, clip=1.0, dropout=0.1, seed=1):
    """Train one prompt on the examples ``inputs[i]`` -> ``outputs[i]`` (token ids, as
    ``minway.tasks`` makes them) of a frozen ``model``, towards the text ``target_ids``."""
    target = c_proj(model, target_ids)
    prompt = torch.nn.Parameter(target.clone())
    optimizer = torch.optim.AdamW([prompt], lr=lr, betas=ADAM_BETAS, weight_decay=weight_decay)
    batches = BatchSchedule(len(inputs), batch_size, seed)
    losses = []
    for step in range(steps):
        optimizer.param_groups[0].update(lr=learning_rate(lr, step, steps), eps=released_adam_eps(step + 1))
        rows = batches[step]
        masks = (dropout, step_generator(seed, step, prompt.device)) if dropout else None  # GPT-2's dropout
        loss = wayward_loss(model, prompt, target, [inputs[i] for i in rows], [outputs[i] for i in rows], gamma,
                            masks)
        loss.total.backward()
        clip_gradient(prompt.grad, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(type(loss)(*(x.detach() for x in loss)))
    return Trained(prompt.detach(), losses)
