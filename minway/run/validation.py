"""The rules for what minway is given, in one place: a run's configuration (from a command
line, a run's config.json or a prompt file's metadata), a checkpoint's config.json and a
run checkpoint's contents. A value that breaks a rule is a MinwayError of one line that
names it, says what it may be, and what was given. Nothing here imports torch.
"""
import math
import numbers
import re

from minway.run.choices import ATTENTIONS, DTYPES, METRICS, TRAIN_SPLITS
from minway.errors import MinwayError

MAX_INT = 2 ** 63 - 1   # every count must fit a torch int64
MAX_SEED = 2 ** 32 - 1
FLOAT32_MAX = 3.4028234663852886e38  # gamma, lr and weight decay enter float32 arithmetic: past this, inf
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")

# A checkpoint's config.json: (key, smallest, largest). The upper bounds are far above any
# GPT-2 (gpt2-xl: 48 layers of width 1600); past them a config is a mistake, not a model.
PROJECTION_NUMBERS = ("f1", "f1_no_lemma", "f1_released_code", "position_match", "f1_ceiling")
MODEL_SIZES = (("vocab_size", 1, 10 ** 7), ("n_positions", 1, 2 ** 20), ("n_embd", 1, 2 ** 16),
               ("n_layer", 1, 1000), ("n_head", 1, 2 ** 16))
# A Llama or Qwen 2 config.json, as above (Llama 3.1 405B: 126 layers of width 16384, 128k positions)
LLAMA_SIZES = (("vocab_size", 1, 10 ** 7), ("max_position_embeddings", 1, 2 ** 24), ("hidden_size", 1, 2 ** 16),
               ("intermediate_size", 1, 2 ** 20), ("num_hidden_layers", 1, 1000), ("num_attention_heads", 1, 2 ** 16),
               ("num_key_value_heads", 1, 2 ** 16), ("head_dim", 2, 2 ** 12))


def is_count(value):
    """A whole number >= 0 (not a bool, which Python counts as one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0


def whole(name, value, low, high=MAX_INT):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MinwayError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        said = high < MAX_INT or value > high
        raise MinwayError(f"{name} must be at least {low}" + (f" and at most {high}" if said else "")
                          + f", got {value}")
    return int(value)


def real(name, value, low, high=math.inf, low_open=False, high_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise MinwayError(f"{name} must be a finite number, got {value!r}")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        bounds = [f"{'>' if low_open else '>='} {low:g}"]
        if high < math.inf:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        raise MinwayError(f"{name} must be {' and '.join(bounds)}, got {value:g}")
    return float(value)


def one_of(name, value, choices):
    if value not in choices:
        raise MinwayError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def text(name, value, optional=False):
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise MinwayError(f"{name} must be a non-empty text, got {value!r}")
    return value


def device(value):
    if not isinstance(value, str) or not DEVICE.fullmatch(value):
        raise MinwayError(f"--device must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def flag(field):
    return "--" + field.replace("_", "-")


def run_fields(fields, n_classes):
    """A run configuration's fields ({name: value}), checked and normalised (floats as floats, the
    label map as a tuple); ``n_classes``: the task's."""
    f = dict(fields)
    if not isinstance(f["target"], str) or not f["target"].strip():
        raise MinwayError("the target text is empty: pass --target TEXT (or --target-file / --target-name)")
    text("--model", f["model"])
    if not isinstance(f["task"], dict):  # a task file's definition is checked as the file is read
        text("--task", f["task"])
    for name in ("data_dir", "target_name"):
        text(flag(name), f[name], optional=True)
    for name in ("steps", "batch_size", "eval_batch_size", "checkpoint_every"):
        f[name] = whole(flag(name), f[name], 1)
    f["eval_every"] = whole("--eval-every", f["eval_every"], 0)
    f["seed"] = whole("--seed", f["seed"], 0, MAX_SEED)
    for name in ("k", "max_eval"):
        if f[name] is not None:
            f[name] = whole(flag(name), f[name], 1)
    f["gamma"] = real("--gamma", f["gamma"], 0, FLOAT32_MAX)
    f["lr"] = real("--lr", f["lr"], 0, FLOAT32_MAX, low_open=True)
    f["weight_decay"] = real("--weight-decay", f["weight_decay"], 0, FLOAT32_MAX)
    f["clip"] = real("clip", f["clip"], 0, low_open=True)
    f["dropout"] = real("--dropout", f["dropout"], 0, 1, high_open=True)
    one_of("--metric", f["metric"], METRICS)
    one_of("--train-split", f["train_split"], TRAIN_SPLITS)
    one_of("--dtype", f["dtype"], DTYPES)
    one_of("--attention", f["attention"], ATTENTIONS)
    device(f["device"])
    if f["label_map"] is not None:
        f["label_map"] = label_map(f["label_map"], n_classes)
    return f


def label_map(values, n_classes):
    shown = ",".join(map(str, values)) if isinstance(values, (list, tuple)) else repr(values)
    if not isinstance(values, (list, tuple)) or sorted(values) != list(range(n_classes)) \
            or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise MinwayError(f"--label-map {shown} is not a permutation of the {n_classes} labels 0..{n_classes - 1}")
    return tuple(values)


def model_config(values, path):
    """A checkpoint's config.json ({key: value}, n_embd and n_head given): the sizes are whole numbers
    within MODEL_SIZES and n_head divides n_embd; raises naming ``path``."""
    try:
        for key, low, high in MODEL_SIZES:
            if key in values:
                whole(key, values[key], low, high)
        if "layer_norm_epsilon" in values:
            real("layer_norm_epsilon", values["layer_norm_epsilon"], 0, 1, low_open=True)
    except MinwayError as e:
        raise MinwayError(f"{path}: {e}: not a GPT-2 config, rewrite or re-download it") from None
    if values["n_embd"] % values["n_head"]:
        raise MinwayError(f"{path}: n_embd {values['n_embd']} is not divisible by n_head {values['n_head']}")


def llama_config(values, path):
    """A Llama or Qwen 2 checkpoint's config.json ({key: value}, its sizes given, head_dim and
    num_key_value_heads filled in): whole sizes within LLAMA_SIZES, num_key_value_heads dividing
    num_attention_heads, an even head_dim (the rotation turns pairs), a positive epsilon; raises naming
    ``path``."""
    try:
        for key, low, high in LLAMA_SIZES:
            whole(key, values[key], low, high)
        real("rms_norm_eps", values.get("rms_norm_eps", 1e-6), 0, 1, low_open=True)
    except MinwayError as e:
        raise MinwayError(f"{path}: {e}: not a Llama or Qwen 2 config, rewrite or re-download it") from None
    if values["num_attention_heads"] % values["num_key_value_heads"]:
        raise MinwayError(f"{path}: num_key_value_heads {values['num_key_value_heads']} does not divide "
                          f"num_attention_heads {values['num_attention_heads']}")
    if values["head_dim"] % 2:
        raise MinwayError(f"{path}: head_dim {values['head_dim']} is odd: rotary positions turn pairs of coordinates")


def results(values, path):
    """A finished run's results.json as read back: what the summary, the report and the figures read
    of it, of the right types."""
    try:
        if not isinstance(values, dict):
            raise MinwayError(f"a JSON {type(values).__name__}, not an object")
        for name in ("accuracy", "prompt_f1"):
            real(name, values.get(name), 0, 1)
        not_finite = values.get("not_finite")
        if values.get("c_dist") is not None or not (isinstance(not_finite, dict) and "c_dist" in not_finite):
            real("c_dist", values.get("c_dist"), 0)  # null only where "not_finite" says why
        whole("n_test", values.get("n_test"), 0)
        one_of("metric", values.get("metric"), METRICS)
        text("run_id", values.get("run_id"))
        ids = values.get("target_ids")
        if not isinstance(ids, list) or not ids or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise MinwayError(f"target_ids must be a list of token ids, got {ids!r}")
        if not isinstance(values.get("config"), dict) or not isinstance(values.get("projections"), dict) \
                or values["metric"] not in values["projections"]:
            raise MinwayError("config and projections must be objects, with a projection under its metric")
        for metric, projection in values["projections"].items():
            projection = projection if isinstance(projection, dict) else {}
            for name in PROJECTION_NUMBERS:
                real(f"{metric} {name}", projection.get(name), 0, 1)
            if not isinstance(projection.get("unreachable_target_tokens"), list) \
                    or not isinstance(projection.get("marked"), str):
                raise MinwayError(f"the {metric} projection lacks its unreachable tokens or its marked text")
        if "hard_prompt_accuracy" in values:
            real("hard_prompt_accuracy", values["hard_prompt_accuracy"], 0, 1)
        if "compare" in values:
            compare = values["compare"] if isinstance(values["compare"], dict) else {}
            for name in ("accuracy_unconstrained", "accuracy_constrained", "f1_unconstrained"):
                real(f"compare {name}", compare.get(name), 0, 1)
            if compare.get("relative_drop") is not None:
                real("compare relative_drop", compare["relative_drop"], -math.inf)
    except MinwayError as e:
        raise MinwayError(f"{path} is not a minway results file ({e}): pass --force to train the run "
                          f"again") from None
    return values


def run_checkpoint(path, step, steps, prompt, adam, shape):
    """A run's checkpoint as read back: step in [0, steps], a finite prompt of the run's shape (L, d)
    exactly, and an AdamW state of the same shape, finite, with a step of its own no larger."""
    advice = "delete it to restart the run from scratch"
    if not 0 <= step <= steps:
        raise MinwayError(f"{path} is at step {step}, outside this run's 0..{steps}: {advice}")
    if tuple(prompt.shape) != tuple(shape):
        raise MinwayError(f"{path} holds a prompt of shape {tuple(prompt.shape)}, but this run's is "
                          f"{tuple(shape)}: {advice}")
    tensors = [prompt] + ([adam["exp_avg"], adam["exp_avg_sq"]] if adam else [])
    if any(tuple(t.shape) != tuple(shape) for t in tensors):
        raise MinwayError(f"{path} holds an optimiser state of another shape than its prompt: {advice}")
    if not all(t.is_floating_point() and bool(t.isfinite().all()) for t in tensors):
        raise MinwayError(f"{path} holds NaN, infinite or non-float values: {advice}")
    if adam and not (0 <= adam["step"] <= step and float(adam["exp_avg_sq"].min()) >= 0):
        raise MinwayError(f"{path} holds an inconsistent optimiser state: {advice}")
