"""The single-prompt loop (minway.loop.train_prompt) is the method the runs train with: ``train()``, with
its bank of prompts, checkpoints and logs, ends bitwise where the loop ends, with dropout and without."""
import dataclasses
import inspect
import json

import pytest
import torch

from fixtures import first_rows, tiny_checkpoint, write_tsv  # noqa: F401  (pytest fixtures)
from minway.loop import BatchSchedule, clip_gradient, learning_rate, train_prompt
from minway.run.config import RunConfig
from minway.run.model_and_data import Setup
from minway.run.storage import load_prompt
from minway.run.training import train

STEPS = 7


@pytest.fixture(scope="module")
def ten_examples(tmp_path_factory):
    # 10 training examples in batches of 4: steps 2 and 5 end an epoch with a batch of 2
    data = tmp_path_factory.mktemp("ten-examples")
    write_tsv(data / "sst2" / "train.tsv", first_rows("sst2", "train", 10))
    write_tsv(data / "sst2" / "test.tsv", first_rows("sst2", "test", 4))
    return data


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_train_ends_bitwise_where_the_loop_ends(tiny_checkpoint, ten_examples, tmp_path, dropout):  # noqa: F811
    # clip 0.05: the tiny model's gradient norms are 0.02 to 0.1, so some steps are clipped and some not;
    # a checkpoint every 3 steps: the run is saved mid-way, which must change nothing
    config = RunConfig(task="sst2", target="Is this movie good?", model=str(tiny_checkpoint),
                       data_dir=str(ten_examples), device="cpu", steps=STEPS, batch_size=4, gamma=0.5, lr=0.05,
                       clip=0.05, dropout=dropout, seed=3, checkpoint_every=3, weight_decay=0.01)
    setup = Setup(config)
    loop = train_prompt(setup.model, setup.target_ids(config), setup.train_inputs, setup.train_outputs,
                        gamma=config.gamma, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                        weight_decay=config.weight_decay, clip=config.clip, dropout=config.dropout, seed=config.seed)
    train(config, tmp_path, progress=False, setup=setup)
    run = tmp_path / config.run_id()
    prompt, _, _ = load_prompt(run / "prompt.safetensors")
    assert torch.equal(prompt, loop.prompt)
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["loss"] for entry in logged] == [float(loss.total) for loss in loop.losses]
    assert [entry["distance"] for entry in logged] == [float(loss.distance) for loss in loop.losses]
    assert not torch.equal(loop.prompt, setup.model.wte.weight[setup.target_ids(config)])  # it moved


def test_the_loop_follows_the_schedule_it_states():
    assert [learning_rate(0.01, step, 4) for step in range(4)] == [0.01, 0.0075, 0.005, 0.0025]
    schedule = BatchSchedule(10, 4, seed=3)
    for epoch in range(2):  # each epoch is every example once, the last batch of it shorter
        batches = [schedule[3 * epoch + i] for i in range(3)]
        assert [len(b) for b in batches] == [4, 4, 2]
        assert sorted(i for b in batches for i in b) == list(range(10))
    assert list(schedule[0]) != list(schedule[3])  # and each epoch in an order of its own


@pytest.mark.parametrize("norm", [0.5, 2.0, 8.0])
def test_clip_gradient_is_torchs_clip_grad_norm(norm):
    grad = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    grad *= norm / grad.norm()
    reference = torch.nn.Parameter(torch.zeros(3, 5))
    reference.grad = grad.clone()
    expected_norm = torch.nn.utils.clip_grad_norm_([reference], 2.0)
    got_norm = clip_gradient(grad, 2.0)
    torch.testing.assert_close(got_norm, expected_norm)
    torch.testing.assert_close(grad, reference.grad)
    assert float(grad.norm()) == pytest.approx(min(norm, 2.0), rel=1e-5)


def test_the_loops_defaults_are_a_runs():
    """Called with its defaults, the loop trains as train.py does with its own: the paper's settings."""
    run = {field.name: field.default for field in dataclasses.fields(RunConfig)}
    defaults = {name: p.default for name, p in inspect.signature(train_prompt).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert set(defaults) == {"gamma", "steps", "batch_size", "lr", "weight_decay", "clip", "dropout", "seed"}
    assert defaults == {**{name: run[name] for name in defaults}, "batch_size": 8}  # the run's: the task's, 8 for sst2
