"""The five classification tasks of the paper, in the direct formulation of Min et al. (2021).

Each label has an option text, the task's template filled with the label word (template
index 1 of the paper's released code): " It was great .", " It was terrible .". The
released code splits the options' tokens where they first differ:

    input  = text (its first max_input_tokens tokens)  + " It was"      no loss
    output = " great ."  + <|endoftext|>                                 the loss

The tokens that every option shares go after the input and carry no loss; the loss of an
example is the mean cross-entropy over the rest of its option and the end-of-text token.
Label order is that of the data files (``minway/resources/data/<task>/README.md``).

A user's task is a ``Task`` too, read from a file that names its data (``minway.run.task_file``);
a run keeps its definition, the dict of its fields, as its ``task``.
"""
import re
from dataclasses import dataclass
from typing import NamedTuple

from minway.errors import MinwayError


@dataclass(frozen=True)
class Task:
    name: str
    template: str                 # the option text, "{}" stands for the label word
    label_words: tuple[str, ...]  # index = label id in the data files
    max_input_tokens: int = 112   # the text is cut to its first this many tokens
    batch_size: int = 8           # training examples per step
    train_file: str | None = None  # a task file's data, relative to the run's data_dir; None: found by name
    test_file: str | None = None

    def __post_init__(self):
        """A definition read from a file arrives unchecked; each mistake is one line."""
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise MinwayError(f"task name {self.name!r} must be letters, digits, '_', '.' or '-' (it names run "
                              f"directories)")
        if not isinstance(self.template, str) or self.template.count("{}") != 1 or \
                any(brace in self.template.replace("{}", "") for brace in "{}"):
            raise MinwayError(f"template {self.template!r} must hold '{{}}', where the label word goes, once "
                              f"and no other brace")
        words = self.label_words
        if not isinstance(words, (list, tuple)) or len(words) < 2 or \
                not all(isinstance(w, str) and w.strip() for w in words) or len(set(words)) < len(words):
            raise MinwayError(f"label_words {words!r} must be a list of at least two distinct words")
        object.__setattr__(self, "label_words", tuple(words))  # JSON gives lists
        for name in ("max_input_tokens", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MinwayError(f"{name} must be a whole number of at least 1, got {value!r}")
        for name in ("train_file", "test_file"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and value):
                raise MinwayError(f"{name} must be a file name, got {value!r}")
        if (self.train_file is None) != (self.test_file is None):
            raise MinwayError("a task names both its train_file and its test_file, or neither")

    @property
    def n_classes(self):
        return len(self.label_words)

    def option_text(self, label):
        return self.template.format(self.label_words[label])


# The released code allows 128 tokens per example (256 for the long-input tasks, whose batch
# it halves) and cuts the text to 16 fewer, leaving room for the option.
TASKS = {
    "sst2": Task("sst2", " It was {} .", ("terrible", "great"), 112, 8),
    "sst5": Task("sst5", " It was {} .", ("terrible", "bad", "okay", "good", "great"), 112, 8),
    "agnews": Task("agnews", " Subject: {}.", ("World", "Sports", "Business", "Technology"), 240, 4),
    "subj": Task("subj", " It's all {} .", ("subjective", "objective"), 240, 4),
    # the released template "Q: %s : " is stripped before the space is put in front
    "trec": Task("trec", " Q: {} :", ("Description", "Entity", "Expression", "Human", "Location", "Number"), 112, 8),
}


class Options(NamedTuple):
    """A task's options as token ids, split the way the released code splits them."""
    common: list[int]          # the tokens all options start with: put after every input, no loss
    outputs: list[list[int]]   # per label: the rest of its option, then end-of-text; these carry the loss


def split_options(options, eot_id):
    """``Options`` of the token ids of each label's option text: the split is at the first
    position where the options differ."""
    differ = [i for i, tokens in enumerate(zip(*options)) if len(set(tokens)) > 1]
    if not differ:
        raise MinwayError("the options of the task do not differ within their shortest one's tokens: "
                          "make each label's option text differ before the shortest one ends")
    n = differ[0]
    return Options(list(options[0][:n]), [list(o[n:]) + [eot_id] for o in options])


def encode_options(task, tokenizer):
    return split_options([tokenizer.encode(task.option_text(c)) for c in range(task.n_classes)], tokenizer.eot_id)


def encode_inputs(task, tokenizer, texts, common):
    """Each text cut to the task's input length, then ``common``, the tokens all options share."""
    return [ids[:task.max_input_tokens] + common for ids in tokenizer.encode_batch(texts)]


def canonical_name(name):
    """'SST-2', 'sst-5', 'AGNews', 'ag_news' -> the key in TASKS."""
    return "".join(c for c in name.lower() if c.isalnum())


def get_task(task):
    """A task of the paper by its name, or a user's task from its definition (the dict of its fields)."""
    if isinstance(task, dict):
        try:
            return Task(**task)
        except TypeError as e:  # a field missing or unknown
            raise MinwayError(f"not a task definition ({e})") from None
    key = canonical_name(task)
    if key not in TASKS:
        raise MinwayError(f"unknown task {task!r}: use one of {', '.join(TASKS)} (or --task-file FILE)")
    return TASKS[key]
