"""The two projections of the paper (section 3.1) between text and continuous prompts.

c-proj(p_d) = p_d E: the token embeddings of a discrete prompt (L, d). A wayward
prompt starts there (section 4.1) and is the only trainable tensor.

d-proj(p_c): for each position the vocabulary token whose embedding is nearest.
The paper defines "nearest" by the highest dot product; its released code uses
the L2 distance; cosine is the third common choice. All three are reported.
"""
import torch

from minway.kernels.projection import METRICS, nearest_tokens  # noqa: F401 - METRICS is minway's list too


def c_proj(model, ids):
    """Embeddings (L, d) in fp32 of a list of token ids."""
    return model.wte.weight[torch.as_tensor(ids, device=model.wte.weight.device)].detach().float().clone()


def init_prompt(model, target_ids):
    """A trainable prompt initialised at c-proj(target)."""
    return torch.nn.Parameter(c_proj(model, target_ids))


def d_proj(prompt, embeddings, metric="dot", k=1):
    """Nearest tokens of each prompt vector: ``Nearest(indices (L, k), scores (L, k), margin (L,))``."""
    return nearest_tokens(prompt.detach().float(), embeddings.detach(), k=k, metric=metric)


class PromptBank(torch.nn.Module):
    """K prompts, each initialised at the c-proj of its own target, in one (K, L_max, d) parameter.

    Prompts shorter than L_max are padded with zeros there; the rows that follow a prompt
    never see its padding, nor does the distance, so it gets no gradient and stays zero.
    """

    def __init__(self, model, targets):
        super().__init__()
        lengths = [len(t) for t in targets]
        padded = torch.zeros(len(targets), max(lengths), model.config.n_embd, device=model.wte.weight.device)
        for k, ids in enumerate(targets):
            padded[k, :len(ids)] = c_proj(model, ids)
        self.register_buffer("lengths", torch.tensor(lengths, device=padded.device))
        self.register_buffer("targets", padded)
        self.vectors = torch.nn.Parameter(padded.clone())

    def __len__(self):
        return len(self.lengths)

    def prompt(self, k):
        return self.vectors[k, :int(self.lengths[k])]

    def target(self, k):
        """c-proj of prompt k's target: where it started."""
        return self.targets[k, :int(self.lengths[k])]
