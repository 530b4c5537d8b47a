"""Packed batches: the rows of a batch laid end to end, with no padding.

A pass of the model runs on the N tokens of its rows, one after another, so that no
arithmetic is spent on padding. A row may continue other rows of the same pass (a prompt
that several rows share, run once; an input whose options are then scored): the row's
keys are then theirs, followed by its own, and its tokens stand at the positions after
them. Attention is causal within a row and aligned at its end: the i-th of a row's q
queries, among its k keys, sees the first k - q + i + 1 of them.

``Packed`` says where everything is; ``pack`` builds it from the rows' lengths and prefixes.
Two rows: a prompt p0 p1 p2, then a text a0 a1 that continues it,
``pack([3, 2], [(), [(0, 3)]])``:

    token of the pass   p0 p1 p2 a0 a1          starts      [0, 3, 5]
    positions            0  1  2  3  4          key_lengths [3, 5]
    keys of row 0       p0 p1 p2                key_index   [0, 1, 2,  0, 1, 2, 3, 4]
    keys of row 1       p0 p1 p2 a0 a1

a0, the first of row 1's 2 queries among its 5 keys, sees the first 5 - 2 + 0 + 1 = 4 of
them (p0 p1 p2 a0), as it would in the whole sequence p0 p1 p2 a0 a1; the prompt's tokens
are computed once, whatever number of rows continue them.
"""
from itertools import accumulate
from typing import NamedTuple

import torch


class Packed(NamedTuple):
    """Where the tokens, positions and keys of a packed pass are."""
    lengths: list[int]        # tokens of each row in this pass
    key_lengths: list[int]    # keys of each row: its prefix's, then its own
    starts: torch.Tensor      # (B + 1,) row r's tokens are starts[r]:starts[r + 1] of the pass
    key_index: torch.Tensor   # (sum of key_lengths,) which token of the pass each key belongs to
    positions: torch.Tensor   # (N,) each token's position in its sequence (for the position embedding)

    def last(self, counts):
        """The layout of the last ``counts[r]`` tokens of each row as the queries (their keys are the
        row's keys), and the index of those tokens in the pass."""
        index = torch.cat([torch.arange(int(self.starts[r + 1]) - n, int(self.starts[r + 1]))
                           for r, n in enumerate(counts)]).to(self.starts.device)
        return self._replace(lengths=list(counts), starts=_cumulative(counts, self.starts.device),
                             positions=self.positions[index]), index


def pack(lengths, prefixes=None, device="cpu"):
    """The ``Packed`` layout of rows of ``lengths`` tokens.

    ``prefixes[r]``: what row r continues, a list of (row, number of its first tokens); empty
    or None for a row that starts a sequence.
    """
    prefixes = prefixes or [()] * len(lengths)
    starts = [0, *accumulate(lengths)]
    key_index, positions, key_lengths = [], [], []
    for r, (n, runs) in enumerate(zip(lengths, prefixes)):
        for row, length in runs or ():
            key_index += range(starts[row], starts[row] + length)
        before = len(key_index) - sum(key_lengths)
        key_index += range(starts[r], starts[r] + n)
        positions += range(before, before + n)
        key_lengths.append(before + n)
    as_long = {"dtype": torch.long, "device": device}
    return Packed(list(lengths), key_lengths, _cumulative(lengths, device), torch.tensor(key_index, **as_long),
                  torch.tensor(positions, **as_long))


def _cumulative(counts, device):
    return torch.tensor([0, *accumulate(counts)], dtype=torch.long, device=device)
