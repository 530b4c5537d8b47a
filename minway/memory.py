"""Memory a run will need, estimated before anything is allocated, against what the device has free:
an impossible size is refused in one line (saying what fits), not killed by the OOM killer.

Estimates, in bytes, with e the bytes of an element of the model's dtype (4 for fp32, 2 for bf16):

    model      = parameters * e,   parameters = V d + P d + n_layer (12 d^2 + 13 d) + 2 d
    training   = rows * (n_layer * T * (ACTIVATIONS d + SCORES H T) * e  +  TRAIN_LOGITS * O * V * 4)
    evaluation = batch * ((n_layer * (2 C + 2) * T * 2 d  +  T * (ACTIVATIONS d + SCORES H T)
                           +  C * S * (ACTIVATIONS d + SCORES H (T + S))) * e  +  EVAL_LOGITS * (C * S + 1) * V * 4)

rows: the examples of a training step (K prompts x batch size, at most the training set), T the
longest row (prompt + input + output tokens), O its output tokens, H the heads. An evaluation
batch scores C options of S tokens after each input of T tokens (with the prompt): the keys and
values of every layer are kept for the prompt and input, copied for each option, and joined to
the options' own; a layer's working memory is for one layer at a time. The constants count
what autograd keeps per layer and position (the inputs of the layer norms, linear layers and
GELU, the dropout masks as floats), the attention's (H, T, T) scores, probabilities and masks,
and the fp32 copies of the logits (log-probabilities and, in training, their gradient). Their
estimates were 1.2 to 2.2 times the peak memory measured on a CPU (gpt2-shaped and tiny
models, training with and without dropout, evaluation; README, "A run's identity, locks and
errors").
"""
import re
from pathlib import Path

import torch

from minway.errors import MinwayError

ACTIVATIONS, SCORES, TRAIN_LOGITS, EVAL_LOGITS = 24, 4, 3, 2
HEADROOM = 0.9  # of the free memory: the estimate is not a bound on the allocator's fragmentation


def element_bytes(dtype):
    return torch.finfo(dtype).bits // 8


def parameters(c):
    return c.vocab_size * c.n_embd + c.n_positions * c.n_embd + c.n_layer * (12 * c.n_embd ** 2 + 13 * c.n_embd) \
        + 2 * c.n_embd


def model_bytes(c, dtype):
    return parameters(c) * element_bytes(dtype)


def training_bytes_per_row(c, dtype, length, outputs):
    activations = c.n_layer * length * (ACTIVATIONS * c.n_embd + SCORES * c.n_head * length)
    return activations * element_bytes(dtype) + TRAIN_LOGITS * outputs * c.vocab_size * 4


def eval_bytes_per_example(c, dtype, length, options, option_length):
    cache = c.n_layer * (2 * options + 2) * length * 2 * c.n_embd
    working = length * (ACTIVATIONS * c.n_embd + SCORES * c.n_head * length) \
        + options * option_length * (ACTIVATIONS * c.n_embd + SCORES * c.n_head * (length + option_length))
    return (cache + working) * element_bytes(dtype) + EVAL_LOGITS * (options * option_length + 1) * c.vocab_size * 4


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


def largest(per_item, budget):
    return int(max(budget, 0) // per_item)


def gib(n):
    return f"{n / 2 ** 30:.1f} GiB"
