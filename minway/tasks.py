"""The five classification tasks of the paper, in the direct formulation of Min et al. (2021).

Each label has an option text, the task's template filled with the label word (template
index 1 of the paper's released code): " It was great .", " It was terrible .". The
released code splits the options' tokens where they first differ:

    input  = text (its first max_input_tokens tokens)  + " It was"      no loss
    output = " great ."  + <|endoftext|>                                 the loss

The tokens that every option shares go after the input and carry no loss; the loss of an
example is the mean cross-entropy over the rest of its option and the end-of-text token.
Label order is that of the data files (``minway/resources/data/<task>/README.md``).
"""
from dataclasses import dataclass
from typing import NamedTuple

from minway.errors import MinwayError


@dataclass(frozen=True)
class Task:
    name: str
    template: str                 # the option text, "{}" stands for the label word
    label_words: tuple[str, ...]  # index = label id in the data files
    max_input_tokens: int         # the text is cut to its first this many tokens
    batch_size: int               # training examples per step

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


def canonical_name(name):
    """'SST-2', 'sst-5', 'AGNews', 'ag_news' -> the key in TASKS."""
    return "".join(c for c in name.lower() if c.isalnum())


def get_task(name):
    key = canonical_name(name)
    if key not in TASKS:
        raise MinwayError(f"unknown task {name!r}: use one of {', '.join(TASKS)}")
    return TASKS[key]
