"""Find a checkpoint (GPT-2, Llama, Qwen 2) from ``--model NAME_OR_PATH``.

In order: a directory path; ``weights/<name>/`` in this repository; the Hugging
Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``);
a download with ``huggingface_hub`` into ``weights/<name>/`` when it is installed
and the network answers; otherwise a one-line error that says how to get the files,
or how to make a random-weight checkpoint instead.
"""
import os
from pathlib import Path

from minway.errors import MinwayError

WEIGHTS_DIR = Path(__file__).resolve().parent
# what a download fetches: the config, the weights (one file, or shards and their index) and the tokenizer, of
# GPT-2 (vocab.json, merges.txt), Llama 3 (tokenizer.json) or Qwen 2.5 (all three)
NEEDED_FILES = ("config.json", "model*.safetensors", "model.safetensors.index.json", "vocab.json", "merges.txt",
                "tokenizer.json", "tokenizer_config.json")
HUB_IDS = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}


def hub_id(name):
    return HUB_IDS.get(name, name)


def is_checkpoint(directory):
    directory = Path(directory)
    return (directory / "config.json").is_file() and (
        (directory / "model.safetensors").is_file() or (directory / "model.safetensors.index.json").is_file())


def hub_cache_dir():
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def find_in_hub_cache(name, cache=None):
    """The snapshot directory of ``name`` in the hub cache, preferring the revision refs/main points to."""
    cache = Path(cache) if cache else hub_cache_dir()
    for repo_id in dict.fromkeys([hub_id(name), name]):
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        main = repo / "refs" / "main"
        candidates = [repo / "snapshots" / main.read_text().strip()] if main.is_file() else []
        candidates += sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
        for snapshot in candidates:
            if is_checkpoint(snapshot):
                return snapshot
    return None


def download(name, target):
    """Fetch the files of ``name`` from the Hugging Face Hub into ``target``; None if impossible."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("MINWAY_OFFLINE") == "1":
        return None
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        snapshot_download(hub_id(name), local_dir=str(target), allow_patterns=list(NEEDED_FILES))
    except Exception:  # any network, auth or not-found failure means: not obtainable this way
        return None
    return target if is_checkpoint(target) else None


def resolve_checkpoint(name_or_path, allow_download=True):
    path = Path(name_or_path).expanduser()
    if path.is_file():
        raise MinwayError(f"--model {path} is a file: pass the directory that holds it ({path.parent})")
    if path.is_dir():
        if not is_checkpoint(path):
            raise MinwayError(f"{path} is not a checkpoint directory: it needs config.json and model.safetensors")
        return path
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise MinwayError(f"checkpoint directory {path} does not exist")
    local = WEIGHTS_DIR / name.replace("/", "--")
    if is_checkpoint(local):
        return local
    cached = find_in_hub_cache(name_or_path)
    if cached:
        return cached
    if allow_download:
        downloaded = download(name_or_path, local)
        if downloaded:
            return downloaded
    raise MinwayError(
        f"no checkpoint {name_or_path!r}: not a directory, not in {WEIGHTS_DIR}/, not in the Hugging Face cache "
        f"{hub_cache_dir()}, and it could not be downloaded; get it with `pip install huggingface_hub && "
        f"hf download {hub_id(name_or_path)} --include {' '.join(map(_quoted, NEEDED_FILES))} --local-dir {local}`, "
        f"or pass --model DIR holding config.json, model.safetensors (or its shards) and the tokenizer's files (a "
        f"gated model, as Meta's Llama, needs `hf auth login` first); offline, a random-weight checkpoint runs the "
        f"whole pipeline, though its accuracy means nothing: `python -m weights.random_checkpoint random-gpt2 "
        f"--embedding-norm 3.9`, then --model random-gpt2")


def _quoted(pattern):
    return f"'{pattern}'" if "*" in pattern else pattern
