"""The wayward objective: c-dist, the output loss, and their sum."""
import pytest
import torch

from fixtures import TINY, sharp_model
from minway.batch import bank_output_nll, embed_rows, mean_nll, output_nll
from minway.classify import option_nll
from minway.objective import bank_losses, c_dist, wayward_loss
from minway.prompt import PromptBank

ROWS = [  # (input ids, output ids): different lengths on both sides
    ([464, 3290, 373, 922, 290], [632, 373, 1049, 764]),
    ([40, 588], [632, 373, 7818, 764]),
    ([2061, 318, 262, 3139, 286, 4881, 5633, 1892], [1195, 25, 20147]),
    ([17], [50256]),
]


@pytest.fixture(scope="module")
def model():
    return sharp_model(seed=1)


def test_c_dist_by_hand():
    prompt = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    target = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    # (0 + 1 + 4) + (16 + 25 + 36) = 82, over L = 2 positions
    assert float(c_dist(prompt, target)) == 41.0
    assert float(c_dist(target, target)) == 0.0
    batched = torch.stack([prompt, target, target + 1.0])
    assert c_dist(batched, target).tolist() == [41.0, 0.0, 3.0]


def test_embed_rows_puts_each_prompt_before_its_row(model):
    prompts = [torch.randn(3, TINY.n_embd), torch.randn(2, TINY.n_embd)]
    embeds = embed_rows(model, [[5, 6], [7]], prompts)
    E = model.wte.weight
    assert torch.equal(embeds, torch.cat([prompts[0], E[[5, 6]], prompts[1], E[[7]]]))
    assert torch.equal(embed_rows(model, [[5, 6], [7]]), E[[5, 6, 7]])


def test_mean_nll_is_each_rows_mean_over_its_own_tokens():
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0))
    outputs = [[1, 2], [3], [4, 5]]
    logp = logits.log_softmax(-1)
    expected = [-(logp[0, 1] + logp[1, 2]) / 2, -logp[2, 3], -(logp[3, 4] + logp[4, 5]) / 2]
    torch.testing.assert_close(mean_nll(logits, outputs), torch.stack(expected))


def test_output_nll_equals_the_full_logits_of_the_token_sequence(model):
    """A one-vector prompt equal to the first token's embedding makes the row the plain token
    sequence: the loss must be -log softmax of model(ids)'s full logits at the output tokens."""
    rows = [(i, o) for i, o in ROWS if len(i) > 1]
    nll = torch.stack([
        output_nll(model, model.wte.weight[ids_in[0]][None].clone(), [ids_in[1:]], [ids_out])[0]
        for ids_in, ids_out in rows])
    for (ids_in, ids_out), got in zip(rows, nll):
        ids = ids_in + ids_out
        logits = model(torch.tensor(ids)).logits
        assert logits.shape == (len(ids), TINY.vocab_size)
        expected = [-torch.log_softmax(logits[len(ids_in) + j - 1], -1)[t] for j, t in enumerate(ids_out)]
        assert float(got) == pytest.approx(float(sum(expected) / len(expected)), abs=1e-4)


def test_output_nll_batched_equals_one_row_at_a_time(model):
    prompt = torch.randn(4, TINY.n_embd) * 0.4
    inputs, outputs = [i for i, _ in ROWS], [o for _, o in ROWS]
    batched = output_nll(model, prompt, inputs, outputs)
    alone = torch.cat([output_nll(model, prompt, [i], [o]) for i, o in ROWS])
    torch.testing.assert_close(batched, alone, atol=1e-4, rtol=0)
    # and by hand from the full logits of each unpadded row, through model(embeds=...)
    for b, (ids_in, ids_out) in enumerate(ROWS):
        embeds = torch.cat([prompt, model.wte.weight[ids_in + ids_out]])
        logp = model(embeds=embeds).logits.log_softmax(-1)
        start = len(prompt) + len(ids_in)
        expected = -sum(logp[start + j - 1, t] for j, t in enumerate(ids_out)) / len(ids_out)
        assert float(batched[b]) == pytest.approx(float(expected), abs=1e-4)
    assert batched.std() > 0.1  # rows differ: a mix-up of rows would show


def test_wayward_loss_is_ce_plus_gamma_times_distance(model):
    target = model.wte.weight[[464, 3290, 373]].detach().clone()
    prompt = torch.nn.Parameter(target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0)))
    inputs, outputs = [i for i, _ in ROWS], [o for _, o in ROWS]
    for gamma in (0.0, 0.01, 3.0):
        with torch.no_grad():
            loss = wayward_loss(model, prompt, target, inputs, outputs, gamma)
            ce = output_nll(model, prompt, inputs, outputs).mean()
            distance = c_dist(prompt, target)
        assert float(loss.ce) == pytest.approx(float(ce), abs=1e-6)
        assert float(loss.distance) == pytest.approx(float(distance), rel=1e-6)
        assert float(loss.distance) > 0
        assert float(loss.total) == pytest.approx(float(ce + gamma * loss.distance), rel=1e-6)


def test_only_the_prompt_gets_a_gradient_and_gamma_pulls_it_to_the_target(model):
    target = model.wte.weight[[464, 3290]].detach().clone()
    offset = 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    inputs, outputs = [i for i, _ in ROWS], [o for _, o in ROWS]
    grads = {}
    for gamma in (0.0, 1000.0):
        prompt = torch.nn.Parameter(target + offset)
        wayward_loss(model, prompt, target, inputs, outputs, gamma).total.backward()
        grads[gamma] = prompt.grad
    assert all(p.grad is None for p in model.parameters())
    # d/dp gamma ||p - t||^2 / L = 2 gamma (p - t) / L dominates at gamma = 1000
    expected = grads[0.0] + 2 * 1000.0 * offset / 2
    torch.testing.assert_close(grads[1000.0], expected, rtol=1e-4, atol=1e-3)


def test_bank_losses_are_each_prompts_own_wayward_loss(model):
    """The batched objective of training equals the one-prompt statement of it, prompt by prompt."""
    targets = [[464, 3290, 373], [40], [2061, 318]]
    bank = PromptBank(model, targets)
    with torch.no_grad():
        bank.vectors.add_(0.05 * torch.randn(bank.vectors.shape, generator=torch.Generator().manual_seed(2)))
        bank.vectors[0, 3:] = 0  # keep the padding of the shorter prompts at zero
        bank.vectors[1, 1:] = 0
        bank.vectors[2, 2:] = 0
    owner = torch.tensor([0, 1, 1, 2])
    inputs, outputs = [i for i, _ in ROWS], [o for _, o in ROWS]
    gammas = torch.tensor([0.0, 0.5, 3.0])
    with torch.no_grad():
        together = bank_losses(model, bank, owner, inputs, outputs, gammas)
        for k in range(3):
            rows = [r for r in range(len(ROWS)) if owner[r] == k]
            alone = wayward_loss(model, bank.prompt(k), bank.targets[k, :len(targets[k])],
                                 [inputs[r] for r in rows], [outputs[r] for r in rows], float(gammas[k]))
            for got, want in zip(together, alone):
                assert float(got[k]) == pytest.approx(float(want), rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("backend", ["naive", "sdpa", "triton"])
@pytest.mark.parametrize("targets, owner", [
    ([[464, 3290, 373, 922], [40], [2061, 318]], [0, 1, 2, 0]),   # prompts of different lengths
    ([[464, 3290, 373], [40, 588, 17]], [1, 0, 1, 0]),            # of one length
])
def test_bank_gradients_are_each_prompts_own_gradient(model, backend, targets, owner):
    """Training runs each prompt once, as a row of its own, and continues its rows from it; the
    one-prompt loss runs the whole sequence of every row with the naive attention formula.
    The gradients agree for every attention backend."""
    owner = torch.tensor(owner)
    inputs, outputs = [i for i, _ in ROWS], [o for _, o in ROWS]
    bank = PromptBank(model, targets)
    with torch.no_grad():
        for k, ids in enumerate(targets):
            bank.vectors[k, :len(ids)] += 0.05 * torch.randn(len(ids), TINY.n_embd,
                                                             generator=torch.Generator().manual_seed(k))
    try:
        model.set_attention(backend)
        bank_losses(model, bank, owner, inputs, outputs, torch.zeros(len(targets))).ce.sum().backward()
        model.set_attention("naive")
        for k in range(len(targets)):
            prompt = bank.prompt(k).detach().requires_grad_()
            rows = [r for r in range(len(ROWS)) if owner[r] == k]
            output_nll(model, prompt, [inputs[r] for r in rows], [outputs[r] for r in rows]).mean().backward()
            torch.testing.assert_close(bank.vectors.grad[k, :len(targets[k])], prompt.grad, rtol=1e-4, atol=1e-6)
            assert torch.all(bank.vectors.grad[k, len(targets[k]):] == 0)  # the padding of a short prompt
    finally:
        model.set_attention("auto")


def test_empty_input_is_refused(model):
    """The paths that run the prompt apart predict the first output token from the input."""
    bank = PromptBank(model, [[40, 588]])
    with pytest.raises(ValueError, match="every input needs at least one token"):
        bank_output_nll(model, bank.vectors, bank.lengths, torch.tensor([0, 0]), [[5], []], [[1], [2]])
    with pytest.raises(ValueError, match="every input needs at least one token"):
        option_nll(model, bank.prompt(0), [[5], []], [[1], [2]])
