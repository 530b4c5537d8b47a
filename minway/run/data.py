"""Datasets: finding, reading, k-shot sampling and tokenising.

Layouts read (``text<TAB>label`` with a header line, label an integer; each file
``.tsv`` or gzipped ``.tsv.gz``):

    <data-dir>/<task>/{train,test}.tsv                    full splits
    <data-dir>/k-shot/<task>/<k>-<seed>/{train,test}.tsv  LM-BFF k-shot splits

A task of a task file names its own files, in that format or as JSON lines (``.jsonl``,
``{"text": ..., "label": 0}`` a line), relative to the data directory, which is then the task
file's own unless ``--data-dir`` names another (``minway.run.task_file``).

The data directory is ``--data-dir``, else ``$MINWAY_DATA``, else the five tasks
that ship with minway (``minway/resources/data``), then the download cache. A
task found in none of them is downloaded from the Hugging Face Hub into the cache
(``$XDG_CACHE_HOME/minway/data``, by default ``~/.cache/minway/data``) when
``datasets`` is installed and the network answers; otherwise a one-line error
says what to do. ``python -m minway.run.data agnews`` downloads a task on demand:
the whole AG News train set (120,000 rows), of which minway ships a 20,000-row subset.

The rows trained on (``--train-split``): ``released``, the released code's split, cuts
the training file as its data script (``generate_k_shot_data.py``, the seed 100 that
its ``main.py`` reads) does: NumPy's legacy generator seeded with 100 shuffles the rows
(for AG News, each label's rows in turn, the labels in the order they first appear in
the file), the first ``int(0.9 * n)`` are trained on and the others are the dev set;
``all`` trains on the whole file, without a dev set.
"""
import csv
import gzip
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minway import resources
from minway.errors import MinwayError
from minway.run.cli import Parser, run_cli
from minway.run.files import atomic_write_text, plain_directory, regular_file
from minway.tasks import TASKS, Task, get_task

SHIPPED_DATA = resources.DATA
# csv's default limit of a field, 128 KiB, is less than some long documents; past this one a text is a mistake
MAX_FIELD = 16 * 2 ** 20
csv.field_size_limit(MAX_FIELD)
MAX_LINE = MAX_FIELD + 64  # a text and its label
MAX_DATA_FILE = 2 ** 32    # 4 GiB: AG News, the largest of the paper's, is 30 MB
LABEL = re.compile(r"[0-9]+")  # str.isdigit() also takes digits int() does not read, such as '²'

TRAIN_SPLITS = ("released", "all")
RELEASED_SEED = 100            # the seed of the released split (main.py's --seed, the first of its data script's)
SPLIT_PER_LABEL = ("agnews",)  # the tasks its data script cuts label by label (its Zhang et al. datasets)
SHIPPED_SUBSET_NOTE = {
    "agnews": "note: the AG News train file that ships with minway is a balanced 20,000-row subset of the official "
              "120,000 rows (minway/resources/data/agnews/README.md); `python -m minway.run.data agnews` downloads "
              "the whole set, for --data-dir",
}

# Hub copies of the tasks: (dataset id, text column, label column or None, {source label name: our label}).
HUB_SOURCES = {
    "sst2": ("SetFit/sst2", "text", "label_text", {"negative": 0, "positive": 1}),
    "sst5": ("SetFit/sst5", "text", "label_text",
             {"very negative": 0, "negative": 1, "neutral": 2, "positive": 3, "very positive": 4}),
    "agnews": ("fancyzhx/ag_news", "text", None, {0: 0, 1: 1, 2: 2, 3: 3}),
    "subj": ("SetFit/subj", "text", "label_text", {"subjective": 0, "objective": 1}),
    "trec": ("CogComp/trec", "text", "coarse_label", {2: 0, 1: 1, 0: 2, 3: 3, 4: 4, 5: 5}),
}


@dataclass(frozen=True)
class Example:
    text: str
    label: int


def download_dir():
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minway" / "data"


def data_dir_candidates(data_dir=None):
    """(directories to search, what named them: "--data-dir", "$MINWAY_DATA" or None for the defaults)."""
    if data_dir:
        return [Path(data_dir)], "--data-dir"
    if os.environ.get("MINWAY_DATA"):
        return [Path(os.environ["MINWAY_DATA"])], "$MINWAY_DATA"
    return [SHIPPED_DATA, download_dir()], None


def _lines(f, path):
    """The lines of the open file ``f``, none read past MAX_LINE characters: a file with no line end
    (a device, a sparse file) is refused before it fills memory."""
    while line := f.readline(MAX_LINE + 1):
        if len(line) > MAX_LINE:
            raise MinwayError(f"{path} has a line of more than {MAX_LINE:,} characters: one example a line, "
                              f"a text of at most {MAX_FIELD // 2 ** 20} MiB")
        yield line


def read_tsv(path, n_classes):
    path = regular_file(path, "data file", MAX_DATA_FILE)
    examples = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        reader = csv.reader(_lines(f, path), delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            rows = list(reader)
        except (gzip.BadGzipFile, EOFError) as e:
            raise MinwayError(f"{path} is not a complete gzip file ({e})") from None
        except UnicodeDecodeError as e:
            raise MinwayError(f"{path} is not UTF-8 text ({e}): save it as UTF-8") from None
        except csv.Error as e:
            raise MinwayError(f"{path}:{reader.line_num + 1} cannot be read ({e}; a text may have at most "
                              f"{MAX_FIELD // 2 ** 20} MiB)") from None
    header = rows[0] if rows else None
    if header is None or [h.strip().lower() for h in header[:2]] != ["text", "label"]:
        raise MinwayError(f"{path} must start with the header line 'text<TAB>label'")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not LABEL.fullmatch(row[1].strip()) or not 0 <= int(row[1]) < n_classes:
            raise MinwayError(f"{path}:{line} is not 'text<TAB>label' with a label in 0..{n_classes - 1}")
        if not row[0].strip():
            raise MinwayError(f"{path}:{line} has an empty text: remove the line or give it a text")
        examples.append(Example(row[0], int(row[1])))
    if not examples:
        raise MinwayError(f"{path} has no examples")
    return examples


def read_jsonl(path, n_classes):
    path = regular_file(path, "data file", MAX_DATA_FILE)
    with open(path, encoding="utf-8") as f:
        try:
            examples = [_json_example(text, path, line, n_classes)
                        for line, text in enumerate(_lines(f, path), start=1) if text.strip()]
        except UnicodeDecodeError as e:
            raise MinwayError(f"{path} is not UTF-8 text ({e.reason}): save it as UTF-8") from None
    if not examples:
        raise MinwayError(f"{path} has no examples")
    return examples


def _json_example(text, path, line, n_classes):
    try:
        row = json.loads(text)
    except (ValueError, RecursionError):
        row = None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip() or \
            type(row.get("label")) is not int or not 0 <= row["label"] < n_classes:
        raise MinwayError(f"{path}:{line} is not a JSON object with a non-empty \"text\" and a \"label\" "
                          f"in 0..{n_classes - 1}")
    return Example(row["text"], row["label"])


def find_split(task: Task, split, data_dir=None, k_shot=None):
    """Path of a split: a task file's task names its files; a task of the paper's is looked up by its
    name, ``k_shot=(k, seed)`` in the LM-BFF k-shot layout."""
    if task.train_file:
        path = Path(data_dir or ".") / (task.train_file if split == "train" else task.test_file)
        if not path.is_file():
            raise MinwayError(f"no {path}, the {split} file of task {task.name}: pass --data-dir with the "
                              f"directory that holds its data files")
        return path
    relative = Path(task.name) / f"{split}.tsv"
    if k_shot:
        relative = Path("k-shot") / task.name / f"{k_shot[0]}-{k_shot[1]}" / f"{split}.tsv"
    candidates, source = data_dir_candidates(data_dir)
    for directory in candidates:
        for path in (directory / relative, directory / relative.with_suffix(".tsv.gz")):
            if path.is_file():
                return path
    layout = "<task>/{train,test}.tsv or .tsv.gz (text<TAB>label)"
    if source:
        raise MinwayError(f"no {relative} in {candidates[0]} (named by {source}): the directory must hold "
                          f"{layout}; without {source}, the data that ships with minway is used")
    if not k_shot and download(task, download_dir()):
        return download_dir() / relative
    raise MinwayError(f"no {relative} in {' or '.join(str(c) for c in candidates)}, and it could not be "
                      f"downloaded: pass --data-dir DIR holding {layout}, set $MINWAY_DATA, or "
                      f"`pip install minway[datasets]` to download it")


def load_split(task: Task, split, data_dir=None, k_shot=None):
    path = find_split(task, split, data_dir, k_shot)
    return (read_jsonl if path.suffix == ".jsonl" else read_tsv)(path, task.n_classes)


def released_split(examples, per_label=False):
    """(train, dev): the rows of a training file cut as the released code's data script cuts it."""
    rng = np.random.RandomState(RELEASED_SEED)
    groups = {}
    for example in examples:  # dicts keep the order in which the labels first appear
        groups.setdefault(example.label if per_label else None, []).append(example)
    train, dev = [], []
    for rows in groups.values():
        shuffled = [rows[i] for i in rng.permutation(len(rows))]  # what np.random.shuffle(rows) makes of them
        cut = int(0.9 * len(rows))  # as the released code computes it, in floating point
        train += shuffled[:cut]
        dev += shuffled[cut:]
    return train, dev


def training_rows(task: Task, train_split, data_dir=None):
    """(train, dev, path of the training file) of ``task`` under ``train_split`` (TRAIN_SPLITS)."""
    path = find_split(task, "train", data_dir)
    rows = load_split(task, "train", data_dir)
    if train_split == "all":
        return rows, [], path
    return (*released_split(rows, task.name in SPLIT_PER_LABEL), path)


def shipped_subset_note(task: Task, path):
    """The note a run reports when it trained on a shipped file that is a subset of its dataset, else None."""
    shipped = Path(path).resolve().is_relative_to(SHIPPED_DATA.resolve())
    return SHIPPED_SUBSET_NOTE.get(task.name) if shipped else None


def sample_per_class(examples, k, seed):
    """k examples of each class, drawn with ``seed``; all of a class when it has fewer."""
    rng = random.Random(seed)
    by_class = {}
    for example in examples:
        by_class.setdefault(example.label, []).append(example)
    chosen = [e for label in sorted(by_class) for e in rng.sample(by_class[label], min(k, len(by_class[label])))]
    rng.shuffle(chosen)
    return chosen


def download(task: Task, root):
    """Write ``root/<task>/{train,test}.tsv`` from the Hub; False when that is not possible here."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("MINWAY_OFFLINE") == "1":
        return False
    try:
        from datasets import load_dataset
    except ImportError:
        return False
    dataset_id, text_column, label_column, label_map = HUB_SOURCES[task.name]
    try:
        dataset = load_dataset(dataset_id)
    except Exception:  # network, authentication or a renamed dataset: not obtainable this way
        return False
    target = plain_directory(Path(root) / task.name, "the data directory")
    for split in ("train", "test"):
        rows = dataset[split]
        labels = rows[label_column or "label"]
        lines = [f"{' '.join(text.split())}\t{label_map[label]}\n"
                 for text, label in zip(rows[text_column], labels) if text.strip()]  # read_tsv refuses empty texts
        atomic_write_text(target / f"{split}.tsv", "text\tlabel\n" + "".join(lines), f"the {split} file")
    return True


def main(argv=None):
    p = Parser(prog="python -m minway.run.data", description="Download a task of the paper from the Hugging Face "
               "Hub (pip install minway[datasets]), e.g. the whole AG News train set, of which minway ships a "
               "subset; train on it with --data-dir.")
    p.add_argument("task", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--to", default=str(download_dir()), help="the data directory it goes into, as <task>/")
    args = p.parse_args(argv)
    task = get_task(args.task)
    if not download(task, args.to):
        raise MinwayError(f"{task.name} could not be downloaded: `pip install minway[datasets]`, and a network that "
                          f"reaches the Hugging Face Hub (without MINWAY_OFFLINE=1 or HF_HUB_OFFLINE=1)")
    print(f"written: {Path(args.to) / task.name}/{{train,test}}.tsv; train on it with --data-dir {args.to}")


if __name__ == "__main__":
    run_cli(main)
