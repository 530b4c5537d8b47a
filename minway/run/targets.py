"""Where a target text comes from: the command line, a text file, or a named entry
of a prompts file in the layout of the paper's release (``{name: text}`` JSON).

A name is looked up in ``--prompts-file`` (a path, or the name of a file in the
prompts directory), else in every file of the prompts directory: $MINWAY_PROMPTS,
else the paper's prompts that ship with minway.
"""
from pathlib import Path

from minway import resources
from minway.errors import MinwayError
from minway.run.files import read_json, read_text
from minway.run.suggest import did_you_mean
from minway.run.tokenizer import load_tokenizer

MAX_TARGET_FILE = 2 ** 20     # a target fits a model's context: a few KB
MAX_PROMPTS_FILE = 64 * 2 ** 20


def read_prompts_file(path):
    prompts = read_json(path, "prompts file", MAX_PROMPTS_FILE, "give a JSON object of {name: target text}")
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise MinwayError(f"{path} must be a JSON object mapping names to target texts")
    return prompts


def find_prompts_file(path):
    """``path``, or the file of that name in the prompts directory (``--prompts-file pile_n=14.json``)."""
    path = Path(path)
    if not path.exists() and path.name == str(path) and (resources.prompts_dir() / path.name).is_file():
        return resources.prompts_dir() / path.name
    return path


def find_named_target(name, prompts_file=None):
    if prompts_file:
        files = [find_prompts_file(prompts_file)]
    else:
        directory = resources.prompts_dir()
        files = sorted(directory.glob("*.json"))
        if not files:
            raise MinwayError(f"--target-name {name} needs --prompts-file F.json (no prompt files in {directory})")
    prompts = {file: read_prompts_file(file) for file in files}
    holding = [file for file in files if name in prompts[file]]
    if not holding:
        typo = did_you_mean(name, [n for names in prompts.values() for n in names])
        raise MinwayError(f"no target named {name!r} in {_listing(files)}" + (f": {typo}" if typo else "")
                          + " (train.py --list-targets lists them)")
    if len(holding) > 1:
        raise MinwayError(f"--target-name {name} is in {len(holding)} prompt files: "
                          f"{_listing(holding)}; pass --prompts-file with one of them")
    return read_prompts_file(holding[0])[name]


def _listing(files):
    """The files, their common directory said once."""
    if len(files) == 1:
        return str(files[0])
    return f"{', '.join(f.name for f in files)} (in {files[0].parent})"


def target_table(text=""):
    """[(name, file name, length in GPT-2 tokens, target)] of the targets in the prompts directory whose
    name or target holds ``text`` (any case); a one-line error, with the names closest, when none does."""
    directory = resources.prompts_dir()
    everything = [(name, file.name, target) for file in sorted(directory.glob("*.json"))
                  for name, target in read_prompts_file(file).items()]
    rows = [row for row in everything if text.lower() in row[0].lower() or text.lower() in row[2].lower()]
    if not rows:
        typo = did_you_mean(text, [name for name, _, _ in everything])
        raise MinwayError(f"no target of {directory} holds {text!r} in its name or text"
                          + (f": {typo}" if typo else ""))
    tokenizer = load_tokenizer(resources.tokenizer_dir())
    return [(name, file, len(tokenizer.encode(target)), " ".join(target.split())) for name, file, target in rows]


def resolve_target(text=None, file=None, name=None, prompts_file=None):
    given = [x for x in (text, file, name) if x is not None]
    if len(given) != 1:
        raise MinwayError("give exactly one of --target TEXT, --target-file FILE, --target-name NAME")
    if file is not None:
        text = read_text(file, "target file", MAX_TARGET_FILE).strip("\n")
    if name is not None:
        text = find_named_target(name, prompts_file)
    if not text.strip():
        raise MinwayError("the target text is empty: give a non-empty --target")
    return text
