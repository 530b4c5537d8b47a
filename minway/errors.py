class MinwayError(Exception):
    """A problem the user can fix; the command-line tools print it as one line, no traceback."""
