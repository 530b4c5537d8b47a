"""GPT-2's dropout while a prompt trains, with masks that do not depend on the batch.

The released code trains the prompt with the model in train mode: dropout (p = 0.1) on the
input embeddings, on the attention probabilities and on the output of both residual
branches of every block. minway trains K prompts in one batch, and a prompt trained in a
bank must end exactly where it ends alone. So the masks of a prompt's rows come from that
prompt's own generator, seeded by its run's seed and the step (a resumed run draws the same
masks), and each is drawn in the shape of that prompt's rows alone: their tokens, or each
row's queries by its keys. A batch packs its rows with no padding (``minway.packing``), so
the rows of one prompt, which come together, are the same tokens whether or not other
prompts' rows follow them.
"""
import numpy as np
import torch


def step_generator(seed, step, device):
    """The generator of one run's masks at one step."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))
    return generator


class PromptDropout:
    """Dropout of a packed batch whose rows come grouped by prompt: ``rows_per_prompt[k]`` rows
    of prompt k, whose masks ``generators[k]`` draws."""

    def __init__(self, p, generators, rows_per_prompt):
        self.p, self.generators, self.rows_per_prompt = p, generators, rows_per_prompt

    def _keep(self, shape, generator):
        return (torch.rand(shape, generator=generator, device=generator.device) >= self.p).float()

    def _groups(self, counts):
        """The counts of each prompt's rows."""
        start = 0
        for generator, n_rows in zip(self.generators, self.rows_per_prompt):
            yield generator, counts[start:start + n_rows]
            start += n_rows

    def __call__(self, x, packed):
        """Dropout of the activations (N, d) of the rows' tokens laid end to end (``packed.lengths``)."""
        keep = torch.cat([self._keep((sum(lengths), x.shape[-1]), generator)
                          for generator, lengths in self._groups(packed.lengths)])
        return x * (keep / (1 - self.p)).to(x.dtype)

    def for_probabilities(self, packed):
        """Dropout of attention probabilities (B, H, Tq, Tk) in which each row stands at the end
        of its padded row (``minway.kernels.attention.varlen_attention``)."""
        def drop(weights):
            B, H, Tq, Tk = weights.shape
            keep = torch.ones(weights.shape, device=weights.device)
            row = 0
            for generator, lengths in self._groups(list(zip(packed.lengths, packed.key_lengths))):
                for n, m in lengths:
                    keep[row, :, Tq - n:, Tk - m:] = self._keep((H, n, m), generator)
                    row += 1
            return weights * (keep / (1 - self.p)).to(weights.dtype)
        return drop
