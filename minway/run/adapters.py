"""Soft prompts of Hugging Face PEFT: its prompt-tuning adapters, read and written.

A PEFT prompt-tuning adapter (``PromptTuningConfig``, then ``save_pretrained``) is a directory:

    adapter_config.json        peft_type PROMPT_TUNING, num_virtual_tokens L, token_dim d,
                               num_transformer_submodules (1: a decoder such as GPT-2),
                               base_model_name_or_path (a Hub id or a directory), task_type ...
    adapter_model.safetensors  one tensor, prompt_embeddings (L, d): the soft prompt

PEFT puts the L vectors before the embeddings of the input ids, as minway puts its prompt
before the text, and neither adds a BOS token there: GPT-2's tokenizer adds none, and
minway's prompt takes the place the released code gave to BOS. (A prompt trained with PEFT
on inputs that begin with <|endoftext|> is measured by minway on inputs without it.) Qwen 2.5's
tokenizer adds none either. Llama 3's begins every text with <|begin_of_text|>, which minway's
Llama puts before the prompt (``minway.llama``) and PEFT after it: the vectors are the same, the
sequence the model reads is not.

    python -m minway.run.adapters export runs/<run-id> DIR    # a minway prompt as a PEFT adapter

PEFT loads the directory with ``PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(base), DIR)``
(``LlamaForCausalLM``, ``Qwen2ForCausalLM``); ``eval.py DIR`` reads it, or any prompt-tuning adapter of a
GPT-2, Llama or Qwen 2 model, back.
"""
# torch comes in with the functions that read or write tensors, so that the command line answers
# --help and a missing run at once
import json
import re
from pathlib import Path
from typing import NamedTuple

from safetensors import SafetensorError, safe_open

from minway.run.cli import Parser, run_cli
from minway.errors import MinwayError
from minway.run.files import atomic_write_json, plain_directory, read_json, regular_file
from minway.run.run_dirs import prompt_file
from weights.resolve import hub_id

MAX_ADAPTER_FILE = 2 ** 30  # far above an adapter's files (a prompt of gpt2-xl's whole context: 6.5 MB)

CONFIG, WEIGHTS, TENSOR = "adapter_config.json", "adapter_model.safetensors", "prompt_embeddings"
# the families minway runs, as PEFT records their classes and config.json their model_type
MODEL_CLASSES, MODEL_TYPES = ("GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM"), ("gpt2", "llama", "qwen2")
# other model families, named at the start of a word of a base model's name ("mistralai/Mistral-7B-v0.1")
OTHER_FAMILIES = re.compile(r"(?<![a-z])(mistral|mixtral|gemma|phi|falcon|bloom|opt|t5|bart|bert|roberta|"
                            r"pythia|gpt-?neo|gpt-?j|mpt|olmo|deepseek|starcoder|codegen|smollm)", re.IGNORECASE)


class Adapter(NamedTuple):
    prompt: "torch.Tensor"  # (L, d), float32
    base_model: str | None  # the adapter's base_model_name_or_path


def is_adapter(path):
    return (Path(path) / CONFIG).is_file()


def read_adapter(directory):
    """The prompt of a PEFT prompt-tuning adapter of a GPT-2, Llama or Qwen 2 model; anything else is refused in
    one line."""
    directory = Path(directory)
    config = _read_config(directory)
    if config.get("peft_type") != "PROMPT_TUNING":
        raise MinwayError(f"{directory} is a {config.get('peft_type')} adapter: minway reads prompt-tuning "
                          f"adapters (peft_type PROMPT_TUNING) only")
    if config.get("num_transformer_submodules") not in (None, 1):
        raise MinwayError(f"{directory} is an adapter of an encoder-decoder model (num_transformer_submodules "
                          f"{config['num_transformer_submodules']}): minway reads prompts of decoders (GPT-2, "
                          f"Llama, Qwen 2)")
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise MinwayError(f"{directory / CONFIG}: base_model_name_or_path must be a name, got {base!r}")
    family = _other_family(base, config)
    if family:
        raise MinwayError(f"{directory} is an adapter of {base or 'a model'} ({family}), not of a GPT-2, Llama or "
                          f"Qwen 2 model: minway reads prompts of those only")
    prompt = _read_prompt(directory / WEIGHTS)
    said = (config.get("num_virtual_tokens"), config.get("token_dim"))
    if prompt.dim() != 2 or any(n is not None and n != size for n, size in zip(said, prompt.shape)):
        raise MinwayError(f"{directory / WEIGHTS}: {TENSOR} has shape {tuple(prompt.shape)}, but {CONFIG} says "
                          f"{said[0]} virtual tokens of width {said[1]}")
    return Adapter(prompt.float(), base)


def _read_config(directory):
    path = directory / CONFIG
    if not path.exists():
        raise MinwayError(f"{directory} holds no {CONFIG}: not a PEFT adapter")
    config = read_json(path, "adapter config", MAX_ADAPTER_FILE, "save the adapter again")
    if not isinstance(config, dict):
        raise MinwayError(f"{path} must hold a JSON object")
    return config


def _other_family(base, config):
    """What says that the adapter's base model is of no family minway runs, if anything does: the class PEFT
    recorded, the model_type of the base model's config.json where that is a directory here, else the model's
    name."""
    mapping = config.get("auto_mapping")
    model_class = mapping.get("base_model_class") if isinstance(mapping, dict) else None
    if isinstance(model_class, str) and not model_class.startswith("GPT2") and model_class not in MODEL_CLASSES:
        return model_class
    if not base:
        return None
    local = Path(base) / "config.json"
    if local.is_file():
        try:
            model_type = json.loads(local.read_text(encoding="utf-8")).get("model_type")
        except (ValueError, RecursionError, AttributeError):  # not JSON, or JSON nested too deep, or not an object
            return None  # not readable: the checkpoint's own checks will say so
        return None if model_type in MODEL_TYPES else f"model_type {model_type!r}"
    named = OTHER_FAMILIES.search(base)
    return named.group(1) if named and "gpt2" not in base.lower().replace("-", "") else None


def _read_prompt(path):
    if not path.is_file():
        pickled = path.with_name("adapter_model.bin").is_file()
        raise MinwayError(f"{path.parent} holds no {WEIGHTS}" + (
            " but a pickle (adapter_model.bin), which minway does not read: save the adapter again with "
            "safe_serialization=True" if pickled else ""))
    regular_file(path, "adapter weights", MAX_ADAPTER_FILE)
    try:
        with safe_open(str(path), framework="pt") as f:
            if TENSOR not in f.keys():
                raise MinwayError(f"{path} holds no {TENSOR} tensor: not a prompt-tuning adapter")
            prompt = f.get_tensor(TENSOR)
    except (SafetensorError, OSError) as e:
        raise MinwayError(f"{path} is truncated or corrupt ({e})") from None
    if not prompt.is_floating_point():
        raise MinwayError(f"{path}: {TENSOR} holds {prompt.dtype} values, not a prompt's floating-point ones")
    if prompt.dim() == 2 and 0 in prompt.shape:
        raise MinwayError(f"{path}: {TENSOR} has shape {tuple(prompt.shape)}: a prompt of no vectors, or of "
                          f"vectors of no width, says nothing")
    if not bool(prompt.isfinite().all()):
        raise MinwayError(f"{path}: {TENSOR} holds values that are not finite: the adapter is corrupt")
    return prompt


def write_adapter(directory, prompt, base_model):
    """``prompt`` (L, d) as a PEFT prompt-tuning adapter of ``base_model`` (a Hub id or a directory).
    PEFT fills in what else it needs (layers, heads) from the base model as it loads the adapter."""
    from minway.run.storage import atomic_save

    directory = plain_directory(directory, "the adapter directory")
    config = {"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
              "num_virtual_tokens": prompt.shape[0], "token_dim": prompt.shape[1], "num_transformer_submodules": 1}
    atomic_save({TENSOR: prompt.detach().float().cpu().contiguous()}, directory / WEIGHTS, {"format": "pt"},
                "the adapter")
    atomic_write_json(directory / CONFIG, config, "the adapter's configuration")


def base_model_id(model):
    """What PEFT and transformers load ``--model`` by: a directory as an absolute path, a name as its Hub id."""
    return str(Path(model).resolve()) if Path(model).is_dir() else hub_id(model)


def export(run, out, force=False):
    """Write the prompt of a run as a PEFT adapter in ``out``; the run's RunConfig."""
    file = prompt_file(run)
    if is_adapter(out) and not force:
        raise MinwayError(f"{out} holds an adapter already: pass --force to overwrite it")
    from minway.run.storage import load_prompt

    prompt, config, _ = load_prompt(file)
    write_adapter(out, prompt, base_model_id(config.model))
    return config


def main(argv=None):
    parser = Parser(prog="python -m minway.run.adapters", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export_parser = commands.add_parser("export", help="write a minway prompt as a PEFT prompt-tuning adapter",
                                        description="Write a minway prompt as a PEFT prompt-tuning adapter.")
    export_parser.add_argument("run", help="a run directory holding prompt.safetensors (or the file itself)")
    export_parser.add_argument("out", help="the adapter directory to write")
    export_parser.add_argument("--force", action="store_true", help="overwrite an adapter already there")
    args = parser.parse_args(argv)
    config = export(args.run, args.out, args.force)
    print(f"written: {args.out}, a PEFT prompt-tuning adapter of {base_model_id(config.model)}")


if __name__ == "__main__":
    run_cli(main)
