"""scripts/test.sh, the README's test command: what --quick leaves out, and the line that names a test
still running."""
import io
import os
import re
import subprocess
import sys
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


@pytest.mark.slow
def test_quick_leaves_out_the_slow_and_compile_tests_only():
    """The tests --quick collects are the suite's, less exactly those marked slow or compile."""
    env = dict(os.environ, MINWAY_PYTHON=sys.executable, TEST_JOBS="0")

    def collected(*args):
        done = subprocess.run(["bash", "scripts/test.sh", *args, "--collect-only", "-q"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return {line for line in done.stdout.splitlines() if "::" in line}

    everything, quick = collected(), collected("--quick")
    marked = collected("-m", "slow or compile")
    assert quick and marked and quick == everything - marked
    assert any("test_fresh_clone.py" in t for t in marked) and not any("test_gpu_compile.py::test_every" in t
                                                                       for t in quick)
