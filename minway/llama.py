"""Llama 3 and Qwen 2.5 in PyTorch: one architecture, on packed rows as minway's GPT-2 (``minway.model``).

A stack of pre-norm transformer blocks over token embeddings alone (the positions enter the
attention, by rotation), a final RMSNorm and an output head:

    h_0     = wte[ids]                          (or: given input embeddings)
    a_i     = h_{i-1} + Attn(RMS_1(h_{i-1}))    causal self-attention, q and k rotated by position
    h_i     = a_i + MLP(RMS_2(a_i))             MLP: down(silu(gate(x)) * up(x))   (SwiGLU)
    logits  = RMS_f(h_n) @ W^T                  W: wte itself (tied) or a matrix of its own

What differs from GPT-2, besides the RMSNorm (no mean, no bias) and the SwiGLU MLP:

* grouped-query attention: ``n_kv_head`` key and value heads, each read by ``n_head / n_kv_head``
  query heads (query head h reads key/value head h // (n_head / n_kv_head));
* rotary positions: the two halves of each query and key head, (x1, x2), turn as the complex
  number x1 + i x2 by the angle position * f_j, f_j = theta^(-2j / head_dim); Llama 3.1 and later
  slow the low frequencies down (``Llama3Scaling``) to reach past the context they were trained on;
* Qwen 2.5 adds biases to q, k and v (Llama has none);
* the begin-of-text token: Llama's tokenizer puts <|begin_of_text|> before every text, and the
  model saw nothing else first. The model puts it first in every sequence itself
  (``bos_token_id``), so that a prompt stands where its target text would: after it. Qwen's
  tokenizer adds none, and a Qwen sequence begins with its prompt, as GPT-2's.

These models were pretrained without dropout. A ``dropout`` (``minway.dropout``) is applied at
GPT-2's places, so that ``--dropout`` means one thing on every model; the begin-of-text token,
which is the model's own and no row's, keeps all of its values.
"""
import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from minway.kernels.attention import varlen_attention
from minway.model import Output, drop
from minway.packing import Packed, pack


class Llama3Scaling(NamedTuple):
    """Llama 3.1's ``rope_scaling``: wavelengths longer than original_max_positions / low_freq_factor
    are stretched by ``factor``, those shorter than original_max_positions / high_freq_factor kept,
    and those between blended smoothly."""
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_positions: int


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    n_embd: int                   # hidden_size
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim: int
    n_inner: int                  # intermediate_size: the width of the MLP
    max_positions: int            # max_position_embeddings
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Llama3Scaling | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False        # Qwen 2.5: True
    o_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    model_type: str = "llama"     # "llama" or "qwen2": what config.json says, for writing one back

    @property
    def n_positions(self):
        """The positions a sequence may take, after the begin-of-text token the model puts first."""
        return self.max_positions - (self.bos_token_id is not None)

    @classmethod
    def from_dict(cls, values):
        values = {f.name: values[f.name] for f in fields(cls) if f.name in values}
        if values.get("rope_scaling") is not None:
            values["rope_scaling"] = Llama3Scaling(*values["rope_scaling"])
        return cls(**values)

    def to_dict(self):
        return asdict(self)


def rope_frequencies(config, device=None):
    """The angle per position f_j (head_dim / 2,) of each pair of coordinates of a head, in fp32."""
    f = config.rope_theta ** -(torch.arange(0, config.head_dim, 2, device=device, dtype=torch.float32)
                               / config.head_dim)
    s = config.rope_scaling
    if s is None:
        return f
    wavelength = 2 * math.pi / f
    # 0 where the wavelength is long (stretched by factor), 1 where it is short (kept), linear in 1/wavelength between
    kept = ((s.original_max_positions / wavelength - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor))
    kept = kept.clamp(0, 1)
    return (1 - kept) * f / s.factor + kept * f


def rotate(x, cos, sin):
    """x (N, heads, head_dim) with each coordinate pair (x_j, x_{j + head_dim/2}) turned by its angle;
    cos and sin (N, 1, head_dim / 2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, the mean square taken in fp32 whatever the weights' dtype, as the models were trained."""

    def __init__(self, width, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        d, q_width, kv_width = config.n_embd, config.n_head * config.head_dim, config.n_kv_head * config.head_dim
        self.q_proj = nn.Linear(d, q_width, bias=config.qkv_bias)
        self.k_proj = nn.Linear(d, kv_width, bias=config.qkv_bias)
        self.v_proj = nn.Linear(d, kv_width, bias=config.qkv_bias)
        self.o_proj = nn.Linear(q_width, d, bias=config.o_bias)
        self.backend = "auto"

    def forward(self, x, packed, rotation, queries=None, dropout=None):
        """x (N, d): the tokens of a pass, laid out as ``packed`` says; ``rotation``: (cos, sin) of each
        token's position. ``queries``: (layout, index) to attend from those tokens only."""
        cos, sin = rotation
        keys = rotate(self.k_proj(x).view(len(x), self.n_kv_head, self.head_dim), cos, sin)
        values = self.v_proj(x).view(len(x), self.n_kv_head, self.head_dim)
        layout, at = queries or (packed, slice(None))
        q = rotate(self.q_proj(x[at]).view(-1, self.n_head, self.head_dim), cos[at], sin[at])
        if packed.key_lengths != packed.lengths:  # some rows continue others: gather each row's keys
            keys, values = keys[packed.key_index], values[packed.key_index]
        # keys and values have n_kv_head heads: varlen_attention lets each serve its group of query heads
        probabilities_dropout = None if dropout is None else dropout.for_probabilities(layout)
        y = varlen_attention(q, keys, values, layout.lengths, layout.key_lengths, self.backend, probabilities_dropout)
        return drop(self.o_proj(y.reshape(len(y), -1)), dropout, layout)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.n_inner, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.n_embd, config.n_inner, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.n_inner, config.n_embd, bias=config.mlp_bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, packed, rotation, queries=None, dropout=None):
        attended = self.self_attn(self.input_layernorm(x), packed, rotation, queries, dropout)
        layout = packed
        if queries is not None:
            layout, at = queries
            x = x[at]
        x = x + attended
        return x + drop(self.mlp(self.post_attention_layernorm(x)), dropout, layout)


class Llama(nn.Module):
    """Llama 3 or Qwen 2.5, as ``minway.model.GPT2`` is GPT-2: the same attributes and calls."""

    def __init__(self, config: LlamaConfig, attention="auto"):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.set_attention(attention)

    def set_attention(self, backend):
        """'naive', 'sdpa', 'triton', or 'auto' (the fastest correct one for the device)."""
        for block in self.layers:
            block.self_attn.backend = backend

    def freeze(self):
        """Prompt tuning trains the prompt only: the model's weights get no gradient."""
        self.requires_grad_(False)
        return self

    def embed(self, ids):
        return self.wte(ids)

    def head(self, hidden):
        return hidden @ (self.wte.weight if self.lm_head is None else self.lm_head.weight).T

    def forward(self, ids=None, embeds=None, packed=None, logit_counts=None, dropout=None):
        """Run the model on packed token ids (N,) or input embeddings (N, d), as ``GPT2.forward``; with a
        ``bos_token_id``, every sequence is read after the begin-of-text token, which gets no logits."""
        x = self.embed(ids) if embeds is None else embeds
        if x.dim() != 2:
            raise ValueError(f"the model takes the rows of a batch end to end, ids (N,) or embeddings (N, d), "
                             f"not {tuple(x.shape[:-1])}: pack them (minway.packing)")
        n_tokens = len(x)
        packed = packed or pack([n_tokens], device=x.device)
        x = drop(x, dropout, packed)
        if self.config.bos_token_id is not None:
            x, packed, logit_counts = self._after_begin_of_text(x, packed, logit_counts)
            dropout = None if dropout is None else _KeepLastRow(dropout)
        if max(packed.key_lengths) > self.config.max_positions:
            raise ValueError(f"sequence of {max(packed.key_lengths)} positions is longer than the model's "
                             f"context of {self.config.max_positions}")
        angles = packed.positions[:, None].float() * rope_frequencies(self.config, x.device)
        rotation = angles.cos()[:, None].to(x.dtype), angles.sin()[:, None].to(x.dtype)

        queries = None if logit_counts is None else packed.last(logit_counts)
        for i, block in enumerate(self.layers):
            x = block(x, packed, rotation, queries if i == len(self.layers) - 1 else None, dropout)
        hidden = self.norm(x[:n_tokens])  # not the begin-of-text token, last
        return Output(self.head(hidden), hidden)

    def _after_begin_of_text(self, x, packed, logit_counts):
        """The pass with one more row, the begin-of-text token (last, at index N), which every row's keys
        now begin with, each token one position further on; no logits of it."""
        n = len(x)
        bos = self.embed(torch.tensor([self.config.bos_token_id], device=x.device)).to(x.dtype)
        first = packed.key_index.new_full((1,), n)
        key_index = torch.cat([k for keys in packed.key_index.split(packed.key_lengths) for k in (first, keys)]
                              + [first])
        packed = Packed(packed.lengths + [1], [m + 1 for m in packed.key_lengths] + [1],
                        torch.cat([packed.starts, packed.starts[-1:] + 1]), key_index,
                        torch.cat([packed.positions + 1, packed.positions.new_zeros(1)]))
        return torch.cat([x, bos]), packed, None if logit_counts is None else [*logit_counts, 0]

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())


class _KeepLastRow:
    """A ``PromptDropout`` for a pass whose last row is the begin-of-text token: that row is left as it
    is (the prompt dropout draws masks for the rows of its prompts, which come first)."""

    def __init__(self, dropout):
        self.dropout = dropout

    def __call__(self, x, packed):
        rows_end = int(packed.starts[-2])
        return torch.cat([self.dropout(x[:rows_end], packed), x[rows_end:]])

    def for_probabilities(self, packed):
        drop = self.dropout.for_probabilities(packed)
        return lambda weights: torch.cat([drop(weights)[:-1], weights[-1:]])  # (B, H, Tq, Tk), row by row


def init_weights(model, seed=0):
    """The models' initialisation: N(0, 0.02) for every matrix, zero biases, RMSNorm gains of one."""
    generator = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        with torch.no_grad():
            if name.endswith("bias"):
                p.zero_()
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return model
