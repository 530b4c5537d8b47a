"""A continuous prompt in front of embedded text, and the loss on an output text.

Every row of a batch is ``[prompt (L vectors)] [input tokens] [output tokens] [padding]``.
The output tokens carry the loss: the token at position t is predicted from the
hidden state at t - 1, so only those positions go through the 50257-way head.

The loss needs no key-padding mask: the padding is on the right, so under the causal
mask no real position ever attends to a pad key. The mask would change only the hidden
states of pad positions, which no loss reads, and leaving it out lets attention take
its causal fast path.
"""
import torch
import torch.nn.functional as F


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
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return (nll * target_mask).sum(1) / target_mask.sum(1)


def output_nll(model, prompt, inputs, outputs):
    """Mean negative log-likelihood per row (B,) of ``outputs[b]`` after the prompt and ``inputs[b]``."""
    embeds, _ = prompted_embeddings(model, prompt, [i + o for i, o in zip(inputs, outputs)])
    first = torch.tensor([prompt.shape[-2] + len(i) - 1 for i in inputs], device=embeds.device)
    return nll_after(model, embeds, first, outputs)


def bank_embeddings(model, vectors, lengths, owner, rows):
    """Embeddings (B, T, d) of right-padded rows, row r led by prompt ``owner[r]`` of ``vectors``
    (K, L_max, d), of which the first ``lengths[owner[r]]`` vectors are real."""
    device = model.wte.weight.device
    ids, text_mask = pad(rows, 0, device)
    text = model.embed(ids)
    prompt_len = lengths[owner]
    n_real = prompt_len + text_mask.sum(1)
    L_max, T = vectors.shape[1], int(n_real.max())
    source = torch.cat([vectors[owner].to(text.dtype), text], dim=1)
    t = torch.arange(T, device=device)[None, :]
    index = torch.where(t < prompt_len[:, None], t, L_max + t - prompt_len[:, None]).clamp(max=source.shape[1] - 1)
    return source.gather(1, index[..., None].expand(-1, -1, source.shape[-1]))


def bank_output_nll(model, vectors, lengths, owner, inputs, outputs):
    """``output_nll`` with a prompt per row (see ``bank_embeddings``)."""
    embeds = bank_embeddings(model, vectors, lengths, owner, [i + o for i, o in zip(inputs, outputs)])
    first = lengths[owner] + torch.tensor([len(i) - 1 for i in inputs], device=embeds.device)
    return nll_after(model, embeds, first, outputs)
