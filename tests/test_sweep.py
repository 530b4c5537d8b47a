"""The sweep: grid expansion and presets, a tiny sweep end to end, its report and figures,
resuming, and a failing run that does not stop the others."""
import json
import statistics
import sys
from collections import defaultdict
from types import SimpleNamespace

import pytest

import minway.experiments.runner as sweep
from fixtures import SHIPPED_PROMPTS, TOKENIZER_DIR, run_script, tiny_checkpoint, tiny_data  # noqa: F401
from minway.errors import MinwayError
from minway.experiments.presets import PRESETS, Grid
from minway.experiments.report import choose_gammas, write_report
from minway.experiments.plan import expand
from minway.experiments.runner import make_chunks, run_sweep
from minway.run.config import RunConfig
TOO_LONG = "word " * 1100  # more tokens than the tiny model's context of 1024


# ---------------------------------------------------------------- the grid, no training

@pytest.mark.parametrize("preset, runs", [("main", 5 * 62 * 3 * 2), ("gamma", 2 * 32 * 3 * 7),
                                          ("length", 2 * 5 * 30 * 3 * 2), ("size", 4 * 30 * 3 * 4),
                                          ("true", 5 * 5 * 3 * 2)])
def test_presets_have_the_papers_counts(preset, runs):
    assert len(expand(PRESETS[preset], SHIPPED_PROMPTS)) == runs


def test_every_constrained_run_has_its_twin():
    runs = expand(PRESETS["gamma"], SHIPPED_PROMPTS)
    by_id = {r.run_id: r for r in runs}
    constrained = [r for r in runs if r.config.gamma > 0]
    assert {r.config.gamma for r in constrained} == set(PRESETS["gamma"].gammas)
    for run in constrained:
        twin = by_id[run.twin_id].config
        assert (twin.gamma, twin.target, twin.seed, twin.task, twin.model) == \
               (0.0, run.config.target, run.config.seed, run.config.task, run.config.model)


def test_true_targets_are_the_tasks_own_definitions():
    runs = expand(PRESETS["true"], SHIPPED_PROMPTS)
    for task, prefix in (("sst2", "SST-2_"), ("sst5", "sst-5_"), ("agnews", "agnews_"), ("trec", "trec_")):
        names = {r.config.target_name for r in runs if r.config.task == task}
        assert names == {f"{prefix}{i}" for i in range(5)}


def test_length_groups_hold_targets_of_their_token_length():
    from minway.run.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(TOKENIZER_DIR)
    runs = expand(PRESETS["length"], SHIPPED_PROMPTS)
    for run in runs:
        assert len(tokenizer.encode(run.config.target)) == int(run.group.removeprefix("PILE-"))


def test_overrides_and_chunks():
    grid = PRESETS["main"]
    grid = type(grid)(**{**grid.__dict__, "tasks": ("sst2",), "seeds": (1, 2), "targets_limit": 3})
    runs = expand(grid, SHIPPED_PROMPTS, {"steps": 5})
    assert len(runs) == 1 * 2 * 3 * 2 * 2 and all(r.config.steps == 5 for r in runs)
    chunks = make_chunks(runs, 5)
    assert sorted(r.run_id for c in chunks for r in c) == sorted(r.run_id for r in runs)
    for chunk in chunks:
        assert len(chunk) <= 5
        assert len({(r.config.setup_key(), r.config.schedule_key()) for r in chunk}) == 1


def test_choose_gamma_takes_the_most_accurate_above_098():
    def row(gamma, f1, acc):
        return {"model": "m", "task": "sst2", "group": "PILE", "gamma": gamma, "f1": {"mean": f1, "std": 0.0},
                "acc_constrained": {"mean": acc, "std": 0.0}}
    chosen = choose_gammas([row(0.003, 0.95, 0.93), row(0.005, 0.985, 0.90), row(0.01, 0.99, 0.91)])
    assert [(c["gamma"], c["meets_threshold"]) for c in chosen] == [(0.01, True)]
    chosen = choose_gammas([row(0.005, 0.985, 0.91), row(0.01, 0.99, 0.91)])
    assert [c["gamma"] for c in chosen] == [0.005]  # a tie goes to the smaller gamma
    chosen = choose_gammas([row(0.003, 0.90, 0.93), row(0.01, 0.97, 0.90)])
    assert [(c["gamma"], c["meets_threshold"]) for c in chosen] == [(0.01, False)]


# ---------------------------------------------------------------- a tiny sweep, trained

def write_prompts(directory, shipped_prompts):
    """A prompts directory: three NI targets (one longer than the context), one PILE-4 and one PILE-7."""
    directory.mkdir(parents=True, exist_ok=True)
    natural = list(json.loads((shipped_prompts / "natural_prompts.json").read_text()).items())
    files = {"natural_prompts.json": {**dict(natural[:2]), "too_long": TOO_LONG}}
    for n in (4, 7):
        pile = json.loads((shipped_prompts / f"pile_n={n}.json").read_text())
        files[f"pile_n={n}.json"] = {"prompt00": pile["prompt00"]}
    true = json.loads((shipped_prompts / "good_prompts.json").read_text())
    files["good_prompts.json"] = {name: true[name] for name in ("SST-2_0", "SST-2_1", "agnews_0")}
    for name, prompts in files.items():
        (directory / name).write_text(json.dumps(prompts))
    return directory


def tiny_grid(groups=("NI", "PILE-4", "PILE-7")):
    return Grid(tasks=("sst2",), groups=groups, gammas=(0.01, 0.03), seeds=(1,))


def tiny_fields(data_dir):
    return {"steps": 2, "batch_size": 2, "k": 4, "max_eval": 6, "device": "cpu", "data_dir": str(data_dir),
            "checkpoint_every": 1}


class TrainingSpy:
    """Counts what the sweep hands to training."""

    def __init__(self, monkeypatch):
        self.trained = []
        real = sweep.train_many

        def spy(configs, *args, **kwargs):
            self.trained += [c.run_id() for c in configs]
            return real(configs, *args, **kwargs)
        monkeypatch.setattr(sweep, "train_many", spy)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, tiny_checkpoint, tiny_data):  # noqa: F811
    root = tmp_path_factory.mktemp("sweep")
    prompts = write_prompts(root / "prompts", SHIPPED_PROMPTS)
    fields = tiny_fields(tiny_data)
    grid = Grid(**{**tiny_grid().__dict__, "models": (str(tiny_checkpoint),)})
    runs = expand(grid, prompts, fields)
    # first a part of the sweep, as if the sweep had been stopped there
    first = [r for r in runs if r.group == "PILE-4"]
    run_sweep(first, root / "runs", root / "sweep", prompts_per_batch=4, progress=False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        spy = TrainingSpy(monkeypatch)
        state = run_sweep(runs, root / "runs", root / "sweep", prompts_per_batch=4, progress=False)
    return {"root": root, "runs": runs, "first": first, "state": state, "trained": spy.trained,
            "prompts": prompts, "fields": fields, "grid": grid}


def expected_rows(sweep_json, out):
    """Mean and population std per (task, group, gamma), by hand from the runs' results.json."""
    read = lambda run_id: json.loads((out / run_id / "results.json").read_text())  # noqa: E731
    pairs = defaultdict(list)
    for entry in sweep_json["runs"]:
        if entry["gamma"] > 0 and entry["status"] == "done":
            c, u = read(entry["run_id"]), read(entry["twin"])
            pairs[entry["task"], entry["group"], entry["gamma"]].append(
                (u["accuracy"], c["accuracy"], 100 * (u["accuracy"] - c["accuracy"]) / u["accuracy"], c["prompt_f1"]))
    return {key: [(statistics.fmean(v), statistics.pstdev(v)) for v in zip(*values)]
            for key, values in pairs.items()}


def assert_report_matches_runs(sweep_dir, out):
    report = json.loads((sweep_dir / "report.json").read_text())
    expected = expected_rows(json.loads((sweep_dir / "sweep.json").read_text()), out)
    assert {(r["task"], r["group"], r["gamma"]) for r in report["rows"]} == set(expected)
    markdown = (sweep_dir / "report.md").read_text()
    for row in report["rows"]:
        want = expected[row["task"], row["group"], row["gamma"]]
        got = [row[m] for m in ("acc_unconstrained", "acc_constrained", "relative_drop", "f1")]
        for (mean, std), stat in zip(want, got):
            assert stat["mean"] == pytest.approx(mean) and stat["std"] == pytest.approx(std, abs=1e-12)
        f1 = want[3]  # from 0 to 1, as everywhere in minway; accuracies in %, as the paper's tables
        assert f"| {f1[0]:.2f} ± {f1[1]:.2f} |" in markdown and f"{100 * want[1][0]:.1f} ± " in markdown
    return report


@pytest.mark.slow
def test_average_rows_are_the_mean_of_the_group_rows(tiny_sweep):
    write_report(tiny_sweep["root"] / "sweep")
    report = json.loads((tiny_sweep["root"] / "sweep" / "report.json").read_text())
    assert {a["gamma"] for a in report["averages"]} == {0.01, 0.03}
    for average in report["averages"]:
        groups = [r for r in report["rows"] if r["task"] == average["task"] and r["gamma"] == average["gamma"]]
        assert {r["group"] for r in groups} == {"NI", "PILE-4", "PILE-7"}
        for measure in ("acc_unconstrained", "acc_constrained", "f1"):
            means = [r[measure]["mean"] for r in groups]
            assert average[measure]["mean"] == pytest.approx(sum(means) / len(means))
        assert average["n"] == sum(r["n"] for r in groups)


@pytest.mark.slow
def test_true_definitions_are_set_against_the_irrelevant_targets(tiny_sweep):
    """Table 5: a sweep of TRUE targets, reported with the runs of the sweep of irrelevant ones."""
    root = tiny_sweep["root"]
    grid = Grid(**{**tiny_sweep["grid"].__dict__, "groups": ("TRUE",)})
    true_runs = expand(grid, tiny_sweep["prompts"], tiny_sweep["fields"])
    assert sorted({r.config.target_name for r in true_runs}) == ["SST-2_0", "SST-2_1"]  # sst2's own only
    run_sweep(true_runs, root / "runs", root / "true", prompts_per_batch=4, progress=False)
    write_report(root / "true", also=[root / "sweep"])
    report = json.loads((root / "true" / "report.json").read_text())
    true_drops = expected_rows(json.loads((root / "true" / "sweep.json").read_text()), root / "runs")
    irrelevant = expected_rows(json.loads((root / "sweep" / "sweep.json").read_text()), root / "runs")
    assert [(t["gamma"], t["tasks"]) for t in report["true_against_irrelevant"]] == [(0.01, ["sst2"]),
                                                                                     (0.03, ["sst2"])]
    for table in report["true_against_irrelevant"]:
        gamma = table["gamma"]
        assert table["true_drop"] == [pytest.approx(true_drops["sst2", "TRUE", gamma][2][0])]
        group_means = [irrelevant["sst2", g, gamma][2][0] for g in ("NI", "PILE-4", "PILE-7")]
        assert table["irrelevant_drop"] == [pytest.approx(sum(group_means) / 3)]
    # the Avg rows leave the true definitions out
    for average in report["averages"]:
        assert average["n"] == sum(r["n"] for r in report["rows"]
                                   if r["gamma"] == average["gamma"] and r["group"] != "TRUE")
    assert "(Table 5)" in (root / "true" / "report.md").read_text()


def test_sweep_trains_every_run_but_the_failing_one(tiny_sweep):
    state, runs = tiny_sweep["state"], tiny_sweep["runs"]
    assert len(runs) == 5 * 3  # 5 targets x (2 gammas + twin)
    failed = [r for r in state.data["runs"] if r["status"] == "failed"]
    assert {r["target_name"] for r in failed} == {"too_long"} and len(failed) == 3
    assert all("exceeds the model's context" in r["error"] for r in failed)
    assert state.count("done") == 12 and state.count("pending") == 0
    for run in runs:
        finished = (tiny_sweep["root"] / "runs" / run.run_id / "results.json").exists()
        assert finished == (run.config.target_name != "too_long")


def test_a_stopped_sweep_continues_without_repeating_finished_runs(tiny_sweep):
    first_ids = {r.run_id for r in tiny_sweep["first"]}
    assert first_ids and not first_ids & set(tiny_sweep["trained"])
    assert set(tiny_sweep["trained"]) == {r.run_id for r in tiny_sweep["runs"]} - first_ids


@pytest.mark.slow
def test_report_numbers_are_the_means_of_the_runs(tiny_sweep):
    from minway.experiments.figures import write_figures

    root = tiny_sweep["root"]
    write_report(root / "sweep")
    report = assert_report_matches_runs(root / "sweep", root / "runs")
    assert report["counts"] == {"done": 12, "failed": 3, "pending": 0}
    assert report["random_weights"] and "random-weight checkpoint" in (root / "sweep" / "report.md").read_text()
    assert next(r for r in report["rows"] if r["group"] == "NI")["n"] == 2
    assert "too_long" in (root / "sweep" / "report.md").read_text()
    assert {c["group"] for c in report["chosen_gamma"]} == {"NI", "PILE-4", "PILE-7"}
    written = write_figures(root / "sweep")
    assert sorted(p.name for p in written) == ["gamma.png", "length.png", "positions.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_finished_sweep_trains_nothing(tiny_sweep, monkeypatch):
    root = tiny_sweep["root"]
    done = [r for r in tiny_sweep["runs"] if r.config.target_name != "too_long"]
    times = {r.run_id: (root / "runs" / r.run_id / "results.json").stat().st_mtime_ns for r in done}
    spy = TrainingSpy(monkeypatch)
    state = run_sweep(done, root / "runs", root / "again", progress=False)
    assert spy.trained == [] and state.count("done") == len(done)
    assert times == {r.run_id: (root / "runs" / r.run_id / "results.json").stat().st_mtime_ns for r in done}


def test_size_figure_from_two_models(tmp_path):
    from minway.experiments.figures import require_matplotlib, size_figure

    def row(model, gamma, acc, f1):
        stat = lambda v: {"mean": v, "std": 0.01}  # noqa: E731
        return {"model": model, "task": "sst2", "group": "PILE", "gamma": gamma, "n": 3,
                "acc_unconstrained": stat(acc + 0.01), "acc_constrained": stat(acc), "relative_drop": stat(1.0),
                "f1": stat(f1), "f1_unconstrained": stat(0.1), "length": stat(20.0)}
    rows = [row("gpt2", 0.005, 0.8, 0.97), row("gpt2", 0.01, 0.78, 0.99), row("gpt2-medium", 0.005, 0.85, 0.99)]
    path = size_figure(require_matplotlib(), rows, choose_gammas(rows), tmp_path / "size.png")
    assert path.exists() and path.stat().st_size > 1000


# ---------------------------------------------------------------- the command line

def test_a_sweep_shows_its_progress_over_runs_and_over_steps(tmp_path, tiny_checkpoint, tiny_data, capsys):  # noqa: F811
    grid = Grid(tasks=("sst2",), groups=("PILE-4",), gammas=(0.01,), seeds=(1,), models=(str(tiny_checkpoint),),
                targets_limit=1)
    runs = expand(grid, SHIPPED_PROMPTS, {**tiny_fields(tiny_data), "steps": 3})
    run_sweep(runs, tmp_path / "runs", tmp_path / "sweep", prompts_per_batch=1, progress=True)
    err = capsys.readouterr().err
    assert "sweep: " in err and "| 2/2 " in err  # its two runs
    for run in ("sst2 gamma=0.01: ", "sst2 gamma=0: "):  # below, each run's steps (drawn when it starts)
        assert f"{run}  0%|          | 0/3 " in err, err


def test_dry_run_lists_the_runs(tiny_sweep, tmp_path):
    root = tiny_sweep["root"]
    args = ["--tasks", "sst2", "--groups", "PILE-4,PILE-7", "--gammas", "0.01,0.03", "--seeds", "1",
            "--models", tiny_sweep["grid"].models[0], "--prompts-dir", root / "prompts", "--out", root / "runs",
            "--steps", 2, "--batch-size", 2, "--k", 4, "--max-eval", 6, "--device", "cpu",
            "--data-dir", tiny_sweep["fields"]["data_dir"], "--checkpoint-every", 1, "--dry-run"]
    result = run_script("sweep.py", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 7 and all(line.startswith("done ") for line in lines[:6])
    assert lines[-1] == "6 runs (4 constrained, 2 unconstrained twins), 6 done, 0 to train in 0 chunks"


def test_bad_input_is_one_line(capsys, monkeypatch):
    import sweep as sweep_cli  # the command line, sweep.py
    from minway.run.cli import run_cli
    from minway.experiments.figures import require_matplotlib

    def error_of(argv):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda: sweep_cli.main(argv))
        assert exit_info.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        return lines[0]
    assert "unknown task 'imdb'" in error_of(["--tasks", "imdb", "--dry-run"])
    assert "--gammas" in error_of(["--gammas", "0.01,x", "--dry-run"])
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MinwayError, match=r"pip install minway\[sweep\]"):
        require_matplotlib()
    monkeypatch.setitem(sys.modules, "ray", None)
    assert "pip install minway[ray]" in error_of(["--tasks", "sst2", "--ray", "auto", "--no-figures",
                                                    "--targets-limit", "1"])


class FakeRay:
    """What run_on_ray asks of Ray, recorded; a task runs at once, in this process."""

    class exceptions:
        RayError = type("RayError", (Exception,), {})

    class Ref:  # an object reference: hashable, as Ray's
        def __init__(self, result):
            self.result = result

    def __init__(self, resources):
        self.resources, self.inits, self.options, self.shut = resources, [], None, False

    def init(self, **kwargs):
        self.inits.append(kwargs)

    def cluster_resources(self):
        return self.resources

    def remote(self, **options):
        self.options = options

        def task(fn):
            return SimpleNamespace(remote=lambda *args: FakeRay.Ref(fn(*args)))
        return task

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.result

    def shutdown(self):
        self.shut = True


@pytest.mark.parametrize("address, resources, init, needs", [
    ("local", {"CPU": 2.0}, {"include_dashboard": False, "log_to_driver": False}, {"num_cpus": 1}),
    ("ray://head:10001", {"CPU": 8.0, "GPU": 2.0}, {"address": "ray://head:10001", "log_to_driver": False},
     {"num_gpus": 1}),
])
def test_ray_is_started_or_joined_as_asked_and_each_chunk_takes_a_gpu_or_a_cpu(monkeypatch, tmp_path, address,
                                                                             resources, init, needs):
    ray = FakeRay(resources)
    monkeypatch.setattr(sweep, "import_ray", lambda: ray)
    given = []
    monkeypatch.setattr(sweep, "train_chunk_on_worker", lambda configs, out: given.append((configs, out)) or {})
    chunks = [[SimpleNamespace(config=f"config {i}", run_id=f"run {i}")] for i in range(3)]
    done = []
    sweep.run_on_ray(chunks, tmp_path / "runs", address, 2, lambda chunk, errors: done.append(chunk))
    assert ray.inits == [init] and ray.options == {"max_retries": 2, **needs} and ray.shut
    assert given == [([f"config {i}"], str((tmp_path / "runs").resolve())) for i in range(3)] and done == chunks


def test_a_sweeps_chunk_trains_without_a_bar_unless_the_sweep_asks(tiny_checkpoint, tiny_data, tmp_path,  # noqa: F811
                                                                   monkeypatch):
    """A Ray worker's output is a log: its chunk draws no bar (a local sweep passes its own choice on)."""
    config = RunConfig(task="sst2", target="Write a question about the given fact.", model=str(tiny_checkpoint),
                       **tiny_fields(tiny_data))
    progress = []
    monkeypatch.setattr(sweep, "train_many", lambda configs, out, **options: progress.append(options["progress"]))
    sweep.train_chunk([config], tmp_path / "runs", make_setup=lambda config: None)
    sweep.run_locally([[SimpleNamespace(config=config)]], tmp_path / "runs", lambda chunk, errors: None)
    assert progress == [False, False]
