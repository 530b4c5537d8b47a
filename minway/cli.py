"""What the command-line tools share: a user's mistake is one line, not a traceback."""
import sys

from minway.errors import MinwayError


def run_cli(main):
    try:
        main()
    except MinwayError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: run again with --resume to continue from the last checkpoint", file=sys.stderr)
        sys.exit(130)
