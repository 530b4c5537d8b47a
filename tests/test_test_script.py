"""scripts/test.sh, the README's test command: the pytest it runs (--quick, the workers), and the line
that names a test still running."""
import io
import os
import re
import subprocess
import time

import pytest

from conftest import ROOT, StillRunning


def test_a_test_still_running_is_named_every_period_and_no_more_once_it_ends():
    terminal, every = io.StringIO(), 0.2
    watch = StillRunning(terminal, every=every, tick=0.01)
    try:
        start = time.monotonic()
        watch.pytest_runtest_logstart("tests/test_a.py::test_long", None)
        watch.pytest_runtest_logstart("tests/test_a.py::test_short", None)
        watch.pytest_runtest_logfinish("tests/test_a.py::test_short", None)
        while terminal.getvalue().count("still running") < 2 and time.monotonic() < start + 60:
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        watch.pytest_runtest_logfinish("tests/test_a.py::test_long", None)
        said = terminal.getvalue()
        time.sleep(3 * every)
        assert terminal.getvalue() == said  # nothing once it ended
    finally:
        watch.pytest_unconfigure(None)
    lines = [re.sub(r"\(\d+ s\)", "(N s)", line) for line in said.splitlines() if line]
    assert 2 <= len(lines) <= elapsed / every + 1  # once per period, not at every tick
    assert set(lines) == {"    ... tests/test_a.py::test_long still running (N s)"}


def run_the_script(tmp_path, *args, xdist=True, **env):
    """The pytest command line scripts/test.sh runs for ``args``, with a stand-in Python that prints its
    arguments (and has pytest-xdist or not); and what the script said on stderr."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nif [ "$1" = "-c" ]; then exit %d; fi\nprintf "%%s\\n" "$@"\n' % (0 if xdist else 1))
    fake.chmod(0o755)
    done = subprocess.run(["bash", "scripts/test.sh", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MINWAY_PYTHON": str(fake), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines(), done.stderr


@pytest.mark.parametrize("args, xdist, env, pytest_args", [
    ([], True, {}, ["-n", "auto"]),
    (["--quick"], True, {}, ["-n", "auto", "-m", "not slow and not compile"]),
    (["--quick", "tests/test_model.py", "-k", "prompt"], True, {"TEST_JOBS": "0"},
     ["-n", "0", "-m", "not slow and not compile", "tests/test_model.py", "-k", "prompt"]),
    (["tests/test_model.py"], False, {}, ["tests/test_model.py"]),
])
def test_the_script_runs_pytest_on_every_core_and_quick_leaves_out_the_slow_tests(tmp_path, args, xdist, env,
                                                                                   pytest_args):
    ran, said = run_the_script(tmp_path, *args, xdist=xdist, **env)
    assert ran == ["-m", "pytest", *pytest_args]
    assert ("pytest-xdist is not installed" in said) is not xdist
