"""The configuration of one run, and the id that names its directory. Free of torch: the command
lines check a configuration, and find its run, before they import torch."""
import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from minway.run import validation
from minway.errors import MinwayError
from minway.tasks import get_task

@dataclass(frozen=True)
class RunConfig:
    task: str | dict               # a task of the paper by name, or a task file's definition (minway.run.task_file)
    target: str
    model: str = "gpt2-large"
    gamma: float = 0.01
    steps: int = 2000
    batch_size: int | None = None  # None: the task's (8; 4 for agnews and subj, as the released code)
    lr: float = 0.01
    weight_decay: float = 0.0
    clip: float = 1.0
    dropout: float = 0.1           # GPT-2's dropout while the prompt trains, as the released code; 0: none
    seed: int = 1
    metric: str = "dot"
    k: int | None = None
    # the rows of the training file trained on: "released" (the released code's 90 %, the other 10 % the dev set)
    # or "all"; None: released for a task of the paper, all for a task file's (minway.run.data.TRAIN_SPLITS)
    train_split: str | None = None
    label_map: tuple[int, ...] | None = None  # train and test towards label_map[y] instead of y
    data_dir: str | None = None
    max_eval: int | None = None
    eval_batch_size: int = 32
    eval_every: int = 0
    checkpoint_every: int = 100
    device: str = "auto"
    dtype: str = "fp32"
    attention: str = "auto"
    target_name: str | None = None

    def __post_init__(self):
        # a task of the paper by its name, or a task file's definition (checked when the file was read)
        task = get_task(self.task if isinstance(self.task, dict) else validation.text("--task", self.task))
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", task.batch_size)
        if self.train_split is None:
            object.__setattr__(self, "train_split", "all" if isinstance(self.task, dict) else "released")
        checked = validation.run_fields(asdict(self), task.n_classes)
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values, source):
        """A RunConfig read back from JSON (a run's config.json, a prompt file's metadata), checked as one
        from the command line is; ``source`` names the file in the error."""
        names = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or not {"task", "target"} <= set(values) or set(values) - names:
            raise MinwayError(f"{source} does not hold a minway run configuration: was it written by minway?")
        try:  # a run written before the released split existed trained on the whole file
            return cls(**{"train_split": "all", **values})
        except MinwayError as e:
            raise MinwayError(f"{source} holds an invalid run configuration ({e}): was it edited?") from None

    def run_id(self):
        """Readable and unique: what identifies the result, plus a hash of everything else."""
        defining = json.dumps(self.result_defining(), sort_keys=True, allow_nan=False)
        digest = hashlib.sha1(defining.encode()).hexdigest()[:8]
        name = slug(self.target_name) if self.target_name else \
            re.sub(r"[^A-Za-z0-9]+", "-", self.target).strip("-")[:24]
        model = slug(Path(self.model).name)
        return f"{get_task(self.task).name}-{model}-{name}-g{self.gamma:g}-s{self.seed}-{digest}"

    def result_defining(self):
        """The fields that change the trained prompt (not where data comes from or how often we log). A run
        on the whole training file keeps the id it had before the released split existed."""
        values = asdict(self)
        for key in ("data_dir", "eval_every", "checkpoint_every", "eval_batch_size", "target_name"):
            values.pop(key)
        if values["train_split"] == "all":
            values.pop("train_split")
        return values

    def setup_key(self):
        """Runs with equal keys share one model and data set (and can train in one batch)."""
        return (self.model, get_task(self.task), self.data_dir, self.train_split, self.k,
                self.seed if self.k else None, self.label_map, self.max_eval, self.device, self.dtype, self.attention)

    def schedule_key(self):
        """Runs with equal keys follow the same optimiser schedule."""
        return (self.steps, self.batch_size, self.lr, self.weight_decay, self.clip, self.dropout)


def slug(name, length=48):
    """``name`` as part of a directory name: kept when it is letters, digits and ``_.=-`` (at most ``length``,
    not starting with a dot), else those characters of it and a hash of the whole, so that two names never
    meet. A name from a prompts file or the command line can thus never reach outside ``--out``."""
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "-", name).strip("-.")
    if safe == name and len(name) <= length:
        return name
    return f"{safe[:length]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}".lstrip("-")
