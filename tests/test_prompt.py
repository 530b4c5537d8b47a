"""c-proj and d-proj (minway.prompt) against their definitions, and the PromptBank's layout."""
import pytest
import torch
import torch.nn.functional as F

from fixtures import sharp_model
from minway.prompt import PromptBank, c_proj, d_proj, init_prompt


@pytest.fixture(scope="module")
def model():
    return sharp_model(seed=2)


def test_c_proj_is_an_fp32_copy_of_the_token_embeddings(model):
    ids = [5, 1000, 5]
    prompt = c_proj(model, ids)
    assert prompt.dtype == torch.float32 and torch.equal(prompt, model.wte.weight[ids])
    prompt += 1  # a copy: the model's embeddings stay as they are
    assert torch.equal(c_proj(model, ids), model.wte.weight[ids])
    trainable = init_prompt(model, ids)
    assert trainable.requires_grad and torch.equal(trainable, model.wte.weight[ids])


@pytest.mark.parametrize("metric", ["dot", "l2", "cos"])
def test_d_proj_is_the_nearest_token_per_position(model, metric):
    E = model.wte.weight
    prompt = torch.randn(4, E.shape[1], generator=torch.Generator().manual_seed(0)) * E.norm(dim=1).mean()
    scores = {"dot": prompt @ E.T, "l2": -torch.cdist(prompt, E),
              "cos": F.normalize(prompt, dim=1) @ F.normalize(E, dim=1).T}
    nearest = d_proj(prompt, E, metric)
    assert nearest.indices.shape == (4, 1)  # one token per position unless more are asked
    assert nearest.indices[:, 0].tolist() == scores[metric].argmax(1).tolist()
    assert d_proj(prompt, E, metric, k=3).indices.tolist() == scores[metric].topk(3, dim=1).indices.tolist()


def test_bank_pads_shorter_prompts_with_zeros(model):
    bank = PromptBank(model, [[5, 6, 7], [8]])
    assert bank.vectors.shape == (2, 3, model.config.n_embd) and bank.lengths.tolist() == [3, 1]
    assert torch.equal(bank.prompt(0), c_proj(model, [5, 6, 7])) and torch.equal(bank.prompt(1), c_proj(model, [8]))
    assert torch.equal(bank.targets, bank.vectors.detach()) and not bank.vectors[1, 1:].any()
