"""What the command-line tools share: a user's mistake is one line, not a traceback, and
``--help`` shows every default. The scripts parse their arguments before importing torch,
so that ``--help`` and a mistyped option answer at once."""
import argparse
import sys
from pathlib import Path

from minway.errors import MinwayError
from minway.run import interrupts


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written; "(default: X)" after each option whose help does not say it
    (a flag's default is to be off; an option without a default says in its help what happens)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is not None and action.default is not argparse.SUPPRESS and action.nargs != 0 \
                and "default" not in text:
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """argparse's parser with that help, and a mistake in one line (the usage is one --help away)."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def progress_bars(no_progress):
    """Whether to draw progress bars: not when asked not to, nor when stderr is not a terminal (a log
    file, a pipe), where a bar's redrawing would leave one endless line of carriage returns."""
    return not no_progress and sys.stderr.isatty()


def output_dir(path, flag):
    """The directory ``flag`` names for writing, refused at once when it, or a folder above it, is a file."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise MinwayError(f"{flag} {path}: {existing} is a file, not a directory: pass a directory")
            break
    return path


def run_cli(main):
    """Run ``main``: a mistake is one line and exit status 2, an interrupt (SIGINT or SIGTERM, at any moment:
    minway.run.interrupts) one line and 130 or 143."""
    previous, ending = interrupts.install(), False
    try:
        main()
    except (MinwayError, OSError) as e:  # OSError: a file that cannot be read (permissions)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        interrupts.ignore()  # until the process ends: a second interrupt while this one is answered changes nothing
        ending = True
        print("interrupted: run again with --resume to continue from the last checkpoint", file=sys.stderr)
        sys.exit(interrupts.exit_status(e))
    finally:
        if not ending:
            interrupts.restore(previous)
