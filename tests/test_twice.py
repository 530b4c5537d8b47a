"""State across invocations and while work runs: locks probed while a run or a sweep trains and while it
evaluates; a sweep started again after some of its runs failed; train.py run twice, the second time with
each option changed that decides whether a finished run is shown, continued or trained again."""
import threading

import pytest

from fixtures import SHIPPED_PROMPTS
from fixtures import tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.errors import MinwayError
from minway.experiments import runner
from minway.experiments.presets import Grid
from minway.experiments.plan import expand
from minway.experiments.runner import run_sweep
from minway.run import training
from minway.run.config import RunConfig
from minway.run.files import DirectoryLock

pytestmark = pytest.mark.slow  # end to end, each run twice

TARGET = "Write a question about the given fact."


def config_of(checkpoint, data, **fields):
    return RunConfig(**{"task": "sst2", "target": TARGET, "model": str(checkpoint), "data_dir": str(data),
                        "device": "cpu", "steps": 2, "batch_size": 2, "max_eval": 3, **fields})


def tiny_runs(checkpoint, data):
    """A constrained run and its twin, as a sweep plans them."""
    grid = Grid(tasks=("sst2",), groups=("PILE-4",), gammas=(0.01,), seeds=(1,), models=(str(checkpoint),),
                targets_limit=1)
    return expand(grid, SHIPPED_PROMPTS, {"steps": 2, "batch_size": 2, "max_eval": 3, "device": "cpu",
                                          "data_dir": str(data)})


class Paused:
    """Holds the work in a thread at the first call of ``training.<name>`` (a training step, or the final
    evaluation), so that what it holds can be probed from outside; then lets it finish."""

    def __init__(self, monkeypatch, name):
        self.reached, self.go, real = threading.Event(), threading.Event(), getattr(training, name)

        def paused(*args, **kwargs):
            self.reached.set()
            assert self.go.wait(120)
            return real(*args, **kwargs)
        monkeypatch.setattr(training, name, paused)

    def run(self, work):
        """Start ``work`` in a thread; return once it is paused (or has ended), and a function that lets it
        finish and returns what it raised or returned."""
        outcome = {}

        def target():
            try:
                outcome["value"] = work()
            except BaseException as error:  # noqa: BLE001 - handed to the test
                outcome["error"] = error
        thread = threading.Thread(target=target)
        thread.start()
        while not self.reached.wait(0.05):
            assert thread.is_alive(), outcome.get("error")

        def finish():
            self.go.set()
            thread.join(120)
            if "error" in outcome:
                raise outcome["error"]
            return outcome["value"]
        return finish


def assert_locked(directory):
    with pytest.raises(MinwayError, match="is in use by process"):
        with DirectoryLock(directory):
            pass


def assert_free(directory):
    with DirectoryLock(directory):
        pass


@pytest.mark.parametrize("moment", ["bank_losses", "measure_prompt"], ids=["training", "evaluation"])
def test_a_run_holds_its_lock_while_it_trains_and_evaluates(tiny_checkpoint, tiny_data, tmp_path, monkeypatch,  # noqa: F811
                                                            moment):
    config = config_of(tiny_checkpoint, tiny_data)
    pause = Paused(monkeypatch, moment)
    finish = pause.run(lambda: training.train(config, tmp_path, progress=False))
    run_dir = tmp_path / config.run_id()
    assert_locked(run_dir)
    with pytest.raises(MinwayError, match="is in use by process"):  # a second process, --resume or --force too
        training.train(config, tmp_path, resume=True, force=True, progress=False)
    finish()
    assert_free(run_dir)


@pytest.mark.parametrize("moment", ["bank_losses", "measure_prompt"], ids=["training", "evaluation"])
def test_a_sweep_holds_its_directory_while_its_runs_train(tiny_checkpoint, tiny_data, tmp_path, monkeypatch,  # noqa: F811
                                                         moment):
    """The lock of a sweep directory, probed from outside while the sweep trains (taken and released before
    the runs would leave a second sweep free to start)."""
    runs = tiny_runs(tiny_checkpoint, tiny_data)
    pause = Paused(monkeypatch, moment)
    finish = pause.run(lambda: run_sweep(runs, tmp_path / "out", tmp_path / "sweep", progress=False))
    assert_locked(tmp_path / "sweep")
    with pytest.raises(MinwayError, match=r"sweep is in use by process"):
        run_sweep(runs, tmp_path / "out", tmp_path / "sweep", progress=False)
    assert any(_locked(tmp_path / "out" / run.run_id) for run in runs)  # and the run in training, its own
    state = finish()
    assert state.count("done") == len(runs)
    assert_free(tmp_path / "sweep")


def _locked(directory):
    try:
        assert_locked(directory)
        return True
    except AssertionError:
        return False


def test_a_sweep_started_again_retries_the_runs_that_failed(tiny_checkpoint, tiny_data, tmp_path, monkeypatch):  # noqa: F811
    runs = tiny_runs(tiny_checkpoint, tiny_data)
    failing = runs[0].run_id

    with monkeypatch.context() as patch:  # the first time, one run fails (a node lost, a full disk...)
        real = runner.train_chunk

        def fail_one(configs, *args, **kwargs):  # a chunk is one run (one prompt per batch)
            if configs[0].run_id() == failing:
                return {failing: "OSError: simulated"}
            return real(configs, *args, **kwargs)
        patch.setattr(runner, "train_chunk", fail_one)
        first = run_sweep(runs, tmp_path / "out", tmp_path / "sweep", prompts_per_batch=1, progress=False)
    assert first.entry[failing]["status"] == "failed" and first.count("done") == len(runs) - 1

    trained = []
    real_many = runner.train_many
    monkeypatch.setattr(runner, "train_many", lambda configs, *a, **k: trained.extend(c.run_id() for c in configs)
                        or real_many(configs, *a, **k))
    second = run_sweep(runs, tmp_path / "out", tmp_path / "sweep", prompts_per_batch=1, progress=False)
    assert trained == [failing]  # the failed run is tried again, the finished one is not
    assert second.count("done") == len(runs) and second.entry[failing]["error"] is None
    assert (tmp_path / "out" / failing / "results.json").is_file()


# --- train.py twice ---------------------------------------------------------------------------------------

def train_args(checkpoint, data, out, *extra):
    return ["--task", "sst2", "--target", TARGET, "--model", str(checkpoint), "--data-dir", str(data), "--device",
            "cpu", "--steps", "2", "--batch-size", "2", "--max-eval", "3", "--out", str(out), "--no-progress",
            *map(str, extra)]


class Trained:
    """The run ids each call of train.py trains (its groups of prompts), for a spy on training._train_group."""

    def __init__(self, monkeypatch):
        self.ids, real = [], training._train_group

        def spy(todo, *args, **kwargs):
            self.ids += [config.run_id() for config, _ in todo]
            return real(todo, *args, **kwargs)
        monkeypatch.setattr(training, "_train_group", spy)


# (the second command's extra options, after a first without them; which runs it trains: "run" the run
# itself, "twin" its gamma = 0 twin, "other" a run of another id; whether it says nothing was trained)
SECOND_COMMANDS = [
    ((), [], True),
    (("--compare",), ["twin"], False),                # a twin never trained: trained now, the run kept
    (("--force",), ["run"], False),
    (("--resume",), [], True),
    (("--gamma", "0.5"), ["other"], False),
    (("--train-split", "all"), ["other"], False),
    (("--eval-every", "1", "--checkpoint-every", "1"), [], True),  # not what a run's result depends on
    (("--seed", "2"), ["other"], False),
]


@pytest.mark.parametrize("extra, trains, shown", SECOND_COMMANDS, ids=[" ".join(c[0]) or "same" for c in SECOND_COMMANDS])
def test_train_py_run_twice_with_an_option_changed(tiny_checkpoint, tiny_data, tmp_path, monkeypatch, capsys,  # noqa: F811
                                                   extra, trains, shown):
    import train as train_cli

    config = config_of(tiny_checkpoint, tiny_data)
    train_cli.main(train_args(tiny_checkpoint, tiny_data, tmp_path))
    prompt_before = (tmp_path / config.run_id() / "prompt.safetensors").read_bytes()
    capsys.readouterr()
    spy = Trained(monkeypatch)
    train_cli.main(train_args(tiny_checkpoint, tiny_data, tmp_path, *extra))
    out = capsys.readouterr().out
    twin = config_of(tiny_checkpoint, tiny_data, gamma=0.0).run_id()
    kinds = ["run" if i == config.run_id() else "twin" if i == twin else "other" for i in spy.ids]
    assert kinds == trains
    assert ("this run had finished before, so nothing was trained" in out) == shown
    if "run" not in trains:  # the finished run is kept as it was
        assert (tmp_path / config.run_id() / "prompt.safetensors").read_bytes() == prompt_before
    if extra == ("--compare",):
        assert "unconstrained vs constrained" in out and (tmp_path / twin / "results.json").is_file()
        spy.ids.clear()
        train_cli.main(train_args(tiny_checkpoint, tiny_data, tmp_path, *extra))  # a third time: nothing to train
        assert spy.ids == [] and "nothing was trained" in capsys.readouterr().out
