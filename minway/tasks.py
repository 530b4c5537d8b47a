"""The five classification tasks of the paper, in the direct formulation of Min et al. (2021).

The input sentence is followed by an output text whose tokens carry the loss; the
label word fills it (template index 1 of the paper's reference code). Label order
is that of the data files (``minway/resources/data/<task>/README.md``).
"""
from dataclasses import dataclass

from minway.errors import MinwayError


@dataclass(frozen=True)
class Task:
    name: str
    template: str                 # output text, "{}" stands for the label word
    label_words: tuple[str, ...]  # index = label id in the data files
    max_input_tokens: int         # inputs are truncated to this; the output text never is

    @property
    def n_classes(self):
        return len(self.label_words)

    def output_text(self, label):
        return self.template.format(self.label_words[label])


TASKS = {
    "sst2": Task("sst2", " It was {} .", ("terrible", "great"), 128),
    "sst5": Task("sst5", " It was {} .", ("terrible", "bad", "okay", "good", "great"), 128),
    "agnews": Task("agnews", " Subject: {}.", ("World", "Sports", "Business", "Technology"), 256),
    "subj": Task("subj", " It's all {} .", ("subjective", "objective"), 256),
    # the " Q: {} : " ends in a space that GPT-2 would encode as a lone token carrying
    # loss; the reference code strips it, so we do too
    "trec": Task("trec", " Q: {} :", ("Description", "Entity", "Expression", "Human", "Location", "Number"), 128),
}


def canonical_name(name):
    """'SST-2', 'sst-5', 'AGNews', 'ag_news' -> the key in TASKS."""
    return "".join(c for c in name.lower() if c.isalnum())


def get_task(name):
    key = canonical_name(name)
    if key not in TASKS:
        raise MinwayError(f"unknown task {name!r}: use one of {', '.join(TASKS)}")
    return TASKS[key]
