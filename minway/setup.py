"""What the runs of one model and task share: the frozen model, tokenizer, and encoded data."""
import json
from pathlib import Path

import torch

from minway.config import DTYPES, RunConfig
from minway.data import load_split, sample_per_class
from minway.errors import MinwayError
from minway.prompt import METRICS
from minway.tasks import encode_inputs, encode_options, get_task
from minway.tokenizer import load_checkpoint_tokenizer
from weights import load_gpt2, resolve_checkpoint


def resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MinwayError("--device cuda was asked for but torch sees no CUDA device: use --device cpu")
    return device


class Setup:
    def __init__(self, config: RunConfig):
        self.task = get_task(config.task)
        if config.dtype not in DTYPES:
            raise MinwayError(f"unknown dtype {config.dtype!r}: use fp32 or bf16")
        label_map = config.label_map or tuple(range(self.task.n_classes))
        if sorted(label_map) != list(range(self.task.n_classes)):
            raise MinwayError(f"--label-map {','.join(map(str, label_map))} is not a permutation of the "
                              f"{self.task.n_classes} labels of {self.task.name}")
        self.device = torch.device(resolve_device(config.device))
        self.checkpoint_dir = resolve_checkpoint(config.model)
        self.random_weights = bool(json.loads((Path(self.checkpoint_dir) / "config.json").read_text())
                                   .get("minway_random_weights"))
        self.model = load_gpt2(self.checkpoint_dir, self.device, DTYPES[config.dtype], config.attention).freeze()
        self.tokenizer = load_checkpoint_tokenizer(self.checkpoint_dir)
        self.common, self.options = encode_options(self.task, self.tokenizer)

        train = load_split(self.task, "train", config.data_dir)
        if config.k:
            train = sample_per_class(train, config.k, config.seed)
        test = load_split(self.task, "test", config.data_dir)[:config.max_eval]
        self.train_inputs = self.encode_inputs(train)
        self.train_outputs = [self.options[label_map[e.label]] for e in train]
        self.test_inputs, self.test_labels = self.encode_inputs(test), [label_map[e.label] for e in test]

    def encode_inputs(self, examples):
        return encode_inputs(self.task, self.tokenizer, [e.text for e in examples], self.common)

    def target_ids(self, config: RunConfig):
        """The target's token ids, checked: not empty, and short enough for the model's context."""
        if config.metric not in METRICS:
            raise MinwayError(f"unknown metric {config.metric!r}: use one of {', '.join(METRICS)}")
        ids = self.tokenizer.encode(config.target)
        if not config.target.strip() or not ids:
            raise MinwayError("the target text is empty: pass --target TEXT (or --target-file / --target-name)")
        longest_input = max(len(i) for i in self.train_inputs + self.test_inputs)
        longest_output = max(len(o) for o in self.options)
        total = len(ids) + longest_input + longest_output
        if total > self.model.config.n_positions:
            raise MinwayError(f"target ({len(ids)} tokens) + longest input ({longest_input}) + output "
                              f"({longest_output}) = {total} tokens exceeds the model's context of "
                              f"{self.model.config.n_positions}: use a shorter target")
        return ids
