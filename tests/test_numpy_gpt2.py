import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from minway import numpy_gpt2
from minway.errors import MinwayError

transformers = pytest.importorskip("transformers")

VOCAB = 211
SEQUENCES = [[0], [5, 17, 200, 3, 3, 42], list(range(7, 7 + 64 * 3, 3))]  # the last fills all 64 positions


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random GPT-2 saved as Hugging Face does: names prefixed `transformer.`, no lm_head.

    Weights are drawn with std 0.3 rather than 0.02: with small weights every token's
    embedding dominates its own logits, and greedy decoding just repeats the last token."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=48, n_layer=2, n_head=3, vocab_size=VOCAB, n_positions=64,
                                     initializer_range=0.3, bos_token_id=0, eos_token_id=None)
    model = transformers.GPT2LMHeadModel(config).eval()
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(directory, safe_serialization=True)
    return model, directory


def reference_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logits_match_transformers(checkpoint, dtype):
    model, directory = checkpoint
    params, config = numpy_gpt2.load(directory, dtype=dtype)
    for ids in SEQUENCES:
        logits = numpy_gpt2.forward(np.array(ids), params, config)
        assert logits.shape == (len(ids), VOCAB)
        assert np.abs(logits - reference_logits(model, ids)).max() <= 1e-4  # torch runs in fp32


def test_unprefixed_checkpoint_with_buffers_loads_the_same(checkpoint, tmp_path):
    """The hub's original `gpt2` names tensors without `transformer.` and keeps lm_head and mask buffers."""
    model, directory = checkpoint
    tensors = {name.removeprefix("transformer."): t for name, t in load_file(directory / "model.safetensors").items()}
    tensors["lm_head.weight"] = tensors["wte.weight"].copy()
    for i in range(2):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), dtype=np.float32))
    save_file(tensors, tmp_path / "model.safetensors")
    shutil.copy(directory / "config.json", tmp_path / "config.json")

    prefixed, config = numpy_gpt2.load(directory)
    unprefixed, _ = numpy_gpt2.load(tmp_path)
    assert prefixed.keys() == unprefixed.keys()
    assert all(np.array_equal(prefixed[name], unprefixed[name]) for name in prefixed)
    ids = np.array(SEQUENCES[1])
    assert np.array_equal(numpy_gpt2.forward(ids, prefixed, config), numpy_gpt2.forward(ids, unprefixed, config))


def test_greedy_generation_matches_transformers(checkpoint):
    model, directory = checkpoint
    params, config = numpy_gpt2.load(directory, dtype=np.float64)
    prompt = [5, 17, 200, 3]
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                                  pad_token_id=0, attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    generated = numpy_gpt2.generate(prompt, 10, params, config)
    assert generated == expected[0, len(prompt):].tolist()
    assert len(set(generated)) > 3  # a real test of the loop, not one token repeated


def test_missing_checkpoint_file_is_named(checkpoint, tmp_path):
    _, directory = checkpoint
    shutil.copy(directory / "config.json", tmp_path / "config.json")
    with pytest.raises(MinwayError, match="model.safetensors is missing"):
        numpy_gpt2.load(tmp_path)


def test_too_long_sequence_is_refused(checkpoint):
    _, directory = checkpoint
    params, config = numpy_gpt2.load(directory)
    with pytest.raises(MinwayError, match="exceed the model's 64 positions"):
        numpy_gpt2.forward(np.zeros(65, dtype=int), params, config)


@pytest.fixture(scope="module")
def minway_model(checkpoint):
    from weights import load_gpt2
    return load_gpt2(checkpoint[1]).freeze()


def test_a_prompt_of_embeddings_gives_the_logits_of_the_pytorch_model(checkpoint, minway_model):
    """The prompt's L vectors stand in place of tokens: the one-page model and the PyTorch one agree on
    one row, at every position, prompt and text."""
    params, config = numpy_gpt2.load(checkpoint[1], dtype=np.float64)
    prompt = np.random.default_rng(0).normal(0, 0.5, (4, 48))
    for ids in SEQUENCES[:2]:
        logits = numpy_gpt2.forward(np.array(ids), params, config, prompt=prompt)
        assert logits.shape == (len(prompt) + len(ids), VOCAB)
        embeds = torch.cat([torch.tensor(prompt, dtype=torch.float32), minway_model.embed(torch.tensor(ids))])
        with torch.no_grad():
            expected = minway_model(embeds=embeds).logits.double().numpy()
        assert np.abs(logits - expected).max() <= 1e-4
    # a prompt that is the embeddings of tokens is those tokens
    as_tokens = numpy_gpt2.forward([5, 17, 200], params, config)
    as_prompt = numpy_gpt2.forward([200], params, config, prompt=params["wte.weight"][[5, 17]])
    assert np.array_equal(as_tokens, as_prompt)


def test_the_loss_of_one_example_is_the_librarys(checkpoint, minway_model):
    from minway.batch import output_nll

    params, config = numpy_gpt2.load(checkpoint[1], dtype=np.float64)
    prompt = np.random.default_rng(1).normal(0, 0.5, (3, 48))
    for input_ids, output_ids in (([5, 17, 200, 3], [42, 7, 0]), ([9], [4])):
        ours = numpy_gpt2.output_loss(prompt, input_ids, output_ids, params, config)
        with torch.no_grad():
            library = output_nll(minway_model, torch.tensor(prompt, dtype=torch.float32), [input_ids], [output_ids])
        assert ours == pytest.approx(float(library[0]), abs=1e-5)
        # by hand, from the logits of the whole sequence
        logits = numpy_gpt2.forward(input_ids + output_ids, params, config, prompt=prompt)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        first = len(prompt) + len(input_ids) - 1
        expected = -np.mean([log_probs[first + j, t] for j, t in enumerate(output_ids)])
        assert ours == pytest.approx(expected, abs=1e-9)


def test_a_prompt_and_text_longer_than_the_context_is_refused(checkpoint):
    params, config = numpy_gpt2.load(checkpoint[1])
    with pytest.raises(MinwayError, match="65 positions exceed the model's 64 positions"):
        numpy_gpt2.forward(np.zeros(61, dtype=int), params, config, prompt=np.zeros((4, 48), dtype=np.float32))
