import os
import sys
import threading
import time
from pathlib import Path

# pytest-xdist runs the suite in as many workers as there are cores (scripts/test.sh): each worker,
# and each process its tests start, computes on one thread, as a worker per core wants.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after the thread count)

# Triton kernels run in the interpreter when there is no GPU. The variable must be
# set before triton is first imported, hence here, before any test module loads. It is
# set, not defaulted: without a GPU a TRITON_INTERPRET=0 left in the environment could
# only make every Triton test fail.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STILL_RUNNING_EVERY = 20  # seconds: a test that runs longer says so on the terminal, again every as many


class StillRunning:
    """A line on ``terminal`` whenever a test has run another ``every`` seconds, so that a long test (the
    compile check, a fresh clone) never looks like a hang. With pytest-xdist the controller hears of every
    worker's tests, and names each that runs long."""

    def __init__(self, terminal, every=STILL_RUNNING_EVERY, tick=1.0):
        self.terminal, self.every, self.tick = terminal, every, tick
        self.running, self.lock, self.stopped = {}, threading.Lock(), threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def pytest_runtest_logstart(self, nodeid, location):
        with self.lock:
            self.running[nodeid] = [time.monotonic(), 1]  # its start, and the next multiple of `every` due

    def pytest_runtest_logfinish(self, nodeid, location):
        with self.lock:
            self.running.pop(nodeid, None)

    def pytest_unconfigure(self, config):
        self.stopped.set()

    def _watch(self):
        while not self.stopped.wait(self.tick):
            now = time.monotonic()
            with self.lock:
                for nodeid, due in self.running.items():
                    if now - due[0] >= due[1] * self.every:
                        self.terminal.write(f"\n    ... {nodeid} still running ({now - due[0]:.0f} s)\n")
                        self.terminal.flush()
                        due[1] += 1


def pytest_addoption(parser):
    parser.addoption("--whole-grid", action="store_true",
                     help="compile every kernel configuration, not only the pairwise subset (minutes; .ci/run does)")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the process at the terminal, not an xdist worker
        # a copy of the terminal's descriptor, taken before any test runs: pytest captures descriptor 1
        # itself while a test runs
        config.pluginmanager.register(StillRunning(os.fdopen(os.dup(1), "w", buffering=1)), "still-running")
