"""Classification by scoring each label's output, as the paper's code does.

An example is assigned the label whose output (" great ." and end-of-text, after an
input that ends in " It was") has the lowest mean token loss after the prompt and the
input; ties go to the lowest label. One packed pass (``minway.packing``) scores a batch:
the prompt, the same for every example, is a row run once; each input is a row that
continues it, and its last token predicts the first token of every option; each option
with more tokens is a row that continues the prompt and its input.
"""
import torch
from tqdm.auto import tqdm

from minway.batch import embed_rows, require_tokens
from minway.packing import pack


@torch.no_grad()
def option_nll(model, prompt, inputs, options):
    """(B, C) mean token loss of each option after the prompt ((L, d), or (B, L, d): one per
    example) and each input, each input run once."""
    if any(len(o) == 0 for o in options):
        raise ValueError("every option needs at least one token")
    require_tokens(inputs)
    B = len(inputs)
    prompts = prompt[None] if prompt.dim() == 2 else prompt  # (P, L, d), P = 1 or B
    L, P = prompts.shape[1], len(prompts)
    longer = [c for c, option in enumerate(options) if len(option) > 1]

    # The rows of the pass, in order: the P prompts; the B inputs, input b continuing its prompt;
    # then, for each example b and each option c longer than one token, that option but its last
    # token, continuing the prompt and input b. With one prompt p, two inputs x0, x1 and the
    # options [great, ., EOT] and [bad, ., EOT]:
    #   rows   p   x0     x1     great .          bad .            great .          bad .
    #   keys   p   p x0   p x1   p x0 great .     p x0 bad .       p x1 great .     p x1 bad .
    # The last token of x_b predicts the first token of every option (one logit per input row);
    # the option rows predict the rest of their option.
    prompt_of = [0] * B if P == 1 else list(range(B))
    option_rows = [(b, c) for b in range(B) for c in longer]
    lengths = [L] * P + [len(i) for i in inputs] + [len(options[c]) - 1 for _, c in option_rows]
    prefixes = ([()] * P + [[(prompt_of[b], L)] for b in range(B)]
                + [[(prompt_of[b], L), (P + b, len(inputs[b]))] for b, _ in option_rows])
    embeds = torch.cat([prompts.reshape(-1, prompts.shape[-1]).to(model.wte.weight.dtype),
                        embed_rows(model, inputs + [options[c][:-1] for _, c in option_rows])])
    counts = [0] * P + [1] * B + [len(options[c]) - 1 for _, c in option_rows]  # logits asked of each row
    logits = model(embeds=embeds, packed=pack(lengths, prefixes, device=embeds.device), logit_counts=counts).logits
    logp = logits.float().log_softmax(-1)  # (B + sum of the option rows' lengths, V)

    device = logp.device
    nll = -logp[:B][:, torch.tensor([o[0] for o in options], device=device)]  # (B, C): each option's first token
    if option_rows:
        rest = torch.tensor([t for _, c in option_rows for t in options[c][1:]], device=device)
        token_nll = -logp[B:].gather(-1, rest[:, None]).squeeze(-1)  # one per token of an option after its first
        # the (example, option) each of those tokens belongs to, to add it to its entry of nll
        b, c = (torch.tensor(x, device=device).repeat_interleave(torch.tensor(counts[P + B:], device=device))
                for x in zip(*option_rows))
        nll.index_put_((b, c), token_nll, accumulate=True)
    return nll / torch.tensor([len(o) for o in options], device=device)


@torch.no_grad()
def predict(model, prompt, inputs, options, batch_size=32, progress=False, desc="eval"):
    """Predicted label per input (the lowest loss, ties to the lowest label) and the (N, C) option
    losses. Inputs are batched shortest first, so that each batch's rows are of like lengths;
    the results come back in the order of ``inputs``."""
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    nll = torch.empty(len(inputs), len(options))
    for start in tqdm(range(0, len(inputs), batch_size), desc=desc, disable=not progress, leave=False):
        batch = order[start:start + batch_size]
        prompts = prompt if prompt.dim() == 2 else prompt[batch]
        nll[batch] = option_nll(model, prompts, [inputs[i] for i in batch], options).cpu()
    return nll.argmin(1), nll
