"""Option scoring: passes that continue a key/value cache against one full pass per option."""
import pytest
import torch

from fixtures import TINY, TOKENIZER_DIR, option_nll_naive, sharp_model
from minway.classify import option_nll, predict
from minway.run.data import load_split
from minway.tasks import TASKS, encode_options, get_task


@pytest.fixture(scope="module")
def model():
    return sharp_model()


@pytest.fixture(scope="module")
def tokenizer():
    from minway.run.tokenizer import load_tokenizer
    return load_tokenizer(TOKENIZER_DIR)


@pytest.fixture(scope="module")
def inputs(tokenizer):
    """Real test inputs of sst2, trec and agnews, of many lengths (cut to 40 tokens to stay fast)."""
    rows = []
    for task, picks in (("sst2", (0, 1, 5)), ("trec", (0, 3)), ("agnews", (0, 2))):
        examples = load_split(get_task(task), "test")
        rows += [tokenizer.encode(examples[i].text)[:40] for i in picks]
    assert len({len(r) for r in rows}) >= 5  # the batch is padded
    return rows


def options_of(tokenizer, task):
    """The outputs of the task's labels (its common tokens are not needed: inputs are any text here)."""
    return encode_options(TASKS[task], tokenizer).outputs


def random_prompt(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.4


def hand_nll(model, prompt, ids_in, option):
    """Mean -log p(option | prompt, input) from the full logits of one unpadded pass."""
    ids = torch.tensor(ids_in + option)
    embeds = torch.cat([prompt, model.embed(ids)])
    logp = model(embeds=embeds).logits.log_softmax(-1)
    start = len(prompt) + len(ids_in)
    return -sum(logp[start + j - 1, t] for j, t in enumerate(option)) / len(option)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_cached_passes_equal_naive_on_real_options(model, tokenizer, inputs, task):
    options = options_of(tokenizer, task)
    prompt = random_prompt(5, TINY.n_embd)
    with torch.no_grad():
        fast = option_nll(model, prompt, inputs, options)
        naive = option_nll_naive(model, prompt, inputs, options)
    assert fast.shape == (len(inputs), len(options))
    torch.testing.assert_close(fast, naive, atol=1e-4, rtol=0)
    # the losses are far from uniform, so the comparison above can fail
    assert naive.std() > 0.3
    for b in (0, 4):
        for c in (0, len(options) - 1):
            assert float(fast[b, c]) == pytest.approx(float(hand_nll(model, prompt, inputs[b], options[c])), abs=1e-4)


@pytest.mark.parametrize("task", ["sst5", "trec"])
def test_cached_passes_equal_naive_with_a_prompt_per_row(model, tokenizer, inputs, task):
    options = options_of(tokenizer, task)
    prompt = random_prompt(len(inputs), 4, TINY.n_embd, seed=1)
    with torch.no_grad():
        fast = option_nll(model, prompt, inputs, options)
        naive = option_nll_naive(model, prompt, inputs, options)
        # row b really uses prompt b
        single = option_nll(model, prompt[2], inputs[2:3], options)
    torch.testing.assert_close(fast, naive, atol=1e-4, rtol=0)
    torch.testing.assert_close(fast[2:3], single, atol=1e-4, rtol=0)
    assert not torch.allclose(fast[2:3], option_nll(model, prompt[3], inputs[2:3], options), atol=1e-3)


@pytest.mark.parametrize("options", [
    [[464], [1212]],                        # one token each
    [[1, 2, 3], [1, 2]],                    # one option is a prefix of the other
    [[7, 8], [7, 8, 9, 10], [7, 11]],       # suffixes of different lengths
    [[5, 6, 7], [5, 6, 7]],                 # identical options
    [[42, 43, 44, 45]],                     # a single option
])
def test_cached_passes_equal_naive_on_awkward_options(model, inputs, options):
    prompt = random_prompt(3, TINY.n_embd, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(option_nll(model, prompt, inputs, options),
                                   option_nll_naive(model, prompt, inputs, options), atol=1e-4, rtol=0)


def test_empty_option_is_refused(model, inputs):
    with pytest.raises(ValueError, match="at least one token"):
        option_nll(model, random_prompt(2, TINY.n_embd), inputs, [[1], []])


def test_predict_is_the_argmin_over_batches(model, tokenizer, inputs):
    options = options_of(tokenizer, "trec")
    prompt = random_prompt(5, TINY.n_embd, seed=3)
    predictions, nll = predict(model, prompt, inputs, options, batch_size=3)
    with torch.no_grad():
        whole = option_nll(model, prompt, inputs, options)
    torch.testing.assert_close(nll, whole, atol=1e-5, rtol=0)
    assert predictions.tolist() == [min(range(len(options)), key=lambda c: float(row[c])) for row in nll]
    assert len(set(predictions.tolist())) > 1  # not a constant answer


def test_predict_batches_the_inputs_shortest_first(model, tokenizer, inputs, monkeypatch):
    """Each batch holds inputs of like lengths (the order of their lengths), and the losses come back in
    the order of the inputs."""
    import minway.classify as classify

    options, prompt, batches = options_of(tokenizer, "trec"), random_prompt(5, TINY.n_embd, seed=3), []

    def recording(model, prompts, rows, options):
        batches.append([len(r) for r in rows])
        return option_nll(model, prompts, rows, options)
    monkeypatch.setattr(classify, "option_nll", recording)
    _, nll = predict(model, prompt, inputs, options, batch_size=3)
    assert [n for batch in batches for n in batch] == sorted(len(i) for i in inputs)
    with torch.no_grad():
        torch.testing.assert_close(nll, option_nll(model, prompt, inputs, options), atol=1e-5, rtol=0)
