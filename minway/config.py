"""The configuration of one run, and the id that names its directory."""
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from minway.errors import MinwayError
from minway.tasks import get_task

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class RunConfig:
    task: str | dict               # a task of the paper by name, or a task file's definition (minway.task_file)
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
        if self.label_map is not None:  # JSON gives lists back
            object.__setattr__(self, "label_map", tuple(self.label_map))
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", get_task(self.task).batch_size)
        for name in ("steps", "batch_size", "checkpoint_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise MinwayError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.k is not None and self.k < 1:
            raise MinwayError(f"--k must be at least 1 example per class, got {self.k}")
        if self.gamma < 0 or self.lr <= 0:
            raise MinwayError(f"--gamma must be >= 0 and --lr > 0, got gamma {self.gamma} and lr {self.lr}")
        if not 0 <= self.dropout < 1:
            raise MinwayError(f"--dropout must be in [0, 1), got {self.dropout}")

    def run_id(self):
        """Readable and unique: what identifies the result, plus a hash of everything else."""
        digest = hashlib.sha1(json.dumps(self.result_defining(), sort_keys=True).encode()).hexdigest()[:8]
        name = self.target_name or re.sub(r"[^A-Za-z0-9]+", "-", self.target).strip("-")[:24]
        return f"{get_task(self.task).name}-{Path(self.model).name}-{name}-g{self.gamma:g}-s{self.seed}-{digest}"

    def result_defining(self):
        """The fields that change the trained prompt (not where data comes from or how often we log)."""
        fields = asdict(self)
        for key in ("data_dir", "eval_every", "checkpoint_every", "eval_batch_size", "target_name"):
            fields.pop(key)
        return fields

    def setup_key(self):
        """Runs with equal keys share one model and data set (and can train in one batch)."""
        return (self.model, get_task(self.task), self.data_dir, self.k, self.seed if self.k else None,
                self.label_map, self.max_eval, self.device, self.dtype, self.attention)

    def schedule_key(self):
        """Runs with equal keys follow the same optimiser schedule."""
        return (self.steps, self.batch_size, self.lr, self.weight_decay, self.clip, self.dropout)
