"""Classification by scoring each label's output, as the paper's code does.

An example is assigned the label whose output (" great ." and end-of-text, after an
input that ends in " It was") has the lowest mean token loss after the prompt and the
input; ties go to the lowest label. Each pass continues the keys and values of the one
before: the prompt, the same for every example, is run once per batch; each input is run
once on top of it, and its last position predicts the first token of every option; only
the options' remaining tokens are run on top of that, instead of C full passes.
"""
import torch
from tqdm.auto import tqdm

from minway.batch import output_nll, pad, require_tokens
from minway.model import KeyValues


def option_nll_naive(model, prompt, inputs, options):
    """(B, C) mean token loss of each option, one full pass per (example, option): the reference."""
    C = len(options)
    prompt = prompt.repeat_interleave(C, 0) if prompt.dim() == 3 else prompt
    rows_in = [i for i in inputs for _ in range(C)]
    rows_out = [o for _ in inputs for o in options]
    return output_nll(model, prompt, rows_in, rows_out).view(len(inputs), C)


@torch.no_grad()
def option_nll(model, prompt, inputs, options):
    """(B, C) mean token loss of each option, each input run once."""
    if any(len(o) == 0 for o in options):
        raise ValueError("every option needs at least one token")
    require_tokens(inputs)
    B, C, L = len(inputs), len(options), prompt.shape[-2]
    device = model.wte.weight.device

    # Prompt pass: the prompt's keys and values, made once and shared by every example
    # (a prompt per example, (B, L, d), is run once per example).
    prompts = model.prefix_cache((prompt if prompt.dim() == 3 else prompt[None]).to(model.wte.weight.dtype))
    past = [KeyValues(kv.keys.expand(B, -1, -1, -1), kv.values.expand(B, -1, -1, -1)) for kv in prompts]

    # Input pass: each input after the prompt; its last position predicts each option's first
    # token. It needs no padding mask (see minway.batch); the option pass masks the cached
    # keys of the padding.
    ids, mask = pad(inputs, 0, device)
    last = torch.tensor([len(i) - 1 for i in inputs], device=device)
    out = model(ids, past=past, position_offset=torch.full((B,), L, device=device), use_cache=True,
                logit_positions=last[:, None])
    option_ids, option_mask = pad(options, 0, device)
    nll = -out.logits[:, 0].float().log_softmax(-1)[:, option_ids[:, 0]]

    # Option pass: the C options of every example on top of its cached input.
    S = option_ids.shape[1]
    if S > 1:
        past = [KeyValues(kv.keys.repeat_interleave(C, 0), kv.values.repeat_interleave(C, 0)) for kv in out.present]
        rows_ids, rows_mask = option_ids.repeat(B, 1), option_mask.repeat(B, 1)
        input_mask = torch.cat([torch.ones(B, L, dtype=torch.bool, device=device), mask], dim=1)
        option_out = model(rows_ids[:, :-1], past=past, position_offset=(L + mask.sum(1)).repeat_interleave(C),
                           key_padding_mask=torch.cat([input_mask.repeat_interleave(C, 0), rows_mask[:, :-1]], dim=1))
        token_nll = -option_out.logits.float().log_softmax(-1).gather(-1, rows_ids[:, 1:, None]).squeeze(-1)
        nll += (token_nll * rows_mask[:, 1:]).sum(1).view(B, C)
    return nll / option_mask.sum(1)


@torch.no_grad()
def predict(model, prompt, inputs, options, batch_size=32, progress=False, desc="eval"):
    """Predicted label per input (the lowest loss, ties to the lowest label) and the (N, C) option losses."""
    all_nll = []
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=not progress, leave=False):
        all_nll.append(option_nll(model, prompt, inputs[start:start + batch_size], options).cpu())
    nll = torch.cat(all_nll)
    return nll.argmin(1), nll
