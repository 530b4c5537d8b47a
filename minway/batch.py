"""A continuous prompt in front of embedded text, and the loss on an output text.

Every row of a batch is ``[prompt (L vectors)] [input tokens] [output tokens] [padding]``.
The output tokens carry the loss: the token at position t is predicted from the
hidden state at t - 1, so only those positions go through the 50257-way head.

The text needs no key-padding mask: its padding is on the right, so under the causal
mask no real position ever attends to a pad key. The mask would change only the hidden
states of pad positions, which no loss reads, and leaving it out lets attention take
its causal fast path (only prompts of different lengths in one batch need a mask).

``output_nll`` runs each row whole: the plain statement of the loss. Training uses
``bank_output_nll``, which runs each prompt once for all its rows (same result, less work).
"""
import torch
import torch.nn.functional as F

from minway.dropout import Layout, PromptDropout, grouped_rows
from minway.model import KeyValues


def pad(rows, value, device):
    """list of lists -> (B, T) long tensor, right-padded, and its (B, T) mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    mask = torch.arange(width)[None, :] < torch.tensor([len(r) for r in rows])[:, None]
    return ids.to(device), mask.to(device)


def prompted_embeddings(model, prompt, rows):
    """Embeddings (B, L + T, d) and mask of ``prompt`` (L, d) or (B, L, d) followed by each row of ids."""
    device = model.wte.weight.device
    ids, text_mask = pad(rows, 0, device)
    text = model.embed(ids)
    prompt = prompt.to(text.dtype)
    if prompt.dim() == 2:
        prompt = prompt.expand(len(rows), -1, -1)
    prompt_mask = torch.ones(prompt.shape[:2], dtype=torch.bool, device=device)
    return torch.cat([prompt, text], dim=1), torch.cat([prompt_mask, text_mask], dim=1)


def nll_after(model, embeds, first, outputs):
    """Mean negative log-likelihood per right-padded row of ``outputs[b]``, whose first token is
    predicted at ``first[b]``."""
    device = embeds.device
    targets, target_mask = pad(outputs, -100, device)
    positions = (first[:, None] + torch.arange(targets.shape[1], device=device)).clamp(max=embeds.shape[1] - 1)
    logits = model(embeds=embeds, logit_positions=positions).logits
    return _mean_nll(logits, targets, target_mask)


def _mean_nll(logits, targets, target_mask):
    """Mean negative log-likelihood per row of right-padded targets (B, P) under logits (B, P, V)."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return (nll * target_mask).sum(1) / target_mask.sum(1)


def output_nll(model, prompt, inputs, outputs):
    """Mean negative log-likelihood per row (B,) of ``outputs[b]`` after the prompt and ``inputs[b]``."""
    embeds, _ = prompted_embeddings(model, prompt, [i + o for i, o in zip(inputs, outputs)])
    first = torch.tensor([prompt.shape[-2] + len(i) - 1 for i in inputs], device=embeds.device)
    return nll_after(model, embeds, first, outputs)


def require_tokens(inputs):
    """Paths that run the prompt apart predict the first output token from the input's last."""
    if any(len(i) == 0 for i in inputs):
        raise ValueError("every input needs at least one token")


def bank_output_nll(model, vectors, lengths, owner, inputs, outputs, dropout=None):
    """``output_nll`` with a prompt per row: row r is led by the first ``lengths[owner[r]]`` of
    the vectors (K, L_max, d) of prompt ``owner[r]``.

    A prompt is the same in all its rows, and under the causal mask nothing after it changes
    its hidden states: each prompt is run once (``GPT2.prefix_cache``) and its keys and values
    serve all its rows, whose text continues it. With a 14-token prompt, 50 tokens of text and
    8 rows, 98 of the 512 positions are not computed.

    ``dropout``: (p, a generator per prompt) trains with GPT-2's dropout (``minway.dropout``).
    Each row then has masks of its own, so the prompt is run once per row, as the released
    code does; the rows must come grouped by prompt.
    """
    require_tokens(inputs)
    device = model.wte.weight.device
    ids, _ = pad([i + o for i, o in zip(inputs, outputs)], 0, device)
    targets, target_mask = pad(outputs, -100, device)
    prompt_dropout = text_dropout = None
    if dropout:
        prompt_dropout, text_dropout = bank_dropout(*dropout, lengths, owner, inputs, outputs, vectors.shape[1])
        past = model.prefix_cache(vectors[owner].to(model.wte.weight.dtype), prompt_dropout)
    else:
        cache = model.prefix_cache(vectors.to(model.wte.weight.dtype))
        past = [KeyValues(kv.keys[owner], kv.values[owner]) for kv in cache]
    # the text is right-padded, so its padding needs no mask (see above); the padding of
    # prompts shorter than the longest does
    key_padding_mask = None
    if bool((lengths < vectors.shape[1]).any()):
        prompt_mask = torch.arange(vectors.shape[1], device=device) < lengths[owner][:, None]
        key_padding_mask = torch.cat([prompt_mask, torch.ones_like(ids, dtype=torch.bool)], dim=1)
    first = torch.tensor([len(i) - 1 for i in inputs], device=device)
    positions = (first[:, None] + torch.arange(targets.shape[1], device=device)).clamp(max=ids.shape[1] - 1)
    logits = model(ids, past=past, position_offset=lengths[owner], key_padding_mask=key_padding_mask,
                   logit_positions=positions, dropout=text_dropout).logits
    return _mean_nll(logits, targets, target_mask)


def bank_dropout(p, generators, lengths, owner, inputs, outputs, prompt_width):
    """The ``PromptDropout`` of the prompt pass and of the text pass of ``bank_output_nll``: each
    prompt's masks are drawn in the layout its rows would have alone."""
    prompt_layouts, text_layouts, last = [], [], []
    for k, rows in enumerate(grouped_rows(owner)):
        L = int(lengths[k])
        width = max(len(inputs[r]) + len(outputs[r]) for r in range(rows.start, rows.stop))
        prompt_layouts.append(Layout(rows, L, ((0, L),)))
        text_layouts.append(Layout(rows, width, ((0, L), (prompt_width, width))))
        last.append(max(len(outputs[r]) for r in range(rows.start, rows.stop)))
    return PromptDropout(p, generators, prompt_layouts), PromptDropout(p, generators, text_layouts, last)
