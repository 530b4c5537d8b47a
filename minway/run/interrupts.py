"""Interrupts: SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's stop) end a command with one
line, whatever it was doing when the signal came.

Both raise ``Interrupted``, a KeyboardInterrupt, in the main thread: it unwinds the command as
Ctrl-C always did (a temporary file is removed, a lock released, the last checkpoint kept) and
the command line (``minway.run.cli.run_cli``) answers in one line, with exit status 128 + the
signal's number, as a shell reports a process that the signal ended: 130 for SIGINT, 143 for
SIGTERM. Without this, SIGTERM would end the process on the spot, without a word.

An interrupt that lands while a module is being imported is held, and delivered again a moment
later, until it lands outside every import: raised inside one, it could be caught by code that
catches any failure of an import (torch does, as it loads NumPy), which would leave a module
half-imported and the command running on, to fail later with a traceback.
"""
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RETRY_SECONDS = 0.05


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.exit_status = 128 + signum


def install():
    """Handle SIGINT and SIGTERM as this module says; the handlers they had, for ``restore``."""
    return {signum: signal.signal(signum, _handle) for signum in SIGNALS}


def restore(previous):
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def ignore():
    """Ignore both signals from now on: the command is ending already."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def exit_status(interrupt):
    """The exit status of a command that ``interrupt`` (a KeyboardInterrupt) ended."""
    return getattr(interrupt, "exit_status", 128 + signal.SIGINT)


def _handle(signum, frame):
    if _inside_import(frame):
        timer = threading.Timer(RETRY_SECONDS, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    raise Interrupted(signum)


def _inside_import(frame):
    """Whether ``frame`` runs inside an import: Python's import machinery is below it on the stack."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False
