"""GPT-2 (Radford et al., 2019) in PyTorch, exactly as released.

A stack of pre-LayerNorm transformer blocks over learned token and position
embeddings, a final LayerNorm, and an output head tied to the token embedding:

    h_0     = wte[ids] + wpe[0..T-1]          (or: given input embeddings + wpe)
    a_i     = h_{i-1} + Attn(LN_1(h_{i-1}))   causal self-attention
    h_i     = a_i + MLP(LN_2(a_i))            MLP: Linear(4d), GELU (tanh form), Linear(d)
    logits  = LN_f(h_n) @ wte^T

What prompt tuning needs beyond a plain language model:

* the input may be embeddings instead of token ids, so that a continuous prompt
  can be put in front of embedded text;
* a batch is packed (``minway.packing``): its rows of different lengths laid end to end,
  no padding, a row able to continue other rows of the same pass (a prompt that several
  rows share, run once; an input whose options are then scored);
* the head is applied only where asked (``logit_counts``: the last few tokens of each
  row): a classification loss needs a handful of positions, and the 50257-way head over
  every position is about a third of the compute of the small model. The last block, too,
  runs its queries, residual and MLP only there: its outputs elsewhere feed nothing.

GPT-2 was trained with dropout at four places: the input embeddings, the attention
probabilities, and the outputs of the attention and MLP branches. The model runs without
it unless a ``dropout`` is given (``minway.dropout``: prompt training, as the released code).
"""
import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from minway.kernels.attention import varlen_attention
from minway.packing import pack


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    layer_norm_epsilon: float = 1e-5

    @classmethod
    def from_dict(cls, values):
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def to_dict(self):
        return asdict(self)


SIZES = {
    "gpt2": GPT2Config(n_embd=768, n_layer=12, n_head=12),          # 124M
    "gpt2-medium": GPT2Config(n_embd=1024, n_layer=24, n_head=16),  # 355M
    "gpt2-large": GPT2Config(n_embd=1280, n_layer=36, n_head=20),   # 774M
    "gpt2-xl": GPT2Config(n_embd=1600, n_layer=48, n_head=25),      # 1.5B
}


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.backend = "auto"

    def forward(self, x, packed, queries=None, dropout=None):
        """x (N, d): the tokens of a pass, laid out as ``packed`` says. ``queries``: (layout, index)
        to attend from those tokens only (every key and value is still made)."""
        C = x.shape[-1]
        # the weight holds q, k and v one after another: k and v of every token, q only where asked
        k, v = F.linear(x, self.c_attn.weight[C:], self.c_attn.bias[C:]).split(C, dim=-1)  # (N, C) each
        layout, at = queries or (packed, slice(None))
        q = F.linear(x[at], self.c_attn.weight[:C], self.c_attn.bias[:C])  # (Nq, C)
        keys, values = self._heads(k), self._heads(v)  # (N, H, C / H)
        if packed.key_lengths != packed.lengths:
            # some rows continue others: each row's keys are those of its prefix rows, then its own,
            # gathered end to end: (sum of key_lengths, H, C / H)
            keys, values = keys[packed.key_index], values[packed.key_index]
        probabilities_dropout = None if dropout is None else dropout.for_probabilities(layout)
        y = varlen_attention(self._heads(q), keys, values, layout.lengths, layout.key_lengths, self.backend,
                             probabilities_dropout)  # (Nq, H, C / H)
        return drop(self.c_proj(y.reshape(-1, C)), dropout, layout)  # (Nq, C)

    def _heads(self, x):
        """(N, C) -> (N, n_head, C / n_head)"""
        return x.reshape(x.shape[0], self.n_head, -1)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, packed, queries=None, dropout=None):
        attended = self.attn(self.ln_1(x), packed, queries, dropout)
        layout = packed
        if queries is not None:
            layout, at = queries
            x = x[at]
        x = x + attended
        return x + drop(self.mlp(self.ln_2(x)), dropout, layout)


class Output(NamedTuple):
    logits: torch.Tensor          # (N, V), or at the asked tokens only
    hidden: torch.Tensor          # (N, d) after the final LayerNorm, or at the asked tokens only


class GPT2(nn.Module):
    def __init__(self, config: GPT2Config, attention="auto"):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.set_attention(attention)

    def set_attention(self, backend):
        """'naive', 'sdpa', 'triton', or 'auto' (the fastest correct one for the device)."""
        for block in self.h:
            block.attn.backend = backend

    def freeze(self):
        """Prompt tuning trains the prompt only: the model's weights get no gradient."""
        self.requires_grad_(False)
        return self

    def embed(self, ids):
        return self.wte(ids)

    def head(self, hidden):
        return hidden @ self.wte.weight.T

    def forward(self, ids=None, embeds=None, packed=None, logit_counts=None, dropout=None):
        """Run the model on packed token ids (N,) or input embeddings (N, d).

        packed: the rows' layout (``minway.packing.pack``); None: one row of N tokens.
        logit_counts: logits come back only at the last ``logit_counts[r]`` tokens of each row r.
        dropout: a ``minway.dropout.PromptDropout`` to train with, or None.
        """
        x = self.embed(ids) if embeds is None else embeds
        if x.dim() != 2:
            raise ValueError(f"the model takes the rows of a batch end to end, ids (N,) or embeddings (N, d), "
                             f"not {tuple(x.shape[:-1])}: pack them (minway.packing)")
        packed = packed or pack([x.shape[0]], device=x.device)
        if max(packed.key_lengths) > self.config.n_positions:
            raise ValueError(f"sequence of {max(packed.key_lengths)} positions is longer than the model's "
                             f"context of {self.config.n_positions}")
        x = drop(x + self.wpe(packed.positions).to(x.dtype), dropout, packed)

        queries = None if logit_counts is None else packed.last(logit_counts)
        for i, block in enumerate(self.h):
            x = block(x, packed, queries if i == len(self.h) - 1 else None, dropout)
        hidden = self.ln_f(x)
        return Output(self.head(hidden), hidden)

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())


def drop(x, dropout, packed):
    return x if dropout is None else dropout(x, packed)


def init_weights(model, seed=0):
    """GPT-2's initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)."""
    generator = torch.Generator().manual_seed(seed)
    residual_std = 0.02 / math.sqrt(2 * model.config.n_layer)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("ln_"):
                p.fill_(1.0)
            else:
                std = residual_std if name.endswith("c_proj.weight") else 0.02
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model
