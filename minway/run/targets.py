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
    holding = [file for file in files if name in read_prompts_file(file)]
    if not holding:
        raise MinwayError(f"no target named {name!r} in {_listing(files)}")
    if len(holding) > 1:
        raise MinwayError(f"--target-name {name} is in {len(holding)} prompt files: "
                          f"{_listing(holding)}; pass --prompts-file with one of them")
    return read_prompts_file(holding[0])[name]


def _listing(files):
    """The files, their common directory said once."""
    if len(files) == 1:
        return str(files[0])
    return f"{', '.join(f.name for f in files)} (in {files[0].parent})"


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
