"""Training in process (minway.run.training): the dropout masks of each step, the unconstrained twin of ``compare``."""
from dataclasses import replace

import pytest

from fixtures import tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.run import training
from minway.run.config import RunConfig
from minway.errors import MinwayError


def tiny_config(checkpoint, data_dir, **changes):
    fields = dict(task="sst2", target="Is this movie good?", model=str(checkpoint), data_dir=str(data_dir),
                  device="cpu", steps=2, batch_size=2, max_eval=4)
    return RunConfig(**{**fields, **changes})


def test_each_step_draws_its_masks_from_the_runs_seed_and_the_step(tiny_checkpoint, tiny_data, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    drawn, step_generator = [], training.step_generator

    def recording(seed, step, device):
        drawn.append((seed, step))
        return step_generator(seed, step, device)
    monkeypatch.setattr(training, "step_generator", recording)
    training.train(tiny_config(tiny_checkpoint, tiny_data, seed=7, steps=3), tmp_path, progress=False)
    assert drawn == [(7, 0), (7, 1), (7, 2)]


def test_compare_trains_the_twin_at_gamma_zero_once_and_reuses_it(tiny_checkpoint, tiny_data, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    trained = []  # the gammas of each group of prompts trained
    train_group = training._train_group

    def recording(todo, *args):
        trained.append([config.gamma for config, _ in todo])
        return train_group(todo, *args)
    monkeypatch.setattr(training, "_train_group", recording)
    config = tiny_config(tiny_checkpoint, tiny_data, gamma=0.5)
    # with a progress bar, as the command line runs it
    first = training.compare(config, tmp_path, progress=True)
    assert trained == [[0.0], [0.5]]
    assert first["compare"]["unconstrained_run"] == replace(config, gamma=0.0).run_id()
    trained.clear()
    second = training.compare(replace(config, gamma=0.25), tmp_path, progress=True)
    assert trained == [[0.25]]  # the twin is finished: it is read back, not trained again
    assert second["compare"]["accuracy_unconstrained"] == first["compare"]["accuracy_unconstrained"]


def test_only_an_overflow_of_the_update_is_blamed_on_the_learning_rate():
    """AdamW's 'overflow' is a one-line error about --lr; any other failure of its step goes up as it is."""
    class Optimizer:
        def __init__(self, message):
            self.message = message

        def step(self):
            raise RuntimeError(self.message)
    config = RunConfig(task="sst2", target="x", model="m", lr=1e38)
    with pytest.raises(MinwayError, match="--lr 1e\\+38 makes an update larger than float32 holds"):
        training._update(Optimizer("value cannot be converted to type float without overflow"), config)
    with pytest.raises(RuntimeError, match="^CUDA error: an illegal memory access$"):
        training._update(Optimizer("CUDA error: an illegal memory access"), config)


def test_a_run_another_process_finished_meanwhile_is_read_not_trained(tiny_checkpoint, tiny_data, tmp_path,  # noqa: F811
                                                                      monkeypatch):
    """Found unfinished at the first look, finished when its lock is taken: its results are returned as stored."""
    first, second = (tiny_config(tiny_checkpoint, tiny_data, gamma=g) for g in (0.5, 0.25))
    stored = training.train(first, tmp_path, progress=False)
    monkeypatch.setattr(training, "reusable_results", lambda *args: None)  # the first look sees nothing yet
    trained = []
    train_group = training._train_group

    def recording(todo, *args):
        trained.extend(config.run_id() for config, _ in todo)
        return train_group(todo, *args)
    monkeypatch.setattr(training, "_train_group", recording)
    results = training.train_many([first, second], tmp_path, resume=True, progress=False)
    assert trained == [second.run_id()]
    assert results[0] == stored and results[1]["run_id"] == second.run_id()


def test_a_library_call_draws_its_progress_bar(tiny_checkpoint, tiny_data, capsys, tmp_path):  # noqa: F811
    """train_many and train, called from Python, show their bars unless told not to (the command lines
    decide for a terminal)."""
    config = RunConfig(task="sst2", target="Write a question about the given fact.", model=str(tiny_checkpoint),
                       data_dir=str(tiny_data), steps=2, batch_size=2, max_eval=4, device="cpu")
    for call in (lambda: training.train_many([config], tmp_path / "many"),
                 lambda: training.train(config, tmp_path / "one")):
        call()
        assert "| 2/2 " in capsys.readouterr().err  # the bar of the 2 steps
