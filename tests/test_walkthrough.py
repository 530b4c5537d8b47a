"""docs/walkthrough.md runs as written: its Python blocks, in order, print the text blocks that
follow them, and every ``path:function`` it names exists.

    python tests/test_walkthrough.py     # print what each block prints (to update the document)
"""
import contextlib
import io
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
REFERENCE = re.compile(r"`((?:minway|kernels|weights)/[\w/]+\.py):([\w.]+)`")


def examples(text):
    """(code, expected output or None) for each ```python block; the output is the ```text
    block right after it."""
    blocks = list(FENCE.finditer(text))
    pairs = []
    for block, following in zip(blocks, blocks[1:] + [None]):
        if block.group(1) != "python":
            continue
        shows_output = (following is not None and following.group(1) == "text"
                        and not text[block.end():following.start()].strip())
        pairs.append((block.group(2), following.group(2) if shows_output else None))
    return pairs


def run(pairs):
    """What each block prints, all blocks sharing one namespace."""
    namespace, printed = {}, []
    for number, (code, _) in enumerate(pairs, start=1):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{WALKTHROUGH.name}, block {number}", "exec"), namespace)
        printed.append(out.getvalue())
    return printed


@pytest.mark.slow
def test_every_block_prints_what_the_walkthrough_shows(monkeypatch):
    monkeypatch.chdir(ROOT)
    pairs = examples(WALKTHROUGH.read_text(encoding="utf-8"))
    assert len(pairs) >= 10
    for number, ((code, expected), printed) in enumerate(zip(pairs, run(pairs)), start=1):
        if expected is not None:
            assert printed == expected, f"block {number} of {WALKTHROUGH.name} printed:\n{printed}"


def test_every_function_it_names_exists():
    references = REFERENCE.findall(WALKTHROUGH.read_text(encoding="utf-8"))
    assert len(references) >= 20
    for path, name in references:
        source = (ROOT / path).read_text(encoding="utf-8")
        for part in name.split("."):  # Class.method
            assert re.search(rf"^\s*(def|class) {part}\b", source, re.M), f"{path}:{name}"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    import torch
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"  # as tests/conftest.py sets it, before triton is imported
    for number, text in enumerate(run(examples(WALKTHROUGH.read_text(encoding="utf-8"))), start=1):
        print(f"--- block {number}\n{text}", end="")
