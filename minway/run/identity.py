"""What a run was trained on beyond its configuration: fingerprints of its data and of its weights.

A run's id names its configuration; the files behind ``--data-dir`` and ``--model`` may
change under the same names. So a run stores their fingerprints (in its checkpoints and
results), and a run is continued or reused only when the files it would use now have the
same ones; otherwise it is refused with a line that says so.

* data: a hash of the train and test files' contents (decompressed: a file gzipped or
  not is the same data); a few MB, read in milliseconds.
* weights: a hash of ``config.json``, of every safetensors file's header (each tensor's
  name, dtype, shape and offsets) and of ``SAMPLES`` blocks spread evenly over the
  tensors' bytes. Other weights, a fine-tuned or re-initialised model, another size or
  dtype, change the header or nearly every block; reading 1 MiB instead of 3 GB keeps the
  check at a few milliseconds, cold or warm. A single edited byte between two blocks is
  missed: that is corruption, not other weights, and the finite check at load catches
  the kind that matters (NaN, inf).
"""
import functools
import gzip
import hashlib
import json
from pathlib import Path

from minway.run.data import find_split
from minway.errors import MinwayError
from minway.tasks import get_task
from weights.resolve import resolve_checkpoint

SAMPLES, BLOCK = 64, 16 * 1024
MAX_HEADER = 100 * 2 ** 20  # safetensors' own limit


def identity(task, data_dir, checkpoint_dir):
    """{"data": fingerprint, "checkpoint": fingerprint} of the files a run of ``task`` would use."""
    task = get_task(task)
    paths = [find_split(task, split, data_dir) for split in ("train", "test")]
    return {"data": _cached(data_fingerprint, *paths),
            "checkpoint": _cached(checkpoint_fingerprint, *_checkpoint_files(checkpoint_dir))}


def identity_of(config):
    """The identity of the files ``config`` names, from the files alone (no model is loaded)."""
    return identity(config.task, config.data_dir, resolve_checkpoint(config.model))


def check_identity(source, stored, current):
    """Refuse what ``source`` stored (None: written before identities were) if it is not ``current``."""
    if stored is None:
        return
    for key, what in (("data", "data (--data-dir)"), ("checkpoint", "weights (--model)")):
        if not isinstance(stored, dict) or stored.get(key) != current[key]:
            raise MinwayError(f"{source} comes from training on other {what} than this run would use now: train "
                              f"it again with --force, or keep both with another --out")


def data_fingerprint(*paths):
    digest = hashlib.sha256()
    for path in paths:
        opener = gzip.open if Path(path).suffix == ".gz" else open
        try:
            with opener(path, "rb") as f:
                content = f.read()
        except (gzip.BadGzipFile, EOFError) as e:
            raise MinwayError(f"{path} is not a complete gzip file ({e})") from None
        digest.update(len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()[:32]


def checkpoint_fingerprint(*paths):
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            if path.suffix != ".safetensors":
                digest.update(f.read())
                continue
            size = path.stat().st_size
            length = int.from_bytes(f.read(8), "little")
            if not 0 < length <= min(MAX_HEADER, size - 8):
                raise MinwayError(f"{path} is truncated or corrupt (its header is cut): re-download it")
            digest.update(f.read(length))
            start, span = 8 + length, max(size - 8 - length - BLOCK, 0)
            for i in range(SAMPLES):
                f.seek(start + span * i // (SAMPLES - 1))
                digest.update(f.read(BLOCK))
    return digest.hexdigest()[:32]


def _checkpoint_files(directory):
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file() or not index.is_file():
        shards = ["model.safetensors"]
    else:
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise MinwayError(f"{index} is not a valid safetensors index (no weight_map): re-download it") from None
    return [directory / "config.json", *(directory / shard for shard in shards)]


def _cached(fingerprint, *paths):
    """``fingerprint(*paths)``, computed once per process while the files keep their size and time."""
    try:
        stamps = tuple((str(Path(p).resolve()), Path(p).stat().st_size, Path(p).stat().st_mtime_ns) for p in paths)
    except FileNotFoundError as e:
        raise MinwayError(f"{e.filename} is missing") from None
    return _memo(fingerprint, stamps)


@functools.lru_cache(maxsize=256)
def _memo(fingerprint, stamps):
    return fingerprint(*(Path(p) for p, _, _ in stamps))
