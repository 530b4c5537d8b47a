"""Hostile input: every command line, given bad input of each class of issue 12, stops with a short
error (non-zero exit, at most three lines on stderr, no traceback) and writes nothing outside its
output directory; and the legal inputs of those classes behave.

The table runs each case through the command line's own entry point (``run_cli``), in this process,
each in a directory of its own that holds its working directory, HOME (so the download cache too) and
its --out. Nothing is trained: every case fails in its checks or its setup. A few cases run again as
real processes, to show that the interpreter ends as the entry point does.
"""
import json
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import ROOT
from fixtures import finished_results, first_rows, offline_env, run_in_process, write_tsv
from fixtures import tiny_checkpoint, tiny_data  # noqa: F401  (pytest fixtures)
from minway.run import training
from minway.run.config import RunConfig
from minway.errors import MinwayError
from minway.run.files import DirectoryLock
from minway.run.identity import identity
from minway.run.model_and_data import Setup
from minway.run.storage import save_checkpoint, save_prompt

TARGET = "Write a question about the given fact."
SCRIPTS = {"train": "train.py", "eval": "eval.py", "sweep": "sweep.py"}
RANDOM_CHECKPOINT = ["-m", "weights.random_checkpoint"]


def run_config(checkpoint, data, **fields):
    """The RunConfig of train_args(checkpoint, data, ...)."""
    return RunConfig(**{"task": "sst2", "target": TARGET, "model": str(checkpoint), "data_dir": str(data),
                        "device": "cpu", "steps": 3, "batch_size": 2, "max_eval": 4, **fields})


def train_args(checkpoint, data, *extra, **options):
    options = {"task": "sst2", "target": TARGET, "model": checkpoint, "data-dir": data, "device": "cpu",
               "steps": 3, "batch-size": 2, "max-eval": 4, **options}
    return [x for key, value in options.items() if value is not None for x in (f"--{key}", str(value))] \
        + ["--no-progress", *extra]


def checkpoint_variant(source, directory, config=None, edit=None):
    """A copy of the checkpoint ``source`` (linked, not copied) with config.json updated by ``config``
    and the tensors changed by ``edit(tensors)``."""
    directory.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt", "model.safetensors"):
        (directory / name).symlink_to(source / name)
    values = json.loads((source / "config.json").read_text())
    if isinstance(config, bytes):
        (directory / "config.json").write_bytes(config)
    else:
        (directory / "config.json").write_text(json.dumps({**values, **(config or {})}))
    if edit:
        tensors = load_file(str(source / "model.safetensors"))
        edit(tensors)
        (directory / "model.safetensors").unlink()
        save_file(tensors, str(directory / "model.safetensors"))
    return directory


def case_inputs(root, checkpoint, data):
    """The files the cases read, all under ``root / "inputs"``; {name: path}."""
    inputs = root / "inputs"
    inputs.mkdir()
    paths = {"ck": checkpoint, "data": data}
    (inputs / "binary-target.txt").write_bytes(b"\xff\xfe\x00\x81 not text")
    paths["binary-target"] = inputs / "binary-target.txt"
    for name, train_bytes in (("latin1", "text\tlabel\nun caf\xe9 noir\t1\n".encode("latin-1")),
                              ("superscript-label", "text\tlabel\nun film\t\u00b9\n".encode()),
                              ("huge-field", b"text\tlabel\n" + b"a" * (17 * 2 ** 20) + b"\t1\n")):
        (inputs / name / "sst2").mkdir(parents=True)
        (inputs / name / "sst2" / "train.tsv").write_bytes(train_bytes)
        shutil.copy(data / "sst2" / "test.tsv", inputs / name / "sst2" / "test.tsv")
        paths[name] = inputs / name
    variants = {
        "binary-config": {"config": b"\x89PNG\r\n\x1a\n\x00\x00"},
        "config-string-layers": {"config": {"n_layer": "2"}},
        "config-negative-width": {"config": {"n_embd": -48}},
        "config-absurd-layers": {"config": {"n_layer": 10 ** 9}},
        "config-too-big": {"config": {"n_layer": 1000, "n_embd": 65536, "n_head": 64}},
        "int8-weights": {"edit": lambda t: t.update({"h.0.mlp.c_fc.weight": t["h.0.mlp.c_fc.weight"].to(torch.int8)})},
        "nan-weights": {"edit": lambda t: t["h.1.attn.c_proj.weight"].view(-1)[7].fill_(float("nan"))},
        "huge-weights": {"edit": lambda t: t["ln_f.weight"].fill_(1e37)},
    }
    for name, variant in variants.items():
        paths[name] = checkpoint_variant(checkpoint, inputs / name, **variant)
    config = run_config(checkpoint, data)
    for name in ("good-run", "tampered-run"):
        (inputs / name).mkdir()
        save_prompt(inputs / name / "prompt.safetensors", torch.zeros(3, 48), config, [1, 2, 3])
        paths[name] = inputs / name
    tampered = inputs / "tampered-run"
    with open(tampered / "prompt.safetensors", "r+b") as f:  # the metadata's "steps": 3 becomes -3, same length
        content = f.read()
        f.seek(0)
        f.write(content.replace(b'\\"steps\\": 3,', b'\\"steps\\":-3,', 1))
    (inputs / "a-file").write_text("not a directory")
    paths["a-file"] = inputs / "a-file"
    os.mkfifo(inputs / "task.fifo")  # reading one never ends
    paths["fifo"] = inputs / "task.fifo"
    (inputs / "deep.json").write_text("[" * 100000 + "]" * 100000)  # past what Python's parser recurses to
    paths["deep-json"] = inputs / "deep.json"
    (inputs / "no-line-end" / "sst2").mkdir(parents=True)  # 32 MiB of NUL bytes, no line end (sparse)
    with open(inputs / "no-line-end" / "sst2" / "train.tsv", "wb") as f:
        f.truncate(32 * 2 ** 20)
    shutil.copy(data / "sst2" / "test.tsv", inputs / "no-line-end" / "sst2" / "test.tsv")
    paths["no-line-end"] = inputs / "no-line-end"
    (inputs / "latin1-task").mkdir()
    (inputs / "latin1-task" / "train.jsonl").write_bytes(b'{"text": "un caf\xe9", "label": 0}\n')
    shutil.copy(data / "sst2" / "test.tsv", inputs / "latin1-task" / "test.tsv")
    (inputs / "latin1-task" / "task.json").write_text(json.dumps(
        {"name": "cafes", "template": " It was {}.", "label_words": ["bad", "good"], "train_file": "train.jsonl",
         "test_file": "test.tsv"}))
    paths["latin1-task"] = inputs / "latin1-task" / "task.json"
    (inputs / "empty-adapter").mkdir()
    (inputs / "empty-adapter" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "PROMPT_TUNING", "base_model_name_or_path": str(checkpoint), "num_virtual_tokens": 0}))
    save_file({"prompt_embeddings": torch.zeros(0, 48)}, str(inputs / "empty-adapter" / "adapter_model.safetensors"))
    paths["empty-adapter"] = inputs / "empty-adapter"
    (inputs / "victim.txt").write_text("a file a planted lock points to\n")
    paths["victim"] = inputs / "victim.txt"
    (inputs / "run-on-other-weights").mkdir()
    save_prompt(inputs / "run-on-other-weights" / "prompt.safetensors", torch.zeros(3, 48), config, [1, 2, 3])
    (inputs / "run-on-other-weights" / "results.json").write_text(json.dumps(finished_results(
        identity={**identity("sst2", str(data), checkpoint), "checkpoint": "other"})))
    paths["run-on-other-weights"] = inputs / "run-on-other-weights"
    (inputs / "escaping.json").write_text(json.dumps({"/../../../../tmp/minway-escape": "a name that climbs"}))
    paths["escaping-prompts"] = inputs / "escaping.json"
    return paths


def flip_a_bit(path, tensor="prompt"):
    """One bit of the checkpoint's ``tensor`` flipped on disk, its value still finite: the lowest bit of the
    first value's exponent (float32, little-endian), so that 0.0 becomes 2^-126."""
    content = bytearray(path.read_bytes())
    header_size = int.from_bytes(content[:8], "little")
    start = json.loads(content[8:8 + header_size])[tensor]["data_offsets"][0]
    content[8 + header_size + start + 2] ^= 0x80
    path.write_bytes(content)


def prepared_runs(out, checkpoint, data, case, paths):
    """Run directories a case finds in its --out, as an earlier command left them."""
    config = run_config(checkpoint, data)
    run_dir = out / config.run_id()
    current = identity("sst2", str(data), checkpoint)
    if case in ("results a FIFO", "results nested too deep", "a FIFO as checkpoint", "log with a broken line",
                "a flipped bit in the checkpoint", "lock a link to a file outside out"):
        run_dir.mkdir(parents=True)
    if case == "results a FIFO":
        os.mkfifo(run_dir / "results.json")
    elif case == "results nested too deep":
        shutil.copy(paths["deep-json"], run_dir / "results.json")
    elif case == "a FIFO as checkpoint":
        os.mkfifo(run_dir / "checkpoint.safetensors")
    elif case in ("log with a broken line", "a flipped bit in the checkpoint"):
        save_checkpoint(run_dir / "checkpoint.safetensors", torch.zeros(8, 48), {}, 1, current)
        (run_dir / "log.jsonl").write_text('["not", "a step"]\n{"step": 0, "loss": 1.0}\n')
        if case == "a flipped bit in the checkpoint":
            flip_a_bit(run_dir / "checkpoint.safetensors")
    elif case == "lock a link to a file outside out":
        (run_dir / "lock").symlink_to(paths["victim"])
    if case == "finished on other data":
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps(finished_results(identity={**current, "data": "other"})))
    elif case == "results edited":
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({**finished_results(identity=current), "accuracy": "high"}))
    elif case.startswith("checkpoint"):
        run_dir.mkdir(parents=True)
        prompt, step, stored = torch.zeros(8, 48), 2, current
        if case == "checkpoint of other weights":
            stored = {**current, "checkpoint": "other"}
        elif case == "checkpoint of a broadcastable shape":
            prompt = torch.zeros(1, 48)
        elif case == "checkpoint past the last step":
            step = 7
        save_checkpoint(run_dir / "checkpoint.safetensors", prompt, {}, step, stored)
    elif case.startswith("run in use"):
        run_dir.mkdir(parents=True)
    elif case == "sweep: a state of another shape":
        (out / "sweep").mkdir()
        (out / "sweep" / "sweep.json").write_text('{"out": "runs", "runs": ["a", "b"]}')
    elif case == "sweep: entries of the wrong types":
        (out / "sweep").mkdir()
        entry = {"run_id": "../../a", "twin": 5, "group": "NI", "task": "SST-2", "model": 3, "target_name": None,
                 "gamma": "x", "seed": 1, "status": "done", "error": None}
        (out / "sweep" / "sweep.json").write_text(json.dumps({"out": str(out), "runs": [entry]}))


def cases(paths):
    """(name, command, fragment of the error line): the command's paths are names in ``paths``,
    "OUT" for the case's --out."""
    ck, data = paths["ck"], paths["data"]

    def train(*extra, **options):
        return ["train", *train_args(ck, data, *extra, **{"out": "OUT", **options})]

    def sweep(*extra, **options):
        options = {"tasks": "sst2", "groups": "NI", "targets-limit": 1, "gammas": 0.01, "seeds": 1, "models": ck,
                   "data-dir": data, "device": "cpu", "steps": 2, "batch-size": 2, "max-eval": 2, "out": "OUT",
                   "sweep-dir": "OUT/sweep", **options}
        return ["sweep", *[x for k, v in options.items() if v is not None for x in (f"--{k}", str(v))],
                "--no-progress", "--no-figures", *extra]

    def random_checkpoint(*args):
        return ["random_checkpoint", "OUT/ck", *map(str, args)]

    escape = {"target": None, "target-name": "/../../../../tmp/minway-escape",
              "prompts-file": paths["escaping-prompts"]}
    return [
        # numbers and names not validated
        ("lr nan", train(lr="nan"), "--lr must be a finite number"),
        ("negative seed", train(seed=-1), "--seed must be at least 0"),
        ("negative weight decay", train(**{"weight-decay": -0.1}), "--weight-decay must be >= 0"),
        ("negative max-eval", train(**{"max-eval": -1}), "--max-eval must be at least 1"),
        ("negative eval-every", train(**{"eval-every": -5}), "--eval-every must be at least 0"),
        ("unknown device", train(device="tpu"), "--device must be auto, cpu, cuda or cuda:N"),
        ("triton on a cpu", train(attention="triton"), "--attention triton runs on a CUDA device"),
        ("out is a file", train(out=paths["a-file"]), "is a file, not a directory"),
        ("escaping name, bad data", train(**{**escape, "data-dir": paths["latin1"]}), "not UTF-8"),
        # files that are not what they should be
        ("binary target file", train(target=None, **{"target-file": paths["binary-target"]}), "not UTF-8"),
        ("non-UTF-8 tsv", train(**{"data-dir": paths["latin1"]}), "not UTF-8"),
        ("a label in superscript digits", train(**{"data-dir": paths["superscript-label"]}), "a label in 0..1"),
        ("a device as target file", train(target=None, **{"target-file": "/dev/zero"}), "not a regular file"),
        ("tsv field over the limit", train(**{"data-dir": paths["huge-field"]}), "at most 16 MiB"),
        ("binary config.json", train(model=paths["binary-config"]), "not valid JSON"),
        ("config.json layers as text", train(model=paths["config-string-layers"]), "n_layer must be a whole number"),
        ("config.json negative width", train(model=paths["config-negative-width"]), "n_embd must be at least 1"),
        ("model file, not directory", train(model=Path(ck) / "model.safetensors"), "is a file: pass the directory"),
        ("int8 weights", train(model=paths["int8-weights"]), "is int8: minway reads floating-point weights"),
        ("NaN weights", train(model=paths["nan-weights"]), "holds NaN or infinite values"),
        ("finite weights too large", train(model=paths["huge-weights"]), "before any update of the prompt: check the "
                                                                          "weights"),
        ("a FIFO as task file", train(task=None, **{"task-file": paths["fifo"], "data-dir": None}),
         "is not a regular file"),
        ("prompts file nested too deep", train(target=None, **{"target-name": "x", "prompts-file": paths["deep-json"]}),
         "nested too deeply to parse"),
        ("a data file with no line end", train(**{"data-dir": paths["no-line-end"]}), "has a line of more than"),
        ("non-UTF-8 jsonl of a task file", train(task=None, **{"task-file": paths["latin1-task"], "data-dir": None}),
         "not UTF-8 text"),
        ("gamma past float32", train(gamma="1e308"), "--gamma must be >= 0 and <= 3.40282e+38"),
        ("lr past float32", train(lr="1e300"), "--lr must be > 0 and <= 3.40282e+38"),
        ("lr that overflows the update", train(lr="1e38", steps=1), "makes an update larger than float32 holds"),
        # memory and hangs
        ("absurd layer count", train(model=paths["config-absurd-layers"]), "n_layer must be at least 1 and at most"),
        ("model beyond memory", train(model=paths["config-too-big"]), "of memory but cpu has"),
        ("huge batch", train(**{"batch-size": 10 ** 9, "data-dir": None}), "--batch-size"),
        ("steps beyond int64", train(steps=2 ** 64), "--steps must be at least 1 and at most 9223372036854775807"),
        # what is already in --out
        ("finished on other data", train(), "comes from training on other data"),
        ("results edited", train(), "is not a minway results file (accuracy must be a finite number"),
        ("checkpoint of other weights", train("--resume"), "comes from training on other weights"),
        ("checkpoint of a broadcastable shape", train("--resume"), "shape (1, 48), but this run's is (8, 48)"),
        ("checkpoint past the last step", train("--resume"), "at step 7, outside this run's 0..3"),
        ("results a FIFO", train(), "is not a regular file"),
        ("results nested too deep", train(), "nested too deeply to parse"),
        ("a FIFO as checkpoint", train("--resume"), "is not a regular file"),
        ("log with a broken line", train("--resume"), "log.jsonl:1 is not the log entry of a step"),
        ("a flipped bit in the checkpoint", train("--resume"), "its checksum differs"),
        ("lock a link to a file outside out", train("--force"), "lock is a symbolic link"),
        ("run in use", train("--resume"), f"is in use by process {os.getpid()}"),
        ("run in use, forced", train("--force"), f"is in use by process {os.getpid()}"),
        # eval.py
        ("eval: tampered prompt file", ["eval", paths["tampered-run"], "--device", "cpu"],
         "holds an invalid run configuration (--steps must be at least 1, got -3)"),
        ("eval: unknown device", ["eval", paths["good-run"], "--device", "gpu0"], "--device must be auto, cpu"),
        ("eval: max-eval 0", ["eval", paths["good-run"], "--max-eval", "0"], "--max-eval must be at least 1"),
        ("eval: a FIFO as task file", ["eval", paths["empty-adapter"], "--task-file", paths["fifo"]],
         "is not a regular file"),
        ("eval: an adapter of no vectors", ["eval", paths["empty-adapter"], "--device", "cpu"],
         "a prompt of no vectors"),
        ("eval: a run whose weights changed", ["eval", paths["run-on-other-weights"], "--device", "cpu"],
         "are not those it was trained on"),
        # sweep.py
        ("sweep: gamma nan", sweep(gammas="0.01,nan"), "each gamma must be a finite number"),
        ("sweep: out is a file", sweep(out=paths["a-file"], **{"sweep-dir": None}), "is a file, not a directory"),
        ("sweep: every run fails", sweep(**{"data-dir": paths["latin1"]}), "2 of 2 runs failed"),
        ("sweep: a state of another shape", sweep(), "is not a sweep state written by minway"),
        ("sweep: entries of the wrong types", sweep("--report-only"), "is not a sweep state written by minway"),
        # the random checkpoint writer
        ("random: zero width", random_checkpoint("--n-embd", 0), "--n-embd must be at least 1"),
        ("random: heads not dividing", random_checkpoint("--n-embd", 50), "not divisible by --n-head"),
        ("random: absurd layers", random_checkpoint("--n-layer", 10 ** 6), "--n-layer must be at least 1 and at most"),
        ("random: beyond memory", random_checkpoint("--n-layer", 1000, "--n-embd", 65536, "--n-head", 64),
         "of memory but cpu has"),
    ]


def snapshot(*roots):
    return {path: (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
            for root in roots for path in [root, *root.rglob("*")]}


def case_dir(root, name):
    return root / "cases" / name.replace(" ", "-").replace(":", "")


def command(entry, args):
    head = RANDOM_CHECKPOINT if entry == "random_checkpoint" else [str(ROOT / SCRIPTS[entry])]
    return [sys.executable, *head, *map(str, args)]


def case_setting(name, args, root):
    """(the case's arguments, its working directory, its environment): all in its own directory."""
    home = case_dir(root, name)
    env = offline_env(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(ROOT))
    if name == "triton on a cpu":
        env.pop("TRITON_INTERPRET", None)
    return [str(a).replace("OUT", str(home / "out")) for a in args], home / "cwd", env


def run_case(name, entry, args, root):
    """The case, through its command line's entry point, in this process."""
    args, cwd, env = case_setting(name, args, root)
    return run_in_process(SCRIPTS.get(entry, entry), args, cwd=cwd, env=env)


def run_case_as_a_process(name, entry, args, root):
    args, cwd, env = case_setting(name, args, root)
    return subprocess.run(command(entry, args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def table(tiny_checkpoint, tiny_data, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("hostile")
    inputs = case_inputs(root, tiny_checkpoint, tiny_data)
    table_cases = cases(inputs)
    with ExitStack() as held:
        for name, _, _ in table_cases:
            out = case_dir(root, name) / "out"
            out.mkdir(parents=True)
            (out.parent / "cwd").mkdir()
            prepared_runs(out, tiny_checkpoint, tiny_data, name, inputs)
            if name.startswith("run in use"):  # its run directory is locked by this process
                held.enter_context(DirectoryLock(out / run_config(tiny_checkpoint, tiny_data).run_id()))
        before = snapshot(root, tiny_checkpoint, tiny_data)
        results = {name: run_case(name, entry, args, root) for name, (entry, *args), _ in table_cases}
    after = snapshot(root, tiny_checkpoint, tiny_data)
    changed = {path for path in set(before) | set(after) if before.get(path, "absent") != after.get(path, "absent")}
    return {"cases": {name: (fragment, results[name]) for name, _, fragment in table_cases}, "changed": changed,
            "root": root, "commands": {name: command for name, command, _ in table_cases}}


def case_names():
    placeholders = {key: Path(key) for key in (
        "ck", "data", "escaping-prompts", "binary-target", "latin1", "huge-field", "binary-config",
        "config-string-layers", "config-negative-width", "config-absurd-layers", "config-too-big", "int8-weights",
        "nan-weights", "huge-weights", "good-run", "tampered-run", "a-file", "superscript-label", "fifo", "deep-json",
        "no-line-end", "latin1-task", "empty-adapter", "victim", "run-on-other-weights")}
    return [name for name, _, _ in cases(placeholders)]


@pytest.mark.parametrize("name", case_names())
def test_hostile_input_is_a_short_error_that_writes_nothing_outside_out(table, name):
    fragment, result = table["cases"][name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert 1 <= len(lines) <= 3 and "Traceback" not in result.stderr + result.stdout, result.stderr
    assert fragment in lines[-1], (fragment, result.stderr)
    out = case_dir(table["root"], name) / "out"
    outs = {case_dir(table["root"], other) / "out" for other in table["cases"]}
    mine = {path for path in table["changed"] if out.parent in path.parents}
    assert all(path == out or out in path.parents for path in mine), sorted(map(str, mine))
    # and no case wrote outside every case's --out: the inputs, the checkpoint and the data are as they were
    assert all(any(path == o or o in path.parents for o in outs) for path in table["changed"]), \
        sorted(map(str, table["changed"]))


@pytest.mark.parametrize("name", ["lr nan", "a FIFO as task file", "eval: unknown device", "random: zero width",
                                  "sweep: gamma nan"])
def test_a_real_process_ends_as_the_entry_point_does(table, name):
    """The real interpreter, in the case's own directory again (these cases write nothing): the same exit
    status and the same lines as the case run in this process."""
    entry, *args = table["commands"][name]
    result = run_case_as_a_process(name, entry, args, table["root"])
    in_process = table["cases"][name][1]
    assert result.returncode == in_process.returncode != 0
    assert result.stderr == in_process.stderr and "Traceback" not in result.stderr


def test_a_failed_command_leaves_no_run_directory_behind(table):
    """Stale state: a command that fails in its checks or setup makes no run directory, so that the
    corrected command is not refused for one."""
    prepared = ("run in use", "run in use, forced", "finished on other data", "results edited", "results a FIFO",
                "results nested too deep", "a FIFO as checkpoint", "log with a broken line",
                "a flipped bit in the checkpoint", "lock a link to a file outside out",
                "lr that overflows the update",  # fails in training, at its first update
                "finite weights too large",  # fails in training, at its first step: a run that starts again
                "checkpoint of other weights",
                "checkpoint of a broadcastable shape", "checkpoint past the last step")
    for name in table["cases"]:
        out = case_dir(table["root"], name) / "out"
        if name not in prepared and not name.startswith(("sweep", "random")):
            assert list(out.iterdir()) == [], name


def test_a_sweep_with_failed_runs_exits_1_after_writing_its_summary(table):
    _, result = table["cases"]["sweep: every run fails"]
    assert result.returncode == 1
    state = json.loads((case_dir(table["root"], "sweep: every run fails") / "out" / "sweep" / "sweep.json").read_text())
    assert [r["status"] for r in state["runs"]] == ["failed", "failed"]
    assert "0 done, 2 failed, 0 pending" in result.stdout


# --- the legal inputs of those classes --------------------------------------------------------------

@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tiny_data):  # noqa: F811
    return Setup(run_config(tiny_checkpoint, tiny_data))


def test_a_name_that_climbs_or_nests_stays_one_directory_inside_out(tiny_checkpoint, tiny_data, setup, tmp_path):
    for name in ("/../../../../tmp/minway-escape", "a/b/c", "..", "x" * 300):
        config = run_config(tiny_checkpoint, tiny_data, target_name=name, steps=1)
        training.train(config, tmp_path / "out", progress=False, setup=setup)
        assert (tmp_path / "out" / config.run_id() / "results.json").is_file()
    assert len(list((tmp_path / "out").iterdir())) == 4  # four runs, each a child of --out
    assert not Path("/tmp/minway-escape").exists()
    # two names that make the same characters are still two runs
    ids = {run_config(tiny_checkpoint, tiny_data, target_name=name).run_id() for name in ("a/b", "a-b", "a:b")}
    assert len(ids) == 3


def test_a_run_is_reused_only_on_the_files_it_was_trained_on(tiny_checkpoint, tiny_data, setup, tmp_path, capsys):
    import train as train_cli
    from minway.experiments.plan import PlannedRun
    from minway.experiments.state import is_finished

    data = shutil.copytree(tiny_data, tmp_path / "data")
    args = train_args(tiny_checkpoint, data, out=tmp_path / "out", steps=1)
    train_cli.main(args)
    config = run_config(tiny_checkpoint, data, steps=1)
    assert is_finished(PlannedRun(config, "NI"), tmp_path / "out")
    train_cli.main(args)
    assert "nothing was trained" in capsys.readouterr().out
    # the same command, on data that changed: refused, and the sweep trains the run again
    write_tsv(data / "sst2" / "test.tsv", first_rows("sst2", "test", 12)[::-1])
    with pytest.raises(MinwayError, match="comes from training on other data .* --force"):
        train_cli.main(args)
    assert not is_finished(PlannedRun(config, "NI"), tmp_path / "out")
    train_cli.main(args + ["--force"])
    assert "nothing was trained" not in capsys.readouterr().out
    train_cli.main(args)  # finished, on these files
    # the same checkpoint name with other weights
    weights = load_file(str(tiny_checkpoint / "model.safetensors"))
    model = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    save_file({k: v.flip(0).contiguous() for k, v in weights.items()}, str(model / "model.safetensors"))
    moved = train_args(model, data, out=tmp_path / "out", steps=1)
    shutil.copytree(tmp_path / "out" / config.run_id(),
                    tmp_path / "out" / run_config(model, data, steps=1).run_id(), dirs_exist_ok=True)
    with pytest.raises(MinwayError, match="other weights"):
        train_cli.main(moved)


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tiny_checkpoint, tiny_data, tmp_path):
    """Stale state: a run that failed or was killed in training before its first checkpoint left its directory
    (config.json, a log); nothing in it can be continued, so the same command trains it from step 0."""
    import train as train_cli

    run_dir = tmp_path / "out" / run_config(tiny_checkpoint, tiny_data, steps=2).run_id()
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "log.jsonl").write_text('{"step": 0, "loss": NaN}\n{"step": 1, "lo')
    train_cli.main(train_args(tiny_checkpoint, tiny_data, out=tmp_path / "out", steps=2))
    assert [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == [0, 1]
    assert (run_dir / "results.json").is_file()


def test_the_command_corrected_after_a_setup_error_runs(tiny_checkpoint, tiny_data, tmp_path):
    import train as train_cli

    broken = train_args(tiny_checkpoint, tmp_path / "no-data", out=tmp_path / "out", steps=1)
    with pytest.raises(MinwayError, match="no sst2/train.tsv"):
        train_cli.main(broken)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    train_cli.main(train_args(tiny_checkpoint, tiny_data, out=tmp_path / "out", steps=1))


class Stop(Exception):
    pass


def test_a_huge_number_of_steps_starts_at_once(tiny_checkpoint, tiny_data, setup, tmp_path, monkeypatch):
    """Nothing is built per step ahead of the run (batches, progress bar, logs, checkpoints): a run of
    10^15 steps reaches its first checkpoint as a short one does."""
    saved = []

    def save_then_stop(path, prompt, adam_state, step, identity):
        saved.append(step)
        raise Stop
    monkeypatch.setattr(training, "save_checkpoint", save_then_stop)
    config = run_config(tiny_checkpoint, tiny_data, steps=10 ** 15, checkpoint_every=2)
    with pytest.raises(Stop):
        training.train(config, tmp_path, progress=True, setup=setup)
    assert saved == [2]
    log = (tmp_path / config.run_id() / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [0, 1]


def test_memory_beyond_the_device_is_refused_saying_what_fits(setup, tiny_checkpoint, tiny_data, monkeypatch):
    from minway.run import memory

    config = run_config(tiny_checkpoint, tiny_data, batch_size=30, eval_batch_size=4)
    c, dtype = setup.model_config, setup.dtype

    def step(batch):  # every row as long as the longest, as require_memory takes them
        rows = memory.training_rows(1, batch, len(setup.tokenizer.encode(TARGET)), setup.longest_input(),
                                    max(map(len, setup.options)), dropout=True)
        return memory.model_bytes(c, dtype) + memory.pass_bytes(c, dtype, rows, True, dropout=True)
    monkeypatch.setattr(memory, "free_bytes", lambda device: (step(10) + step(11)) / 2 / memory.HEADROOM)
    with pytest.raises(MinwayError, match=r"a training step of 30 examples needs .* --batch-size 10 fits"):
        setup.require_memory([config])
    setup.require_memory([config], training=False)  # evaluating 4 examples fits
    setup.require_memory([run_config(tiny_checkpoint, tiny_data, batch_size=10, eval_batch_size=4)])


class Layouts:
    """A model that records the packed layout of each pass it is given."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, packed=None, logit_counts=None, **kwargs):
        self.seen.append((packed, logit_counts))
        return self.model(*args, packed=packed, logit_counts=logit_counts, **kwargs)


def described(rows):
    """(rows, tokens, keys, logits, most tokens, most keys) of memory.Rows."""
    rows = [r for r in rows if r.count]
    return (sum(r.count for r in rows), sum(r.count * r.tokens for r in rows), sum(r.count * r.keys for r in rows),
            sum(r.count * r.logits for r in rows), max(r.tokens for r in rows), max(r.keys for r in rows))


def recorded(packed, logit_counts):
    return (len(packed.lengths), sum(packed.lengths), sum(packed.key_lengths), sum(logit_counts), max(packed.lengths),
            max(packed.key_lengths))


@pytest.mark.parametrize("dropout", [False, True])
def test_memory_estimates_describe_the_passes_the_model_is_given(dropout):
    """The rows memory.py estimates a training step and an evaluation batch by are those of the packed
    passes that minway.batch and minway.classify build (rows of one length, options of two)."""
    from fixtures import sharp_model
    from minway.run import memory
    from minway.batch import bank_output_nll
    from minway.classify import option_nll
    from minway.dropout import step_generator

    model = Layouts(sharp_model())
    K, batch, L, n_input, n_output = 3, 4, 5, 7, 3
    inputs, outputs = [[11 + i] * n_input for i in range(K * batch)], [[20, 21, 22]] * (K * batch)
    owner = torch.arange(K).repeat_interleave(batch)
    generators = (0.1, [step_generator(k, 0, "cpu") for k in range(K)]) if dropout else None
    bank_output_nll(model, torch.randn(K, L, 48), torch.full((K,), L), owner, inputs, outputs, generators)
    assert recorded(*model.seen[-1]) == described(memory.training_rows(K, batch, L, n_input, n_output, dropout))
    options = [[30], [31, 32, 33], [34, 35, 36]]
    option_nll(model, torch.randn(L, 48), inputs[:batch], options)
    assert recorded(*model.seen[-1]) == described(memory.evaluation_rows(batch, L, n_input, list(map(len, options))))


def test_a_cuda_device_is_checked_against_the_devices_present(monkeypatch):
    from minway.run import model_and_data as setup_module

    monkeypatch.setattr(setup_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(setup_module.torch.cuda, "device_count", lambda: 2)
    assert setup_module.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(MinwayError, match=r"--device cuda:2: torch sees 2 CUDA device\(s\), cuda:0 to cuda:1"):
        setup_module.resolve_device("cuda:2")


def test_a_sweep_directory_in_use_is_refused(tmp_path):
    from minway.experiments.runner import run_sweep

    (tmp_path / "sweep").mkdir()
    with DirectoryLock(tmp_path / "sweep"):
        with pytest.raises(MinwayError, match=f"sweep is in use by process {os.getpid()}"):
            run_sweep([], tmp_path / "runs", tmp_path / "sweep", progress=False)
    assert run_sweep([], tmp_path / "runs", tmp_path / "sweep", progress=False).count("done") == 0
