"""Llama and Qwen 2 checkpoints: the layouts that load, every bad input's one-line message (the same checks
as GPT-2's), the dispatch by model_type, the memory estimate's parameter count, and the random-weight writer."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT
from fixtures import run_in_process
from minway.errors import MinwayError
from minway.llama import Llama, LlamaConfig
from minway.model import GPT2Config
from minway.run import memory
from weights import load_model, load_token_embeddings, read_config, resolve_checkpoint
from weights.random_llama import FAMILIES, write_random_llama

SMALL = {"llama": FAMILIES["llama"], "qwen2": FAMILIES["qwen2"]}


@pytest.fixture(scope="module", params=sorted(SMALL))
def source(request, tmp_path_factory):
    """A random checkpoint of each family, written once; tests copy it and then edit the copy."""
    return write_random_llama(tmp_path_factory.mktemp(request.param), SMALL[request.param], seed=0)


@pytest.fixture
def checkpoint(source, tmp_path):
    return shutil.copytree(source, tmp_path / "checkpoint")


@pytest.fixture(scope="module")
def reference(source):
    return load_model(source).state_dict()


def rewrite(directory, edit):
    tensors = load_file(directory / "model.safetensors")
    edit(tensors)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})


def edit_config(directory, **changes):
    values = json.loads((directory / "config.json").read_text())
    values.update(changes)
    (directory / "config.json").write_text(json.dumps({k: v for k, v in values.items() if v is not ...}))


def assert_same_model(directory, reference):
    state = load_model(directory).state_dict()
    assert state.keys() == reference.keys()
    for name in reference:
        assert torch.equal(state[name], reference[name]), name


def load_error(directory, match):
    with pytest.raises(MinwayError, match=match) as error:
        load_model(directory)
    assert "\n" not in str(error.value)


# --- layouts that load --------------------------------------------------------

def test_the_random_checkpoint_loads_in_transformers_and_agrees(source):
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoModelForCausalLM.from_pretrained(source).eval()
    model = load_model(source)
    ids = [5, 6, 7, 300, 4000]
    begin = [] if model.config.bos_token_id is None else [model.config.bos_token_id]
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor([begin + ids])).logits[0, len(begin):]
        torch.testing.assert_close(model(ids=torch.tensor(ids)).logits, theirs, atol=1e-4, rtol=1e-4)


def test_sharded_checkpoint_loads_identically(checkpoint, reference):
    tensors = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {f"model-0000{k + 1}-of-00003.safetensors": names[k::3] for k in range(3)}
    for file, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, checkpoint / file, metadata={"format": "pt"})
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: file for file, shard_names in shards.items() for n in shard_names}}))
    assert_same_model(checkpoint, reference)


def test_rotary_buffers_of_older_checkpoints_and_a_stored_tied_head_are_ignored(checkpoint, reference):
    tied = read_config(checkpoint).tie_word_embeddings

    def add_extras(t):
        t["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
        if tied:
            t["lm_head.weight"] = t["model.embed_tokens.weight"].clone() * 2
    rewrite(checkpoint, add_extras)
    assert_same_model(checkpoint, reference)


def test_transformers_5_config_loads_as_the_hubs(checkpoint, reference):
    """transformers 5 writes rope_parameters where the Hub's checkpoints have rope_theta and rope_scaling."""
    values = json.loads((checkpoint / "config.json").read_text())
    rope = {**(values.pop("rope_scaling", None) or {"rope_type": "default"}), "rope_theta": values.pop("rope_theta")}
    (checkpoint / "config.json").write_text(json.dumps({**values, "rope_parameters": rope}))
    assert read_config(checkpoint) == SMALL[values["model_type"]]
    assert_same_model(checkpoint, reference)


def test_the_config_reads_as_written(source):
    config = read_config(source)
    assert isinstance(config, LlamaConfig) and config == SMALL[config.model_type]
    # Qwen 2.5's config.json names no head_dim: it is hidden_size / heads (Llama 3's names it)
    assert ("head_dim" in json.loads((source / "config.json").read_text())) == (config.model_type == "llama")


def test_dtype_is_honoured(source):
    model = load_model(source, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and not model.training


def test_token_embeddings_alone_equal_the_models(source):
    torch.testing.assert_close(load_token_embeddings(source), load_model(source).wte.weight.detach(), atol=0, rtol=0)


def test_the_memory_estimate_counts_every_parameter(source):
    for config in (read_config(source), LlamaConfig(vocab_size=100, n_embd=48, n_layer=3, n_head=8, n_kv_head=2,
                                                    head_dim=12, n_inner=80, max_positions=64, qkv_bias=True,
                                                    o_bias=True, mlp_bias=True)):
        with torch.device("meta"):
            assert memory.parameters(config) == Llama(config).num_parameters()


# --- every bad input: one line that names the problem -------------------------

def test_missing_tensor(checkpoint):
    rewrite(checkpoint, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    load_error(checkpoint, r"model\.safetensors in .* is missing tensor layers\.1\.mlp\.up_proj\.weight for the config")


def test_unexpected_tensor(checkpoint):
    rewrite(checkpoint, lambda t: t.update({"model.layers.2.input_layernorm.weight": torch.ones(64)}))
    load_error(checkpoint, r"has unexpected tensor model\.layers\.2\.input_layernorm\.weight: not a (Llama|Qwen 2) "
                           r"checkpoint of this config")


def test_an_untied_head_must_be_there(checkpoint):
    if read_config(checkpoint).tie_word_embeddings:
        edit_config(checkpoint, tie_word_embeddings=False)
    else:
        rewrite(checkpoint, lambda t: t.pop("lm_head.weight"))
    load_error(checkpoint, r"is missing tensor lm_head\.weight")


def test_wrong_shape_names_file_and_tensor(checkpoint):
    rewrite(checkpoint, lambda t: t.update({"model.layers.0.self_attn.k_proj.weight":
                                            t["model.layers.0.self_attn.k_proj.weight"].T.contiguous()}))
    load_error(checkpoint, r"tensor model\.layers\.0\.self_attn\.k_proj\.weight in model\.safetensors has shape "
                           r"\(64, 32\), expected \(32, 64\)")


def test_one_value_that_is_not_finite_is_refused(checkpoint):
    def spoil(tensors):
        tensors["model.norm.weight"][3] = float("inf")
    rewrite(checkpoint, spoil)
    load_error(checkpoint, r"tensor model\.norm\.weight in .* holds NaN or infinite values")


def test_integer_weights_are_refused(checkpoint):
    rewrite(checkpoint, lambda t: t.update({"model.norm.weight": t["model.norm.weight"].long()}))
    load_error(checkpoint, r"model\.norm\.weight in .* is int64: minway reads floating-point weights only")


@pytest.mark.parametrize("changes, fragment", [
    ({"model_type": "mistral"}, "has model_type 'mistral'; minway runs GPT-2, Llama and Qwen 2 checkpoints"),
    ({"hidden_size": ...}, "lacks hidden_size: not a"),
    ({"hidden_act": "gelu"}, "sets hidden_act to 'gelu'; minway's MLP is SwiGLU"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rotary positions of type 'yarn'"),
    ({"rope_scaling": {"type": "linear", "factor": 4.0}}, "of type 'linear'"),
    ({"partial_rotary_factor": 0.5}, "rotates part of each head only"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                       "original_max_position_embeddings": 64}}, "high_freq_factor must be > 4"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 0.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 64}}, "low_freq_factor must be > 0"),
    ({"rope_theta": -1.0}, "rope_theta must be > 0"),
    ({"use_sliding_window": True}, "sliding-window attention"),
    ({"layer_types": ["sliding_attention", "full_attention"]}, "sliding-window attention"),
    ({"num_key_value_heads": 3}, "num_key_value_heads 3 does not divide num_attention_heads 4"),
    ({"head_dim": 15}, "head_dim 15 is odd"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be at least 1"),
    ({"vocab_size": "many"}, "vocab_size must be a whole number"),
    ({"rms_norm_eps": 0}, "rms_norm_eps must be > 0"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
])
def test_a_config_minway_does_not_compute_is_refused(checkpoint, changes, fragment):
    edit_config(checkpoint, **changes)
    with pytest.raises(MinwayError) as error:
        read_config(checkpoint)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_begin_of_text_token_outside_the_vocabulary_is_refused(checkpoint):
    if read_config(checkpoint).model_type != "llama":
        pytest.skip("Qwen's begin-of-text token is not read: its tokenizer puts none before a text")
    edit_config(checkpoint, bos_token_id=10 ** 6)
    load_error(checkpoint, "bos_token_id 1000000 is not a token id below vocab_size")


def test_a_config_that_is_not_an_object_is_refused(checkpoint):
    (checkpoint / "config.json").write_text("[]")
    load_error(checkpoint, "holds a JSON list, not an object")


def test_a_hub_id_finds_the_checkpoint_in_the_hugging_face_cache(source, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--someone--tiny-llama"
    shutil.copytree(source, repo / "snapshots" / "a1b2c3")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a1b2c3")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    found = resolve_checkpoint("someone/tiny-llama", allow_download=False)
    assert found == repo / "snapshots" / "a1b2c3" and read_config(found) == read_config(source)


def test_gpt2_checkpoints_still_read_as_gpt2(tmp_path):
    from fixtures import TOKENIZER_DIR
    from weights.random_checkpoint import write_random_checkpoint
    config = GPT2Config(vocab_size=50257, n_positions=32, n_embd=48, n_layer=1, n_head=3)
    assert read_config(write_random_checkpoint(tmp_path, config, TOKENIZER_DIR)) == config


# --- the random-weight writer -------------------------------------------------

def test_the_writer_writes_the_hubs_files(source):
    config = json.loads((source / "config.json").read_text())
    tokenizer = {"llama": {"tokenizer.json", "tokenizer_config.json"}, "qwen2": {"vocab.json", "merges.txt"}}
    assert {p.name for p in source.iterdir()} == {"config.json", "model.safetensors"} | tokenizer[config["model_type"]]
    assert config["minway_random_weights"] is True


def test_the_writer_is_deterministic(tmp_path, source, reference):
    config = read_config(source)
    assert_same_model(write_random_llama(tmp_path, config, seed=0), reference)


def test_the_writers_command_line(tmp_path):
    result = run_in_process("random_llama", [tmp_path / "q", "--family", "qwen2", "--n-embd", "32", "--n-head", "4",
                                             "--n-kv-head", "1", "--n-inner", "48", "--no-tie", "--max-positions", "128"],
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    config = read_config(tmp_path / "q")
    assert (config.model_type, config.n_kv_head, config.head_dim, config.tie_word_embeddings) == ("qwen2", 1, 8, False)
    assert load_model(tmp_path / "q").lm_head is not None


@pytest.mark.parametrize("args, fragment", [
    (["--n-kv-head", "3"], "--n-kv-head 3 does not divide --n-head 4"),
    (["--n-embd", "30", "--n-head", "6", "--n-kv-head", "1"], "heads of an even width"),
    (["--n-layer", "0"], "--n-layer must be at least 1"),
])
def test_the_writers_mistakes_are_one_line(tmp_path, args, fragment):
    result = run_in_process("random_llama", [tmp_path / "x", *args], cwd=ROOT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr
