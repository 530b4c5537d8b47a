"""What every command line shares: --help shows the defaults and is read before torch is imported,
the defaults are RunConfig's, and a mistake is one line."""
import dataclasses
import importlib
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from fixtures import assert_one_line_error, offline_env
from minway.run import choices
from minway.run.config import RunConfig
from minway.run.model_and_data import DTYPES

SCRIPTS = ("train.py", "eval.py", "sweep.py")


def help_without_torch(script):
    """The script's --help, and whether torch was imported to print it."""
    code = (f"import runpy, sys\nsys.argv = [{script!r}, '--help']\n"
            f"try:\n    runpy.run_path({script!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print('torch imported:', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=offline_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_read_before_torch_and_shows_the_defaults(script):
    text = help_without_torch(script)
    assert "usage:" in text and text.rstrip().endswith("torch imported: False")
    parser_defaults = {"train.py": ["(default: gpt2-large)", "(default: 0.01)", "(default: 2000)", "(default: dot)"],
                       "eval.py": ["(default: auto)",
                                   "(default: the one the run was trained on; for an adapter, its base model)"],
                       "sweep.py": ["(default: main)", "(default: 2000)", "(default: runs)"]}[script]
    for fragment in parser_defaults:
        assert fragment in " ".join(text.split()), fragment


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_option_that_takes_a_value_says_its_default(script):
    parser = importlib.import_module(script.removesuffix(".py")).build_parser()
    # train.py needs one of each: none has a default
    alternatives = {"target", "target_file", "target_name", "task", "task_file"}
    for action in parser._actions:
        # not the flags, which are off by default, nor the options that must be given
        if action.option_strings and action.nargs != 0 and not action.required and action.dest not in alternatives:
            assert "default" in parser.formatter_class("x")._get_help_string(action), action.dest


def test_the_defaults_of_train_and_sweep_are_runconfigs():
    train, sweep = importlib.import_module("train"), importlib.import_module("sweep")
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}
    train_args = vars(train.parse_args(["--task", "sst2"]))
    sweep_args = vars(sweep.parse_args([]))
    for name, value in defaults.items():
        if name in train_args:
            assert train_args[name] == value, ("train.py", name)
        if name in sweep_args:
            assert sweep_args[name] == value, ("sweep.py", name)


def test_the_choices_are_the_implementations():
    from minway.kernels.attention import BACKENDS
    from minway.kernels.projection import METRICS
    from minway.model import SIZES
    assert choices.METRICS == METRICS
    assert choices.SIZES == tuple(SIZES)
    assert set(choices.DTYPES) == set(DTYPES)
    assert choices.ATTENTIONS == ("auto", *BACKENDS)


@pytest.mark.parametrize("script, args, fragment", [
    ("train.py", ["--task", "sst2", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
    ("train.py", ["--steps", "3"], "one of the arguments --task --task-file is required"),
    ("eval.py", [], "the following arguments are required: run"),
    ("sweep.py", ["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
])
def test_a_mistyped_command_is_one_line(script, args, fragment):
    result = subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                            env=offline_env(), timeout=120)
    line = assert_one_line_error(result, fragment)
    assert re.search(rf"\(see {script} --help\)$", line)
