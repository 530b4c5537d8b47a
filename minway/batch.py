"""A continuous prompt in front of embedded text, and the loss on an output text.

Every row of a batch is ``[prompt (L vectors)] [input tokens] [output tokens]``. The output
tokens carry the loss: the token at position t is predicted from the hidden state at t - 1,
so only those positions go through the vocabulary-wide head, and the last output token
(end-of-text) is never an input. Rows are packed (``minway.packing``): laid end to end, no
arithmetic spent on padding.

``output_nll`` is the loss of one prompt's rows; ``bank_output_nll`` the same for K prompts
in one pass, each row led by its own prompt (``minway.run.training`` trains K prompts at once).
"""
import torch
import torch.nn.functional as F

from minway.dropout import PromptDropout
from minway.packing import pack


def require_tokens(inputs):
    """Rows that continue a prompt predict their first output token from the input's last."""
    if any(len(i) == 0 for i in inputs):
        raise ValueError("every input needs at least one token")


def texts(inputs, outputs):
    """The tokens a row runs on after its prompt: the input, then the output but its last token."""
    return [i + o[:-1] for i, o in zip(inputs, outputs)]


def embed_rows(model, rows, prompts=None):
    """(N, d): each row's tokens embedded, after its prompt (L_r, d) when ``prompts`` are given."""
    device, dtype = model.wte.weight.device, model.wte.weight.dtype
    embedded = model.embed(torch.tensor([t for row in rows for t in row], dtype=torch.long, device=device))
    if prompts is None:
        return embedded
    pieces = embedded.split([len(row) for row in rows])
    return torch.cat([x for prompt, row in zip(prompts, pieces) for x in (prompt.to(dtype), row)])


def mean_nll(logits, outputs):
    """Mean negative log-likelihood per row of ``outputs[r]`` under its logits, rows end to end."""
    targets = torch.tensor([t for o in outputs for t in o], dtype=torch.long, device=logits.device)
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    return torch.stack([row.mean() for row in nll.split([len(o) for o in outputs])])


def output_nll(model, prompt, inputs, outputs, dropout=None):
    """Mean negative log-likelihood per row (B,) of ``outputs[b]`` after the prompt (L, d) and ``inputs[b]``.

    Without dropout the prompt is the same in every row, and under the causal mask nothing that
    follows it changes its hidden states: it runs once, as a row of its own, and the text of
    every row continues it (with a 14-token prompt, 30 tokens of text and 8 rows, 98 of 352
    positions are not computed). ``dropout``: (p, the generator of this step's masks) trains
    with GPT-2's dropout (``minway.dropout``); each row then has masks of its own, so each row
    runs its own copy of the prompt, as the released code does.
    """
    require_tokens(inputs)
    rows, L, device = texts(inputs, outputs), len(prompt), prompt.device
    counts = [len(o) for o in outputs]  # logits are needed at the last len(output) tokens of a row
    if dropout is None:
        embeds = torch.cat([prompt.to(model.wte.weight.dtype), embed_rows(model, rows)])
        # row 0 is the prompt; row 1 + b continues its L tokens with text b
        packed = pack([L] + [len(r) for r in rows], [()] + [[(0, L)]] * len(rows), device=device)
        counts = [0] + counts
    else:
        p, generator = dropout
        embeds = embed_rows(model, rows, prompt.expand(len(rows), -1, -1))  # a copy per row
        packed = pack([L + len(r) for r in rows], device=device)
        dropout = PromptDropout(p, [generator], [len(rows)])
    logits = model(embeds=embeds, packed=packed, logit_counts=counts, dropout=dropout).logits
    return mean_nll(logits, outputs)


def bank_output_nll(model, vectors, lengths, owner, inputs, outputs, dropout=None):
    """``output_nll`` of K prompts in one pass: row r is led by the first ``lengths[owner[r]]`` of the
    vectors (K, L_max, d) of prompt ``owner[r]``; without dropout each prompt is a row of its own that
    its rows continue. ``dropout``: (p, a generator per prompt); the rows must then come grouped by
    prompt. For K = 1 it computes exactly what ``output_nll`` computes.
    """
    require_tokens(inputs)
    lengths, owner = lengths.tolist(), owner.tolist()
    rows = texts(inputs, outputs)
    prompts = [vectors[k, :L] for k, L in enumerate(lengths)]
    counts = [len(o) for o in outputs]
    if dropout:
        p, generators = dropout
        if owner != sorted(owner):
            raise ValueError("the rows of a batch with dropout must be grouped by prompt, in prompt order")
        copies = [copy for k in range(len(lengths)) for copy in prompts[k].expand(owner.count(k), -1, -1)]
        embeds = embed_rows(model, rows, copies)
        packed = pack([lengths[k] + len(r) for k, r in zip(owner, rows)], device=embeds.device)
        dropout = PromptDropout(p, generators, [owner.count(k) for k in range(len(lengths))])
    else:
        embeds = torch.cat([*(x.to(model.wte.weight.dtype) for x in prompts), embed_rows(model, rows)])
        K = len(lengths)
        packed = pack(lengths + [len(r) for r in rows], [()] * K + [[(k, lengths[k])] for k in owner],
                      device=embeds.device)
        counts = [0] * K + counts
    logits = model(embeds=embeds, packed=packed, logit_counts=counts, dropout=dropout).logits
    return mean_nll(logits, outputs)
