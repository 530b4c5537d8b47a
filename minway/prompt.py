"""The two projections of the paper (section 3.1) between text and continuous prompts.

c-proj(p_d) = p_d E: the token embeddings of a discrete prompt (L, d). A wayward
prompt starts there (section 4.1) and is the only trainable tensor.

d-proj(p_c): for each position the vocabulary token whose embedding is nearest.
The paper defines "nearest" by the highest dot product; its released code uses
the L2 distance; cosine is the third common choice. All three are reported.
"""
import torch

from kernels.projection import nearest_tokens

METRICS = ("dot", "l2", "cos")


def c_proj(model, ids):
    """Embeddings (L, d) in fp32 of a list of token ids."""
    return model.wte.weight[torch.as_tensor(ids, device=model.wte.weight.device)].detach().float().clone()


def init_prompt(model, target_ids):
    """A trainable prompt initialised at c-proj(target)."""
    return torch.nn.Parameter(c_proj(model, target_ids))


def d_proj(prompt, embeddings, metric="dot", k=1):
    """Nearest tokens of each prompt vector: ``Nearest(indices (L, k), scores (L, k), margin (L,))``."""
    return nearest_tokens(prompt.detach().float(), embeddings.detach(), k=k, metric=metric)
