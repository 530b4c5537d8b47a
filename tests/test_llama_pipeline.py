"""The whole method on a tiny random Llama 3 and Qwen 2.5, through the command lines as a user runs them:
train.py trains a prompt, eval.py reads it back, the prompt goes out as a PEFT adapter and comes back in,
a prompt trained by PEFT itself is read, sweep.py runs a constrained prompt and its twin. And the one
sequence PEFT and minway both build: on Qwen 2.5, which has no begin-of-text token, PEFT's logits with an
exported prompt are minway's.
"""
import importlib
import json
import re

import pytest
import torch

from fixtures import tiny_data  # noqa: F401  (pytest fixture)
from minway.batch import embed_rows
from minway.packing import pack
from minway.run import adapters
from minway.run.adapters import read_adapter, write_adapter
from minway.run.bpe_files import checkpoint_tokenizer
from minway.run.storage import load_prompt
from weights import load_model
from weights.random_llama import FAMILIES, write_random_llama

TARGET = "Write a question about the given fact."
FAST = ["--steps", 3, "--batch-size", 2, "--max-eval", 6, "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return write_random_llama(tmp_path_factory.mktemp("random-llama"), FAMILIES["llama"], embedding_norm=1.0)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return write_random_llama(tmp_path_factory.mktemp("random-qwen"), FAMILIES["qwen2"], embedding_norm=1.0)


def run_main(script, args, capsys):
    """What ``python script args`` prints when it succeeds."""
    importlib.import_module(script.removesuffix(".py")).main(list(map(str, args)))
    return capsys.readouterr().out


def only_run(out):
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "qwen"])
def test_train_eval_export_and_read_the_adapter_back(family, request, tiny_data, tmp_path, capsys):  # noqa: F811
    checkpoint = request.getfixturevalue(family)
    printed = run_main("train.py", [
        "--task", "sst2", "--model", checkpoint, "--target", TARGET, "--data-dir", tiny_data, "--out",
        tmp_path / "runs", *FAST], capsys)
    run = only_run(tmp_path / "runs")
    results = json.loads((run / "results.json").read_text())
    prompt, config, target_ids = load_prompt(run / "prompt.safetensors")
    tokenizer = checkpoint_tokenizer(checkpoint)
    assert target_ids == tokenizer.encode(TARGET) and prompt.shape == (len(target_ids), 64)
    assert results["n_test"] == 6 and results["random_weights"] and "prompt F1 [dot (main)]" in printed
    end_of_text = {"llama": "<|end_of_text|>", "qwen": "<|endoftext|>"}[family]  # what closes every output
    assert tokenizer.token_strings([tokenizer.eot_id]) == [end_of_text]

    run_main("eval.py", [run, "--device", "cpu", "--no-progress"], capsys)
    measured = json.loads((run / "eval.json").read_text())
    for key in ("accuracy", "hard_prompt_accuracy", "prompt_f1", "c_dist", "projections"):
        assert measured[key] == results[key], key

    adapters.main(["export", str(run), str(tmp_path / "adapter")])
    assert f"a PEFT prompt-tuning adapter of {checkpoint.resolve()}" in capsys.readouterr().out
    adapter = read_adapter(tmp_path / "adapter")
    assert torch.equal(adapter.prompt, prompt) and adapter.base_model == str(checkpoint.resolve())
    printed = run_main("eval.py", [
        tmp_path / "adapter", "--target", TARGET, "--task", "sst2", "--data-dir", tiny_data, "--max-eval", 6,
        "--device", "cpu", "--no-progress", "--json", tmp_path / "adapter.json"], capsys)
    read_back = json.loads((tmp_path / "adapter.json").read_text())
    assert f"a prompt of {len(target_ids)} vectors of width 64, read on {checkpoint.resolve()}" in printed
    for key in ("accuracy", "hard_prompt_accuracy", "prompt_f1", "projections"):
        assert read_back[key] == results[key], key


@pytest.mark.slow
def test_a_prompt_trained_by_peft_on_llama_is_read_by_eval(llama, tiny_data, tmp_path, capsys):  # noqa: F811
    transformers, peft = pytest.importorskip("transformers"), pytest.importorskip("peft")
    torch.manual_seed(0)
    model = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(llama),
                                peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=6))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = torch.tensor([[FAMILIES["llama"].bos_token_id, 40, 41, 42, 43]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    model.save_pretrained(tmp_path / "peft-adapter")
    trained = model.get_prompt_embedding_to_save("default").detach()

    adapter = read_adapter(tmp_path / "peft-adapter")
    assert torch.equal(adapter.prompt, trained) and adapter.base_model == str(llama)
    printed = run_main("eval.py", [
        tmp_path / "peft-adapter", "--target", TARGET, "--task", "sst2", "--data-dir", tiny_data, "--max-eval", 6,
        "--device", "cpu", "--no-progress"], capsys)
    assert "a prompt of 6 vectors of width 64" in printed and re.search(r"task accuracy .*on 6 test examples", printed)


def test_peft_gives_minways_logits_with_an_exported_prompt_on_qwen(qwen, tmp_path):
    """Qwen 2.5 has no begin-of-text token: PEFT's virtual tokens before the input ids are minway's prompt
    before the text, the same sequence."""
    transformers, peft = pytest.importorskip("transformers"), pytest.importorskip("peft")
    model, tokenizer = load_model(qwen), checkpoint_tokenizer(qwen)
    prompt = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    write_adapter(tmp_path / "adapter", prompt, str(qwen))
    theirs_model = peft.PeftModel.from_pretrained(transformers.Qwen2ForCausalLM.from_pretrained(qwen), tmp_path /
                                                  "adapter").eval()
    rows = [tokenizer.encode(text) for text in ("A gripping film.", "Dull, long and loud, it never ends.")]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        theirs = theirs_model(input_ids=ids, attention_mask=mask).logits
        ours = model(embeds=embed_rows(model, rows, [prompt] * len(rows)),
                     packed=pack([5 + len(r) for r in rows])).logits
    real = torch.cat([torch.ones(len(rows), 5, dtype=torch.bool), mask.bool()], dim=1)
    assert (ours - theirs[real]).abs().max() <= 1e-4


def test_a_sweep_runs_on_a_llama(llama, tiny_data, tmp_path, capsys):  # noqa: F811
    run_main("sweep.py", [
        "--tasks", "sst2", "--groups", "PILE-4", "--targets-limit", 1, "--gammas", "0.01", "--seeds", 1, "--models",
        llama, "--data-dir", tiny_data, "--out", tmp_path / "runs", "--sweep-dir", tmp_path / "sweep", "--steps", 2,
        "--batch-size", 2, "--max-eval", 4, "--device", "cpu", "--no-figures", "--no-progress"], capsys)
    runs = json.loads((tmp_path / "sweep" / "sweep.json").read_text())["runs"]
    assert [(run["gamma"], run["status"], run["error"]) for run in runs] == [(0.01, "done", None), (0.0, "done", None)]
