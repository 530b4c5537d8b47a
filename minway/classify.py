"""Classification by scoring each label's output text, as the paper's code does.

An example is assigned the label whose output text (" It was great .") has the
lowest mean token loss after the prompt and the input. Each pass continues the keys
and values of the one before: the prompt, the same for every example, is run once
per batch; each input with the part that all options share (" It was") is run once
on top of it; and only the C short suffixes of the options are run on top of that,
instead of C full passes.
"""
import torch
from tqdm.auto import tqdm

from minway.batch import output_nll, pad, require_tokens
from minway.model import KeyValues


def common_prefix_length(options):
    n = 0
    while all(len(o) > n for o in options) and len({o[n] for o in options}) == 1:
        n += 1
    return n


def option_nll_naive(model, prompt, inputs, options):
    """(B, C) mean token loss of each option, one full pass per (example, option): the reference."""
    C = len(options)
    prompt = prompt.repeat_interleave(C, 0) if prompt.dim() == 3 else prompt
    rows_in = [i for i in inputs for _ in range(C)]
    rows_out = [o for _ in inputs for o in options]
    return output_nll(model, prompt, rows_in, rows_out).view(len(inputs), C)


@torch.no_grad()
def option_nll(model, prompt, inputs, options):
    """(B, C) mean token loss of each option, the shared prefix computed once."""
    if any(len(o) == 0 for o in options):
        raise ValueError("every option needs at least one token")
    require_tokens(inputs)
    B, C, L = len(inputs), len(options), prompt.shape[-2]
    # at least one suffix keeps a token (identical options, or a single one, share everything)
    n = min(common_prefix_length(options), max(len(o) for o in options) - 1)
    common, suffixes = options[0][:n], [o[n:] for o in options]
    device = model.wte.weight.device

    # Prompt pass: the prompt's keys and values, made once and shared by every example
    # (a prompt per example, (B, L, d), is run once per example).
    prompts = model.prefix_cache((prompt if prompt.dim() == 3 else prompt[None]).to(model.wte.weight.dtype))
    past = [KeyValues(kv.keys.expand(B, -1, -1, -1), kv.values.expand(B, -1, -1, -1)) for kv in prompts]

    # Prefix pass: input + common part after the prompt; logits where the common tokens and
    # the first suffix token are predicted. It needs no padding mask (see minway.batch); the
    # suffix pass masks the cached keys of the padding.
    ids, mask = pad([i + common for i in inputs], 0, device)
    first = torch.tensor([len(i) - 1 for i in inputs], device=device)
    out = model(ids, past=past, position_offset=torch.full((B,), L, device=device), use_cache=True,
                logit_positions=first[:, None] + torch.arange(n + 1, device=device))
    logp = out.logits.float().log_softmax(-1)
    common_ids = torch.tensor(common, dtype=torch.long, device=device).expand(B, n)
    nll = -logp[:, :n].gather(-1, common_ids[..., None]).sum((1, 2))[:, None].expand(B, C).clone()
    suffix_ids, suffix_mask = pad(suffixes, 0, device)
    nll += torch.where(suffix_mask[:, 0], -logp[:, n][:, suffix_ids[:, 0]], 0.0)

    # Suffix pass: the C suffixes of every example on top of its cached prefix.
    S = suffix_ids.shape[1]
    if S > 1:
        past = [KeyValues(kv.keys.repeat_interleave(C, 0), kv.values.repeat_interleave(C, 0)) for kv in out.present]
        rows_ids, rows_mask = suffix_ids.repeat(B, 1), suffix_mask.repeat(B, 1)
        prefix_mask = torch.cat([torch.ones(B, L, dtype=torch.bool, device=device), mask], dim=1)
        suffix_out = model(rows_ids[:, :-1], past=past, position_offset=(L + mask.sum(1)).repeat_interleave(C),
                           key_padding_mask=torch.cat([prefix_mask.repeat_interleave(C, 0), rows_mask[:, :-1]], dim=1))
        suffix_logp = suffix_out.logits.float().log_softmax(-1)
        token_nll = -suffix_logp.gather(-1, rows_ids[:, 1:, None]).squeeze(-1)
        nll += (token_nll * rows_mask[:, 1:]).sum(1).view(B, C)
    lengths = torch.tensor([n + len(s) for s in suffixes], device=device)
    return nll / lengths


@torch.no_grad()
def predict(model, prompt, inputs, options, batch_size=32, progress=False, desc="eval"):
    """Predicted label per input and the (N, C) option losses."""
    all_nll = []
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=not progress, leave=False):
        all_nll.append(option_nll(model, prompt, inputs[start:start + batch_size], options).cpu())
    nll = torch.cat(all_nll)
    return nll.argmin(1), nll
