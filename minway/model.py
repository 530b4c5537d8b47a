"""GPT-2 (Radford et al., 2019) in PyTorch, exactly as released.

A stack of pre-LayerNorm transformer blocks over learned token and position
embeddings, a final LayerNorm, and an output head tied to the token embedding:

    h_0     = wte[ids] + wpe[0..T-1]          (or: given input embeddings + wpe)
    a_i     = h_{i-1} + Attn(LN_1(h_{i-1}))   causal self-attention
    h_i     = a_i + MLP(LN_2(a_i))            MLP: Linear(4d), GELU (tanh form), Linear(d)
    logits  = LN_f(h_n) @ wte^T

Two things beyond a plain language model, both needed by prompt tuning:

* the input may be embeddings instead of token ids, so that a continuous prompt
  can be put in front of embedded text;
* the head is applied only where asked (``logit_positions``): a classification
  loss needs a handful of positions, and the 50257-way head over every position
  is about a third of the compute of the small model. The last block, too, runs its
  queries, residual and MLP only there: its outputs elsewhere feed nothing.

Right-padded batches carry a ``key_padding_mask`` (B, T), True on real tokens.
Keys and values of a prefix can be cached (``prefix_cache``, ``past``) and continued:
a prompt shared by every row of a batch is run once, not once per row, and several
continuations of one text are scored without running it again.

GPT-2 was trained with dropout at four places: the input embeddings, the attention
probabilities, and the outputs of the attention and MLP branches. The model runs without
it unless a ``dropout`` is given (``minway.dropout``: prompt training, as the released code).
"""
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels.attention import attention_at, causal_attention


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

    @classmethod
    def from_json(cls, path):
        return cls.from_dict(json.loads(open(path).read()))

    def to_dict(self):
        return asdict(self)


SIZES = {
    "gpt2": GPT2Config(n_embd=768, n_layer=12, n_head=12),          # 124M
    "gpt2-medium": GPT2Config(n_embd=1024, n_layer=24, n_head=16),  # 355M
    "gpt2-large": GPT2Config(n_embd=1280, n_layer=36, n_head=20),   # 774M
    "gpt2-xl": GPT2Config(n_embd=1600, n_layer=48, n_head=25),      # 1.5B
}


class KeyValues(NamedTuple):
    """Cached keys and values of one layer, (B, H, T, D) each."""
    keys: torch.Tensor
    values: torch.Tensor


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.backend = "auto"

    def forward(self, x, key_padding_mask, past=None, queries=None, dropout=None):
        """``past``: keys and values of a prefix, put before this segment's own.
        ``queries`` (B, P): attend from these positions only (every key and value is still made)."""
        B, T, C = x.shape
        if queries is None:
            q, k, v = (self._heads(t) for t in self.c_attn(x).split(C, dim=2))
        else:
            k, v = self.keys_values(x)
            q = self._heads(F.linear(gather_rows(x, queries), self.c_attn.weight[:C], self.c_attn.bias[:C]))
        if past is not None:
            k, v = torch.cat([past.keys, k], dim=2), torch.cat([past.values, v], dim=2)
        if queries is None:
            y = causal_attention(q, k, v, key_padding_mask, backend=self.backend, dropout=dropout)
        else:
            y = attention_at(q, k, v, queries + (k.shape[2] - T), key_padding_mask, dropout=dropout)
        y = y.transpose(1, 2).reshape(B, -1, C)
        return drop(self.c_proj(y), dropout), KeyValues(k, v)

    def keys_values(self, x):
        """The keys and values alone, for a prefix whose own outputs nothing reads."""
        C = x.shape[-1]
        k, v = F.linear(x, self.c_attn.weight[C:], self.c_attn.bias[C:]).split(C, dim=2)
        return KeyValues(self._heads(k), self._heads(v))

    def _heads(self, x):
        """(B, T, C) -> (B, n_head, T, C / n_head)"""
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)


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

    def forward(self, x, key_padding_mask, past=None, queries=None, dropout=None):
        attended, present = self.attn(self.ln_1(x), key_padding_mask, past, queries, dropout)
        if queries is not None:
            x = gather_rows(x, queries)
        x = x + attended
        x = x + drop(self.mlp(self.ln_2(x)), dropout)
        return x, present


class Output(NamedTuple):
    logits: torch.Tensor          # (B, T, V), or (B, P, V) at the asked positions
    hidden: torch.Tensor          # (B, T, d) after the final LayerNorm, or (B, P, d) at the asked positions
    present: list | None          # KeyValues per layer, when asked with use_cache


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
        """'naive', 'sdpa', 'triton', or 'auto' (the fastest correct one for the device).

        A forward asked for logits at a few positions runs the last block's attention for
        those queries only, always with PyTorch's attention (``kernels.attention.attention_at``).
        """
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

    def forward(self, ids=None, embeds=None, key_padding_mask=None, logit_positions=None,
                position_offset=None, past=None, use_cache=False, dropout=None):
        """Run the model on token ids (B, T) or input embeddings (B, T, d).

        logit_positions: (B, P) indices; logits come back only there, (B, P, V).
        past / position_offset: cached prefix and its lengths (B,); the new tokens
            continue each row's prefix at position ``position_offset[b]``, and
            ``key_padding_mask``, if any, then covers the prefix and the new tokens.
        dropout: a ``minway.dropout.PromptDropout`` to train with, or None.
        """
        x = self.embed(ids) if embeds is None else embeds
        B, T, _ = x.shape
        if (past is None) != (position_offset is None):
            raise ValueError("a cached continuation needs past and position_offset together")
        positions = torch.arange(T, device=x.device).expand(B, T)
        longest = T
        if position_offset is not None:
            positions = positions + position_offset[:, None]
            longest += int(position_offset.max())  # one host sync
        if longest > self.config.n_positions:
            raise ValueError(f"sequence of {longest} positions is longer than the model's context of "
                             f"{self.config.n_positions}")
        x = drop(x + self.wpe(positions).to(x.dtype), dropout)

        present = []
        for i, block in enumerate(self.h):
            queries = logit_positions if i == len(self.h) - 1 else None
            if queries is not None and dropout is not None:
                dropout = dropout.at_logit_positions()
            x, kv = block(x, key_padding_mask, None if past is None else past[i], queries, dropout)
            present.append(kv)
        hidden = self.ln_f(x)
        return Output(self.head(hidden), hidden, present if use_cache else None)

    def prefix_cache(self, embeds, dropout=None):
        """Keys and values of every layer (``past``) for prefixes of input embeddings (B, T, d).

        Rows may be right-padded: a continuation masks the padding with its ``key_padding_mask``.
        Nothing reads the prefix's own outputs, so the last block makes only its keys and
        values, and the head does not run.
        """
        B, T, _ = embeds.shape
        if T > self.config.n_positions:
            raise ValueError(f"prefix of {T} positions is longer than the model's context of "
                             f"{self.config.n_positions}")
        x = drop(embeds + self.wpe(torch.arange(T, device=embeds.device)).to(embeds.dtype), dropout)
        cache = []
        for block in self.h[:-1]:
            x, kv = block(x, None, dropout=dropout)
            cache.append(kv)
        last = self.h[-1]
        cache.append(last.attn.keys_values(last.ln_1(x)))
        return cache

    @torch.no_grad()
    def generate(self, ids, n_new):
        """Greedy continuation of one unpadded batch of ids (B, T), with a key/value cache."""
        out = self(ids, use_cache=True)
        generated = []
        for _ in range(n_new):
            next_id = out.logits[:, -1].argmax(-1, keepdim=True)
            generated.append(next_id)
            length = ids.shape[1] + len(generated) - 1
            mask = torch.ones(ids.shape[0], length + 1, dtype=torch.bool, device=ids.device)
            offset = torch.full((ids.shape[0],), length, device=ids.device)
            out = self(next_id, key_padding_mask=mask, position_offset=offset, past=out.present, use_cache=True)
        return torch.cat(generated, dim=1)

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())


def drop(x, dropout):
    return x if dropout is None else dropout(x)


def gather_rows(x, positions):
    """x (B, T, d) at positions (B, P) -> (B, P, d)."""
    return x.gather(1, positions[..., None].expand(-1, -1, x.shape[-1]))


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
