"""The projection report of ``minway.evaluation``: which F1 is which."""
import pytest
import torch

from fixtures import TOKENIZER_DIR, sharp_model
from fixtures import tiny_checkpoint  # noqa: F401  (pytest fixture)
from minway.evaluation import measure, projection_report, summary
from minway.prompt import c_proj
from minway.tasks import TASKS, encode_options
from minway.run.tokenizer import load_tokenizer
from weights import load_gpt2


@pytest.mark.parametrize("metric", ["l2", "cos"])
def test_f1_lemmatises_and_f1_no_lemma_does_not(tiny_checkpoint, metric):  # noqa: F811
    tokenizer, model = load_tokenizer(tiny_checkpoint), load_gpt2(tiny_checkpoint)
    prompt_ids, target_ids = tokenizer.encode("Children went home"), tokenizer.encode("Child go home")
    assert len(prompt_ids) == len(target_ids) == 3
    # a prompt sitting on the tokens of the first text projects to them
    report = projection_report(c_proj(model, prompt_ids), target_ids, tokenizer, model.wte.weight, metric)
    assert report["text"] == "Children went home"
    assert report["f1"] == 1.0                                   # child, go, home on both sides
    assert report["f1_no_lemma"] == pytest.approx(1 / 3)         # only "home" is the same word
    assert report["f1_released_code"] == pytest.approx(1 / 3)
    assert report["position_match"] == pytest.approx(1 / 3)
    assert report["marked"] == "[Children] [went] [-Child] [-go] home"  # the projection, marked against the target


def test_measure_shows_no_progress_unless_asked(tiny_checkpoint, capsys):  # noqa: F811
    """Training measures the prompt under its own bar (--eval-every): measure draws none of its own by default."""
    tokenizer, model = load_tokenizer(tiny_checkpoint), load_gpt2(tiny_checkpoint)
    options = encode_options(TASKS["sst2"], tokenizer)
    prompt, inputs = c_proj(model, tokenizer.encode("Is it good?")), [tokenizer.encode(" A fine film.")] * 3
    results = measure(model, tokenizer, options.outputs, prompt, None, inputs, [1, 0, 1])
    assert 0 <= results["accuracy"] <= 1 and capsys.readouterr().err == ""
    measure(model, tokenizer, options.outputs, prompt, None, inputs, [1, 0, 1], progress=True)
    assert "test (continuous)" in capsys.readouterr().err


def report(f1, unreachable=(), ceiling=1.0, marked="Is this movie good?"):
    return {"f1": f1, "f1_no_lemma": f1 / 2, "f1_released_code": f1 / 4, "position_match": f1,
            "unreachable_target_tokens": list(unreachable), "f1_ceiling": ceiling, "marked": marked}


def test_summary_of_a_plain_run():
    results = {"accuracy": 0.75, "n_test": 12, "metric": "l2", "c_dist": 0.25,
               "projections": {"dot": report(0.5, [42], 0.8, "Is [it] movie good?"), "l2": report(1.0)}}
    assert summary(results, "Is this  movie\n good?").splitlines() == [
        "task accuracy (continuous prompt): 75.0%  on 12 test examples",
        "c-dist to target: 0.2500",
        "prompt F1 [dot]: 0.50 (no lemmas 0.25, the released code's 0.12), positions matched 50.0%, ceiling 0.80",
        "prompt F1 [l2 (main)]: 1.00 (no lemmas 0.50, the released code's 0.25), positions matched 100.0%",
        "target   : Is this movie good?",
        "projected: Is this movie good?   ([x] differs, [-x] missing)",
    ]


@pytest.mark.parametrize("drop, shown", [(6.25, "6.2%"), (None, "n/a")])
def test_summary_with_hard_prompt_permuted_labels_unreachable_tokens_and_the_twin(drop, shown):
    results = {"accuracy": 0.75, "n_test": 12, "metric": "dot", "c_dist": 0.25, "hard_prompt_accuracy": 0.5,
               "config": {"label_map": [1, 0]}, "prompt_f1": 0.5,
               "compare": {"accuracy_unconstrained": 0.8, "accuracy_constrained": 0.75, "relative_drop": drop,
                           "f1_unconstrained": 0.375},
               "projections": {"dot": report(0.5, [42], 0.8, "Is [it] movie good?")}}
    assert summary(results, "Is this movie good?").splitlines() == [
        "task accuracy (continuous prompt): 75.0%  on 12 test examples",
        "labels permuted by --label-map 1,0: accuracy counts the permuted labels as correct",
        "hard-prompt accuracy (d-proj as text): 50.0%",
        "c-dist to target: 0.2500",
        "prompt F1 [dot (main)]: 0.50 (no lemmas 0.25, the released code's 0.12), positions matched 50.0%, "
        "ceiling 0.80",
        "target tokens unreachable under dot: [42] (no gamma can project to them)",
        "target   : Is this movie good?",
        "projected: Is [it] movie good?   ([x] differs, [-x] missing)",
        f"unconstrained vs constrained: Acc(p*c) 80.0 -> Acc(p~c) 75.0, relative drop {shown}; "
        "prompt F1 0.38 -> 0.50",
    ]


def hand_predictions(model, prompt_ids, inputs, option_tokens):
    """For each input, the option (each one token) of the highest probability after the tokens of prompt and
    input, from one full pass over them (no cache, no prompt vectors: the hard prompt as the tokens it is)."""
    predictions = []
    for ids_in in inputs:
        logits = model(embeds=model.embed(torch.tensor(prompt_ids + ids_in))).logits[-1]
        predictions.append(max(range(len(option_tokens)), key=lambda label: float(logits[option_tokens[label]])))
    return predictions


@torch.no_grad()
def test_hard_prompt_accuracy_is_that_of_the_projections_tokens():
    """Its value, against predictions made by hand from the tokens the prompt projects to: the labels are
    those predictions, so the accuracy must be 1, and the target's tokens predict otherwise on some input
    (a hard prompt read off the target, not the projection, would score below 1)."""
    model, tokenizer = sharp_model(), load_tokenizer(TOKENIZER_DIR)
    E = model.wte.weight
    target = tokenizer.encode("Write a question about the given fact.")
    prompt = torch.randn(len(target), E.shape[1], generator=torch.Generator().manual_seed(0)) * 3
    projected = (prompt @ E.T).argmax(1).tolist()  # the nearest token by dot product, by brute force
    assert projected != target
    inputs, option_tokens = [[100 + 37 * i] for i in range(32)], (262, 290, 318, 257, 284, 286)
    options = [[t] for t in option_tokens]
    labels = hand_predictions(model, projected, inputs, option_tokens)
    assert labels != hand_predictions(model, target, inputs, option_tokens), "the test needs prompts that disagree"
    results = measure(model, tokenizer, options, prompt, target, inputs, labels, "dot")
    assert results["projections"]["dot"]["ids"] == projected
    assert results["hard_prompt_accuracy"] == 1.0
    without_target = measure(model, tokenizer, options, prompt, None, inputs, labels, "dot")  # a PEFT adapter's
    assert without_target["hard_prompt_accuracy"] == 1.0
