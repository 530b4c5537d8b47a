"""The tokenizers of Llama 3 and Qwen 2.5, run by tiktoken, built offline from a checkpoint's files.

Both are byte-level BPE as GPT-2's is (``minway.run.tokenizer``): a text is split by a pattern,
the UTF-8 bytes of each piece are merged pair by pair, and a token's id is its merge rank. A
checkpoint holds the regular tokens in one of three forms, read from the first it has:

    tokenizer.model           Llama 3 as Meta releases it: tiktoken's own format, a line per
                              token (its bytes in base64, then its rank)
    vocab.json + merges.txt   Qwen 2.5: as GPT-2's
    tokenizer.json            every Hugging Face checkpoint: the vocabulary and the merges, and
                              the rest of the tokenizer

The rest comes from tokenizer.json where there is one, else from the family's tokenizer:

* the pattern that splits a text: Llama 3's cuts runs of digits into threes, Qwen 2.5's into
  single digits; both keep a letter run's leading space or punctuation mark with it;
* the Unicode normalisation of a text: NFC for Qwen 2.5, none for Llama 3;
* the special tokens (tokenizer.json's added tokens, else tokenizer_config.json's): after the
  regular tokens, Llama 3's 256 begin with <|begin_of_text|> and <|end_of_text|>, Qwen 2.5's
  with <|endoftext|>. None is ever read in a text: a text's "<|endoftext|>" is plain text.

The end-of-text token, which closes each output a task scores, is the one that ends a document
in pretraining: <|end_of_text|> for Llama 3, <|endoftext|> for Qwen 2.5 (as for GPT-2), else
config.json's eos_token_id. (Llama 3's <|begin_of_text|> is put before a sequence by the model,
``minway.llama``.) An embedding matrix may have more rows than the tokenizer has tokens (Qwen 2.5
pads its 151,665 to 151,936): a d-projection onto such a row reads <|no_token_ID|>.
"""
import base64
import binascii
from pathlib import Path
from typing import NamedTuple

import tiktoken

from minway.errors import MinwayError
from minway.llama import LlamaConfig
from minway.run.files import read_json, read_text
from minway.run.tokenizer import (GPT2_SPLIT_PATTERN, MAX_BPE_FILE, Tokenizer, _read_merges, _read_vocab,
                                  gpt2_byte_alphabet, load_checkpoint_tokenizer)
from weights.models import read_config

LLAMA3_SPLIT_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501
QWEN2_SPLIT_PATTERN = LLAMA3_SPLIT_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
END_OF_TEXT = ("<|end_of_text|>", "<|endoftext|>")


class Family(NamedTuple):
    pattern: str
    normal_form: str | None
    specials: tuple[str, ...]   # the first special tokens, after the regular ones, where no file names them


FAMILIES = {"llama": Family(LLAMA3_SPLIT_PATTERN, None, ("<|begin_of_text|>", "<|end_of_text|>")),
            "qwen2": Family(QWEN2_SPLIT_PATTERN, "NFC", ("<|endoftext|>",))}


def checkpoint_tokenizer(checkpoint_dir) -> Tokenizer:
    """The tokenizer of a checkpoint of any family minway runs."""
    config = read_config(checkpoint_dir)
    if not isinstance(config, LlamaConfig):
        return load_checkpoint_tokenizer(checkpoint_dir)
    eos = read_json(Path(checkpoint_dir) / "config.json", "checkpoint config", MAX_BPE_FILE).get("eos_token_id")
    return load_bpe_tokenizer(checkpoint_dir, config.model_type, config.vocab_size, eos)


def load_bpe_tokenizer(directory, family, vocab_size, eos_token_id=None) -> Tokenizer:
    """The tokenizer of ``directory``, a checkpoint of ``family`` ("llama" or "qwen2") whose embedding has
    ``vocab_size`` rows; ``eos_token_id``: its config.json's, where no token is named as end-of-text."""
    directory, family = Path(directory), FAMILIES[family]
    described = _read_tokenizer_json(directory / "tokenizer.json")
    if (directory / "tokenizer.model").is_file():
        ranks, in_vocabulary = _read_tiktoken_file(directory / "tokenizer.model"), {}
    elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        ranks, in_vocabulary = _ranks(_read_vocab(directory / "vocab.json"), _read_merges(directory / "merges.txt"),
                                      directory / "vocab.json")
    elif described is not None:
        path = directory / "tokenizer.json"
        ranks, in_vocabulary = _ranks(*_bpe_model(described, path), path)
    else:
        raise MinwayError(f"{directory} holds no tokenizer: it needs tokenizer.json, vocab.json and merges.txt, or "
                          f"tokenizer.model (Llama 3's)")
    if described is None:
        pattern, normal_form = family.pattern, family.normal_form
    else:
        pattern, normal_form = _pattern(described, directory), _normal_form(described, directory)
    specials = (_added_tokens(described, directory) or _added_tokens_decoder(directory) or in_vocabulary
                or {name: len(ranks) + i for i, name in enumerate(family.specials)})

    regular = set(ranks.values())
    ids = regular | set(specials.values())
    if min(ids) < 0 or max(ids) >= vocab_size:
        raise MinwayError(f"the tokenizer in {directory} has token ids from {min(ids)} to {max(ids)}, but the "
                          f"model's vocabulary (vocab_size in config.json) has {vocab_size}: they do not belong "
                          f"together")
    named = {token: i for token, i in specials.items() if i not in regular}
    named.update({f"<|no_token_{i}|>": i for i in sorted(set(range(vocab_size)) - ids)})
    eot_id = next((specials[name] for name in END_OF_TEXT if name in specials), None)
    if eot_id is None:
        eot_id = eos_token_id[0] if isinstance(eos_token_id, list) and eos_token_id else eos_token_id
    if not isinstance(eot_id, int) or isinstance(eot_id, bool) or eot_id not in ids:
        raise MinwayError(f"the tokenizer in {directory} has no end-of-text token ({' or '.join(END_OF_TEXT)}, or "
                          f"eos_token_id in config.json) to close the outputs with")
    encoding = tiktoken.Encoding(name=f"bpe:{directory}", pat_str=pattern, mergeable_ranks=ranks,
                                 special_tokens=named)
    return Tokenizer(encoding, eot_id, normal_form)


def _read_tokenizer_json(path):
    if not path.is_file():
        return None
    described = read_json(path, "tokenizer", MAX_BPE_FILE, "re-download it")
    if not isinstance(described, dict):
        raise MinwayError(f"{path} holds a JSON {type(described).__name__}, not a tokenizer: re-download it")
    return described


def _bpe_model(described, path):
    """(vocabulary {token: id}, merges [(left, right)]) of tokenizer.json's BPE model."""
    model = described.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE" or model.get("byte_fallback"):
        raise MinwayError(f"{path} is not a byte-level BPE tokenizer (its model is {_kind(model)}): minway reads "
                          f"the tokenizers of GPT-2, Llama 3 and Qwen 2.5")
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()) \
            or not isinstance(merges, list):
        raise MinwayError(f"{path}: its BPE model lacks a vocabulary of ids or a list of merges: re-download it")
    pairs = []
    for number, merge in enumerate(merges, start=1):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(part, str) for part in pair):
            raise MinwayError(f"{path}: merge {number} is {merge!r}, not two tokens: re-download it")
        pairs.append(tuple(pair))
    return vocab, pairs


def _kind(part):
    return part.get("type") if isinstance(part, dict) else repr(part)


def _pattern(described, directory):
    """The split pattern of tokenizer.json's pre-tokenizer: byte-level BPE's, alone (GPT-2's pattern) or after
    a split by a pattern of its own (Llama 3, Qwen 2.5)."""
    pre = described.get("pre_tokenizer")
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    steps = steps if isinstance(steps, list) else [steps]
    last = steps[-1] if steps else None
    if isinstance(last, dict) and last.get("type") == "ByteLevel" and not last.get("add_prefix_space", False):
        if len(steps) == 1 and last.get("use_regex", True):
            return GPT2_SPLIT_PATTERN
        split = steps[0]
        if len(steps) == 2 and not last.get("use_regex", True) and isinstance(split, dict) \
                and split.get("type") == "Split" and split.get("behavior") == "Isolated" and not split.get("invert") \
                and isinstance(split.get("pattern"), dict) and isinstance(split["pattern"].get("Regex"), str):
            return split["pattern"]["Regex"]
    raise MinwayError(f"{directory / 'tokenizer.json'}: its pre-tokenizer ({_kind(pre)}) is not byte-level BPE's (a "
                      f"split by a pattern, then bytes): minway reads the tokenizers of GPT-2, Llama 3 and Qwen 2.5")


def _normal_form(described, directory):
    normalizer = described.get("normalizer")
    if normalizer is None:
        return None
    if isinstance(normalizer, dict) and normalizer.get("type") == "NFC":
        return "NFC"
    raise MinwayError(f"{directory / 'tokenizer.json'}: its normalizer ({_kind(normalizer)}) is neither none nor "
                      f"NFC: minway reads the tokenizers of GPT-2, Llama 3 and Qwen 2.5")


def _added_tokens(described, directory):
    """{text: id} of tokenizer.json's added tokens, or None."""
    if described is None or not described.get("added_tokens"):
        return None
    added = described["added_tokens"]
    if not isinstance(added, list) or not all(isinstance(t, dict) and isinstance(t.get("content"), str)
                                              and isinstance(t.get("id"), int) for t in added):
        raise MinwayError(f"{directory / 'tokenizer.json'}: added_tokens must be a list of {{id, content}}: "
                          f"re-download it")
    return {t["content"]: t["id"] for t in added}


def _added_tokens_decoder(directory):
    """{text: id} of tokenizer_config.json's added tokens, or None."""
    path = directory / "tokenizer_config.json"
    config = read_json(path, "tokenizer config", MAX_BPE_FILE, "re-download it") if path.is_file() else None
    decoder = config.get("added_tokens_decoder") if isinstance(config, dict) else None
    if not decoder:
        return None
    try:
        return {token["content"]: int(i) for i, token in decoder.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise MinwayError(f"{path}: added_tokens_decoder must map ids to {{content}}: re-download it") from None


def _ranks(vocab, merges, path):
    """({bytes: id} of the regular tokens, {text: id} of the rest of ``vocab``). The regular tokens are the
    256 single bytes and one per merge; tiktoken merges by id, so each merge's token must have a larger id
    than the one before it, and be made of tokens already made."""
    alphabet = gpt2_byte_alphabet()
    regular = {token: i for token, i in vocab.items() if token in alphabet}
    if len(regular) != 256:
        raise MinwayError(f"{path} holds {len(regular)} of the 256 single bytes of byte-level BPE: not a byte-level "
                          f"BPE vocabulary, re-download it")
    last = -1
    for number, (left, right) in enumerate(merges, start=1):
        token = left + right
        if left not in regular or right not in regular or token not in vocab:
            raise MinwayError(f"merge {number} of {path.name} ({left!r} + {right!r}) joins tokens that are not in "
                              f"the vocabulary, or makes one that is not: the files come from different tokenizers")
        if vocab[token] <= last or token in regular:
            raise MinwayError(f"merge {number} of {path.name} makes {token!r} with id {vocab[token]}, not above the "
                              f"last merge's {last}: minway runs BPE by id (tiktoken), and ids must follow the merges")
        regular[token], last = vocab[token], vocab[token]
    if len(set(regular.values())) < len(regular):
        raise MinwayError(f"{path} gives one id to two tokens: re-download it")
    ranks = {bytes(alphabet[ch] for ch in token): i for token, i in regular.items()}
    return ranks, {token: i for token, i in vocab.items() if token not in regular}


def _read_tiktoken_file(path):
    """{bytes: rank} of a tiktoken BPE file, the ranks 0 .. n - 1 each once, the 256 single bytes among them."""
    ranks = {}
    for number, line in enumerate(read_text(path, "tiktoken BPE file", MAX_BPE_FILE).splitlines(), start=1):
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            ranks[base64.b64decode(parts[0], validate=True)] = int(parts[1])
        except (ValueError, binascii.Error):
            raise MinwayError(f"{path} line {number} is not a token in base64 and its rank: not a tiktoken BPE file "
                              f"(Llama 3's tokenizer.model; Llama 2's, a SentencePiece model, is not read)") from None
    if sorted(ranks.values()) != list(range(len(ranks))) or sum(len(token) == 1 for token in ranks) != 256:
        raise MinwayError(f"{path}: the ranks are not 0 .. {len(ranks) - 1} each once, over the 256 single bytes "
                          f"and their merges: re-download it")
    return ranks
