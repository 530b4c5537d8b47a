"""The paper's experiments as grids of runs (section 4 of Khashabi et al.): tasks x target
groups x gammas x seeds x models. Free of torch, so that ``sweep.py --help`` answers at once.

A target group is one prompt file of the paper's release: NI (32 Natural Instructions
definitions), PILE (30 sentences), TRUE (5 true definitions of each task) and PILE-4 ...
PILE-56 (PILE sentences of exactly L tokens).
"""
from dataclasses import dataclass

PAPER_TASKS = ("sst2", "sst5", "agnews", "subj", "trec")
MODEL_SIZES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
PILE_LENGTHS = (4, 7, 14, 28, 56)
GROUP_FILES = {"NI": "natural_prompts.json", "PILE": "pile.json", "TRUE": "good_prompts.json",
               **{f"PILE-{n}": f"pile_n={n}.json" for n in PILE_LENGTHS}}


@dataclass(frozen=True)
class Grid:
    tasks: tuple[str | dict, ...]  # the paper's by name, or a task file's definition (minway.run.task_file)
    groups: tuple[str, ...]
    gammas: tuple[float, ...]
    seeds: tuple[int, ...] = (1, 10, 100)  # the released runs' train seeds
    models: tuple[str, ...] = ("gpt2-large",)
    targets_limit: int | None = None  # the first N targets of each group


PRESETS = {
    "main": Grid(PAPER_TASKS, ("NI", "PILE"), (0.01,)),                            # Table 2
    "gamma": Grid(("sst2", "agnews"), ("NI",), (0.001, 0.003, 0.005, 0.01, 0.02, 0.03)),  # Fig. 3
    "length": Grid(("sst2", "agnews"), tuple(f"PILE-{n}" for n in PILE_LENGTHS), (0.01,)),  # Fig. 4
    "size": Grid(("sst2",), ("PILE",), (0.003, 0.005, 0.01), models=MODEL_SIZES),   # Fig. 5
    "true": Grid(PAPER_TASKS, ("TRUE",), (0.01,)),                                  # Tables 4 and 5
}
