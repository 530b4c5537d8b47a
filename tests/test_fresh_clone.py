"""The repository is the whole product: a clone with nothing beside it runs the README's demo
and trains towards the paper's prompts, and its wheel holds every shipped file, which an
installed minway finds from any working directory.

The clone is of the committed HEAD (uncommitted changes are not in it). The demo runs with
the interpreter of this test run (MINWAY_PYTHON), offline, on a random-weight checkpoint.
"""
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
PAPER_TARGET = "subtask047_misc_answering_science_questions"


def git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def alone_env(tmp, **extra):
    """No download, no Hugging Face cache, no minway variables, no path to this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINWAY_") and k != "PYTHONPATH"}
    env.update(MINWAY_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"), HF_HUB_CACHE=str(tmp / "hf" / "hub"),
               XDG_CACHE_HOME=str(tmp / "cache"), **extra)
    return env


def run(args, cwd, env, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """HEAD, cloned into an otherwise empty directory."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    head = git("rev-parse", "HEAD")
    target = tmp_path_factory.mktemp("alone") / "minway"
    git("clone", "--quiet", "--no-checkout", str(ROOT), str(target), cwd=target.parent)
    git("checkout", "--quiet", head, cwd=target)
    assert [p.name for p in target.parent.iterdir()] == ["minway"]
    return target


@pytest.fixture(scope="module")
def demo(clone, tmp_path_factory):
    """The README's demo command, with short settings (its extra arguments go to train.py)."""
    tmp = tmp_path_factory.mktemp("demo")
    assert "bash scripts/demo.sh" in (clone / "README.md").read_text()
    return run(["bash", str(clone / "scripts" / "demo.sh"), "--steps", "3", "--max-eval", "8", "--no-progress"],
               cwd=tmp, env=alone_env(tmp, MINWAY_PYTHON=sys.executable))


def test_the_demo_runs_on_a_clone_alone(clone, demo):
    assert "RANDOM-WEIGHT" in demo.stderr and "Warning" not in demo.stderr
    for line in ("task accuracy (continuous prompt):", "prompt F1 [dot (main)]:", "projected:", "results: runs/"):
        assert line in demo.stdout, line
    [run_dir] = (clone / "runs").iterdir()  # the clone's own code ran, in the clone
    assert (run_dir / "summary.txt").is_file()


def test_the_readmes_own_commands_run_as_written_in_the_venv(clone, demo, tmp_path):
    """The quick start's block for a user's own commands, from a fresh shell, after the demo, with its
    `.venv` activated as the README says (here a .venv whose python is this test's interpreter)."""
    readme = (clone / "README.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"^```bash\n(.*?)^```$", readme, re.S | re.M) if b.startswith(". .venv/bin/activate")]
    venv = clone / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv / "python").chmod(0o755)
    (venv / "activate").write_text(f'export VIRTUAL_ENV="{venv.parent}"\nexport PATH="{venv}:$PATH"\n')
    try:
        result = run(["bash", "-euo", "pipefail", "-c", block], cwd=clone, env=alone_env(tmp_path))
    finally:
        shutil.rmtree(venv.parent)
    assert result.stdout.count("prompt F1 [dot (main)]") == 2  # train.py --compare, then eval.py
    assert "unconstrained vs constrained" in result.stdout and "position 0:" in result.stdout


def test_a_paper_prompt_by_name_on_a_clone_alone(clone, demo, tmp_path):
    result = run([sys.executable, "train.py", "--task", "trec", "--model", "weights/random-demo", "--target-name",
                  PAPER_TARGET, "--k", "1", "--steps", "1", "--max-eval", "4", "--no-progress"],
                 cwd=clone, env=alone_env(tmp_path))
    assert "Please indicate the correct answer" in result.stdout  # the start of that definition


@pytest.fixture(scope="module")
def wheel(clone, tmp_path_factory):
    """Built offline with this environment's setuptools (the test extra asks for one that builds wheels)."""
    out = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(out)],
                cwd=clone, env=alone_env(out))
    assert "Package would be ignored" not in built.stdout + built.stderr  # setuptools' page of warnings
    [path] = out.glob("minway-*.whl")
    return path


def test_the_wheel_holds_every_shipped_file(clone, wheel):
    shipped = set(git("ls-files", "minway/resources", cwd=clone).splitlines())
    for name in ("gpt2-tokenizer/vocab.json", "gpt2-tokenizer/merges.txt", "prompts/natural_prompts.json",
                 "prompts/pile_n=56.json", "prompts/good_prompts.json", "data/README.md",
                 *(f"data/{task}/{f}" for task in ("sst2", "sst5", "agnews", "subj", "trec")
                   for f in ("train.tsv.gz", "test.tsv.gz", "README.md"))):
        assert f"minway/resources/{name}" in shipped, name
    assert shipped <= set(zipfile.ZipFile(wheel).namelist())


def test_the_wheel_holds_every_module(clone, wheel):
    """Every package of the layout (the method, the kernels, the run machinery, the experiments, weights)."""
    modules = {m for m in git("ls-files", "minway", "weights", cwd=clone).splitlines() if m.endswith(".py")}
    assert {"minway/loop.py", "minway/run/training.py", "minway/experiments/runner.py"} <= modules
    assert modules <= set(zipfile.ZipFile(wheel).namelist())


def test_the_wheel_installs_no_top_level_name_another_distribution_ships(wheel):
    """Hugging Face's kernels distribution, which transformers >= 5.25 requires, installs a top-level
    ``kernels``: minway's Triton kernels are minway.kernels, so that both live in one environment."""
    top = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"minway", "weights"}


def test_an_installed_minway_finds_its_files_from_any_directory(clone, wheel, tmp_path):
    """train.py beside no minway, run from an empty directory, on a checkpoint without BPE files."""
    site, scripts, work = tmp_path / "site", tmp_path / "scripts", tmp_path / "work"
    env = alone_env(tmp_path, PYTHONPATH=str(site))
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(site),
         str(wheel)], cwd=tmp_path, env=env)
    scripts.mkdir()
    work.mkdir()
    shutil.copy(clone / "train.py", scripts)
    where = run([sys.executable, "-c", "import minway; print(minway.__file__)"], cwd=work, env=env)
    assert where.stdout.startswith(str(site))
    run([sys.executable, "-m", "weights.random_checkpoint", "ckpt", "--n-embd", "16", "--n-layer", "1",
         "--n-head", "2"], cwd=work, env=env)
    for name in ("vocab.json", "merges.txt"):
        (work / "ckpt" / name).unlink()
    result = run([sys.executable, str(scripts / "train.py"), "--task", "sst2", "--model", "ckpt", "--target-name",
                  PAPER_TARGET, "--k", "1", "--steps", "1", "--max-eval", "4", "--no-progress"], cwd=work, env=env)
    assert "has no vocab.json and merges.txt" in result.stderr
    assert "on 4 test examples" in result.stdout
    assert (work / "runs").is_dir()
