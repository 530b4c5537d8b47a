"""Shared fixtures of the pipeline tests: a tiny random GPT-2 with the real vocabulary, small data
(both from the files that ship with minway).

Import the fixtures a test module needs (``from fixtures import tiny_checkpoint  # noqa: F401``).
Each is built once per test session whichever modules import it.
"""
import gzip
import importlib
import io
import locale
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from minway import resources
from minway.run.cli import run_cli
from minway.model import GPT2, GPT2Config, init_weights
from minway.packing import pack
from weights.random_checkpoint import write_random_checkpoint

TOKENIZER_DIR = resources.GPT2_TOKENIZER
SHIPPED_DATA = resources.DATA
SHIPPED_PROMPTS = resources.PROMPTS
TINY = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=48, n_layer=2, n_head=3)

_built = {}


def _once(key, tmp_path_factory, build):
    """Session-wide cache: a fixture imported into several modules is still built once."""
    if key not in _built:
        _built[key] = build(tmp_path_factory.mktemp(key))
    return _built[key]


@pytest.fixture
def ascii_locale():
    """ASCII as the locale's text encoding, as on a machine without a UTF-8 locale."""
    if sys.flags.utf8_mode:
        pytest.skip("Python's UTF-8 mode is on (PYTHONUTF8=1): the locale's encoding is not used")
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    assert locale.getpreferredencoding(False) != "UTF-8"
    yield
    locale.setlocale(locale.LC_CTYPE, before)


def write_tsv(path, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("text\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return path


def shipped_lines(task, split):
    """The lines of a shipped data file, its header first."""
    with gzip.open(SHIPPED_DATA / task / f"{split}.tsv.gz", "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def first_rows(task, split, n):
    """The first n (text, label) rows of a shipped data file."""
    return [tuple(line.split("\t")) for line in shipped_lines(task, split)[1:n + 1]]


def sharp_model(seed=0):
    """A random GPT-2 whose predictions and attention are far from uniform, so that an error
    of position, mask or cache shows in the losses (GPT-2's own init gives near-uniform ones)."""
    model = init_weights(GPT2(TINY), seed)
    with torch.no_grad():
        model.wte.weight.mul_(10)
        model.wpe.weight.mul_(10)
        for block in model.h:
            block.attn.c_attn.weight.mul_(3)
    return model.freeze().eval()


def option_nll_naive(model, prompt, inputs, options):
    """(B, C) mean token loss of each option, one whole row [prompt, input, option] per (example, option),
    each row packed on its own: the reference. ``prompt``: (L, d), or (B, L, d) one per example."""
    prompts = prompt.expand(len(inputs), -1, -1) if prompt.dim() == 2 else prompt
    rows = [(p, i, o) for p, i in zip(prompts, inputs) for o in options]
    embeds = torch.cat([x for p, i, o in rows for x in (p, model.embed(torch.tensor(i + o[:-1])))])
    packed = pack([len(p) + len(i) + len(o) - 1 for p, i, o in rows])
    logp = model(embeds=embeds, packed=packed, logit_counts=[len(o) for _, _, o in rows]).logits.log_softmax(-1)
    targets = torch.tensor([t for _, _, o in rows for t in o])
    token_nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
    return torch.stack([n.mean() for n in token_nll.split([len(o) for _, _, o in rows])]).view(len(inputs), -1)


def finished_results(**fields):
    """A results.json of a finished run, as small as minway reads it."""
    projection = {"f1": 0.5, "f1_no_lemma": 0.5, "f1_released_code": 0.5, "position_match": 0.25, "f1_ceiling": 1.0,
                  "unreachable_target_tokens": [], "marked": "a [x]"}
    return {"run_id": "run", "accuracy": 0.5, "prompt_f1": 0.5, "c_dist": 1.0, "n_test": 4, "metric": "dot",
            "target_ids": [1, 2], "config": {"target": "a b"},
            "projections": {m: dict(projection) for m in ("dot", "l2", "cos")}, **fields}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random-weight GPT-2 checkpoint (d=48, 2 layers, 3 heads) with GPT-2's tokenizer."""
    return _once("tiny-gpt2", tmp_path_factory, lambda d: write_random_checkpoint(d, TINY, TOKENIZER_DIR, seed=0))


@pytest.fixture(scope="session")
def short_context_checkpoint(tmp_path_factory):
    """The tiny model with a context of 64 positions."""
    config = GPT2Config(vocab_size=50257, n_positions=64, n_embd=48, n_layer=2, n_head=3)
    return _once("tiny-gpt2-ctx64", tmp_path_factory, lambda d: write_random_checkpoint(d, config, TOKENIZER_DIR, 0))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A data dir with sst2 (40 train, 12 test rows from the shipped data, both labels) and trec."""
    def build(root):
        write_tsv(root / "sst2" / "train.tsv", first_rows("sst2", "train", 40))
        write_tsv(root / "sst2" / "test.tsv", first_rows("sst2", "test", 12))
        write_tsv(root / "trec" / "train.tsv", first_rows("trec", "train", 30))
        write_tsv(root / "trec" / "test.tsv", first_rows("trec", "test", 8))
        return root
    return _once("tiny-data", tmp_path_factory, build)


def offline_env(**extra):
    """Environment of a command-line run: no download is ever tried."""
    env = {k: v for k, v in os.environ.items() if k != "MINWAY_DATA"}
    env.update(MINWAY_OFFLINE="1", HF_HUB_OFFLINE="1", **extra)
    return env


def run_script(script, *args, env=None):
    """``python script args...`` in the repository root, offline (or in ``env``), through the script's
    entry point in this process (``run_in_process``); the CompletedProcess."""
    return run_in_process(script, args, cwd=ROOT, env=env or offline_env())


def assert_one_line_error(result, *fragments):
    """Exit code 2 and exactly one line on stderr, ``error: ...``, holding every fragment; no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# the module entry points a command line may name, and the scripts: where their main is
ENTRY_POINTS = {"random_checkpoint": "weights.random_checkpoint", "random_llama": "weights.random_llama",
                "adapters": "minway.run.adapters"}


def run_in_process(entry, args, cwd=None, env=None):
    """What ``python entry args`` does (a script such as "train.py", or a module entry point of
    ENTRY_POINTS), through the same ``run_cli``, in this process: the CompletedProcess of its exit status
    and what it wrote on stdout and stderr. ``cwd`` and ``env`` replace the working directory and the
    environment while it runs; a main that returns exits with 0. What only a real process shows (the
    interpreter's own exit, --help before torch is imported, signals) is left to the tests that start one."""
    module = ENTRY_POINTS.get(entry, entry.removesuffix(".py"))
    out, err, code = io.StringIO(), io.StringIO(), 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [entry, *map(str, args)])
        if env is not None:
            for key in set(os.environ) - set(env):
                patch.delenv(key)
            for key, value in env.items():
                patch.setenv(key, value)
        if cwd is not None:
            patch.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                run_cli(importlib.import_module(module).main)
            except SystemExit as exit_:
                code = exit_.code
    return subprocess.CompletedProcess([entry, *map(str, args)], code, out.getvalue(), err.getvalue())
