"""Find a checkpoint (GPT-2, Llama, Qwen 2) from ``--model NAME_OR_PATH``.

In order: a directory path; ``weights/<name>/`` in this repository; the Hugging
Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``);
a download with ``huggingface_hub`` into ``weights/<name>/`` when it is installed
and the network answers; otherwise a one-line error that names the checkpoints there are
here (the demo's first) and says how to get the files, or how to make a random-weight
checkpoint instead. A name that looks like a path (``./x``, ``a/b/c``, or ``weights/x``
where ``weights/`` is a folder here) is a path: a missing one is never looked for on the
Hub, and its error names the existing paths closest to it. Free of torch.
"""
import os
from pathlib import Path

from minway.errors import MinwayError
from minway.run.files import read_json
from minway.run.suggest import did_you_mean, missing_path_advice

WEIGHTS_DIR = Path(__file__).resolve().parent
DEMO_NAME = "random-demo"  # the demo's random-weight checkpoint, weights/random-demo/ (weights.demo_checkpoint)
# what a download fetches: the config, the weights (one file, or shards and their index) and the tokenizer, of
# GPT-2 (vocab.json, merges.txt), Llama 3 (tokenizer.json) or Qwen 2.5 (all three)
NEEDED_FILES = ("config.json", "model*.safetensors", "model.safetensors.index.json", "vocab.json", "merges.txt",
                "tokenizer.json", "tokenizer_config.json")
BY_HAND = ("'*.json'", "'model*.safetensors'", "merges.txt")  # the same files (and a few small others), for a person
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


def looks_like_a_path(name):
    """Whether ``--model name`` is a path rather than a name of the Hub (``owner/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or \
        ("/" in name and Path(name.split("/")[0]).is_dir())


def resolve_checkpoint(name_or_path, allow_download=True):
    path = Path(name_or_path).expanduser()
    if path.is_file():
        raise MinwayError(f"--model {path} is a file: pass the directory that holds it ({path.parent})")
    if path.is_dir():
        if not is_checkpoint(path):
            raise MinwayError(f"{path} is not a checkpoint directory: it needs config.json and model.safetensors")
        return path
    name = str(name_or_path)
    if looks_like_a_path(name):
        here = local_checkpoints()
        advice = missing_path_advice(path) or (f"; {_listing(here)}" if here else "")
        raise MinwayError(f"checkpoint directory {path} does not exist{advice}")
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
    here = local_checkpoints()
    typo = "" if name in HUB_IDS else did_you_mean(name, [*HUB_IDS, *(n for n, _ in here)])
    if typo:
        raise MinwayError(f"no checkpoint {name!r} here, and it could not be downloaded: {typo}")
    get = (f"get {name} with `pip install huggingface_hub && hf download {hub_id(name)} --include "
           f"{' '.join(BY_HAND)} --local-dir {_as_given(local)}`")
    if here:
        raise MinwayError(f"no checkpoint {name!r} here, and it could not be downloaded; {_listing(here)}; or {get}")
    raise MinwayError(
        f"no checkpoint {name!r}: not a directory, not in {_as_given(WEIGHTS_DIR)}/, not in the Hugging Face cache "
        f"{hub_cache_dir()}, and it could not be downloaded: {get}, or pass --model DIR holding config.json, "
        f"model.safetensors (or its shards) and the tokenizer's files (a gated model, as Meta's Llama, needs "
        f"`hf auth login` first); offline, a random-weight checkpoint runs the whole pipeline, though its accuracy "
        f"means nothing: `python -m weights.random_checkpoint random-gpt2 --embedding-norm 3.9`, then --model "
        f"random-gpt2")


def local_checkpoints():
    """[(what --model would name it by, a note)] of the checkpoints there are here: those in weights/ (the
    demo's first), then those in the Hugging Face cache."""
    found = []
    if WEIGHTS_DIR.is_dir():
        directories = sorted((d for d in WEIGHTS_DIR.iterdir() if is_checkpoint(d)),
                             key=lambda d: (d.name != DEMO_NAME, d.name))
        for directory in directories:
            random = _random_weights(directory)
            note = "random weights, the demo's" if directory.name == DEMO_NAME and random else \
                "random weights" if random else ""
            found.append((_as_given(directory), note))
    cache = hub_cache_dir()
    if cache.is_dir():
        short = {repo: name for name, repo in HUB_IDS.items()}
        for repo in sorted(cache.glob("models--*")):
            repo_id = repo.name.removeprefix("models--").replace("--", "/")
            if find_in_hub_cache(repo_id, cache):
                found.append((short.get(repo_id, repo_id), "in the Hugging Face cache"))
    return found


def _listing(found):
    """"checkpoints here: ..." of ``local_checkpoints()``."""
    listed = ", ".join(f"{name} ({note})" if note else name for name, note in found[:6])
    more = f" and {len(found) - 6} more" if len(found) > 6 else ""
    return f"checkpoints here: {listed}{more}: pass one, e.g. --model {found[0][0]}"


def _random_weights(directory):
    try:
        config = read_json(directory / "config.json", "checkpoint config", 2 ** 26)
    except MinwayError:
        return False
    return isinstance(config, dict) and bool(config.get("minway_random_weights"))


def _as_given(path):
    """``path`` relative to the working directory when it is inside it, as a user would type it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)
