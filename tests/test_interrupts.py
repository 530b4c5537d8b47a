"""Interrupts at any moment: SIGINT and SIGTERM, sent to real processes while they import their modules,
train, and evaluate, end each command with the one line that says how to continue (exit 130 and 143),
never a traceback; a run they stopped continues with --resume. An interrupt that lands inside an import
is held until the import is done, so that no library can swallow it there."""
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
from fixtures import first_rows, offline_env, write_tsv
from fixtures import tiny_checkpoint  # noqa: F401  (pytest fixture)
from minway.run.config import RunConfig

TARGET = "Write a question about the given fact."
INTERRUPTED = "interrupted: run again with --resume to continue from the last checkpoint"
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def handles_sigterm(pid):
    """Whether the process catches SIGTERM (its handler is installed): the bit of SigCgt in /proc."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except FileNotFoundError:
        return False
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def assert_interrupted(result, signum):
    assert result.returncode == EXIT[signum], (result.returncode, result.stderr[-3000:])
    assert result.stderr.strip().splitlines() == [INTERRUPTED], result.stderr[-3000:]


def test_an_interrupt_inside_an_import_that_swallows_it_waits_for_the_import_to_end(tmp_path):
    """A library that catches any failure of an import (torch does, loading NumPy) would swallow an interrupt
    raised inside it, leave the module half-imported and the command running: the interrupt is held until
    the import is over, then ends the command in one line."""
    (tmp_path / "victim.py").write_text(textwrap.dedent("""\
        import os, signal, time
        os.kill(os.getpid(), signal.SIGINT)  # the interrupt lands here, inside the import
        time.sleep(0.3)
        WHOLE = True
    """))
    (tmp_path / "swallower.py").write_text(textwrap.dedent("""\
        try:
            import victim
        except BaseException:  # as a library that tries an optional import might
            pass
    """))
    program = textwrap.dedent(f"""\
        import sys, time
        sys.path[:0] = [{str(ROOT)!r}, {str(tmp_path)!r}]
        from minway.run.cli import run_cli

        def main():
            import swallower
            import victim
            print("imported whole:", victim.WHOLE, flush=True)
            time.sleep(30)
            print("never interrupted", flush=True)

        run_cli(main)
    """)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.stdout == "imported whole: True\n"
    assert_interrupted(result, signal.SIGINT)


def train_command(checkpoint, data, out, *extra, **options):
    options = {"task": "sst2", "target": TARGET, "model": checkpoint, "data-dir": data, "out": out, "device": "cpu",
               "batch-size": 2, "max-eval": 3, "checkpoint-every": 1, **options}
    return [sys.executable, str(ROOT / "train.py"), *[x for k, v in options.items() for x in (f"--{k}", str(v))],
            "--no-progress", *extra]


# (name, the signal, the moment it is sent at); every step of these runs tests the prompt on 100 examples
# (--eval-every 1), so that a step lasts long enough to be interrupted in
MOMENTS = [
    ("SIGINT at start-up", signal.SIGINT, "start-up"),
    ("SIGTERM at start-up", signal.SIGTERM, "start-up"),
    ("SIGINT in training", signal.SIGINT, "training"),
    ("SIGTERM in training", signal.SIGTERM, "training"),
    ("SIGTERM in evaluation", signal.SIGTERM, "evaluation"),
]
STEPS, MAX_EVAL = 4, 100


def moment_reached(moment, run_dir):
    if moment == "start-up":  # its handlers are installed: it is importing its modules
        return True
    return (run_dir / ("checkpoint.safetensors" if moment == "training" else "prompt.safetensors")).exists()


@pytest.fixture(scope="module")
def interrupted(tiny_checkpoint, tmp_path_factory):  # noqa: F811
    """Each case of MOMENTS as a real train.py, all at once (each spends seconds importing torch)."""
    root = tmp_path_factory.mktemp("interrupted")
    data = root / "data"
    write_tsv(data / "sst2" / "train.tsv", first_rows("sst2", "train", 40))
    write_tsv(data / "sst2" / "test.tsv", first_rows("sst2", "test", MAX_EVAL))
    config = RunConfig(task="sst2", target=TARGET, model=str(tiny_checkpoint), data_dir=str(data), device="cpu",
                       steps=STEPS, batch_size=2, max_eval=MAX_EVAL, eval_every=1, checkpoint_every=1)
    cases = {}
    for name, signum, moment in MOMENTS:
        out = root / name.replace(" ", "-")
        command = train_command(tiny_checkpoint, data, out, steps=STEPS, **{"max-eval": MAX_EVAL, "eval-every": 1})
        process = subprocess.Popen(command, cwd=ROOT, env=offline_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        cases[name] = (signum, moment, command, out / config.run_id(), process)
    pending, deadline = dict(cases), time.time() + 240
    while pending and time.time() < deadline:
        for name, (signum, moment, _, run_dir, process) in list(pending.items()):
            if handles_sigterm(process.pid) and moment_reached(moment, run_dir):
                process.send_signal(signum)
                del pending[name]
        time.sleep(0.002)
    results = {}
    for name, (signum, moment, command, run_dir, process) in cases.items():
        if name in pending:
            process.kill()
        stdout, stderr = process.communicate(timeout=120)
        results[name] = (subprocess.CompletedProcess(command, process.returncode, stdout, stderr), command, run_dir)
    assert not pending, f"never reached: {sorted(pending)}"
    return results


@pytest.mark.slow
@pytest.mark.parametrize("name, signum", [(name, signum) for name, signum, _ in MOMENTS])
def test_an_interrupt_at_any_moment_is_one_line_and_exit_130_or_143(interrupted, name, signum):
    result, _, run_dir = interrupted[name]
    assert_interrupted(result, signum)
    if run_dir.exists():  # nothing half-written is left
        assert [p.name for p in run_dir.iterdir() if ".tmp" in p.name] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["SIGINT in training", "SIGTERM in evaluation"])
def test_a_run_interrupted_continues_with_resume(interrupted, name):
    _, command, run_dir = interrupted[name]
    assert not (run_dir / "results.json").exists()
    resumed = subprocess.run(command + ["--resume"], cwd=ROOT, env=offline_env(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    steps = [line for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len(steps) == STEPS and (run_dir / "results.json").is_file()
