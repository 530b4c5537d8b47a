"""PEFT's prompt-tuning adapters: minway writes them and PEFT loads them with the same logits;
minway -> PEFT -> minway gives the same projection; a prompt trained by PEFT itself scores in
minway as an independent transformers computation says; and what minway cannot read is
refused in one line.

transformers and peft are the reference here (test-only dependencies, the ``test`` extra).
The models are random GPT-2s, sharpened as in test_model.py so that differences show.
"""
import importlib
import json
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import ROOT
from fixtures import TOKENIZER_DIR, assert_one_line_error, first_rows, run_in_process
from fixtures import ascii_locale  # noqa: F401  (pytest fixture)
from fixtures import tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.run import adapters
from minway.run import training
from minway.run.adapters import read_adapter, write_adapter
from minway.batch import embed_rows
from minway.classify import predict
from minway.run.config import RunConfig
from minway.errors import MinwayError
from minway.metrics import prompt_f1
from minway.packing import pack
from minway.run.storage import load_prompt, save_prompt
from minway.tasks import encode_inputs, encode_options, get_task
from minway.run.tokenizer import load_tokenizer
from weights import load_gpt2

TARGET = "Write a question about the given fact."
TOL = 1e-4


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def peft():
    return pytest.importorskip("peft")


@pytest.fixture(scope="module")
def hf_checkpoint(transformers, tmp_path_factory):
    """A random GPT-2 (d = 48, 2 layers) saved by transformers, every weight pushed off its initialisation."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_embd=48, n_layer=2, n_head=3, n_positions=128,
                                     initializer_range=0.1)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * config.initializer_range)
    directory = tmp_path_factory.mktemp("hf-gpt2")
    model.save_pretrained(directory)
    for file in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DIR / file, directory / file)
    return directory


def reference(transformers, checkpoint):
    return transformers.GPT2LMHeadModel.from_pretrained(checkpoint, attn_implementation="eager").eval()


def run_main(script, args, capsys):
    """What ``python script args`` prints when it succeeds."""
    importlib.import_module(script.removesuffix(".py")).main(list(map(str, args)))
    return capsys.readouterr().out


# ---------------------------------------------------------------- minway -> PEFT

@pytest.mark.slow
def test_peft_gives_the_logits_minway_gives_with_an_exported_prompt(transformers, peft, hf_checkpoint, tmp_path,
                                                                    capsys):
    model, tokenizer = load_gpt2(hf_checkpoint), load_tokenizer(hf_checkpoint)
    target_ids = tokenizer.encode(TARGET)
    torch.manual_seed(1)
    prompt = model.wte.weight[target_ids].detach() + torch.randn(len(target_ids), 48)
    config = RunConfig(task="sst2", target=TARGET, model=str(hf_checkpoint))
    (tmp_path / "run").mkdir()
    save_prompt(tmp_path / "run" / "prompt.safetensors", prompt, config, target_ids)
    adapters.main(["export", str(tmp_path / "run"), str(tmp_path / "adapter")])
    assert f"a PEFT prompt-tuning adapter of {hf_checkpoint}" in capsys.readouterr().out

    theirs_model = peft.PeftModel.from_pretrained(reference(transformers, hf_checkpoint), tmp_path / "adapter")
    assert theirs_model.active_peft_config.num_virtual_tokens == len(target_ids)
    rows = [tokenizer.encode(text) for text, _ in first_rows("sst2", "test", 6)]
    L, width = len(target_ids), max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    with torch.no_grad():
        theirs = theirs_model(input_ids=ids, attention_mask=mask.long()).logits
        real = torch.cat([torch.ones(len(rows), L, dtype=torch.bool), mask], dim=1)
        # the prompt in every row, and the prompt run once with every row continuing it (as classify does)
        each = model(embeds=embed_rows(model, rows, [prompt] * len(rows)),
                     packed=pack([L + len(r) for r in rows])).logits
        shared = model(embeds=torch.cat([prompt, embed_rows(model, rows)]),
                       packed=pack([L] + [len(r) for r in rows], [()] + [[(0, L)]] * len(rows))).logits
    assert theirs.shape == (len(rows), L + width, 50257) and each.shape == theirs[real].shape
    assert (each - theirs[real]).abs().max() <= TOL
    assert (shared[:L] - theirs[0, :L]).abs().max() <= TOL
    assert (shared[L:] - theirs[:, L:][mask]).abs().max() <= TOL


def test_export_does_not_overwrite_an_adapter_unless_forced(tiny_checkpoint, tmp_path):  # noqa: F811
    (tmp_path / "run").mkdir()
    config = RunConfig(task="sst2", target=TARGET, model=str(tiny_checkpoint))
    save_prompt(tmp_path / "run" / "prompt.safetensors", torch.ones(3, 48), config, [1, 2, 3])
    adapters.export(tmp_path / "run", tmp_path / "adapter")
    save_prompt(tmp_path / "run" / "prompt.safetensors", torch.zeros(3, 48), config, [1, 2, 3])
    with pytest.raises(MinwayError, match="holds an adapter already: pass --force to overwrite it"):
        adapters.export(tmp_path / "run", tmp_path / "adapter")
    assert torch.equal(read_adapter(tmp_path / "adapter").prompt, torch.ones(3, 48))
    adapters.export(tmp_path / "run", tmp_path / "adapter", force=True)
    assert torch.equal(read_adapter(tmp_path / "adapter").prompt, torch.zeros(3, 48))


def test_export_takes_a_run_directory_or_its_prompt_file(tiny_checkpoint, tmp_path):  # noqa: F811
    (tmp_path / "run").mkdir()
    config = RunConfig(task="sst2", target=TARGET, model=str(tiny_checkpoint))
    save_prompt(tmp_path / "run" / "prompt.safetensors", torch.ones(3, 48), config, [1, 2, 3])
    assert adapters.export(tmp_path / "run" / "prompt.safetensors", tmp_path / "from-file") == config
    assert torch.equal(read_adapter(tmp_path / "from-file").prompt, torch.ones(3, 48))
    # a name without a suffix is a run directory, also when it is missing: the error names the run there is
    with pytest.raises(MinwayError, match=re.escape(f"{tmp_path / 'no-run'} does not exist: did you mean "
                                                    f"{tmp_path / 'run'}?")):
        adapters.export(tmp_path / "no-run", tmp_path / "none")
    with pytest.raises(MinwayError, match=re.escape(str(tmp_path / "no-prompt.safetensors"))):
        adapters.export(tmp_path / "no-prompt.safetensors", tmp_path / "none")


# ---------------------------------------------------------------- minway -> PEFT -> minway

@pytest.mark.slow
def test_minway_to_peft_to_minway_reproduces_the_projection(transformers, peft, tmp_path, capsys,
                                                            tiny_checkpoint, tiny_data):  # noqa: F811
    config = RunConfig(task="sst2", target=TARGET, model=str(tiny_checkpoint), data_dir=str(tiny_data), steps=3,
                       batch_size=2, max_eval=8, device="cpu")
    results = training.train(config, tmp_path / "runs", progress=False)
    run_dir = tmp_path / "runs" / config.run_id()
    adapters.export(run_dir, tmp_path / "from-minway")
    # through PEFT: loaded on transformers' GPT-2, then saved by PEFT as any of its adapters
    loaded = peft.PeftModel.from_pretrained(reference(transformers, tiny_checkpoint), tmp_path / "from-minway")
    loaded.save_pretrained(tmp_path / "from-peft")
    prompt = load_prompt(run_dir / "prompt.safetensors")[0]
    assert torch.equal(read_adapter(tmp_path / "from-peft").prompt, prompt)

    printed = run_main("eval.py", [tmp_path / "from-peft", "--target", TARGET, "--task", "sst2", "--data-dir",
                                   tiny_data, "--max-eval", 8, "--device", "cpu", "--no-progress", "--json",
                                   tmp_path / "eval.json"], capsys)
    read_back = json.loads((tmp_path / "eval.json").read_text())
    assert read_back["projections"] == results["projections"]
    for key in ("accuracy", "hard_prompt_accuracy", "prompt_f1", "c_dist", "n_test"):
        assert read_back[key] == results[key], key
    # the per-position table, as eval.py prints it for the run itself
    of_run = run_main("eval.py", [run_dir, "--positions", "--device", "cpu", "--no-progress"], capsys)
    table = lambda text: [line for line in text.splitlines()  # noqa: E731
                          if line.startswith(("position ", "  dot ", "   l2 ", "  cos "))]
    assert len(table(printed)) == 4 * len(prompt) and table(printed) == table(of_run)


# ---------------------------------------------------------------- PEFT -> minway

def peft_trained_adapter(transformers, peft, checkpoint, directory):
    """A prompt trained for 5 steps by PEFT itself on SST-2 examples (input, " It was", " great ." or
    " terrible .", end-of-text), initialised at the target's tokens; its adapter, and the PEFT model."""
    hf_tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(checkpoint))
    n_tokens = len(hf_tokenizer(TARGET)["input_ids"])
    torch.manual_seed(0)
    model = peft.get_peft_model(reference(transformers, checkpoint), peft.PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=n_tokens, prompt_tuning_init="TEXT",
        prompt_tuning_init_text=TARGET, tokenizer_name_or_path=str(checkpoint)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    eot = hf_tokenizer.eos_token_id
    examples = [(text, int(label)) for text, label in first_rows("sst2", "train", 20)]
    for step in range(5):
        batch = examples[4 * step:4 * step + 4]
        loss = 0
        for text, label in batch:
            context = hf_tokenizer(text + " It was")["input_ids"]
            output = hf_tokenizer([" terrible .", " great ."][label])["input_ids"] + [eot]
            labels = torch.tensor([[-100] * len(context) + output])
            loss = loss + model(input_ids=torch.tensor([context + output]), labels=labels).loss / len(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(directory)
    return model.eval(), hf_tokenizer


def option_losses_by_transformers(model, prefix_ids, hf_tokenizer, texts, length):
    """(N, 2) mean token loss of " terrible ." and " great ." (each with end-of-text) after the prompt
    (``model``: a PEFT model) or after ``prefix_ids`` (``model``: GPT-2), the text cut to 112 tokens, then
    " It was": the tokens the two options share, by hand from their texts."""
    outputs = [hf_tokenizer(o)["input_ids"] + [hf_tokenizer.eos_token_id] for o in (" terrible .", " great .")]
    losses = torch.zeros(len(texts), 2)
    for i, text in enumerate(texts):
        context = prefix_ids + hf_tokenizer(text)["input_ids"][:112] + hf_tokenizer(" It was")["input_ids"]
        for c, output in enumerate(outputs):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([context + output])).logits[0]
            first = length + len(context) - 1  # the position that predicts the output's first token
            logp = logits[first:first + len(output)].log_softmax(-1)
            losses[i, c] = -logp[torch.arange(len(output)), torch.tensor(output)].mean()
    return losses


def nearest_by_brute_force(prompt, E, metric):
    if metric == "dot":
        return (prompt @ E.T).argmax(1).tolist()
    if metric == "l2":
        return torch.cdist(prompt.double(), E.double()).argmin(1).tolist()
    return (torch.nn.functional.normalize(prompt, dim=1) @ torch.nn.functional.normalize(E, dim=1).T).argmax(1).tolist()


@pytest.mark.slow
def test_a_prompt_trained_by_peft_scores_as_transformers_says(transformers, peft, hf_checkpoint, tmp_path, capsys,
                                                              tiny_data):  # noqa: F811
    peft_model, hf_tokenizer = peft_trained_adapter(transformers, peft, hf_checkpoint, tmp_path / "peft")
    trained = peft_model.prompt_encoder["default"].embedding.weight.detach()
    initial = reference(transformers, hf_checkpoint).transformer.wte.weight[hf_tokenizer(TARGET)["input_ids"]]
    assert not torch.allclose(trained, initial)  # PEFT did train it

    run_main("eval.py", [tmp_path / "peft", "--target", TARGET, "--task", "sst2", "--data-dir", tiny_data,
                         "--max-eval", 8, "--device", "cpu", "--no-progress", "--json", tmp_path / "eval.json"], capsys)
    measured = json.loads((tmp_path / "eval.json").read_text())
    assert measured["checkpoint"] == str(hf_checkpoint)  # the adapter's base model, found by its path

    # the projection and its F1, by brute force on transformers' embeddings
    E = peft_model.get_base_model().transformer.wte.weight.detach()
    for metric in ("dot", "l2", "cos"):
        ids = nearest_by_brute_force(trained, E, metric)
        assert measured["projections"][metric]["ids"] == ids, metric
        assert measured["projections"][metric]["f1"] == prompt_f1(hf_tokenizer.decode(ids), TARGET), metric
    # accuracy: each option's loss after the prompt, by PEFT's forward pass; hard-prompt accuracy: after the
    # projection's tokens, by GPT-2's
    rows = first_rows("sst2", "test", 8)
    texts, labels = [text for text, _ in rows], torch.tensor([int(label) for _, label in rows])
    continuous = option_losses_by_transformers(peft_model, [], hf_tokenizer, texts, len(trained))
    hard_ids = measured["projections"]["dot"]["ids"]
    with peft_model.disable_adapter():
        hard = option_losses_by_transformers(peft_model, hard_ids, hf_tokenizer, texts, 0)
    assert measured["accuracy"] == (continuous.argmin(1) == labels).float().mean().item()
    assert measured["hard_prompt_accuracy"] == (hard.argmin(1) == labels).float().mean().item()

    # minway's own option losses, from the adapter it read, to the tolerance of the logits
    model, tokenizer = load_gpt2(hf_checkpoint), load_tokenizer(hf_checkpoint)
    task = get_task("sst2")
    common, outputs = encode_options(task, tokenizer)
    _, ours = predict(model, read_adapter(tmp_path / "peft").prompt, encode_inputs(task, tokenizer, texts, common),
                      outputs)
    assert (ours - continuous).abs().max() <= TOL
    assert (continuous.argmin(1) != continuous.argmin(1)[0]).any(), "the test needs predictions that differ"


# ---------------------------------------------------------------- what minway refuses

def adapter_with(directory, config=None, tensors=None):
    """A prompt-tuning adapter of GPT-2 (3 vectors of width 48), then ``config`` merged into its config."""
    write_adapter(directory, torch.randn(3, 48), "openai-community/gpt2")
    if config:
        path = directory / "adapter_config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    if tensors is not None:
        save_file(tensors, str(directory / "adapter_model.safetensors"))
    return directory


@pytest.mark.parametrize("config, tensors, fragment", [
    ({"peft_type": "LORA"}, None, "is a LORA adapter: minway reads prompt-tuning adapters"),
    ({"peft_type": "PREFIX_TUNING"}, None, "is a PREFIX_TUNING adapter"),
    ({"num_transformer_submodules": 2}, None, "encoder-decoder model (num_transformer_submodules 2)"),
    ({"base_model_name_or_path": "mistralai/Mistral-7B-v0.1"}, None, "of mistralai/Mistral-7B-v0.1 (mistral)"),
    ({"base_model_name_or_path": "facebook/opt-125m"}, None, "(opt), not of a GPT-2, Llama or Qwen 2 model"),
    ({"base_model_name_or_path": "EleutherAI/gpt-neo-125m"}, None, "(gpt-neo)"),
    ({"base_model_name_or_path": "google/flan-t5-base"}, None, "(t5)"),
    ({"auto_mapping": {"base_model_class": "MistralForCausalLM"}, "base_model_name_or_path": "my-model"}, None,
     "(MistralForCausalLM)"),
    ({"base_model_name_or_path": 7}, None, "base_model_name_or_path must be a name"),
    ({"num_virtual_tokens": 4}, None, "has shape (3, 48), but adapter_config.json says 4 virtual tokens"),
    ({"token_dim": 64}, None, "of width 64"),
    (None, {"other": torch.zeros(3, 48)}, "holds no prompt_embeddings tensor"),
    (None, {"prompt_embeddings": torch.zeros(3, 48, dtype=torch.int64)}, "torch.int64 values"),
    (None, {"prompt_embeddings": torch.zeros(3, 4, 48)}, "has shape (3, 4, 48)"),
    (None, {"prompt_embeddings": torch.zeros(3, 48).index_put_((torch.tensor([1]), torch.tensor([7])),
                                                               torch.tensor(float("nan")))}, "not finite"),
])
def test_what_is_not_a_prompt_of_gpt2_is_refused_in_one_line(tmp_path, config, tensors, fragment):
    with pytest.raises(MinwayError) as error:
        read_adapter(adapter_with(tmp_path, config, tensors))
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("base", ["openai-community/gpt2-large", "gpt2", "distilgpt2", "sshleifer/tiny-gpt2",
                                  "microsoft/DialoGPT-small", "someone/bert-to-gpt-2", None])
def test_gpt2_models_and_unnamed_ones_are_read(tmp_path, base):
    assert read_adapter(adapter_with(tmp_path, {"base_model_name_or_path": base})).base_model == base


def test_a_base_model_here_is_judged_by_its_config(tmp_path, tiny_checkpoint):  # noqa: F811
    assert read_adapter(adapter_with(tmp_path / "a", {"base_model_name_or_path": str(tiny_checkpoint)}))
    mistral = tmp_path / "mistral-but-named-gpt2"
    mistral.mkdir()
    (mistral / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(MinwayError, match="model_type 'mistral'"):
        read_adapter(adapter_with(tmp_path / "b", {"base_model_name_or_path": str(mistral)}))


def test_a_base_models_config_is_read_in_utf8_whatever_the_locale(tmp_path, ascii_locale):  # noqa: F811
    mistral = tmp_path / "modèle-mistral"
    mistral.mkdir()
    (mistral / "config.json").write_text(json.dumps({"model_type": "mistral", "_name_or_path": "modèle"},
                                                    ensure_ascii=False), encoding="utf-8")
    with pytest.raises(MinwayError, match="model_type 'mistral'"):
        read_adapter(adapter_with(tmp_path / "b", {"base_model_name_or_path": str(mistral)}))


def test_broken_files_are_refused_in_one_line(tmp_path):
    directory = adapter_with(tmp_path / "pickled")
    (directory / "adapter_model.safetensors").rename(directory / "adapter_model.bin")
    with pytest.raises(MinwayError, match="a pickle .adapter_model.bin., which minway does not read"):
        read_adapter(directory)
    directory = adapter_with(tmp_path / "cut")
    path = directory / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(MinwayError, match="is truncated or corrupt"):
        read_adapter(directory)
    directory = adapter_with(tmp_path / "not-json")
    (directory / "adapter_config.json").write_text("{")
    with pytest.raises(MinwayError, match="is not valid JSON"):
        read_adapter(directory)
    with pytest.raises(MinwayError, match="holds no adapter_config.json"):
        read_adapter(tmp_path / "nothing-there")


def test_eval_refuses_a_prompt_wider_than_the_checkpoint(tmp_path, tiny_checkpoint, monkeypatch, capsys):  # noqa: F811
    write_adapter(tmp_path / "wide", torch.randn(3, 64), str(tiny_checkpoint))
    result = run_in_process("eval.py", [tmp_path / "wide", "--device", "cpu"])
    assert_one_line_error(result, "has width 64 but the checkpoint", "has 48: pass --model")


def test_eval_needs_the_base_model_when_the_adapter_does_not_name_it(tmp_path, monkeypatch, capsys):
    write_adapter(tmp_path / "anonymous", torch.randn(3, 48), None)
    result = run_in_process("eval.py", [tmp_path / "anonymous"])
    assert_one_line_error(result, "does not name its base model (base_model_name_or_path): pass --model")


def test_target_and_task_are_for_adapters(tmp_path, monkeypatch, capsys):
    result = run_in_process("eval.py", [tmp_path / "a-run", "--task", "sst2"])
    assert_one_line_error(result, "are for a PEFT adapter")


def test_the_export_command_must_be_named(monkeypatch, capsys):
    result = run_in_process("minway.run.adapters", [])
    assert_one_line_error(result, "command")


def test_the_export_commands_help_says_what_it_does():
    result = subprocess.run([sys.executable, "-m", "minway.run.adapters", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "Soft prompts of Hugging Face PEFT" in result.stdout, result.stdout
    export = subprocess.run([sys.executable, "-m", "minway.run.adapters", "export", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stderr
    for said in ("a run directory holding prompt.safetensors", "the adapter directory to write", "overwrite"):
        assert said in " ".join(export.stdout.split()), said
