"""Checkpoints: loading variants, every bad input's message, resolution, random checkpoints."""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT
from fixtures import TOKENIZER_DIR, assert_one_line_error, run_in_process
from minway.run.cli import run_cli
from minway.errors import MinwayError
from minway.model import GPT2Config
from weights import demo_checkpoint, resolve
from weights.checkpoint import (all_finite, has_random_weights, load_gpt2, load_token_embeddings, read_config,
                                tensor_files)
from weights.random_checkpoint import GPT2_EMBEDDING_NORM, write_random_checkpoint
from weights.resolve import resolve_checkpoint

CONFIG = GPT2Config(vocab_size=50257, n_positions=32, n_embd=48, n_layer=2, n_head=3)
CHECKPOINT_FILES = {"config.json", "model.safetensors", "vocab.json", "merges.txt"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A random checkpoint written once; tests copy it and then edit the copy."""
    return write_random_checkpoint(tmp_path_factory.mktemp("source"), CONFIG, TOKENIZER_DIR, seed=0)


@pytest.fixture
def checkpoint(source, tmp_path):
    return shutil.copytree(source, tmp_path / "checkpoint")


@pytest.fixture(scope="module")
def reference(source):
    return load_gpt2(source).state_dict()


@pytest.mark.parametrize("attention", ["naive", "sdpa"])
def test_the_model_loads_with_the_attention_asked_for(source, attention):
    assert {block.attn.backend for block in load_gpt2(source, attention=attention).h} == {attention}


def rewrite(directory, edit):
    """Apply edit(tensors) to model.safetensors in place."""
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def assert_same_model(directory, reference):
    state = load_gpt2(directory).state_dict()
    assert state.keys() == reference.keys()
    for name in reference:
        assert torch.equal(state[name], reference[name]), name


def load_error(directory, match):
    """The MinwayError load_gpt2 raises on directory; checks it is one line matching ``match``."""
    with pytest.raises(MinwayError, match=match) as error:
        load_gpt2(directory)
    assert "\n" not in str(error.value)
    return str(error.value)


# --- layouts that load --------------------------------------------------------

def test_transformer_prefix_and_bare_names_load_identically(checkpoint, reference):
    rewrite(checkpoint, lambda t: t.update({f"transformer.{name}": t.pop(name) for name in list(t)}))
    assert all(name.startswith("transformer.") for name in load_file(checkpoint / "model.safetensors"))
    assert_same_model(checkpoint, reference)


@pytest.mark.parametrize("prefixed", [False, True])
def test_token_embeddings_alone_equal_the_models(checkpoint, prefixed):
    if prefixed:
        rewrite(checkpoint, lambda t: t.update({f"transformer.{name}": t.pop(name) for name in list(t)}))
    embeddings = load_token_embeddings(checkpoint)
    assert embeddings.dtype == torch.float32
    assert torch.equal(embeddings, load_gpt2(checkpoint).wte.weight.detach())


def test_sharded_checkpoint_loads_identically(checkpoint, reference):
    tensors = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, checkpoint / file, metadata={"format": "pt"})
    weight_map = {n: file for file, shard_names in shards.items() for n in shard_names}
    (checkpoint / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    assert_same_model(checkpoint, reference)


def test_reference_buffers_and_tied_head_are_ignored(checkpoint, reference):
    def add_extras(t):
        t["transformer.h.0.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
        t["h.1.attn.bias"] = torch.ones(1, 1, 32, 32).tril()
        t["h.1.attn.masked_bias"] = torch.tensor(-1e4)
        t["lm_head.weight"] = t["wte.weight"].clone()
    rewrite(checkpoint, add_extras)
    assert_same_model(checkpoint, reference)


def test_dtype_and_device_are_honoured(source, reference):
    model = load_gpt2(source, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert not model.training


def test_loading_never_unpickles(monkeypatch, source, reference):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (pickle) called while loading a checkpoint")
    monkeypatch.setattr(torch, "load", refuse)
    assert_same_model(source, reference)


# --- every bad input: one line that names the problem -------------------------

def test_missing_tensor(checkpoint):
    rewrite(checkpoint, lambda t: t.pop("h.1.mlp.c_fc.bias"))
    load_error(checkpoint, r"model\.safetensors in .* is missing tensor h\.1\.mlp\.c_fc\.bias for the config")


def test_several_missing_tensors_are_counted(checkpoint):
    rewrite(checkpoint, lambda t: [t.pop(n) for n in ("h.1.ln_2.weight", "h.1.ln_2.bias", "ln_f.bias")])
    load_error(checkpoint, r"is missing tensor h\.1\.ln_2\.bias and 2 more")


def test_unexpected_tensor(checkpoint):
    rewrite(checkpoint, lambda t: t.update({"h.2.ln_1.weight": torch.ones(48)}))
    load_error(checkpoint, r"model\.safetensors in .* has unexpected tensor h\.2\.ln_1\.weight: not a GPT-2 checkpoint")


def test_wrong_shape_names_file_and_tensor(checkpoint):
    # stored as nn.Linear's (out, in) instead of Conv1D's (in, out)
    rewrite(checkpoint, lambda t: t.update({"h.0.attn.c_attn.weight": t["h.0.attn.c_attn.weight"].T.contiguous()}))
    load_error(checkpoint, r"tensor h\.0\.attn\.c_attn\.weight in model\.safetensors has shape \(144, 48\), "
                           r"expected \(48, 144\)")


def test_one_value_that_is_not_finite_is_refused(checkpoint):
    def spoil(tensors):
        tensors["h.1.mlp.c_proj.weight"][5, 3] = float("nan")
    rewrite(checkpoint, spoil)
    load_error(checkpoint, r"tensor h\.1\.mlp\.c_proj\.weight in .*model\.safetensors holds NaN or infinite values")


def test_all_finite_is_the_exact_answer_when_the_sum_overflows():
    big = torch.full((4,), 3e38)
    assert not torch.isfinite(big.sum()) and all_finite(big)
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert not all_finite(torch.cat([big, torch.tensor([bad])])) and not all_finite(torch.tensor([0.0, bad]))


def test_config_for_another_size_is_a_shape_error(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "n_embd": 60}))
    load_error(checkpoint, r"tensor \S+ in model\.safetensors has shape .*expected .*config\.json")


def test_model_type_not_gpt2(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    load_error(checkpoint, r"config\.json has model_type 'llama'; minway runs GPT-2 checkpoints")


def test_config_missing_model_type(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    del config["model_type"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    load_error(checkpoint, r"has model_type None")


def test_config_not_an_object(checkpoint):
    (checkpoint / "config.json").write_text("[1, 2]")
    load_error(checkpoint, r"config\.json holds a JSON list, not an object")


@pytest.mark.parametrize("key, value", [("activation_function", "gelu"), ("activation_function", "relu"),
                                        ("scale_attn_weights", False), ("scale_attn_by_inverse_layer_idx", True),
                                        ("tie_word_embeddings", False), ("n_inner", 100)])
def test_config_of_a_gpt2_variant_is_refused(checkpoint, key, value):
    """Same tensor shapes, other computation: loading would silently give other logits."""
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, key: value}))
    load_error(checkpoint, rf"config\.json sets {key} to {re.escape(repr(value))}; minway")


@pytest.mark.parametrize("key, value", [("activation_function", "gelu_pytorch_tanh"), ("n_inner", None),
                                        ("n_inner", 4 * 48), ("tie_word_embeddings", True)])
def test_config_settings_that_mean_released_gpt2_load(checkpoint, reference, key, value):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, key: value}))
    assert_same_model(checkpoint, reference)


def test_config_lacking_sizes(checkpoint):
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 48}))
    load_error(checkpoint, r"lacks n_head, n_layer, vocab_size: not a GPT-2 config")


def test_config_heads_not_dividing_width(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "n_head": 5}))
    load_error(checkpoint, r"n_embd 48 is not divisible by n_head 5")


def test_config_invalid_json(checkpoint):
    (checkpoint / "config.json").write_text('{"model_type": "gpt2",\n "n_embd": ')
    load_error(checkpoint, r"config\.json is not valid JSON .*: re-download or rewrite it")


def test_config_missing(checkpoint):
    (checkpoint / "config.json").unlink()
    load_error(checkpoint, r"config\.json is missing: a checkpoint needs config\.json")


def test_no_safetensors_at_all(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(b"pickle")
    load_error(checkpoint, r"has no model\.safetensors .*safetensors checkpoints only")


def test_truncated_safetensors(checkpoint):
    path = checkpoint / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    load_error(checkpoint, r"model\.safetensors is truncated or corrupt .*re-download it")


def test_corrupt_header(checkpoint):
    (checkpoint / "model.safetensors").write_bytes(b"\xff\x13garbage, not a safetensors header" * 50)
    load_error(checkpoint, r"model\.safetensors is truncated or corrupt .*re-download it")


def test_empty_safetensors_file(checkpoint):
    (checkpoint / "model.safetensors").write_bytes(b"")
    load_error(checkpoint, r"model\.safetensors is truncated or corrupt")


def test_path_that_does_not_exist(tmp_path):
    load_error(tmp_path / "nowhere", r"checkpoint directory .*nowhere does not exist")


def test_path_that_is_a_file(checkpoint):
    load_error(checkpoint / "config.json", r"config\.json is a file; pass the checkpoint directory that holds it")


def _shard(checkpoint):
    tensors = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").unlink()
    names = sorted(tensors)
    save_file({n: tensors[n] for n in names[:5]}, checkpoint / "model-00001-of-00002.safetensors")
    save_file({n: tensors[n] for n in names[5:]}, checkpoint / "model-00002-of-00002.safetensors")
    weight_map = {n: f"model-0000{1 if i < 5 else 2}-of-00002.safetensors" for i, n in enumerate(names)}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return weight_map


def test_missing_shard(checkpoint):
    _shard(checkpoint)
    (checkpoint / "model-00002-of-00002.safetensors").unlink()
    load_error(checkpoint, r"model-00002-of-00002\.safetensors, a shard listed in model\.safetensors\.index\.json, "
                           r"is missing: re-download it")


def test_index_without_weight_map(checkpoint):
    _shard(checkpoint)
    (checkpoint / "model.safetensors.index.json").write_text('{"metadata": {}}')
    load_error(checkpoint, r"model\.safetensors\.index\.json is not a valid safetensors index")


def test_index_invalid_json(checkpoint):
    _shard(checkpoint)
    (checkpoint / "model.safetensors.index.json").write_text('{"weight_map": {')
    load_error(checkpoint, r"model\.safetensors\.index\.json is not valid JSON \(.*\): re-download it")


def test_truncated_shard(checkpoint):
    _shard(checkpoint)
    path = checkpoint / "model-00002-of-00002.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    load_error(checkpoint, r"model-00002-of-00002\.safetensors is truncated or corrupt")


def test_index_pointing_at_the_wrong_shard(checkpoint):
    weight_map = _shard(checkpoint)
    name = next(n for n, f in weight_map.items() if f.startswith("model-00001"))
    weight_map[name] = "model-00002-of-00002.safetensors"
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    load_error(checkpoint, rf"model-00002-of-00002\.safetensors lacks tensor {re.escape(name)}, "
                           r"which model\.safetensors\.index\.json places there")


def test_index_missing_a_tensor_names_the_index(checkpoint):
    weight_map = _shard(checkpoint)
    del weight_map["ln_f.weight"]
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    load_error(checkpoint, r"model\.safetensors\.index\.json in .* is missing tensor ln_f\.weight")


@pytest.mark.parametrize("index", ['{"weight_map": ["model-00001-of-00002.safetensors"]}', "[]",
                                   '{"weight_map": {"wte.weight": 1}}'])
def test_index_of_the_wrong_form(checkpoint, index):
    _shard(checkpoint)
    (checkpoint / "model.safetensors.index.json").write_text(index)
    load_error(checkpoint, r"model\.safetensors\.index\.json is not a valid safetensors index")


def test_read_config_returns_the_sizes(source):
    assert read_config(source) == CONFIG


# --- resolving --model NAME_OR_PATH ------------------------------------------

@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No real weights/, hub cache, network or cwd can leak into a resolution test."""
    weights_dir, cache = tmp_path / "weights", tmp_path / "hub"
    weights_dir.mkdir()
    cache.mkdir()
    monkeypatch.setattr(resolve, "WEIGHTS_DIR", weights_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("MINWAY_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty_cwd = tmp_path / "cwd"
    empty_cwd.mkdir()
    monkeypatch.chdir(empty_cwd)
    return weights_dir, cache


def test_resolve_directory_path(isolated, checkpoint):
    assert resolve_checkpoint(str(checkpoint)) == checkpoint
    assert resolve_checkpoint(checkpoint) == checkpoint


def test_resolve_directory_that_is_not_a_checkpoint(isolated, tmp_path):
    with pytest.raises(MinwayError, match=r"is not a checkpoint directory: it needs config\.json") as error:
        resolve_checkpoint(str(tmp_path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("relative", [False, True])
def test_resolve_missing_path(isolated, tmp_path, relative):
    path = "./nope" if relative else str(tmp_path / "nope")  # a path, not a name: never looked up
    with pytest.raises(MinwayError, match=r"checkpoint directory .*nope does not exist") as error:
        resolve_checkpoint(path)
    assert "\n" not in str(error.value)


def test_resolve_name_in_weights_dir(isolated, source):
    weights_dir, _ = isolated
    shutil.copytree(source, weights_dir / "gpt2")
    assert resolve_checkpoint("gpt2") == weights_dir / "gpt2"


def test_resolve_hub_id_in_weights_dir(isolated, source):
    weights_dir, _ = isolated
    shutil.copytree(source, weights_dir / "someone--tiny-gpt2")
    assert resolve_checkpoint("someone/tiny-gpt2") == weights_dir / "someone--tiny-gpt2"


def make_hub_cache(cache, source, repo_id="openai-community/gpt2", revision="a1b2c3", stale="0ld0ld"):
    """The hub cache layout: blobs/, snapshots/<rev>/ of symlinks into blobs, refs/main naming <rev>.
    A second, older snapshot that refs/main does not name must not be chosen."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    for rev in (stale, revision):
        snapshot = repo / "snapshots" / rev
        snapshot.mkdir(parents=True)
        for file in sorted(CHECKPOINT_FILES):
            blob = repo / "blobs" / f"{rev}-{file}"
            shutil.copyfile(source / file, blob)
            (snapshot / file).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_resolve_from_hub_cache_env(isolated, source):
    _, cache = isolated
    snapshot = make_hub_cache(cache, source)
    assert resolve_checkpoint("gpt2") == snapshot
    assert_same_model(resolve_checkpoint("gpt2"), load_gpt2(source).state_dict())


def test_without_refs_main_the_newest_snapshot_is_chosen(isolated, source):
    _, cache = isolated
    snapshot = make_hub_cache(cache, source)
    repo = snapshot.parents[1]
    (repo / "refs" / "main").unlink()
    os.utime(repo / "snapshots" / "0ld0ld", (1, 1))
    assert resolve_checkpoint("gpt2") == snapshot
    os.utime(repo / "snapshots" / "0ld0ld", None)  # now the newest
    os.utime(snapshot, (1, 1))
    assert resolve_checkpoint("gpt2") == repo / "snapshots" / "0ld0ld"


def test_resolve_from_hf_home(isolated, monkeypatch, tmp_path, source):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    snapshot = make_hub_cache(tmp_path / "home" / "hub", source)
    assert resolve_checkpoint("gpt2") == snapshot


def test_resolve_from_hub_cache_by_full_repo_id(isolated, source):
    _, cache = isolated
    snapshot = make_hub_cache(cache, source, repo_id="someone/tiny-gpt2")
    assert resolve_checkpoint("someone/tiny-gpt2") == snapshot


def test_weights_dir_is_preferred_to_hub_cache(isolated, source):
    weights_dir, cache = isolated
    make_hub_cache(cache, source)
    shutil.copytree(source, weights_dir / "gpt2")
    assert resolve_checkpoint("gpt2") == weights_dir / "gpt2"


def test_resolve_downloads_into_weights_dir(isolated, monkeypatch, source):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    weights_dir, _ = isolated
    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def fake_snapshot_download(repo_id, local_dir, allow_patterns, **kwargs):
        calls.append((repo_id, sorted(allow_patterns)))
        shutil.copytree(source, local_dir, dirs_exist_ok=True)
        return local_dir
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)

    path = resolve_checkpoint("gpt2-medium")
    assert path == weights_dir / "gpt2-medium"
    assert calls == [("openai-community/gpt2-medium", sorted(resolve.NEEDED_FILES))]
    assert {p.name for p in path.iterdir()} == CHECKPOINT_FILES
    assert resolve_checkpoint("gpt2-medium") == path and len(calls) == 1  # found locally the second time


@pytest.fixture
def downloads(monkeypatch):
    """The repos snapshot_download is asked for (recorded, not refused: download() would swallow
    an error of it and give the same message)."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: calls.append(repo_id))
    return calls


def assert_how_to_get_weights(error, name="gpt2"):
    message = str(error.value)
    assert "\n" not in message
    assert f"hf download openai-community/{name}" in message and "--model DIR" in message
    # and the offline alternative, a random-weight checkpoint made by the command it names
    assert f"python -m weights.random_checkpoint random-gpt2 --embedding-norm {GPT2_EMBEDDING_NORM}`" in message


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "MINWAY_OFFLINE"])
def test_offline_error_says_how_to_get_the_weights(isolated, monkeypatch, downloads, variable):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv(variable, "1")  # either one alone keeps minway offline
    with pytest.raises(MinwayError, match=r"no checkpoint 'gpt2'.*could not be downloaded") as error:
        resolve_checkpoint("gpt2")
    assert_how_to_get_weights(error)
    assert downloads == []


@pytest.mark.parametrize("name", ["gpt2", "someone/tiny-gpt2"])
def test_following_the_error_message_makes_the_name_resolve(isolated, source, name):
    with pytest.raises(MinwayError) as error:
        resolve_checkpoint(name)
    target = re.search(r"--local-dir (\S+)`", str(error.value)).group(1)
    shutil.copytree(source, target)  # what `hf download ... --local-dir TARGET` would do
    assert resolve_checkpoint(name).resolve() == Path(target).resolve()


def test_download_not_allowed(isolated, monkeypatch, downloads):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(MinwayError, match=r"no checkpoint 'gpt2-xl'") as error:
        resolve_checkpoint("gpt2-xl", allow_download=False)
    assert_how_to_get_weights(error, "gpt2-xl")
    assert downloads == []


def test_failing_download_gives_the_same_error(isolated, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(MinwayError, match=r"no checkpoint 'gpt2'") as error:
        resolve_checkpoint("gpt2")
    assert_how_to_get_weights(error)


def test_offline_a_missing_name_points_to_the_checkpoints_here_the_demos_first(isolated, source, monkeypatch,
                                                                             downloads):
    """train.py's default, gpt2-large, offline beside the demo's checkpoint: the line names that one
    first, as --model takes it, then the others, then how to get the one asked for."""
    weights_dir, cache = isolated
    shutil.copytree(source, weights_dir / "aaa-mine")
    shutil.copytree(source, weights_dir / "random-demo")
    make_hub_cache(cache, source, repo_id="openai-community/gpt2-medium")
    monkeypatch.chdir(weights_dir.parent)  # the repository's root, where weights/ is
    with pytest.raises(MinwayError) as error:
        resolve_checkpoint("gpt2-large")
    message = str(error.value)
    assert "\n" not in message and len(message) < 500
    assert ("checkpoints here: weights/random-demo (random weights, the demo's), weights/aaa-mine (random weights), "
            "gpt2-medium (in the Hugging Face cache): pass one, e.g. --model weights/random-demo") in message
    assert "hf download openai-community/gpt2-large" in message and "did you mean" not in message
    assert resolve_checkpoint("weights/random-demo") == Path("weights/random-demo")  # as the line says


def test_the_first_example_of_train_help_offline_names_the_demos_checkpoint(isolated, source, monkeypatch, capsys):
    weights_dir, _ = isolated
    shutil.copytree(source, weights_dir / "random-demo")
    monkeypatch.chdir(weights_dir.parent)
    import train
    example = next(line for line in train.__doc__.splitlines() if line.strip().startswith("python train.py"))
    args = shlex.split(example.split("python train.py", 1)[1].replace("[--model gpt2-large]", ""))
    result = run_in_process("train.py", args)
    assert_one_line_error(result, "no checkpoint 'gpt2-large'", "--model weights/random-demo")


@pytest.mark.parametrize("typed, meant", [
    ("weights/random-dem", "weights/random-demo"),  # weights/ is a folder here: a path, not a Hub id owner/name
    ("./weights/random-dem", "weights/random-demo"),
    ("runs/sst2-a/x/y", "runs/sst2-ab"),            # the first part missing is the one matched
    ("ABS/weights/random-dem", "ABS/weights/random-demo"),
])
def test_a_missing_local_path_is_never_sent_to_the_hub_and_gets_the_nearest_names(isolated, source, monkeypatch,
                                                                                  downloads, typed, meant):
    weights_dir, _ = isolated
    root = weights_dir.parent
    typed, meant = typed.replace("ABS", str(root)), meant.replace("ABS", str(root))
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online: a path sent to the Hub would show in downloads
    monkeypatch.chdir(root)
    shutil.copytree(source, weights_dir / "random-demo")
    (root / "runs" / "sst2-ab").mkdir(parents=True)
    with pytest.raises(MinwayError, match="does not exist") as error:
        resolve_checkpoint(typed)
    assert str(error.value).endswith(f"does not exist: did you mean {meant}?")
    assert downloads == []


def test_an_owner_and_name_whose_owner_is_no_folder_here_is_a_hub_id(isolated, monkeypatch, downloads):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(MinwayError, match="no checkpoint 'someone/tiny-gpt2'"):
        resolve_checkpoint("someone/tiny-gpt2")
    assert downloads == ["someone/tiny-gpt2"]


def test_a_mistyped_name_gets_the_name_meant_not_a_download_command(isolated, source, downloads):
    weights_dir, _ = isolated
    shutil.copytree(source, weights_dir / "random-demo")
    for typed, meant in (("gpt2-larg", "gpt2-large"), ("random-dem", "random-demo")):
        with pytest.raises(MinwayError, match=f"no checkpoint '{typed}'.*did you mean .*{meant}") as error:
            resolve_checkpoint(typed)
        assert "hf download" not in str(error.value)


# --- random checkpoints -------------------------------------------------------

def test_random_checkpoint_has_exactly_the_hf_files(source):
    assert {p.name for p in source.iterdir()} == CHECKPOINT_FILES
    config = json.loads((source / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_embd"] == 48 and config["n_layer"] == 2


def test_random_checkpoint_is_deterministic(tmp_path, source, reference):
    again = write_random_checkpoint(tmp_path / "again", CONFIG, TOKENIZER_DIR, seed=0)
    assert_same_model(again, reference)
    other = load_gpt2(write_random_checkpoint(tmp_path / "other", CONFIG, TOKENIZER_DIR, seed=1)).state_dict()
    assert not torch.equal(other["wte.weight"], reference["wte.weight"])


def test_random_checkpoint_loads_in_transformers_and_agrees(source):
    transformers = pytest.importorskip("transformers")
    theirs, info = transformers.GPT2LMHeadModel.from_pretrained(
        source, attn_implementation="eager", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ours = load_gpt2(source)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(source))
    ids = torch.tensor([tokenizer("a random checkpoint in the real layout .")["input_ids"]])
    with torch.no_grad():
        assert (ours(ids[0]).logits - theirs.eval()(ids).logits[0]).abs().max() <= 1e-4


def test_random_checkpoint_needs_the_tokenizer_files(tmp_path):
    with pytest.raises(MinwayError, match=r"no-tokenizer \(--tokenizer\) is not a directory") as error:
        write_random_checkpoint(tmp_path / "out", CONFIG, tmp_path / "no-tokenizer")
    (tmp_path / "half").mkdir()
    shutil.copy(TOKENIZER_DIR / "merges.txt", tmp_path / "half")
    with pytest.raises(MinwayError, match=r"vocab\.json is missing: --tokenizer must name a directory") as error:
        write_random_checkpoint(tmp_path / "out", CONFIG, tmp_path / "half")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_random_checkpoint_with_embeddings_at_gpt2s_scale(tmp_path, source):
    scaled = write_random_checkpoint(tmp_path / "scaled", CONFIG, seed=0, embedding_norm=GPT2_EMBEDDING_NORM)
    norms = load_token_embeddings(scaled).norm(dim=1)
    assert float(norms.mean()) == pytest.approx(GPT2_EMBEDDING_NORM, rel=1e-5)
    assert float(load_token_embeddings(source).norm(dim=1).mean()) < 0.2  # GPT-2's init: 0.02 * sqrt(48)
    assert json.loads((scaled / "config.json").read_text())["minway_embedding_norm"] == GPT2_EMBEDDING_NORM
    scaled_state, source_state = load_gpt2(scaled).state_dict(), load_gpt2(source).state_dict()
    scale = float(scaled_state["wte.weight"].norm() / source_state["wte.weight"].norm())
    assert torch.allclose(scaled_state["ln_f.weight"], source_state["ln_f.weight"] / scale)  # logits of GPT-2's size
    assert all(torch.equal(scaled_state[k], source_state[k]) for k in source_state
               if k not in ("wte.weight", "ln_f.weight"))


def no_gpt2(name):
    raise MinwayError(f"no {name} here")


def test_demo_checkpoint_is_random_at_gpt2s_scale_and_rewritten_when_older(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_checkpoint, "resolve_checkpoint", no_gpt2)
    monkeypatch.setattr(demo_checkpoint, "RANDOM_DEMO", tmp_path / "random-demo")
    write_random_checkpoint(tmp_path / "random-demo", CONFIG)  # as older minways wrote it
    run_cli(demo_checkpoint.main)
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "random-demo") and "RANDOM-WEIGHT" in err
    assert float(load_token_embeddings(tmp_path / "random-demo").norm(dim=1).mean()) == pytest.approx(
        GPT2_EMBEDDING_NORM, rel=1e-5)


def test_demo_checkpoint_error_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_checkpoint, "resolve_checkpoint", no_gpt2)
    monkeypatch.setattr(demo_checkpoint, "RANDOM_DEMO", tmp_path / "random-demo")
    monkeypatch.setenv("MINWAY_TOKENIZER", str(tmp_path / "no-tokenizer"))
    with pytest.raises(SystemExit) as exit_:
        run_cli(demo_checkpoint.main)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("error: ") and "\n" not in err and "no-tokenizer" in err


def test_demo_checkpoint_refuses_an_argument_in_one_line():
    result = subprocess.run([sys.executable, "-m", "weights.demo_checkpoint", "--steps", "3"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("error: unrecognized arguments: --steps 3 (see python -m weights.demo_checkpoint "
                             "--help)\n")


def test_random_checkpoint_command_line(tmp_path):
    out = tmp_path / "cli"
    result = run_in_process("random_checkpoint", [out, "--n-embd", "48", "--n-layer", "1", "--n-head", "3",
                                                  "--tokenizer", TOKENIZER_DIR], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == CHECKPOINT_FILES
    model = load_gpt2(out)
    assert (model.config.n_embd, model.config.n_layer, model.config.n_head) == (48, 1, 3)


def test_random_checkpoint_command_line_error_is_one_line(tmp_path):
    result = run_in_process("random_checkpoint", [tmp_path / "cli", "--tokenizer", tmp_path], cwd=ROOT)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: ") and "\n" not in result.stderr.strip()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
def test_a_checkpoint_json_over_64_mib_is_refused_unread(tmp_path, name):
    (tmp_path / "config.json").write_text("{}")
    with open(tmp_path / name, "wb") as f:  # sparse: nothing is written
        f.truncate(2 ** 26 + 1)
    read = read_config if name == "config.json" else tensor_files
    with pytest.raises(MinwayError, match="holds 67,108,865 bytes, more than the 67,108,864 it may"):
        read(tmp_path)


def test_a_config_json_over_64_mib_is_not_read_for_the_random_weights_note(tmp_path):
    """The listing of local checkpoints reads each config.json for its mark, at most 64 MiB of it."""
    mark = b'{"minway_random_weights": true}'
    for size, marked in ((2 ** 26, True), (2 ** 26 + 1, False)):
        (tmp_path / "config.json").write_bytes(mark + b" " * (size - len(mark)))
        assert resolve._random_weights(tmp_path) is marked


def test_random_weights_are_known_by_their_config(checkpoint):
    """weights.random_checkpoint marks its config.json; a checkpoint without the mark is taken as real."""
    assert has_random_weights(checkpoint)
    path = checkpoint / "config.json"
    values = json.loads(path.read_text())
    del values["minway_random_weights"]
    path.write_text(json.dumps(values))
    assert not has_random_weights(checkpoint)
