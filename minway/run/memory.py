"""Memory a run will need, estimated before anything is allocated, against what the device has free:
an impossible size is refused in one line (saying what fits), not killed by the OOM killer.

A pass of the model runs on packed rows (``minway.packing``): B rows, N tokens in all, M keys
in all (a row's keys are those of the rows it continues, then its own), O tokens through the
head; Tq the most tokens of a row, Tk the most keys. Attention puts the rows in a padded
(B, H, Tq, Tk) batch (``minway.kernels.attention.varlen_attention``). In bytes, with e the bytes of
an element of the model's dtype (4 for fp32, 2 for bf16):

    model      = parameters * e,   parameters = V d + P d + n_layer (12 d^2 + 13 d) + 2 d
    layer      = (A N d  +  2 M d  +  2 B (Tq + Tk) d  +  (MASK + S H) B Tq Tk) * e
    training   = n_layer * layer  +  O V (e + 4 TRAIN_LOGITS)
    evaluation = layer + 2 N d e  +  O V (e + 4 EVAL_LOGITS)

Training keeps what autograd needs of every layer: the inputs of the layer norms, linear
layers and GELU (A = ACTIVATIONS per token and width, DROPOUT_MASKS more with dropout), the
gathered keys and values, the padded queries, keys, values and outputs, the attention's mask
and, unless a fused kernel computes it, S copies of its (B, H, Tq, Tk) scores (SCORES for
the naive formula, DROPOUT_SCORES with dropout's masks). Evaluation needs one layer at a time
beside the residual stream. The logits are kept in fp32 too (log-probabilities and, in
training, their gradient). The estimates were 1.3 to 2.0 times the peak memory measured on a
CPU (README, "A run's identity, locks and errors").

A Llama or Qwen 2 (``minway.llama``) counts as the same formulas with its own sizes: its parameters
(no position embedding; GQA's narrower k and v; the SwiGLU MLP of width f; an untied head), per token
and layer LLAMA_ACTIVATIONS d + SWIGLU f values kept for the backward pass instead of A d, the key
and value heads both as gathered (n_kv_head) and as repeated for every query head, and the
begin-of-text token in every row's keys. Its estimates of a training step were 1.2 to 1.8 times the
peak measured on a CPU (8 cases: Llama 3's vocabulary and others, GQA 4 and 6, fp32 and bf16, sdpa
and the naive attention, with and without dropout, 1 and 4 prompts).
"""
import re
from pathlib import Path
from typing import NamedTuple

import torch

from minway.errors import MinwayError
from minway.llama import LlamaConfig

ACTIVATIONS, DROPOUT_MASKS, MASK, SCORES, DROPOUT_SCORES = 16, 4, 2, 4, 6
LLAMA_ACTIVATIONS, SWIGLU = 10, 4
TRAIN_LOGITS, EVAL_LOGITS = 3, 2
HEADROOM = 0.9  # of the free memory: the estimate is not a bound on the allocator's fragmentation


class Rows(NamedTuple):
    """``count`` rows of a packed pass alike: each runs on ``tokens`` tokens, attends to ``keys`` keys
    and has ``logits`` of its tokens go through the head."""
    count: int
    tokens: int
    keys: int
    logits: int


def element_bytes(dtype):
    return torch.finfo(dtype).bits // 8


def parameters(c):
    if isinstance(c, LlamaConfig):
        q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
        biases = (q + 2 * kv) * c.qkv_bias + c.n_embd * c.o_bias + (2 * c.n_inner + c.n_embd) * c.mlp_bias
        layer = 2 * c.n_embd * (q + kv) + 3 * c.n_embd * c.n_inner + 2 * c.n_embd + biases
        return c.vocab_size * c.n_embd * (1 + (not c.tie_word_embeddings)) + c.n_layer * layer + c.n_embd
    return c.vocab_size * c.n_embd + c.n_positions * c.n_embd + c.n_layer * (12 * c.n_embd ** 2 + 13 * c.n_embd) \
        + 2 * c.n_embd


def model_bytes(c, dtype):
    return parameters(c) * element_bytes(dtype)


def pass_bytes(c, dtype, rows, training, attention="auto", dropout=False):
    """The memory of one pass of the model ``c`` on ``rows`` (Rows), beside the model itself, with
    the ``attention`` backend and, in training, GPT-2's dropout or not."""
    rows = [r for r in rows if r.count]
    e, d = element_bytes(dtype), c.n_embd
    B = sum(r.count for r in rows)
    tokens, keys, logits = (sum(r.count * getattr(r, field) for r in rows) for field in ("tokens", "keys", "logits"))
    Tq, Tk = max(r.tokens for r in rows), max(r.keys for r in rows)
    per_token, per_key, heads = ACTIVATIONS * d, 2 * d, d
    if isinstance(c, LlamaConfig):
        heads = c.n_head * c.head_dim
        per_token, per_key = LLAMA_ACTIVATIONS * d + SWIGLU * c.n_inner, 2 * (c.n_kv_head * c.head_dim + heads)
        if c.bos_token_id is not None:
            B, keys, Tk = B + 1, keys + B, Tk + 1
    per_token += DROPOUT_MASKS * d if dropout else 0
    scores = DROPOUT_SCORES if dropout else SCORES if attention == "naive" else 0
    layer = (per_token * tokens + per_key * keys + 2 * B * (Tq + Tk) * heads
             + (MASK + scores * c.n_head) * B * Tq * Tk) * e
    if training:
        return c.n_layer * layer + logits * c.vocab_size * (e + 4 * TRAIN_LOGITS)
    return layer + 2 * tokens * d * e + logits * c.vocab_size * (e + 4 * EVAL_LOGITS)


def training_rows(prompts, batch_size, prompt_length, input_length, output_length, dropout):
    """The rows of a training step (``minway.batch.bank_output_nll``): ``batch_size`` examples for each
    of ``prompts`` prompts. Without dropout each prompt is a row of its own that its examples continue;
    with it, each example runs its own copy of its prompt."""
    text = input_length + output_length - 1
    if dropout:
        return [Rows(prompts * batch_size, prompt_length + text, prompt_length + text, output_length)]
    return [Rows(prompts, prompt_length, prompt_length, 0),
            Rows(prompts * batch_size, text, prompt_length + text, output_length)]


def evaluation_rows(batch_size, prompt_length, input_length, option_lengths):
    """The rows of an evaluation batch (``minway.classify.option_nll``): the prompt, each input after it,
    and each option longer than a token after the prompt and its input."""
    longer = [n for n in option_lengths if n > 1]
    option_tokens = max(longer, default=1) - 1
    return [Rows(1, prompt_length, prompt_length, 0),
            Rows(batch_size, input_length, prompt_length + input_length, 1),
            Rows(batch_size * len(longer), option_tokens, prompt_length + input_length + option_tokens,
                 option_tokens)]


def free_bytes(device):
    """Memory free for new tensors on ``device`` (a torch.device), or None when it cannot be known."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def require(needed, device, what, advice):
    """Refuse ``needed`` bytes for ``what`` when more than HEADROOM of the free memory; ``advice(free)``
    says what fits."""
    free = free_bytes(device)
    if free is not None and needed > HEADROOM * free:
        raise MinwayError(f"{what} needs about {gib(needed)} of memory but {device.type} has {gib(free)} free: "
                          f"{advice(HEADROOM * free)}")


def largest(needed, budget, limit):
    """The largest n <= ``limit`` with ``needed(n)`` within ``budget`` (``needed`` grows with n), or 0."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if needed(middle) <= budget else (low, middle - 1)
    return low


def gib(n):
    return f"{n / 2 ** 30:.1f} GiB"
