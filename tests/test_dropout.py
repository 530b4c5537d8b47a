"""Training dropout (``minway.dropout``): where GPT-2 applies it, and masks a bank does not change.

The reference is ``transformers.GPT2LMHeadModel`` in train mode, whose dropout calls are
made to replay the masks minway drew: the losses must then agree, which pins the four
places of dropout, their order and their 1 / (1 - p) scaling.
"""
import pytest
import torch
import torch.nn.functional as F

from minway.batch import bank_output_nll
from minway.dropout import PromptDropout, step_generator
from weights.checkpoint import load_gpt2

transformers = pytest.importorskip("transformers")

P = 0.3
N_EMBD, N_LAYER, N_HEAD = 48, 2, 3
INPUTS = [[11, 12, 13, 14, 15, 16], [21, 22], [31, 32, 33, 34]]
OUTPUTS = [[41, 42], [43], [44, 45, 46]]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD, n_positions=32,
                                     initializer_range=0.1, attn_implementation="eager")
    reference = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    directory = tmp_path_factory.mktemp("hf-dropout")
    reference.save_pretrained(directory, safe_serialization=True)
    return reference, load_gpt2(directory).freeze()


def prompt_vectors(n, length, seed):
    return torch.randn(n, length, N_EMBD, generator=torch.Generator().manual_seed(seed)) * 0.5


def recorded_masks(monkeypatch):
    """Every mask ``PromptDropout`` draws, as multipliers, in order (with one prompt, its own layout
    is the batch's: the tokens of all rows end to end, or one row's queries by its keys)."""
    masks, draw = [], PromptDropout._keep

    def recording(self, shape, generator):
        keep = draw(self, shape, generator)
        masks.append(keep / (1 - self.p))
        return keep
    monkeypatch.setattr(PromptDropout, "_keep", recording)
    return masks


def row_lengths(L):
    """Tokens of each row: the prompt, the input, the output but its last token."""
    return [L + len(i) + len(o) - 1 for i, o in zip(INPUTS, OUTPUTS)]


def full_sequence_multipliers(masks, L):
    """The multipliers of the reference's dropout calls on the right-padded batch, in its order
    (embeddings, then per block: attention probabilities, attention output, MLP output), from
    minway's masks of the packed rows; 1 where minway computes nothing (the last block runs at
    the positions that predict the outputs only)."""
    B, lengths = len(INPUTS), row_lengths(L)
    S = max(lengths)
    queue = list(masks)

    def rows_of(packed_mask, counts):
        """(B, S, d) from (sum of counts, d): row b's items at the end of its real tokens."""
        out = torch.ones(B, S, N_EMBD)
        for b, piece in enumerate(packed_mask.split(counts)):
            out[b, lengths[b] - len(piece):lengths[b]] = piece
        return out

    def probabilities(counts):
        out = torch.ones(B, N_HEAD, S, S)
        for b, n in enumerate(counts):
            out[b, :, lengths[b] - n:lengths[b], :lengths[b]] = queue.pop(0)
        return out

    multipliers = [rows_of(queue.pop(0), lengths)]
    for i in range(N_LAYER):
        counts = lengths if i < N_LAYER - 1 else [len(o) for o in OUTPUTS]
        multipliers.append(probabilities(counts))
        multipliers += [rows_of(queue.pop(0), counts), rows_of(queue.pop(0), counts)]
    assert not queue
    return multipliers


def reference_nll(reference, prompt, multipliers, monkeypatch):
    """Mean output loss per row from the reference in train mode, its dropouts replaying ``multipliers``."""
    queue = list(multipliers)

    def replay(x, *args, **kwargs):
        multiplier = queue.pop(0)
        assert multiplier.shape == x.shape
        return x * multiplier
    monkeypatch.setattr(F, "dropout", replay)
    L, lengths = prompt.shape[0], row_lengths(prompt.shape[0])
    ids = torch.zeros(len(INPUTS), max(lengths) - L, dtype=torch.long)
    mask = torch.zeros(len(INPUTS), max(lengths), dtype=torch.long)
    for b, (ids_in, ids_out) in enumerate(zip(INPUTS, OUTPUTS)):
        ids[b, :lengths[b] - L] = torch.tensor(ids_in + ids_out[:-1])
        mask[b, :lengths[b]] = 1
    embeds = torch.cat([prompt.expand(len(INPUTS), -1, -1), reference.transformer.wte(ids)], dim=1)
    logits = reference.train()(inputs_embeds=embeds, attention_mask=mask).logits
    monkeypatch.undo()
    assert not queue
    nll = []
    for b, (ids_in, ids_out) in enumerate(zip(INPUTS, OUTPUTS)):
        first = L + len(ids_in) - 1
        nll.append(F.cross_entropy(logits[b, first:first + len(ids_out)], torch.tensor(ids_out)))
    return torch.stack(nll)


def test_dropout_is_where_and_as_transformers_applies_it(pair, monkeypatch):
    reference, model = pair
    L = 4
    prompt = prompt_vectors(1, L, seed=1)
    lengths, owner = torch.tensor([L]), torch.zeros(len(INPUTS), dtype=torch.long)
    masks = recorded_masks(monkeypatch)
    with torch.no_grad():
        ours = bank_output_nll(model, prompt, lengths, owner, INPUTS, OUTPUTS, (P, [step_generator(1, 0, "cpu")]))
        without = bank_output_nll(model, prompt, lengths, owner, INPUTS, OUTPUTS)
    monkeypatch.undo()
    kept = torch.cat([(m > 0).float().flatten() for m in masks]).mean()
    assert abs(float(kept) - (1 - P)) < 0.02
    assert (ours - without).abs().max() > 0.05  # the masks do change the loss
    with torch.no_grad():
        theirs = reference_nll(reference, prompt[0], full_sequence_multipliers(masks, L), monkeypatch)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_a_bank_draws_each_prompts_masks_as_it_would_alone(pair):
    """Three prompts of different lengths and seeds: in one batch, each row's loss and each
    prompt's gradient are those of the prompt run alone with the same generator."""
    _, model = pair
    lengths = torch.tensor([3, 6, 1])
    owner = torch.tensor([0, 0, 1, 2, 2, 2])
    inputs, outputs = INPUTS + INPUTS[::-1], OUTPUTS + OUTPUTS[::-1]
    vectors = prompt_vectors(3, 6, seed=2)
    for k, L in enumerate(lengths.tolist()):
        vectors[k, L:] = 0
    vectors.requires_grad_(True)
    seeds = [5, 6, 7]
    bank = bank_output_nll(model, vectors, lengths, owner, inputs, outputs,
                           (P, [step_generator(s, 3, "cpu") for s in seeds]))
    bank.sum().backward()
    for k, L in enumerate(lengths.tolist()):
        rows = (owner == k).nonzero().flatten().tolist()
        alone_vectors = vectors.detach()[k:k + 1, :L].clone().requires_grad_(True)
        alone = bank_output_nll(model, alone_vectors, torch.tensor([L]), torch.zeros(len(rows), dtype=torch.long),
                                [inputs[r] for r in rows], [outputs[r] for r in rows],
                                (P, [step_generator(seeds[k], 3, "cpu")]))
        alone.sum().backward()
        torch.testing.assert_close(bank[rows], alone.detach(), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(vectors.grad[k, :L], alone_vectors.grad[0], atol=1e-6, rtol=1e-5)
        assert float(vectors.grad[k, L:].abs().sum()) == 0.0  # the padding of a short prompt


def test_masks_depend_on_seed_and_step_only(pair):
    _, model = pair
    prompt, lengths, owner = prompt_vectors(1, 3, seed=3), torch.tensor([3]), torch.zeros(3, dtype=torch.long)

    def nll(seed, step):
        with torch.no_grad():
            dropout = (P, [step_generator(seed, step, "cpu")])
            return bank_output_nll(model, prompt, lengths, owner, INPUTS, OUTPUTS, dropout)
    assert torch.equal(nll(1, 4), nll(1, 4))
    assert not torch.allclose(nll(1, 4), nll(1, 5))
    assert not torch.allclose(nll(1, 4), nll(2, 4))


def test_rows_must_come_grouped_by_prompt(pair):
    _, model = pair
    with pytest.raises(ValueError, match="grouped by prompt"):
        bank_output_nll(model, prompt_vectors(2, 2, seed=4), torch.tensor([2, 2]), torch.tensor([0, 1, 0]),
                        INPUTS, OUTPUTS, (P, [step_generator(1, 0, "cpu")] * 2))
