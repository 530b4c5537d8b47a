"""GPT-2's byte-level BPE tokenizer, run by tiktoken, built offline from a
checkpoint directory's `vocab.json` and `merges.txt`.

A checkpoint directory without these two files gets the copy that ships with minway
(``load_checkpoint_tokenizer``): every GPT-2 size has the same vocabulary.

vocab.json spells every token as a string in GPT-2's byte-to-unicode alphabet
(each of the 256 byte values stands for one printable character); tiktoken wants
raw bytes mapped to merge ranks. For GPT-2 a token's id *is* its merge rank: ids
0-255 are the single bytes, and the token made by merge line i has id 256 + i.
"""
import sys
import unicodedata
from pathlib import Path

import tiktoken

from minway import resources
from minway.errors import MinwayError
from minway.run.files import read_json, read_text

EOT = "<|endoftext|>"
MAX_BPE_FILE = 2 ** 26  # GPT-2's vocab.json is 1 MB, its merges.txt 456 KB

# GPT-2's pre-tokenizer: contractions, then runs of letters, digits or other
# symbols (each with an optional leading space), then whitespace.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_byte_alphabet() -> dict[str, int]:
    """Map each character of GPT-2's byte alphabet to the byte value it stands for.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls,
    space, soft hyphen...) are given the characters from U+0100 on, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {chr(b): b for b in printable}
    next_char = 256
    for b in range(256):
        if b not in printable:
            alphabet[chr(next_char)] = b
            next_char += 1
    return alphabet


class Tokenizer:
    def __init__(self, encoding: tiktoken.Encoding, eot_id=None, normal_form=None):
        """``eot_id``: the end-of-text token (default: <|endoftext|>, GPT-2's); ``normal_form``: the Unicode
        normalisation of a text before it is split ("NFC" for Qwen 2.5; default: none, as GPT-2)."""
        self.encoding = encoding
        self.eot_id = encoding.eot_token if eot_id is None else eot_id
        self.n_vocab = encoding.n_vocab
        self.normal_form = normal_form

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; a literal "<|endoftext|>" in it is plain text, not the special token."""
        return self.encoding.encode_ordinary(self._normalized(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch([self._normalized(text) for text in texts])

    def _normalized(self, text):
        return text if self.normal_form is None else unicodedata.normalize(self.normal_form, text)

    def decode(self, ids) -> str:
        """The text of ``ids``. A byte that makes no UTF-8 character (a projected prompt may hold a token
        that is part of one, beside a token that does not complete it) is written \\xNN, never U+FFFD,
        which would hide which byte it was."""
        return self.encoding.decode(list(ids), errors="backslashreplace")

    def token_strings(self, ids) -> list[str]:
        """Each id on its own, as ``readable`` writes its bytes (for tables and figures, one token a cell)."""
        return [readable(self.encoding.decode_single_token_bytes(i)) for i in ids]


def readable(data: bytes) -> str:
    """A token's bytes as a person reads them: UTF-8 characters as themselves; a byte that is no character
    on its own (part of one: byte-level BPE cuts characters) as \\xNN; a backslash and the ASCII characters
    that do not print as Python writes them (\\\\, \\n, \\t), and the others that do not print as \\uNNNN
    (a no-break space is \\u00a0, the byte 0xa0 alone \\xa0). Never U+FFFD."""
    out = []
    for ch in data.decode("utf-8", errors="surrogateescape"):
        if "\udc80" <= ch <= "\udcff":  # surrogateescape's stand-in for a byte 0x80-0xff that is no character
            out.append(f"\\x{ord(ch) - 0xdc00:02x}")
        elif ch == "\\" or (ch < "\x80" and not ch.isprintable()):
            out.append(repr(ch)[1:-1])
        elif not (ch.isprintable() or ch == " "):
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        else:
            out.append(ch)
    return "".join(out)


def load_tokenizer(directory) -> Tokenizer:
    directory = Path(directory)
    vocab = _read_vocab(directory / "vocab.json")
    merges = _read_merges(directory / "merges.txt")
    if EOT not in vocab:
        raise MinwayError(f"{directory / 'vocab.json'} has no {EOT} entry; use a GPT-2 vocab.json")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise MinwayError(f"{directory / 'vocab.json'} ids are not 0..{len(vocab) - 1}, each used once; re-download it")
    eot_id = vocab.pop(EOT)

    _check_consistent(vocab, merges, directory)
    alphabet = gpt2_byte_alphabet()
    try:
        ranks = {bytes(alphabet[ch] for ch in token): token_id for token, token_id in vocab.items()}
    except KeyError as e:
        raise MinwayError(f"{directory / 'vocab.json'} has a character ({e}) outside GPT-2's byte alphabet; "
                          "use a GPT-2 byte-level vocab.json") from None

    encoding = tiktoken.Encoding(name=f"gpt2:{directory}", pat_str=GPT2_SPLIT_PATTERN,
                                 mergeable_ranks=ranks, special_tokens={EOT: eot_id})
    return Tokenizer(encoding)


_FALLBACK_NOTED = set()  # checkpoint directories whose fallback has been announced


def load_checkpoint_tokenizer(checkpoint_dir) -> Tokenizer:
    """The tokenizer of a checkpoint: its own vocab.json and merges.txt, else GPT-2's (said once on stderr)."""
    checkpoint_dir = Path(checkpoint_dir)
    if all((checkpoint_dir / file).is_file() for file in resources.TOKENIZER_FILES):
        return load_tokenizer(checkpoint_dir)
    fallback = resources.tokenizer_dir()
    if checkpoint_dir not in _FALLBACK_NOTED:
        _FALLBACK_NOTED.add(checkpoint_dir)
        print(f"note: {checkpoint_dir} has no vocab.json and merges.txt: using GPT-2's BPE files from {fallback} "
              f"(all GPT-2 sizes share them)", file=sys.stderr)
    return load_tokenizer(fallback)


def _read_vocab(path: Path) -> dict[str, int]:
    if not path.exists():
        raise MinwayError(f"{path} is missing; point to a GPT-2 checkpoint directory with vocab.json and merges.txt")
    vocab = read_json(path, "vocabulary", MAX_BPE_FILE, "re-download it")
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise MinwayError(f"{path} must map token strings to integer ids; re-download it")
    return vocab


def _read_merges(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        raise MinwayError(f"{path} is missing; point to a GPT-2 checkpoint directory with vocab.json and merges.txt")
    lines = read_text(path, "merges file", MAX_BPE_FILE).splitlines()
    merges = []
    for number, line in enumerate(lines, start=1):
        if line.startswith("#version") or not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise MinwayError(f"{path} line {number} is {line!r}, not two tokens separated by a space; re-download it")
        merges.append((parts[0], parts[1]))
    return merges


def _check_consistent(vocab: dict[str, int], merges, directory: Path) -> None:
    """tiktoken merges by rank, so the files must agree that merge line i makes id 256 + i."""
    mismatch = f"; vocab.json and merges.txt in {directory} come from different tokenizers"
    if sum(len(token) == 1 and token_id < 256 for token, token_id in vocab.items()) != 256:
        raise MinwayError(f"{directory / 'vocab.json'} does not give ids 0-255 to the 256 single bytes; re-download it")
    if len(merges) != len(vocab) - 256:
        raise MinwayError(f"merges.txt has {len(merges)} merges but vocab.json has {len(vocab) - 256} merged tokens{mismatch}")
    for line_index, (left, right) in enumerate(merges):
        if vocab.get(left + right) != 256 + line_index:
            raise MinwayError(f"merge {line_index + 1} ({left!r} + {right!r}) does not make token id {256 + line_index}{mismatch}")
