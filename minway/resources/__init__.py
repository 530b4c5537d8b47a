"""The files that ship with minway, and the one order in which each kind is looked up.

    data/<task>/{train,test}.tsv.gz   the five tasks of the paper (data/<task>/README.md)
    prompts/*.json                    the paper's target prompts (prompts/README.md)
    gpt2-tokenizer/                   GPT-2's BPE files, vocab.json and merges.txt

A directory is the one a command-line flag names, else the one an environment variable
names, else the copy shipped here: the first of these that is given is the only one used.
Datasets have their own lookup, in minway.run.data (it adds a download).
"""
import os
from pathlib import Path

from minway.errors import MinwayError

SHIPPED = Path(__file__).resolve().parent
DATA = SHIPPED / "data"
PROMPTS = SHIPPED / "prompts"
GPT2_TOKENIZER = SHIPPED / "gpt2-tokenizer"
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def chosen_dir(given, flag, variable, shipped):
    """(directory, what named it): ``given`` (the flag's value), else ``$variable``, else ``shipped``."""
    if given:
        directory, source = Path(given), flag
    elif os.environ.get(variable):
        directory, source = Path(os.environ[variable]), f"${variable}"
    else:
        directory, source = shipped, "the copy shipped with minway"
    if not directory.is_dir():
        raise MinwayError(f"{directory} ({source}) is not a directory"
                          + (": reinstall minway" if directory == shipped else ""))
    return directory, source


def prompts_dir(given=None):
    """The paper's prompt files: --prompts-dir, else $MINWAY_PROMPTS, else the shipped ones."""
    return chosen_dir(given, "--prompts-dir", "MINWAY_PROMPTS", PROMPTS)[0]


def tokenizer_dir(given=None):
    """GPT-2's vocab.json and merges.txt: --tokenizer, else $MINWAY_TOKENIZER, else the shipped ones."""
    directory, source = chosen_dir(given, "--tokenizer", "MINWAY_TOKENIZER", GPT2_TOKENIZER)
    for file in TOKENIZER_FILES:
        if not (directory / file).is_file():
            raise MinwayError(f"{directory / file} is missing: {source} must name a directory holding GPT-2's "
                              f"vocab.json and merges.txt")
    return directory
