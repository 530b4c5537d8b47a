"""A continuous prompt in front of embedded text, and the loss on an output text.

Every row of a batch is ``[prompt (L vectors)] [input tokens] [output tokens]``. The
output tokens carry the loss: the token at position t is predicted from the hidden state
at t - 1, so only those positions go through the 50257-way head, and the last output
token (end-of-text) is never an input. Rows are packed (``minway.packing``): no arithmetic
is spent on padding.

``output_nll`` runs each row whole: the plain statement of the loss. Training uses
``bank_output_nll``, which gives each prompt a row of its own in the pass, run once, and
lets the text of all its rows continue that row (same result, less work).
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


def output_nll(model, prompt, inputs, outputs):
    """Mean negative log-likelihood per row (B,) of ``outputs[b]`` after the prompt and ``inputs[b]``:
    ``prompt`` (L, d) leads every row, (B, L, d) a prompt per row."""
    prompts = prompt.expand(len(inputs), -1, -1) if prompt.dim() == 2 else prompt
    rows = texts(inputs, outputs)
    embeds = embed_rows(model, rows, prompts)
    packed = pack([prompts.shape[1] + len(r) for r in rows], device=embeds.device)
    return mean_nll(model(embeds=embeds, packed=packed, logit_counts=[len(o) for o in outputs]).logits, outputs)


def bank_output_nll(model, vectors, lengths, owner, inputs, outputs, dropout=None):
    """``output_nll`` with a prompt per row: row r is led by the first ``lengths[owner[r]]`` of
    the vectors (K, L_max, d) of prompt ``owner[r]``.

    A prompt is the same in all its rows, and under the causal mask nothing after it changes
    its hidden states: each prompt is a row of its own, run once, and the text of each of its
    rows continues it. With a 14-token prompt, 30 tokens of text and 8 rows, 98 of the 352
    positions are not computed.

    ``dropout``: (p, a generator per prompt) trains with GPT-2's dropout (``minway.dropout``).
    Each row then has masks of its own, so each row runs its own copy of the prompt, as the
    released code does; the rows must come grouped by prompt.
    """
    require_tokens(inputs)
    lengths, owner = lengths.tolist(), owner.tolist()
    rows = texts(inputs, outputs)
    prompts = [vectors[k, :L] for k, L in enumerate(lengths)]
    counts = [len(o) for o in outputs]
    if dropout:
        p, generators = dropout
        rows_per_prompt = [owner.count(k) for k in range(len(lengths))]
        if owner != sorted(owner):
            raise ValueError("the rows of a batch with dropout must be grouped by prompt, in prompt order")
        embeds = embed_rows(model, rows, [prompts[k] for k in owner])
        packed = pack([lengths[k] + len(r) for k, r in zip(owner, rows)], device=embeds.device)
        dropout = PromptDropout(p, generators, rows_per_prompt)
    else:
        embeds = torch.cat([*(x.to(model.wte.weight.dtype) for x in prompts), embed_rows(model, rows)])
        K = len(lengths)
        packed = pack(lengths + [len(r) for r in rows], [()] * K + [[(k, lengths[k])] for k in owner],
                      device=embeds.device)
        counts = [0] * K + counts
    logits = model(embeds=embeds, packed=packed, logit_counts=counts, dropout=dropout).logits
    return mean_nll(logits, outputs)
