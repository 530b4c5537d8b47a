"""The projection report of ``minway.evaluation``: which F1 is which."""
import pytest

from fixtures import tiny_checkpoint  # noqa: F401  (pytest fixture)
from minway.evaluation import projection_report
from minway.prompt import c_proj
from minway.tokenizer import load_tokenizer
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
