"""GPT-2's dropout while a prompt trains, with masks that do not depend on the batch.

The released code trains the prompt with the model in train mode: dropout (p = 0.1) on the
input embeddings, on the attention probabilities and on the output of both residual
branches of every block. minway trains K prompts in one batch, and a prompt trained in a
bank must end exactly where it ends alone. So the masks of a prompt's rows come from that
prompt's own generator, seeded by its run's seed and the step (a resumed run draws the same
masks), and are drawn in the shape its rows have when it trains alone: its own number of
positions and of keys. They are then put in their place in the shared batch; what lies
outside (the padding of other prompts' longer rows) is kept, and no real token reads it.
"""
from typing import NamedTuple

import numpy as np
import torch


def step_generator(seed, step, device):
    """The generator of one run's masks at one step."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))
    return generator


class Layout(NamedTuple):
    """Where the rows of one prompt lie in a batch, against where they lie when it trains alone."""
    rows: slice                          # its rows of the batch
    queries: int                         # its rows' own number of positions (the longest of them)
    keys: tuple[tuple[int, int], ...]    # its own key axis: these (start, length) runs of the batch's


class PromptDropout:
    """The dropout masks of a batch whose rows are grouped by prompt, one ``Layout`` per prompt.

    ``last`` gives the own number of positions of each prompt in the last block, which runs
    only at the positions whose logits are asked (``GPT2.forward``'s ``logit_positions``).
    """

    def __init__(self, p, generators, layouts, last=None):
        self.p, self.generators, self.layouts, self.last = p, generators, layouts, last

    def at_logit_positions(self):
        layouts = [layout._replace(queries=n) for layout, n in zip(self.layouts, self.last)]
        return PromptDropout(self.p, self.generators, layouts)

    def _keep(self, shape, generator):
        return (torch.rand(shape, generator=generator, device=generator.device) >= self.p).float()

    def __call__(self, x):
        """Dropout of activations (B, T, d)."""
        keep = torch.ones(x.shape, device=x.device)
        for generator, layout in zip(self.generators, self.layouts):
            n_rows = layout.rows.stop - layout.rows.start
            keep[layout.rows, :layout.queries] = self._keep((n_rows, layout.queries, x.shape[-1]), generator)
        return x * (keep / (1 - self.p)).to(x.dtype)

    def probabilities(self, weights):
        """Dropout of attention probabilities (B, H, T queries, keys)."""
        keep = torch.ones(weights.shape, device=weights.device)
        for generator, layout in zip(self.generators, self.layouts):
            n_rows, n_keys = layout.rows.stop - layout.rows.start, sum(length for _, length in layout.keys)
            own = self._keep((n_rows, weights.shape[1], layout.queries, n_keys), generator)
            start_own = 0
            for start, length in layout.keys:
                keep[layout.rows, :, :layout.queries, start:start + length] = own[..., start_own:start_own + length]
                start_own += length
        return weights * (keep / (1 - self.p)).to(weights.dtype)


def grouped_rows(owner):
    """The rows of each prompt as slices; a batch's rows must come grouped by prompt."""
    owner = owner.tolist()
    slices, start = [], 0
    for k in range(max(owner) + 1):
        stop = start + owner.count(k)
        if owner[start:stop] != [k] * (stop - start):
            raise ValueError("the rows of a batch with dropout must be grouped by prompt, in prompt order")
        slices.append(slice(start, stop))
        start = stop
    return slices
