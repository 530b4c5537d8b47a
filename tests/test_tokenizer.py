import json

import pytest

from fixtures import TOKENIZER_DIR as GPT2_DIR
from fixtures import ascii_locale, shipped_lines  # noqa: F401  (pytest fixture)
from minway.errors import MinwayError
from minway.tasks import TASKS
from minway.run.tokenizer import EOT, gpt2_byte_alphabet, load_tokenizer, readable


def test_check_sentence_from_the_data_readme():
    tokenizer = load_tokenizer(GPT2_DIR)
    assert tokenizer.encode("Hello world, it's a test.") == [15496, 995, 11, 340, 338, 257, 1332, 13]
    assert tokenizer.eot_id == 50256
    assert tokenizer.n_vocab == 50257


def test_the_bpe_files_are_utf8_whatever_the_locale(tmp_path, ascii_locale):  # noqa: F811
    # merges.txt is full of non-ASCII characters (GPT-2's byte alphabet writes a space as "Ġ")
    assert load_tokenizer(GPT2_DIR).encode("Hello world, it's a test.") == [15496, 995, 11, 340, 338, 257, 1332, 13]
    # and so is a vocab.json written without escapes, as transformers writes it
    write_tiny_tokenizer(tmp_path, [("Ġ", "h")])
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    (tmp_path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    assert load_tokenizer(tmp_path).encode(" h") == [256]


def test_endoftext_in_text_is_ordinary_text():
    tokenizer = load_tokenizer(GPT2_DIR)
    ids = tokenizer.encode("a <|endoftext|> b")
    assert tokenizer.eot_id not in ids
    assert tokenizer.decode(ids) == "a <|endoftext|> b"


def test_token_strings_show_the_bytes_of_partial_characters_never_a_replacement():
    tokenizer = load_tokenizer(GPT2_DIR)
    ids = tokenizer.encode("Hi 日")  # "日" is three UTF-8 bytes, e6 97 a5, each a token of its own
    assert tokenizer.token_strings(ids) == ["Hi", " \\xe6", "\\x97", "\\xa5"]
    assert tokenizer.decode(ids) == "Hi 日"


@pytest.mark.parametrize("text, kept, shown", [
    ("TD’s", 2, "TD\\xe2\\x80"),        # ’ is e2 80 99: its last byte's token left out
    ("TD’s", 4, "TD’s"),                  # and with it, the character whole
    ("Hi 日", 3, "Hi \\xe6\\x97"),
    ("a ’ b", 3, "a ’"),
])
def test_text_cut_inside_a_character_shows_its_bytes_never_a_replacement(text, kept, shown):
    """A projected prompt may hold the first bytes of a character without the rest: its text (the
    summary's projection, its marked words) shows them as escapes."""
    tokenizer = load_tokenizer(GPT2_DIR)
    assert tokenizer.decode(tokenizer.encode(text)[:kept]) == shown


@pytest.mark.parametrize("data, shown", [
    (b"\n", "\\n"), (b"\t", "\\t"), (b"\\", "\\\\"), (b" caf\xc3\xa9", " café"), (b"\xa0", "\\xa0"),
    ("\u00a0".encode(), "\\u00a0"), ("\u200b".encode(), "\\u200b"), (" ".encode(), " "),
])
def test_readable_tokens_tell_a_byte_from_a_character(data, shown):
    """Characters as themselves, those that do not print escaped; the byte a0 alone (part of a character)
    and the character U+00A0 (a no-break space, bytes c2 a0) are written apart."""
    assert readable(data) == shown


def shipped_test_texts() -> list[str]:
    texts = []
    for task in sorted(TASKS):
        lines = shipped_lines(task, "test")
        assert lines[0] == "text\tlabel"
        texts += [line.rsplit("\t", 1)[0] for line in lines[1:]]
    return texts


@pytest.mark.slow
def test_ids_equal_transformers_on_every_test_sentence():
    transformers = pytest.importorskip("transformers")
    texts = shipped_test_texts()
    assert len(texts) > 13000
    reference = transformers.GPT2TokenizerFast.from_pretrained(str(GPT2_DIR))
    expected = reference(texts)["input_ids"]
    ours = load_tokenizer(GPT2_DIR).encode_batch(texts)
    mismatches = [text for text, a, b in zip(texts, ours, expected) if a != b]
    assert not mismatches, f"{len(mismatches)} texts differ, first: {mismatches[0]!r}"


def test_decode_round_trips_every_test_sentence():
    tokenizer = load_tokenizer(GPT2_DIR)
    texts = shipped_test_texts()
    decoded = [tokenizer.decode(ids) for ids in tokenizer.encode_batch(texts)]
    assert decoded == texts


def write_tiny_tokenizer(directory, merges):
    """The 256 single bytes (id = byte value), the given merges (ids 256...), then <|endoftext|>."""
    vocab = dict(gpt2_byte_alphabet())
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab[EOT] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def test_tiny_tokenizer_applies_merges_in_order(tmp_path):
    write_tiny_tokenizer(tmp_path, [("h", "e"), ("l", "l"), ("he", "ll")])
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.encode("hello") == [258, ord("o")]
    assert tokenizer.eot_id == 259
    assert tokenizer.decode(tokenizer.encode("hello there")) == "hello there"


def test_missing_file_names_it(tmp_path):
    write_tiny_tokenizer(tmp_path, [("h", "e")])
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(MinwayError, match="merges.txt is missing"):
        load_tokenizer(tmp_path)
    with pytest.raises(MinwayError, match="vocab.json is missing"):
        load_tokenizer(tmp_path / "nowhere")


@pytest.mark.parametrize("text, message", [
    ("{not json", "vocab.json is not valid JSON"),
    ('["a", "b"]', "must map token strings to integer ids"),
    ('{"a": 0, "b": "1"}', "must map token strings to integer ids"),
])
def test_malformed_vocab_names_it(tmp_path, text, message):
    write_tiny_tokenizer(tmp_path, [("h", "e")])
    (tmp_path / "vocab.json").write_text(text, encoding="utf-8")
    with pytest.raises(MinwayError, match=message):
        load_tokenizer(tmp_path)


def test_mismatched_merges_are_reported(tmp_path):
    write_tiny_tokenizer(tmp_path, [("h", "e"), ("l", "l")])
    (tmp_path / "merges.txt").write_text("#version: 0.2\nl l\nh e\n", encoding="utf-8")
    with pytest.raises(MinwayError, match="come from different tokenizers") as error:
        load_tokenizer(tmp_path)
    assert "\n" not in str(error.value)


def test_a_malformed_merge_line_is_named_by_its_line_number(tmp_path):
    write_tiny_tokenizer(tmp_path, [("h", "e"), ("l", "l")])
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh e\nl l extra\n", encoding="utf-8")
    with pytest.raises(MinwayError, match=r"merges.txt line 3 is 'l l extra', not two tokens"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("misplace", [
    lambda vocab: vocab.update(a=vocab["he"], he=vocab["a"]),  # the byte "a" at id 256, the merge at 97
    # no byte "a": the merge at its id 97, end-of-text at 256 (the ids still 0..256, each once)
    lambda vocab: vocab.update({"he": vocab.pop("a"), EOT: 256}),
])
def test_single_bytes_must_have_the_ids_below_256(tmp_path, misplace):
    write_tiny_tokenizer(tmp_path, [("h", "e")])
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    misplace(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(MinwayError, match="does not give ids 0-255 to the 256 single bytes"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt"])
def test_a_bpe_file_over_64_mib_is_refused_unread(tmp_path, name):
    for other in ("vocab.json", "merges.txt"):
        (tmp_path / other).write_bytes((GPT2_DIR / other).read_bytes())
    with open(tmp_path / name, "wb") as f:  # sparse: nothing is written
        f.truncate(2 ** 26 + 1)
    with pytest.raises(MinwayError, match="holds 67,108,865 bytes, more than the 67,108,864 it may"):
        load_tokenizer(tmp_path)
