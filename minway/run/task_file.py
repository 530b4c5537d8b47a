"""A task of your own, defined by a JSON file:

    {
      "name": "topic",
      "template": " Topic: {}.",
      "label_words": ["food", "sports"],
      "train_file": "train.jsonl",
      "test_file": "test.tsv",
      "max_input_tokens": 112,
      "batch_size": 8
    }

name              names the task's runs: letters, digits, '_', '.' and '-'; not one of the paper's tasks
template          each label's option text, "{}" standing for its label word. It follows the input
                  text directly, so it starts with the space between them, as the paper's do (" It was {} .")
label_words       at least two, distinct; a label in the data is an index into them (0, 1, ...)
train_file,       TSV (a header line "text<TAB>label", then one example a line; .tsv or .tsv.gz) or JSON
test_file         lines ({"text": "...", "label": 0} a line; .jsonl), relative to the task file's directory
max_input_tokens  each text is cut to its first this many tokens (default 112, as the released code)
batch_size        training examples per step (default 8)

The options are split as the paper's are (``minway.tasks``): the tokens that all options
start with end every input and carry no loss; the rest of each option, then end-of-text,
is its output. A run keeps the definition (these fields, defaults filled in) as its task,
and its id hashes it, so that a run is measured again without the file and a changed
definition is another run. The data files are looked up in the run's data directory: the
task file's, unless ``--data-dir`` names another.
"""
import dataclasses
from pathlib import Path

from minway.errors import MinwayError
from minway.run.files import read_json
from minway.tasks import TASKS, Task, canonical_name

FIELDS = [f.name for f in dataclasses.fields(Task)]
REQUIRED = ("name", "template", "label_words", "train_file", "test_file")
DATA_SUFFIXES = (".tsv", ".tsv.gz", ".jsonl")
MAX_TASK_FILE = 2 ** 20  # a task's definition is a few hundred bytes


def read_task_file(path):
    """The task's definition: the file's fields, checked, with the defaults filled in."""
    path = Path(path)
    if not path.exists():
        raise MinwayError(f"task file {path} does not exist")
    fields = read_json(path, "task file", MAX_TASK_FILE, "write the task's fields in it, as a JSON object")
    if not isinstance(fields, dict):
        raise MinwayError(f"task file {path} must hold a JSON object: the task's fields")
    unknown = [key for key in fields if key not in FIELDS]
    if unknown:
        raise MinwayError(f"task file {path} has the unknown field {unknown[0]!r}: the fields are {', '.join(FIELDS)}")
    missing = [key for key in REQUIRED if key not in fields]
    if missing:
        raise MinwayError(f"task file {path} lacks {', '.join(missing)}")
    try:
        task = Task(**fields)
    except MinwayError as e:
        raise MinwayError(f"task file {path}: {e}") from None
    if canonical_name(task.name) in TASKS:
        raise MinwayError(f"task file {path}: the name {task.name!r} is one of the paper's tasks: give yours another")
    for key in ("train_file", "test_file"):
        if not getattr(task, key).endswith(DATA_SUFFIXES):
            raise MinwayError(f"task file {path}: {key} {getattr(task, key)!r} must end in "
                              f"{', '.join(DATA_SUFFIXES)}")
    return {**dataclasses.asdict(task), "label_words": list(task.label_words)}  # as JSON gives it back


def data_dir_of(path):
    """The directory a task file's data files are relative to."""
    return str(Path(path).resolve().parent)
