"""The tokenizers of Llama 3 and Qwen 2.5 (``minway.run.bpe_files``) encode as the ``tokenizers`` library does.

The BPE files are built here: the ``tokenizers`` library trains a small byte-level BPE on SST-2's
training text with Llama 3's or Qwen 2.5's pre-tokenizer (and Qwen's NFC normaliser), and the test
writes it in each layout minway reads (tokenizer.json alone; vocab.json + merges.txt; Llama 3's
tiktoken file, tokenizer.model). A large vocabulary is checked too: GPT-2's 50,000 merges with
Llama 3's pattern, as the random Llama checkpoints carry them. The texts: SST-2's test sentences
and strings made to reach every branch of the patterns (contractions in any case, runs of digits,
line breaks, runs of spaces, accents composed and not, other scripts, emoji).
"""
import base64
import gzip
import json

import pytest

from fixtures import SHIPPED_DATA, TOKENIZER_DIR
from minway.errors import MinwayError
from minway.run.bpe_files import LLAMA3_SPLIT_PATTERN, QWEN2_SPLIT_PATTERN, checkpoint_tokenizer, load_bpe_tokenizer
from minway.run.tokenizer import gpt2_byte_alphabet, load_tokenizer
from weights.random_llama import FAMILIES, write_random_llama

tokenizers = pytest.importorskip("tokenizers")

SPECIALS = {"llama": ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"],
            "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}
PATTERNS = {"llama": LLAMA3_SPLIT_PATTERN, "qwen2": QWEN2_SPLIT_PATTERN}
MADE_UP = [
    "I DON'T think it's what they'd've said, y'all'll see", "Year 2024: 1234567 items, 3.14159 and 12,345,678",
    "line one\nline two\r\n\n\n  indented\tand tabbed   ", "trailing spaces   ", "   leading spaces",
    "café vs cafe\u0301, naïve vs nai\u0308ve, ﬁne ligature, Å vs A\u030a", "中文句子。日本語の文、한국어 문장", "emoji 😀👍🏽 and ☃",
    "a" * 300, "!!!??? ... --- ''' \"\" ((()))", "",
]


def sentences(split, n):
    with gzip.open(SHIPPED_DATA / "sst2" / f"{split}.tsv.gz", "rt", encoding="utf-8") as f:
        return [line.split("\t")[0] for line in f.read().splitlines()[1:n + 1]]


TEXTS = sentences("test", 300) + MADE_UP


def trained(family):
    """A byte-level BPE of 1200 tokens trained by the ``tokenizers`` library, the family's special tokens after."""
    model = tokenizers.Tokenizer(tokenizers.models.BPE())
    model.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(PATTERNS[family]), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if family == "qwen2":
        model.normalizer = tokenizers.normalizers.NFC()
    model.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=1200, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    model.train_from_iterator(sentences("train", 4000) + MADE_UP, trainer)
    model.add_special_tokens(SPECIALS[family])
    return model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def reference(request):
    return request.param, trained(request.param)


def ids_of(reference, texts):
    return [reference.encode(text, add_special_tokens=False).ids for text in texts]


def write(directory, reference, layout):
    """The trained tokenizer in one of minway's layouts."""
    directory.mkdir()
    described = json.loads(reference.to_str())
    if layout == "tokenizer.json":
        (directory / "tokenizer.json").write_text(reference.to_str(), encoding="utf-8")
    elif layout == "vocab.json + merges.txt":
        reference.model.save(str(directory))
    else:
        alphabet = gpt2_byte_alphabet()
        vocabulary = sorted(described["model"]["vocab"].items(), key=lambda item: item[1])
        (directory / "tokenizer.model").write_text("".join(
            f"{base64.b64encode(bytes(alphabet[ch] for ch in token)).decode()} {i}\n" for token, i in vocabulary))
    return directory


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.json + merges.txt", "tokenizer.model"])
def test_every_layout_encodes_and_decodes_as_the_tokenizers_library(tmp_path, reference, layout):
    family, hf = reference
    if layout == "tokenizer.model" and family == "qwen2":
        pytest.skip("tokenizer.model is Llama 3's layout")
    ours = load_bpe_tokenizer(write(tmp_path / "t", hf, layout), family, hf.get_vocab_size() + 5)
    expected = ids_of(hf, TEXTS)
    assert sum(map(len, expected)) > 10_000 and len({t for ids in expected for t in ids}) > 900
    assert ours.encode_batch(TEXTS) == expected
    assert [ours.encode(text) for text in TEXTS] == expected
    assert [ours.decode(ids) for ids in expected] == [hf.decode(ids) for ids in expected]


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.json + merges.txt"])
def test_the_special_tokens_and_the_end_of_text_token(tmp_path, reference, layout):
    """The specials come after the regular tokens in both families (from tokenizer.json, or as the family's are);
    the ids the tokenizer lacks up to the model's vocabulary are named."""
    family, hf = reference
    ours = load_bpe_tokenizer(write(tmp_path / "t", hf, layout), family, hf.get_vocab_size() + 2)
    first = hf.token_to_id(SPECIALS[family][0])
    assert first == hf.get_vocab_size() - 3
    end = {"llama": "<|end_of_text|>", "qwen2": "<|endoftext|>"}[family]
    assert ours.eot_id == hf.token_to_id(end)
    assert ours.n_vocab == hf.get_vocab_size() + 2
    named = ours.token_strings(range(first, hf.get_vocab_size() + 2))
    if layout == "tokenizer.json":
        assert named[:3] == SPECIALS[family]
    else:  # the family's own first special tokens, as no file here names them
        assert named[0] == {"llama": "<|begin_of_text|>", "qwen2": "<|endoftext|>"}[family]
    assert named[-2:] == [f"<|no_token_{hf.get_vocab_size() + i}|>" for i in range(2)]
    # never a special token in a text (the tokenizers library reads one there)
    assert all(len(ours.encode(name)) > 1 for name in SPECIALS[family])


def test_names_of_added_tokens_come_from_tokenizer_config_without_tokenizer_json(tmp_path, reference):
    family, hf = reference
    directory = write(tmp_path / "t", hf, "vocab.json + merges.txt")
    names = {str(hf.token_to_id(name)): {"content": name} for name in SPECIALS[family]}
    last = str(hf.token_to_id(SPECIALS[family][-1]))
    names[last] = {"content": "<|a name of its own|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": names}))
    ours = load_bpe_tokenizer(directory, family, hf.get_vocab_size())
    assert ours.token_strings([int(last)]) == ["<|a name of its own|>"]


def test_gpt2s_merges_with_llama3s_pattern_as_the_random_checkpoints_carry_them(tmp_path):
    """50,000 merges: the random Llama's tokenizer.json, read by minway and by the tokenizers library."""
    directory = write_random_llama(tmp_path / "llama", FAMILIES["llama"])
    hf = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    ours = checkpoint_tokenizer(directory)
    assert ours.encode_batch(TEXTS) == ids_of(hf, TEXTS)
    # transformers' tokenizer begins a text with <|begin_of_text|>, which minway's Llama puts first itself
    assert hf.encode("Hello").ids[0] == FAMILIES["llama"].bos_token_id
    assert ours.eot_id == hf.token_to_id("<|end_of_text|>") == FAMILIES["llama"].bos_token_id + 1


def test_a_tokenizer_json_of_gpt2_reads_with_gpt2s_pattern(tmp_path):
    """Byte-level BPE's own pattern (its pre-tokenizer alone, use_regex): GPT-2's, as minway's GPT-2 tokenizer."""
    hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(str(TOKENIZER_DIR / "vocab.json"),
                                                              str(TOKENIZER_DIR / "merges.txt")))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    (tmp_path / "tokenizer.json").write_text(hf.to_str(), encoding="utf-8")
    ours = load_bpe_tokenizer(tmp_path, "llama", 50257)
    assert ours.encode_batch(TEXTS) == ids_of(hf, TEXTS) == load_tokenizer(TOKENIZER_DIR).encode_batch(TEXTS)
    assert ours.eot_id == 50256


def test_the_random_qwens_vocab_and_merges_read_with_qwens_pattern(tmp_path):
    directory = write_random_llama(tmp_path / "qwen", FAMILIES["qwen2"])
    ours = checkpoint_tokenizer(directory)
    hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(str(directory / "vocab.json"),
                                                              str(directory / "merges.txt")))
    hf.normalizer = tokenizers.normalizers.NFC()
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    assert ours.encode_batch(TEXTS) == ids_of(hf, TEXTS)
    assert ours.encode("2024") == [ours.encode(d)[0] for d in "2024"]  # Qwen's digits go one by one
    assert (ours.eot_id, ours.n_vocab) == (50256, 50304) and ours.token_strings([50256]) == ["<|endoftext|>"]


# --- what is not a tokenizer minway reads: one line --------------------------------

def tokenizer_json(tmp_path, reference, edit):
    directory = tmp_path / "t"
    directory.mkdir()
    described = json.loads(reference[1].to_str())
    edit(described)
    (directory / "tokenizer.json").write_text(json.dumps(described), encoding="utf-8")
    return directory


@pytest.mark.parametrize("edit, fragment", [
    (lambda t: t["model"].update(type="WordPiece"), "is not a byte-level BPE tokenizer (its model is WordPiece)"),
    (lambda t: t["model"].update(byte_fallback=True), "is not a byte-level BPE tokenizer"),
    (lambda t: t.update(pre_tokenizer={"type": "Metaspace"}), "its pre-tokenizer (Metaspace) is not byte-level BPE's"),
    (lambda t: t["pre_tokenizer"]["pretokenizers"][1].update(add_prefix_space=True), "is not byte-level BPE's"),
    # bytes without any split before them: a whole text would be one piece
    (lambda t: t.update(pre_tokenizer={"type": "ByteLevel", "use_regex": False}), "(ByteLevel) is not byte-level"),
    (lambda t: t.update(normalizer={"type": "Lowercase"}), "its normalizer (Lowercase) is neither none nor NFC"),
    (lambda t: t["model"].update(merges=t["model"]["merges"][::-1]), "joins tokens that are not in the vocabulary"),
    (lambda t: t["model"]["merges"].insert(0, t["model"]["merges"].pop(5)), "ids must follow the merges"),
    (lambda t: t["model"]["vocab"].pop("!"), "holds 255 of the 256 single bytes"),
    (lambda t: t["model"].update(merges=["a b c"]), "merge 1 is 'a b c', not two tokens"),
    (lambda t: t.update(added_tokens=[{"id": "one"}]), "added_tokens must be a list of {id, content}"),
])
def test_a_tokenizer_json_minway_does_not_read_is_refused(tmp_path, reference, edit, fragment):
    directory = tokenizer_json(tmp_path, reference, edit)
    with pytest.raises(MinwayError) as error:
        load_bpe_tokenizer(directory, reference[0], 5000)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_ids_beyond_the_models_vocabulary_are_refused(tmp_path, reference):
    directory = write(tmp_path / "t", reference[1], "tokenizer.json")
    with pytest.raises(MinwayError, match="has token ids from 0 to 1202, but the model's vocabulary .* has 1000"):
        load_bpe_tokenizer(directory, reference[0], 1000)


def test_a_tokenizer_without_an_end_of_text_token_is_refused(tmp_path, reference):
    directory = tokenizer_json(tmp_path, reference, lambda t: t.update(added_tokens=[
        {"id": 1200, "content": "<|something|>"}]))
    with pytest.raises(MinwayError, match="has no end-of-text token"):
        load_bpe_tokenizer(directory, reference[0], 1300)
    assert load_bpe_tokenizer(directory, reference[0], 1300, eos_token_id=[1200, 7]).eot_id == 1200


def test_a_sentencepiece_model_is_not_taken_for_a_tiktoken_file(tmp_path):
    (tmp_path / "tokenizer.model").write_text("\u2581the -3.25\n\u2581a -3.5\n")
    with pytest.raises(MinwayError, match="line 1 is not a token in base64 and its rank: not a tiktoken BPE file"):
        load_bpe_tokenizer(tmp_path, "llama", 100)


def test_ranks_of_a_tiktoken_file_must_be_whole(tmp_path):
    (tmp_path / "tokenizer.model").write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b + 1}\n"
                                                      for b in range(256)))
    with pytest.raises(MinwayError, match="the ranks are not 0 .. 255 each once"):
        load_bpe_tokenizer(tmp_path, "llama", 300)


def test_a_directory_without_tokenizer_files_is_refused(tmp_path):
    with pytest.raises(MinwayError, match="holds no tokenizer: it needs tokenizer.json, vocab.json and merges.txt"):
        load_bpe_tokenizer(tmp_path, "qwen2", 100)
