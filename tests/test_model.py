"""minway's GPT-2 computes what the reference implementation computes.

The reference is ``transformers.GPT2LMHeadModel`` with eager attention. Each test
builds a small random model there, saves it with ``save_pretrained`` (safetensors),
loads it with minway's ``load_gpt2`` and compares on real tokenized SST-2
sentences, batched with right padding, in fp32.
"""
import shutil

import pytest
import torch

from conftest import SHARED
from minway.model import SIZES, GPT2, GPT2Config
from weights.checkpoint import load_gpt2

transformers = pytest.importorskip("transformers")

TOKENIZER_DIR = SHARED / "gpt2-tokenizer"
SST2 = SHARED / "data" / "sst2" / "test.tsv"
pytestmark = pytest.mark.skipif(not (TOKENIZER_DIR.is_dir() and SST2.is_file()),
                                reason=f"shared tokenizer or SST-2 data not found under {SHARED}")
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
    # peaked distributions: varied greedy continuations
    "64x2-heads4-wide-init": dict(n_embd=64, n_layer=2, n_head=4, n_positions=128, initializer_range=0.2),
}


@pytest.fixture(scope="module")
def sentences():
    lines = SST2.read_text().splitlines()[1:7]
    return [line.split("\t")[0] for line in lines]


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


def loss_weights(mask, seed):
    """Random weights on the logits of real positions: sum(logits * weights) is a loss
    whose gradients to the input embeddings are of order one."""
    weights = torch.randn(*mask.shape, 50257, generator=torch.Generator().manual_seed(seed))
    return weights * mask[..., None] / 50257 ** 0.5


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
def test_logits_match_reference_on_padded_batch(tmp_path_factory, tokenized, name):
    reference, model = make_pair(tmp_path_factory, name)
    ids, mask = right_pad(tokenized, CONFIGS[name]["n_positions"])
    assert not mask.all(), "the batch should contain padding"
    with torch.no_grad():
        ours = model(ids, key_padding_mask=mask).logits
        theirs = reference(ids, attention_mask=mask.long()).logits
    assert ours.shape == theirs.shape == (*ids.shape, 50257)
    assert (ours[mask] - theirs[mask]).abs().max() <= TOL


def test_logits_match_reference_without_mask(pair, tokenized):
    reference, model = pair
    ids = torch.tensor([tokenized[0]])
    with torch.no_grad():
        assert (model(ids).logits - reference(ids).logits).abs().max() <= TOL


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
def test_logits_match_reference_with_each_torch_backend(tmp_path_factory, tokenized, backend):
    reference, model = make_pair(tmp_path_factory, "40x1-heads5")
    ids, mask = right_pad(tokenized, 32)
    model.set_attention(backend)
    try:
        with torch.no_grad():
            ours = model(ids, key_padding_mask=mask).logits
            theirs = reference(ids, attention_mask=mask.long()).logits
    finally:
        model.set_attention("auto")
    assert (ours[mask] - theirs[mask]).abs().max() <= TOL


def test_logits_at_chosen_positions_equal_gathered_full_logits(pair, tokenized):
    _, model = pair
    ids, mask = right_pad(tokenized)
    last = mask.sum(1) - 1
    positions = torch.stack([last, torch.zeros_like(last), last // 2], dim=1)  # (B, 3), rows differ
    with torch.no_grad():
        full = model(ids, key_padding_mask=mask)
        chosen = model(ids, key_padding_mask=mask, logit_positions=positions)
    expected = full.logits.gather(1, positions[..., None].expand(-1, -1, full.logits.shape[-1]))
    assert chosen.logits.shape == (len(ids), 3, 50257)
    # the last block runs at the chosen positions only: same sums, in another order
    torch.testing.assert_close(chosen.logits, expected, atol=1e-5, rtol=0)
    expected_hidden = full.hidden.gather(1, positions[..., None].expand(-1, -1, full.hidden.shape[-1]))
    torch.testing.assert_close(chosen.hidden, expected_hidden, atol=1e-5, rtol=0)


def test_gradients_through_chosen_positions_equal_the_full_forward(pair, tokenized):
    _, model = pair
    ids, mask = right_pad(tokenized[:4])
    last = mask.sum(1) - 1
    positions = torch.stack([last, last // 2, torch.zeros_like(last)], dim=1)
    weights = torch.randn(len(ids), 3, 50257, generator=torch.Generator().manual_seed(3)) / 50257 ** 0.5
    embeds = model.embed(ids).detach()

    def grad(chosen):
        x = embeds.clone().requires_grad_(True)
        if chosen:
            logits = model(embeds=x, key_padding_mask=mask, logit_positions=positions).logits
        else:
            full = model(embeds=x, key_padding_mask=mask).logits
            logits = full.gather(1, positions[..., None].expand(-1, -1, full.shape[-1]))
        (logits * weights).sum().backward()
        return x.grad

    expected = grad(chosen=False)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(grad(chosen=True), expected, atol=1e-5, rtol=0)

    mask[1] = False  # a row with no real token: its queries see nothing, and nothing turns into NaN
    got = grad(chosen=True)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, grad(chosen=False), atol=1e-5, rtol=0)


def test_input_embeddings_path_equals_ids_path(pair, tokenized):
    _, model = pair
    ids, mask = right_pad(tokenized)
    with torch.no_grad():
        from_ids = model(ids, key_padding_mask=mask).logits
        from_embeds = model(embeds=model.embed(ids), key_padding_mask=mask).logits
    torch.testing.assert_close(from_embeds, from_ids, atol=0, rtol=0)


def test_greedy_generation_matches_reference(tmp_path_factory, tokenized):
    reference, model = make_pair(tmp_path_factory, "64x2-heads4-wide-init")
    # generate() takes an unpadded batch: the first 6 tokens of two sentences
    ids = torch.tensor([tokenized[0][:6], tokenized[2][:6]])
    ours = model.generate(ids, 20)
    theirs = reference.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=20, pad_token_id=EOT)[:, ids.shape[1]:]
    assert ours.shape == (2, 20)
    assert all(len(set(row.tolist())) >= 8 for row in ours), "a continuation that repeats one token proves little"
    assert torch.equal(ours, theirs)


def test_gradient_to_input_embeddings_matches_reference(pair, tokenized):
    reference, model = pair
    ids, mask = right_pad(tokenized)
    embeds = model.embed(ids).detach()
    weights = loss_weights(mask, seed=1)

    ours_in = embeds.clone().requires_grad_(True)
    (model(embeds=ours_in, key_padding_mask=mask).logits * weights).sum().backward()
    theirs_in = embeds.clone().requires_grad_(True)
    (reference(inputs_embeds=theirs_in, attention_mask=mask.long()).logits * weights).sum().backward()

    assert 0.1 < ours_in.grad.abs().max() < 100, "the loss should give gradients of order one"
    assert (ours_in.grad - theirs_in.grad).abs().max() <= TOL
    model.zero_grad(set_to_none=True)
    reference.zero_grad(set_to_none=True)


def test_key_value_cache_equals_full_forward(pair, tokenized):
    _, model = pair
    prefixes = [tokenized[0][:5], tokenized[1][:3], tokenized[2][:7]]           # right-padded to 7
    continuations = [tokenized[3][:4], tokenized[4][:2], tokenized[5][:3]]      # right-padded to 4
    prefix_ids, prefix_mask = right_pad(prefixes)
    new_ids, new_mask = right_pad(continuations)
    full_ids, full_mask = right_pad([p + c for p, c in zip(prefixes, continuations)])
    lengths = prefix_mask.sum(1)

    with torch.no_grad():
        cached = model(prefix_ids, key_padding_mask=prefix_mask, use_cache=True)
        assert len(cached.present) == model.config.n_layer
        step = model(new_ids, key_padding_mask=torch.cat([prefix_mask, new_mask], dim=1),
                     position_offset=lengths, past=cached.present)
        full = model(full_ids, key_padding_mask=full_mask)
    assert step.present is None  # only when asked
    for b, (p, c) in enumerate(zip(prefixes, continuations)):
        torch.testing.assert_close(step.logits[b, :len(c)], full.logits[b, len(p):len(p) + len(c)],
                                   atol=TOL, rtol=0)
        torch.testing.assert_close(cached.logits[b, :len(p)], full.logits[b, :len(p)], atol=TOL, rtol=0)


def test_prefix_cache_then_logits_at_positions_equal_the_full_forward(pair, tokenized):
    """``prefix_cache`` (keys and values only, right-padded prefixes) continued with logits at a
    few positions: the path of training. Logits and the gradient to the prefix embeddings."""
    _, model = pair
    prefixes = [tokenized[0][:5], tokenized[1][:3]]                 # right-padded to 5
    continuations = [tokenized[2][:6], tokenized[3][:4]]            # right-padded to 6
    prefix_ids, prefix_mask = right_pad(prefixes)
    new_ids, new_mask = right_pad(continuations)
    full_ids, full_mask = right_pad([p + c for p, c in zip(prefixes, continuations)])
    positions = torch.tensor([[3, 5], [0, 3]])                      # in the continuation

    prefix_embeds = model.embed(prefix_ids).detach().requires_grad_()
    cache = model.prefix_cache(prefix_embeds)
    assert len(cache) == model.config.n_layer
    step = model(new_ids, key_padding_mask=torch.cat([prefix_mask, new_mask], dim=1),
                 position_offset=prefix_mask.sum(1), past=cache, logit_positions=positions)
    step.logits.sum().backward()

    full_embeds = model.embed(full_ids).detach().requires_grad_()
    full = model(embeds=full_embeds, key_padding_mask=full_mask)
    want = torch.stack([full.logits[b, len(p) + positions[b]] for b, p in enumerate(prefixes)])
    want.sum().backward()
    torch.testing.assert_close(step.logits, want, atol=TOL, rtol=0)
    for b, p in enumerate(prefixes):
        torch.testing.assert_close(prefix_embeds.grad[b, :len(p)], full_embeds.grad[b, :len(p)], atol=TOL, rtol=1e-5)
    assert torch.all(prefix_embeds.grad[1, len(prefixes[1]):] == 0)  # the prefix's padding
    model.zero_grad(set_to_none=True)


def test_key_value_cache_chains_two_steps(pair, tokenized):
    _, model = pair
    prefixes = [tokenized[0][:5], tokenized[1][:2]]
    first, second = [tokenized[2][:3], tokenized[3][:3]], [tokenized[4][:2], tokenized[5][:2]]
    prefix_ids, prefix_mask = right_pad(prefixes)
    lengths = prefix_mask.sum(1)
    ones = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        out = model(prefix_ids, key_padding_mask=prefix_mask, use_cache=True)
        out = model(torch.tensor(first), key_padding_mask=torch.cat([prefix_mask, ones], 1),
                    position_offset=lengths, past=out.present, use_cache=True)
        out = model(torch.tensor(second), key_padding_mask=torch.cat([prefix_mask, ones, ones[:, :2]], 1),
                    position_offset=lengths + 3, past=out.present)
        full_ids, full_mask = right_pad([p + f + s for p, f, s in zip(prefixes, first, second)])
        full = model(full_ids, key_padding_mask=full_mask)
    for b, p in enumerate(prefixes):
        torch.testing.assert_close(out.logits[b], full.logits[b, len(p) + 3:len(p) + 5], atol=TOL, rtol=0)


def _attention_backends():
    backends = [pytest.param("naive"), pytest.param("sdpa")]
    try:
        import kernels.flash_attention  # noqa: F401
        backends.append(pytest.param("triton"))
    except ImportError as e:
        backends.append(pytest.param("triton", marks=pytest.mark.skip(
            reason=f"triton attention backend not available ({e})")))
    return backends


@pytest.mark.parametrize("backend", _attention_backends())
def test_attention_backends_agree_on_logits_and_gradients(tmp_path_factory, tokenized, backend):
    _, model = make_pair(tmp_path_factory, "48x1-heads3-ctx24")
    ids, mask = right_pad(tokenized[:3], 12)
    embeds = model.embed(ids).detach()
    weights = loss_weights(mask, seed=2)

    def run(name):
        model.set_attention(name)
        x = embeds.clone().requires_grad_(True)
        logits = model(embeds=x, key_padding_mask=mask).logits
        (logits * weights).sum().backward()
        model.zero_grad(set_to_none=True)
        return logits.detach(), x.grad

    try:
        expected_logits, expected_grad = run("naive")
        logits, grad = run(backend)
    finally:
        model.set_attention("auto")
    assert (logits[mask] - expected_logits[mask]).abs().max() <= TOL
    assert (grad - expected_grad).abs().max() <= TOL


@pytest.mark.parametrize("backend", _attention_backends())
def test_row_of_only_padding_is_harmless(pair, tokenized, backend):
    """A batch row with no real token: finite outputs and gradients, other rows unchanged."""
    _, model = pair
    ids, mask = right_pad(tokenized[:3], 10)
    mask[1] = False
    embeds = model.embed(ids).detach()
    model.set_attention(backend)
    try:
        x = embeds.clone().requires_grad_(True)
        logits = model(embeds=x, key_padding_mask=mask).logits
        (logits * loss_weights(mask, seed=3)).sum().backward()
        with torch.no_grad():
            alone = model(embeds=embeds[[0, 2]], key_padding_mask=mask[[0, 2]]).logits
    finally:
        model.set_attention("auto")
        model.zero_grad(set_to_none=True)
    assert torch.isfinite(logits).all() and torch.isfinite(x.grad).all()
    assert (x.grad[1] == 0).all()
    assert (logits[[0, 2]][mask[[0, 2]]] - alone[mask[[0, 2]]]).abs().max() <= TOL


def test_bf16_weights_run_close_to_fp32(tmp_path_factory, tokenized):
    reference, model = make_pair(tmp_path_factory, "48x2-heads3")
    directory = tmp_path_factory.mktemp("bf16")
    reference.save_pretrained(directory, safe_serialization=True)
    half = load_gpt2(directory, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    ids, mask = right_pad(tokenized)
    with torch.no_grad():
        low = half(ids, key_padding_mask=mask).logits
        high = model(ids, key_padding_mask=mask).logits
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    scale = high[mask].abs().max()
    assert (low.float()[mask] - high[mask]).abs().max() <= 0.05 * scale


def test_freeze_leaves_no_trainable_parameter():
    model = GPT2(GPT2Config(vocab_size=100, n_positions=16, n_embd=24, n_layer=2, n_head=2))
    assert all(p.requires_grad for p in model.parameters())
    assert model.freeze() is model
    assert not any(p.requires_grad for p in model.parameters())


def test_sequence_longer_than_context_raises(pair):
    _, model = pair
    n = model.config.n_positions
    with torch.no_grad():
        model(torch.zeros(1, n, dtype=torch.long))  # exactly the context is fine
        with pytest.raises(ValueError, match=f"longer than the model's context of {n}"):
            model(torch.zeros(1, n + 1, dtype=torch.long))


def test_cached_continuation_past_the_context_raises_value_error(pair):
    _, model = pair
    n = model.config.n_positions
    with torch.no_grad():
        cached = model(torch.zeros(1, n - 2, dtype=torch.long), use_cache=True)
        with pytest.raises(ValueError, match="context"):
            model(torch.zeros(1, 3, dtype=torch.long), key_padding_mask=torch.ones(1, n + 1, dtype=torch.bool),
                  position_offset=torch.tensor([n - 2]), past=cached.present)


def test_prefix_cache_takes_up_to_the_context(pair):
    _, model = pair
    n, d = model.config.n_positions, model.config.n_embd
    with torch.no_grad():
        assert len(model.prefix_cache(torch.zeros(1, n, d))) == model.config.n_layer  # exactly the context is fine
        with pytest.raises(ValueError, match=f"prefix of {n + 1} positions is longer than the model's context of {n}"):
            model.prefix_cache(torch.zeros(1, n + 1, d))


def test_every_layer_norm_takes_the_configs_epsilon():
    model = GPT2(GPT2Config(vocab_size=100, n_positions=16, n_embd=24, n_layer=2, n_head=2, layer_norm_epsilon=0.25))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 1 and all(m.eps == 0.25 for m in norms)


def test_the_default_config_is_gpt2_small():
    assert GPT2Config() == SIZES["gpt2"]
    assert (GPT2Config().vocab_size, GPT2Config().n_positions, GPT2Config().layer_norm_epsilon) == (50257, 1024, 1e-5)


@pytest.mark.parametrize("size, count", [("gpt2", 124_439_808), ("gpt2-medium", 354_823_168),
                                         ("gpt2-large", 774_030_080), ("gpt2-xl", 1_557_611_200)])
def test_released_sizes_have_the_published_parameter_counts(size, count):
    with torch.device("meta"):
        assert GPT2(SIZES[size]).num_parameters() == count
