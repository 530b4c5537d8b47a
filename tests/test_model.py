"""minway's GPT-2 computes what the reference implementation computes.

The reference is ``transformers.GPT2LMHeadModel`` with eager attention. Each test
builds a small random model there, saves it with ``save_pretrained`` (safetensors),
loads it with minway's ``load_gpt2`` and compares on real tokenized SST-2
sentences in fp32: the reference runs them as a right-padded batch, minway packed,
its rows end to end (``minway.packing``).
"""
import shutil

import pytest
import torch

from fixtures import TOKENIZER_DIR, first_rows
from minway.model import SIZES, GPT2, GPT2Config, init_weights
from minway.packing import pack
from weights.checkpoint import load_gpt2

transformers = pytest.importorskip("transformers")

EOT = 50256
TOL = 1e-4

# initializer_range: the spread of the random weights. GPT-2's own 0.02 makes a nearly linear
# model in which e.g. the exact GELU instead of the tanh form stays below the tolerance; larger
# weights make every part of the computation visible in the logits.
CONFIGS = {
    "48x2-heads3": dict(n_embd=48, n_layer=2, n_head=3, n_positions=64, initializer_range=0.1),
    "40x1-heads5": dict(n_embd=40, n_layer=1, n_head=5, n_positions=32, initializer_range=0.1),
    "48x1-heads3-ctx24": dict(n_embd=48, n_layer=1, n_head=3, n_positions=24, initializer_range=0.1),
    "24x3-heads1": dict(n_embd=24, n_layer=3, n_head=1, n_positions=48, initializer_range=0.1),
    "48x2-heads3-gpt2-init": dict(n_embd=48, n_layer=2, n_head=3, n_positions=64, initializer_range=0.02),
    "64x2-heads4-wide-init": dict(n_embd=64, n_layer=2, n_head=4, n_positions=128, initializer_range=0.2),
    # an epsilon of the order of the activations' variance: each LayerNorm must take the config's
    "40x1-heads5-eps": dict(n_embd=40, n_layer=1, n_head=5, n_positions=32, initializer_range=0.1,
                            layer_norm_epsilon=0.05),
}


@pytest.fixture(scope="module")
def sentences():
    return [text for text, _ in first_rows("sst2", "test", 6)]


@pytest.fixture(scope="module")
def tokenized(sentences):
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(TOKENIZER_DIR))
    ids = [tokenizer(s)["input_ids"] for s in sentences]
    assert all(ids) and len({len(i) for i in ids}) > 1, "need non-empty sentences of different lengths"
    return ids


def right_pad(rows, max_len=None):
    """(ids, key_padding_mask) of a right-padded batch, rows cut to max_len."""
    rows = [r[:max_len] for r in rows]
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), EOT)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = torch.tensor(r)
        mask[b, :len(r)] = True
    return ids, mask


def packed(rows, max_len=None):
    """(ids (N,), layout) of the rows, cut to max_len, end to end."""
    rows = [r[:max_len] for r in rows]
    return torch.tensor([t for r in rows for t in r]), pack([len(r) for r in rows])


def loss_weights(n, seed):
    """Random weights on the logits of n tokens: sum(logits * weights) is a loss whose
    gradients to the input embeddings are of order one."""
    return torch.randn(n, 50257, generator=torch.Generator().manual_seed(seed)) / 50257 ** 0.5


_PAIRS = {}


def make_pair(tmp_path_factory, name, seed=0):
    """(reference model, minway model loaded from its save_pretrained directory)."""
    if (name, seed) not in _PAIRS:
        torch.manual_seed(seed)
        config = transformers.GPT2Config(vocab_size=50257, **CONFIGS[name], attn_implementation="eager")
        reference = transformers.GPT2LMHeadModel(config).eval()
        with torch.no_grad():  # biases and LayerNorms too: zeros and ones would hide mix-ups of them
            for p in reference.parameters():
                p.add_(torch.randn_like(p) * config.initializer_range)
        directory = tmp_path_factory.mktemp(f"hf-{name}")
        reference.save_pretrained(directory, safe_serialization=True)
        for file in ("vocab.json", "merges.txt"):
            shutil.copyfile(TOKENIZER_DIR / file, directory / file)
        _PAIRS[name, seed] = reference, load_gpt2(directory)
    return _PAIRS[name, seed]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(tmp_path_factory, "48x2-heads3")


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_reference_on_rows_of_different_lengths(tmp_path_factory, tokenized, name):
    reference, model = make_pair(tmp_path_factory, name)
    padded, mask = right_pad(tokenized, CONFIGS[name]["n_positions"])
    assert not mask.all(), "the rows should differ in length"
    ids, layout = packed(tokenized, CONFIGS[name]["n_positions"])
    with torch.no_grad():
        ours = model(ids, packed=layout).logits
        theirs = reference(padded, attention_mask=mask.long()).logits[mask]
    assert ours.shape == theirs.shape == (int(mask.sum()), 50257)
    assert (ours - theirs).abs().max() <= TOL


def test_one_row_needs_no_layout(pair, tokenized):
    reference, model = pair
    ids = torch.tensor(tokenized[0])
    with torch.no_grad():
        assert (model(ids).logits - reference(ids[None]).logits[0]).abs().max() <= TOL


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
def test_logits_match_reference_with_each_torch_backend(tmp_path_factory, tokenized, backend):
    reference, model = make_pair(tmp_path_factory, "40x1-heads5")
    padded, mask = right_pad(tokenized, 32)
    ids, layout = packed(tokenized, 32)
    model.set_attention(backend)
    try:
        with torch.no_grad():
            ours = model(ids, packed=layout).logits
            theirs = reference(padded, attention_mask=mask.long()).logits[mask]
    finally:
        model.set_attention("auto")
    assert (ours - theirs).abs().max() <= TOL


def last_tokens(layout, counts):
    """Indices, in the pass, of the last counts[r] tokens of each row."""
    return torch.cat([torch.arange(int(layout.starts[r + 1]) - n, int(layout.starts[r + 1]))
                      for r, n in enumerate(counts)])


def test_logits_at_the_last_tokens_equal_those_of_the_full_forward(pair, tokenized):
    _, model = pair
    ids, layout = packed(tokenized)
    counts = [3, 1, 0, 2, 5, 1]  # a row without any, rows of different counts
    with torch.no_grad():
        full = model(ids, packed=layout)
        chosen = model(ids, packed=layout, logit_counts=counts)
    at = last_tokens(layout, counts)
    assert chosen.logits.shape == (sum(counts), 50257)
    # the last block runs at the chosen tokens only: same sums, in another order
    torch.testing.assert_close(chosen.logits, full.logits[at], atol=1e-5, rtol=0)
    torch.testing.assert_close(chosen.hidden, full.hidden[at], atol=1e-5, rtol=0)


def test_gradients_through_the_last_tokens_equal_the_full_forward(pair, tokenized):
    _, model = pair
    ids, layout = packed(tokenized[:4])
    counts = [2, 4, 1, 3]
    at = last_tokens(layout, counts)
    weights = loss_weights(sum(counts), seed=3)
    embeds = model.embed(ids).detach()

    def grad(chosen):
        x = embeds.clone().requires_grad_(True)
        if chosen:
            logits = model(embeds=x, packed=layout, logit_counts=counts).logits
        else:
            logits = model(embeds=x, packed=layout).logits[at]
        (logits * weights).sum().backward()
        return x.grad

    expected = grad(chosen=False)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(grad(chosen=True), expected, atol=1e-5, rtol=1e-5)


def test_input_embeddings_path_equals_ids_path(pair, tokenized):
    _, model = pair
    ids, layout = packed(tokenized)
    with torch.no_grad():
        from_ids = model(ids, packed=layout).logits
        from_embeds = model(embeds=model.embed(ids), packed=layout).logits
    torch.testing.assert_close(from_embeds, from_ids, atol=0, rtol=0)


def test_gradient_to_input_embeddings_matches_reference(pair, tokenized):
    reference, model = pair
    padded, mask = right_pad(tokenized)
    ids, layout = packed(tokenized)
    weights = loss_weights(len(ids), seed=1)

    ours_in = model.embed(ids).detach().requires_grad_(True)
    (model(embeds=ours_in, packed=layout).logits * weights).sum().backward()
    theirs_in = model.embed(padded).detach().requires_grad_(True)
    (reference(inputs_embeds=theirs_in, attention_mask=mask.long()).logits[mask] * weights).sum().backward()

    assert 0.1 < ours_in.grad.abs().max() < 100, "the loss should give gradients of order one"
    assert (ours_in.grad - theirs_in.grad[mask]).abs().max() <= TOL
    model.zero_grad(set_to_none=True)
    reference.zero_grad(set_to_none=True)


def continuing_rows(tokenized):
    """Rows that continue others in the same pass, as training and scoring run them: a shared
    prefix (row 0) continued by rows 1 and 2, and row 3 continuing row 0 and then row 1, as an
    option continues the prompt and its input. (rows, prefixes, the whole sequence of each row)."""
    prefix, first, second, option = tokenized[0][:5], tokenized[1][:6], tokenized[2][:3], tokenized[3][:2]
    rows = [prefix, first, second, option]
    prefixes = [(), [(0, 5)], [(0, 5)], [(0, 5), (1, 6)]]
    whole = [prefix, prefix + first, prefix + second, prefix + first + option]
    return rows, prefixes, whole


def test_rows_continuing_other_rows_equal_their_whole_sequences(pair, tokenized):
    """Logits of each row, and the gradient to the shared prefix's embeddings, equal those of
    each row's whole sequence run on its own."""
    _, model = pair
    rows, prefixes, whole = continuing_rows(tokenized)
    layout = pack([len(r) for r in rows], prefixes)
    assert layout.positions.tolist() == [*range(5), *range(5, 11), *range(5, 8), *range(11, 13)]
    x = model.embed(torch.tensor([t for r in rows for t in r])).detach().requires_grad_(True)
    weights = loss_weights(len(x), seed=4).split(layout.lengths)
    logits = model(embeds=x, packed=layout).logits
    (logits * torch.cat(weights)).sum().backward()
    prefix_grad = torch.zeros_like(x[:5])
    for row, (tokens, sequence) in enumerate(zip(logits.split(layout.lengths), whole)):
        y = model.embed(torch.tensor(sequence)).detach().requires_grad_(True)
        own = model(embeds=y).logits[len(sequence) - len(rows[row]):]
        torch.testing.assert_close(tokens, own, atol=TOL, rtol=0)
        (own * weights[row]).sum().backward()
        prefix_grad += y.grad[:5]
    assert prefix_grad.abs().max() > 0.01
    torch.testing.assert_close(x.grad[:5], prefix_grad, atol=TOL, rtol=1e-5)
    model.zero_grad(set_to_none=True)


def _attention_backends():
    backends = [pytest.param("naive"), pytest.param("sdpa")]
    try:
        import minway.kernels.flash_attention  # noqa: F401
        backends.append(pytest.param("triton"))
    except ImportError as e:
        backends.append(pytest.param("triton", marks=pytest.mark.skip(
            reason=f"triton attention backend not available ({e})")))
    return backends


@pytest.mark.parametrize("backend", _attention_backends())
def test_attention_backends_agree_on_logits_and_gradients(tmp_path_factory, tokenized, backend):
    """Rows of different lengths, some continuing others (so that rows have different numbers
    of queries and keys), every backend against the naive formula."""
    _, model = make_pair(tmp_path_factory, "48x1-heads3-ctx24")
    rows, prefixes, _ = continuing_rows(tokenized)
    rows = [rows[0], rows[1], rows[2][:2], rows[3], tokenized[4][:7]]
    prefixes = prefixes + [()]
    layout = pack([len(r) for r in rows], prefixes)
    embeds = model.embed(torch.tensor([t for r in rows for t in r])).detach()
    weights = loss_weights(len(embeds), seed=2)

    def run(name):
        model.set_attention(name)
        x = embeds.clone().requires_grad_(True)
        logits = model(embeds=x, packed=layout).logits
        (logits * weights).sum().backward()
        model.zero_grad(set_to_none=True)
        return logits.detach(), x.grad

    try:
        expected_logits, expected_grad = run("naive")
        logits, grad = run(backend)
    finally:
        model.set_attention("auto")
    assert (logits - expected_logits).abs().max() <= TOL
    assert (grad - expected_grad).abs().max() <= TOL


def test_bf16_weights_run_close_to_fp32(tmp_path_factory, tokenized):
    reference, model = make_pair(tmp_path_factory, "48x2-heads3")
    directory = tmp_path_factory.mktemp("bf16")
    reference.save_pretrained(directory, safe_serialization=True)
    half = load_gpt2(directory, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    ids, layout = packed(tokenized)
    with torch.no_grad():
        low = half(ids, packed=layout).logits
        high = model(ids, packed=layout).logits
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - high).abs().max() <= 0.05 * high.abs().max()


def test_a_padded_batch_is_refused(pair, tokenized):
    _, model = pair
    padded, _ = right_pad(tokenized)
    with pytest.raises(ValueError, match="end to end"):
        model(padded)


def test_freeze_leaves_no_trainable_parameter():
    model = GPT2(GPT2Config(vocab_size=100, n_positions=16, n_embd=24, n_layer=2, n_head=2))
    assert all(p.requires_grad for p in model.parameters())
    assert model.freeze() is model
    assert not any(p.requires_grad for p in model.parameters())


def test_sequence_longer_than_context_raises(pair):
    _, model = pair
    n = model.config.n_positions
    with torch.no_grad():
        model(torch.zeros(n, dtype=torch.long))  # exactly the context is fine
        with pytest.raises(ValueError, match=f"longer than the model's context of {n}"):
            model(torch.zeros(n + 1, dtype=torch.long))


def test_a_row_continued_past_the_context_raises(pair):
    _, model = pair
    n = model.config.n_positions
    with torch.no_grad():
        with pytest.raises(ValueError, match="context"):
            model(torch.zeros(n - 2 + 3, dtype=torch.long), packed=pack([n - 2, 3], [(), [(0, n - 2)]]))


def test_the_default_config_is_gpt2_small():
    assert GPT2Config() == SIZES["gpt2"]
    assert (GPT2Config().vocab_size, GPT2Config().n_positions, GPT2Config().layer_norm_epsilon) == (50257, 1024, 1e-5)


@pytest.mark.parametrize("size, layers, heads, width", [("gpt2", 12, 12, 768), ("gpt2-medium", 24, 16, 1024),
                                                      ("gpt2-large", 36, 20, 1280), ("gpt2-xl", 48, 25, 1600)])
def test_released_sizes_have_the_published_shapes(size, layers, heads, width):
    """As in the config.json of each released checkpoint: the head count is not implied by the parameter count."""
    assert (SIZES[size].n_layer, SIZES[size].n_head, SIZES[size].n_embd) == (layers, heads, width)


@pytest.mark.parametrize("size, count", [("gpt2", 124_439_808), ("gpt2-medium", 354_823_168),
                                         ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)])
def test_released_sizes_have_the_published_parameter_counts(size, count):
    with torch.device("meta"):
        assert GPT2(SIZES[size]).num_parameters() == count


def test_init_weights_is_gpt2s_initialisation():
    """N(0, 0.02) weights, residual projections N(0, 0.02 / sqrt(2 n_layer)), zero biases, unit LayerNorm gains;
    the seed decides the draw."""
    config = GPT2Config(vocab_size=500, n_positions=64, n_embd=96, n_layer=8, n_head=4)
    model = init_weights(GPT2(config), seed=3)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
        elif name.startswith("ln_f") or ".ln_" in name:
            assert torch.all(p == 1), name
        else:
            std = 0.02 / 4 if name.endswith("c_proj.weight") else 0.02  # sqrt(2 * 8) = 4
            assert p.std().item() == pytest.approx(std, rel=0.05), name
            assert abs(p.mean().item()) < std / 10, name
    assert torch.equal(init_weights(GPT2(config), seed=3).wte.weight, model.wte.weight)
    assert not torch.equal(init_weights(GPT2(config), seed=4).wte.weight, model.wte.weight)
