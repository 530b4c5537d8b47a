"""minway's Llama 3 and Qwen 2.5 compute what transformers' ``LlamaForCausalLM`` and ``Qwen2ForCausalLM`` compute.

Each shape is a random model built by transformers, every weight pushed off its initialisation
(RMSNorm gains and biases too: ones and zeros would hide a mix-up of them), saved by
``save_pretrained`` (safetensors, in shards for some) and loaded by minway's ``load_model``. The
shapes cover both families, grouped-query attention of 1, 4 and 8 query heads per key/value head,
a head width that is not hidden_size / heads, tied and untied heads, Llama's biases, Llama 3's
rotary scaling and both config layouts' rotary keys. minway runs rows packed; transformers runs
them right-padded, the begin-of-text token put first by hand where the model has one (minway's
Llama puts it there itself). Everything in fp32 to 1e-4, as the logits and the gradient of the
output loss with respect to a prompt; bf16 close to transformers' own bf16.
"""
import pytest
import torch
import torch.nn.functional as F

from fixtures import option_nll_naive
from minway.batch import bank_output_nll
from minway.classify import option_nll
from minway.dropout import PromptDropout, step_generator
from minway.llama import Llama, Llama3Scaling, LlamaConfig, rope_frequencies
from minway.packing import pack
from weights import load_model

transformers = pytest.importorskip("transformers")

TOL = 1e-4
VOCAB = 97
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
# name: (family, config, shards). The sizes a test names are transformers' own keys.
SHAPES = {
    "llama-64x2-gqa4-untied-rope-llama3": ("llama", dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, intermediate_size=96,
        bos_token_id=3, rope_theta=500.0, rope_scaling=LLAMA3_ROPE), False),
    "llama-48x3-mha-tied-biases": ("llama", dict(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, intermediate_size=80,
        bos_token_id=None, tie_word_embeddings=True, attention_bias=True, mlp_bias=True), False),
    "llama-32x1-gqa8-head6-sharded": ("llama", dict(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=8, num_key_value_heads=1, head_dim=6,
        intermediate_size=64, bos_token_id=1, rope_theta=100.0), True),
    "qwen2-64x2-gqa4-tied": ("qwen2", dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, intermediate_size=96,
        tie_word_embeddings=True), False),
    "qwen2-48x3-mha-untied-sharded": ("qwen2", dict(
        hidden_size=48, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
        rope_theta=1000.0), True),
    "qwen2-64x1-gqa8": ("qwen2", dict(
        hidden_size=64, num_hidden_layers=1, num_attention_heads=8, num_key_value_heads=1, intermediate_size=128,
        rms_norm_eps=0.05), False),
}
ROWS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17, 18], [19]]
INPUTS = [[21, 22, 23, 24, 25, 26], [27, 28], [29, 30, 31, 32]]
OUTPUTS = [[41, 42], [43], [44, 45, 46]]

_PAIRS = {}


def hf_classes(family):
    if family == "llama":
        return transformers.LlamaConfig, transformers.LlamaForCausalLM
    return transformers.Qwen2Config, transformers.Qwen2ForCausalLM


def make_pair(tmp_path_factory, name, dtype=torch.float32):
    """(transformers' model, minway's loaded from its save_pretrained directory, that directory)."""
    if (name, dtype) not in _PAIRS:
        family, sizes, sharded = SHAPES[name]
        config_class, model_class = hf_classes(family)
        torch.manual_seed(len(_PAIRS))
        config = config_class(vocab_size=VOCAB, max_position_embeddings=64, attn_implementation="eager", **sizes)
        reference = model_class(config).eval()
        with torch.no_grad():
            for p in reference.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        directory = tmp_path_factory.mktemp(name)
        reference.save_pretrained(directory, max_shard_size="20KB" if sharded else "1GB")
        assert (directory / "model.safetensors.index.json").is_file() == sharded
        if dtype != torch.float32:
            reference = model_class.from_pretrained(directory, dtype=dtype, attn_implementation="eager").eval()
        _PAIRS[name, dtype] = reference, load_model(directory, dtype=dtype).freeze(), directory
    return _PAIRS[name, dtype]


def with_begin(model, rows):
    """The rows as transformers must be given them: after the begin-of-text token where the model has one."""
    bos = model.config.bos_token_id
    return [([] if bos is None else [bos]) + row for row in rows]


def padded_logits(reference, rows, embeds=None):
    """transformers' logits (B, T, V) of right-padded rows of ids (or of embeddings (B, T, d)), and the mask."""
    T = max(map(len, rows))
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    if embeds is None:
        ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
        return reference(input_ids=ids, attention_mask=mask).logits, mask.bool()
    return reference(inputs_embeds=embeds, attention_mask=mask).logits, mask.bool()


@pytest.mark.parametrize("name", SHAPES)
def test_logits_of_packed_rows_equal_transformers(tmp_path_factory, name):
    reference, model, _ = make_pair(tmp_path_factory, name)
    with torch.no_grad():
        ours = model(ids=torch.tensor([t for r in ROWS for t in r]), packed=pack(list(map(len, ROWS)))).logits
        theirs, mask = padded_logits(reference, with_begin(model, ROWS))
    begin = int(model.config.bos_token_id is not None)
    theirs = torch.cat([theirs[b, begin:len(r) + begin] for b, r in enumerate(ROWS)])
    assert ours.shape == theirs.shape == (sum(map(len, ROWS)), VOCAB)
    assert (ours - theirs).abs().max() <= TOL


def reference_output_nll(reference, model, prompts, owner):
    """transformers' mean output loss per row: row r is the begin-of-text token (where the model has one),
    prompt owner[r], input r, output r but its last token."""
    embed = reference.get_input_embeddings()
    begin = [] if model.config.bos_token_id is None else [embed(torch.tensor([model.config.bos_token_id]))]
    rows = [torch.cat([*begin, prompts[k], embed(torch.tensor(i + o[:-1]))])
            for k, i, o in zip(owner, INPUTS, OUTPUTS)]
    T = max(len(r) for r in rows)
    embeds = torch.stack([F.pad(r, (0, 0, 0, T - len(r))) for r in rows])
    logits, _ = padded_logits(reference, [[0] * len(r) for r in rows], embeds)
    nll = []
    for b, (row, o) in enumerate(zip(rows, OUTPUTS)):
        first = len(row) - len(o)  # the position whose logits predict the first output token
        nll.append(F.cross_entropy(logits[b, first:first + len(o)], torch.tensor(o)))
    return torch.stack(nll)


@pytest.mark.parametrize("name", SHAPES)
def test_output_loss_and_prompt_gradient_equal_transformers(tmp_path_factory, name):
    """Two prompts of different lengths in one batch, as training runs them: each prompt a row of its own,
    run once, the rows that follow it continuing it (``minway.batch.bank_output_nll``)."""
    reference, model, _ = make_pair(tmp_path_factory, name)
    d = model.config.n_embd
    vectors = (torch.randn(2, 5, d, generator=torch.Generator().manual_seed(1)) * 0.5)
    vectors[1, 3:] = 0
    lengths, owner = torch.tensor([5, 3]), [0, 1, 0]
    ours_vectors = vectors.clone().requires_grad_(True)
    ours = bank_output_nll(model, ours_vectors, lengths, torch.tensor(owner), INPUTS, OUTPUTS)
    ours.sum().backward()
    theirs_vectors = vectors.clone().requires_grad_(True)
    theirs = reference_output_nll(reference, model, [theirs_vectors[0], theirs_vectors[1, :3]], owner)
    theirs.sum().backward()
    assert (ours - theirs).abs().max() <= TOL
    assert theirs_vectors.grad.abs().max() > 1e-3  # a gradient worth comparing
    assert (ours_vectors.grad - theirs_vectors.grad).abs().max() <= TOL


@pytest.mark.parametrize("name", ["llama-64x2-gqa4-untied-rope-llama3", "qwen2-64x2-gqa4-tied"])
def test_scoring_the_options_in_one_pass_equals_each_whole_row(tmp_path_factory, name):
    """classify's packed pass (prompt once, inputs continuing it, options continuing those) equals one whole
    row per (example, option), the begin-of-text token in each."""
    _, model, _ = make_pair(tmp_path_factory, name)
    prompt = torch.randn(4, model.config.n_embd, generator=torch.Generator().manual_seed(2))
    options = [[50, 51, 52], [53], [54, 55]]
    with torch.no_grad():
        torch.testing.assert_close(option_nll(model, prompt, INPUTS, options),
                                   option_nll_naive(model, prompt, INPUTS, options), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["llama-64x2-gqa4-untied-rope-llama3", "qwen2-48x3-mha-untied-sharded"])
def test_logits_at_the_last_tokens_equal_those_of_the_full_forward(tmp_path_factory, name):
    _, model, _ = make_pair(tmp_path_factory, name)
    ids, layout = torch.tensor([t for r in ROWS for t in r]), pack(list(map(len, ROWS)))
    counts = [3, 1, 2, 1]
    with torch.no_grad():
        full = model(ids=ids, packed=layout).logits
        last = model(ids=ids, packed=layout, logit_counts=counts).logits
    _, index = layout.last(counts)
    torch.testing.assert_close(last, full[index], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
def test_attention_backends_agree(tmp_path_factory, backend):
    _, model, _ = make_pair(tmp_path_factory, "llama-32x1-gqa8-head6-sharded")
    ids, layout = torch.tensor([t for r in ROWS for t in r]), pack(list(map(len, ROWS)))
    with torch.no_grad():
        expected = model(ids=ids, packed=layout).logits
        model.set_attention(backend)
        try:
            got = model(ids=ids, packed=layout).logits
        finally:
            model.set_attention("auto")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_llama3_frequencies_equal_transformers():
    """Each regime of Llama 3's scaling (kept, stretched, blended) occurs with these numbers."""
    rope = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64, "rope_theta": 500000.0}
    hf_config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, rope_parameters=rope)
    theirs = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"](hf_config, "cpu")[0]
    ours = rope_frequencies(LlamaConfig(vocab_size=1, n_embd=64, n_layer=1, n_head=2, n_kv_head=2, head_dim=32,
                                        n_inner=1, max_positions=2048, rope_theta=500000.0,
                                        rope_scaling=Llama3Scaling(32.0, 1.0, 4.0, 64)))
    unscaled = 500000.0 ** -(torch.arange(0, 32, 2) / 32)
    assert (ours == unscaled).any() and (ours == unscaled / 32).any()
    assert ((ours != unscaled) & (ours != unscaled / 32)).any()
    torch.testing.assert_close(ours, theirs, atol=0, rtol=1e-6)


@pytest.mark.parametrize("name", ["llama-64x2-gqa4-untied-rope-llama3", "qwen2-64x2-gqa4-tied"])
def test_bf16_is_as_close_to_fp32_as_transformers_bf16(tmp_path_factory, name):
    reference, _, _ = make_pair(tmp_path_factory, name)
    reference_bf16, model_bf16, _ = make_pair(tmp_path_factory, name, torch.bfloat16)
    assert {p.dtype for p in model_bf16.parameters()} == {torch.bfloat16}
    rows = with_begin(model_bf16, ROWS)
    begin = len(rows[0]) - len(ROWS[0])
    with torch.no_grad():
        exact, _ = padded_logits(reference, rows)
        theirs, _ = padded_logits(reference_bf16, rows)
        ours = model_bf16(ids=torch.tensor([t for r in ROWS for t in r]), packed=pack(list(map(len, ROWS)))).logits
    exact, theirs = (torch.cat([x[b, begin:len(r)] for b, r in enumerate(rows)]).float() for x in (exact, theirs))
    their_error, our_error = (theirs - exact).abs().max(), (ours.float() - exact).abs().max()
    assert their_error > 0 and our_error <= 2 * their_error


def test_a_configs_defaults_are_transformers_llamas():
    theirs = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_attention_heads=2)
    ours = LlamaConfig(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_kv_head=2, head_dim=8, n_inner=8,
                       max_positions=6)
    assert (ours.rms_norm_eps, ours.rope_theta, ours.tie_word_embeddings, ours.qkv_bias, ours.mlp_bias) == (
        theirs.rms_norm_eps, theirs.rope_parameters["rope_theta"], theirs.tie_word_embeddings, theirs.attention_bias,
        theirs.mlp_bias)
    assert ours.rope_scaling is None and ours.model_type == "llama"


def test_freeze_leaves_no_trainable_parameter(tmp_path_factory):
    _, model, _ = make_pair(tmp_path_factory, "qwen2-64x2-gqa4-tied")
    assert not any(p.requires_grad for p in model.parameters())


def test_the_begin_of_text_token_counts_in_the_context():
    config = LlamaConfig(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_kv_head=1, head_dim=8, n_inner=8,
                         max_positions=6, bos_token_id=1)
    model = Llama(config).eval()
    assert config.n_positions == 5
    model(ids=torch.arange(5))
    with pytest.raises(ValueError, match="sequence of 7 positions is longer than the model's context of 6"):
        model(ids=torch.arange(6))


# --------------------------------------------------------------- dropout

def test_dropout_that_keeps_everything_changes_nothing(tmp_path_factory, monkeypatch):
    """GPT-2's places of dropout, plumbed through the begin-of-text row: masks that multiply by one give the
    loss without dropout, and they cover the rows' tokens and no more (the begin-of-text token is left as it is)."""
    _, model, _ = make_pair(tmp_path_factory, "llama-64x2-gqa4-untied-rope-llama3")
    vectors = torch.randn(1, 4, model.config.n_embd, generator=torch.Generator().manual_seed(3))
    lengths, owner = torch.tensor([4]), torch.zeros(3, dtype=torch.long)
    shapes = []

    def keep_all(self, shape, generator):  # PromptDropout scales what it keeps by 1 / (1 - p)
        shapes.append(tuple(shape))
        return torch.full(shape, 1 - self.p)
    monkeypatch.setattr(PromptDropout, "_keep", keep_all)
    with torch.no_grad():
        kept = bank_output_nll(model, vectors, lengths, owner, INPUTS, OUTPUTS, (0.5, [step_generator(1, 0, "cpu")]))
        without = bank_output_nll(model, vectors, lengths, owner, INPUTS, OUTPUTS)
    torch.testing.assert_close(kept, without, atol=1e-5, rtol=1e-5)
    rows = [4 + len(i) + len(o) - 1 for i, o in zip(INPUTS, OUTPUTS)]
    d, n_layer = model.config.n_embd, model.config.n_layer
    # the input; per block each row's attention probabilities, the attention's output, the MLP's
    assert len(shapes) == 1 + n_layer * (len(rows) + 2)
    assert shapes[0] == shapes[1 + len(rows)] == (sum(rows), d)  # the rows' tokens, not the begin-of-text token
    # a row's attention to every key of its own, the begin-of-text token's included
    assert shapes[1:1 + len(rows)] == [(model.config.n_head, n, n + 1) for n in rows]
    assert shapes[-1] == (sum(map(len, OUTPUTS)), d)  # the last block runs at the outputs only


def test_a_bank_draws_each_prompts_masks_as_it_would_alone(tmp_path_factory):
    """minway.dropout's promise, with the begin-of-text row after the prompts' rows."""
    _, model, _ = make_pair(tmp_path_factory, "llama-64x2-gqa4-untied-rope-llama3")
    lengths, owner = torch.tensor([3, 5]), torch.tensor([0, 0, 1])
    vectors = torch.randn(2, 5, model.config.n_embd, generator=torch.Generator().manual_seed(4))
    vectors[0, 3:] = 0
    vectors.requires_grad_(True)
    seeds = [5, 6]
    bank = bank_output_nll(model, vectors, lengths, owner, INPUTS, OUTPUTS,
                           (0.3, [step_generator(s, 2, "cpu") for s in seeds]))
    bank.sum().backward()
    for k, L in enumerate(lengths.tolist()):
        rows = (owner == k).nonzero().flatten().tolist()
        alone_vectors = vectors.detach()[k:k + 1, :L].clone().requires_grad_(True)
        alone = bank_output_nll(model, alone_vectors, torch.tensor([L]), torch.zeros(len(rows), dtype=torch.long),
                                [INPUTS[r] for r in rows], [OUTPUTS[r] for r in rows],
                                (0.3, [step_generator(seeds[k], 2, "cpu")]))
        alone.sum().backward()
        torch.testing.assert_close(bank[rows], alone.detach(), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(vectors.grad[k, :L], alone_vectors.grad[0], atol=1e-6, rtol=1e-5)
