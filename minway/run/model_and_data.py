"""What the runs of one model and task share: the frozen model, tokenizer, and encoded data.

Everything that can be checked from files is checked before the model is loaded: the device,
the checkpoint's config, the data, and the memory the model will take.
"""
import torch

from minway.run import memory
from minway.run.config import RunConfig
from minway.run.data import load_split, sample_per_class, shipped_subset_note, training_rows
from minway.run.devices import check_attention
from minway.errors import MinwayError
from minway.run.identity import identity
from minway.tasks import encode_inputs, encode_options, get_task
from minway.run.bpe_files import checkpoint_tokenizer
from weights import load_model, read_config, resolve_checkpoint
from weights.checkpoint import has_random_weights

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # minway.run.choices.DTYPES
RANDOM_WEIGHTS_NOTE = ("NOTE: this checkpoint has random weights: its accuracy means nothing, and its prompt F1 only "
                       "shows how far gamma holds a prompt on these embeddings, not what trained weights would do; the pipeline "
                       "is what ran.")


def resolve_device(device):
    """``device`` (checked by RunConfig: auto, cpu, cuda or cuda:N) as one of the devices present."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MinwayError(f"--device {device} was asked for but torch sees no CUDA device: use --device cpu")
        index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise MinwayError(f"--device {device}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return device


class Setup:
    def __init__(self, config: RunConfig):
        self.task = get_task(config.task)
        label_map = config.label_map or tuple(range(self.task.n_classes))
        self.device = torch.device(resolve_device(config.device))
        check_attention(config.attention, self.device.type)
        self.dtype = DTYPES[config.dtype]
        self.checkpoint_dir = resolve_checkpoint(config.model)
        self.model_config = read_config(self.checkpoint_dir)
        self.random_weights = has_random_weights(self.checkpoint_dir)
        self.tokenizer = checkpoint_tokenizer(self.checkpoint_dir)
        self.common, self.options = encode_options(self.task, self.tokenizer)

        train, dev, train_file = training_rows(self.task, config.train_split, config.data_dir)
        # what the run's results say it trained on
        self.data = {"train_split": config.train_split, "train_file": str(train_file), "file_rows": len(train) + len(dev),
                     "k": config.k, "note": shipped_subset_note(self.task, train_file)}
        if config.k:
            train = sample_per_class(train, config.k, config.seed)
        self.data.update(train_rows=len(train), dev_rows=len(dev))
        dev = dev[:config.max_eval]
        test = load_split(self.task, "test", config.data_dir)[:config.max_eval]
        self.identity = identity(config.task, config.data_dir, self.checkpoint_dir)
        self.train_inputs = self.encode_inputs(train)
        self.train_outputs = [self.options[label_map[e.label]] for e in train]
        self.dev_inputs, self.dev_labels = self.encode_inputs(dev), [label_map[e.label] for e in dev]
        self.test_inputs, self.test_labels = self.encode_inputs(test), [label_map[e.label] for e in test]

        size = memory.model_bytes(self.model_config, self.dtype)
        memory.require(size, self.device, f"the model {config.model} ({memory.parameters(self.model_config):,} "
                                          f"parameters)", lambda _: "use --dtype bf16, a smaller model or a "
                                                                    "device with more memory")
        self.require_memory([config], training=True, model_loaded=False)
        self.model = load_model(self.checkpoint_dir, self.device, self.dtype, config.attention).freeze()

    def require_memory(self, configs, training=True, model_loaded=True):
        """Refuse, before allocating it, a training step of these prompts together or an evaluation batch
        that would not fit in the device's free memory; the message says what would. Every row is
        taken as long as the longest."""
        c, dtype, base = self.model_config, self.dtype, configs[0]
        # on a CPU a loaded model's pages may count as free (a mapped file), so it is counted again
        model = memory.model_bytes(c, dtype) if not model_loaded or self.device.type == "cpu" else 0
        prompt = max(len(self.tokenizer.encode(config.target)) for config in configs)
        longest_input = self.longest_input()
        option_lengths = list(map(len, self.options))
        if training:
            def step(batch):
                rows = memory.training_rows(len(configs), batch, prompt, longest_input, max(option_lengths),
                                            base.dropout > 0)
                return model + memory.pass_bytes(c, dtype, rows, True, base.attention, base.dropout > 0)
            batch = min(base.batch_size, len(self.train_inputs))
            memory.require(step(batch), self.device, f"a training step of {len(configs) * batch} examples",
                           lambda budget: self._fits("--batch-size", memory.largest(step, budget, batch)))

        def evaluation(batch):
            rows = memory.evaluation_rows(batch, prompt, longest_input, option_lengths)
            return model + memory.pass_bytes(c, dtype, rows, False, base.attention)
        batch = min(base.eval_batch_size, len(self.test_inputs))
        memory.require(evaluation(batch), self.device, f"an evaluation batch of {batch} examples",
                       lambda budget: self._fits("--eval-batch-size", memory.largest(evaluation, budget, batch)))

    @staticmethod
    def _fits(flag, largest):
        if largest < 1:
            return "not even one example fits beside the model: use --dtype bf16, a smaller model or a device " \
                   "with more memory"
        return f"{flag} {largest} fits"

    def longest_input(self):
        return max(map(len, self.train_inputs + self.dev_inputs + self.test_inputs))

    def encode_inputs(self, examples):
        return encode_inputs(self.task, self.tokenizer, [e.text for e in examples], self.common)

    def target_ids(self, config: RunConfig):
        """The target's token ids, checked: not empty, and short enough for the model's context."""
        ids = self.tokenizer.encode(config.target)
        if not config.target.strip() or not ids:
            raise MinwayError("the target text is empty: pass --target TEXT (or --target-file / --target-name)")
        longest_input = self.longest_input()
        longest_output = max(len(o) for o in self.options)
        total = len(ids) + longest_input + longest_output
        if total > self.model_config.n_positions:
            raise MinwayError(f"target ({len(ids)} tokens) + longest input ({longest_input}) + output "
                              f"({longest_output}) = {total} tokens exceeds the model's context of "
                              f"{self.model_config.n_positions}: use a shorter target")
        return ids
