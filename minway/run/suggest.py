"""Did you mean: the existing names nearest a mistyped one, for the one-line errors of the
command lines (a target name, a target group, a path). Free of torch."""
import difflib
import os
from pathlib import Path

SHOWN = 3  # suggestions at most


def close_matches(given, names):
    """The names most like ``given``: those that hold it whatever the case (a partial name,
    ``subtask047``), shortest first; else those difflib finds close (a typo, ``promt00``); else
    those that begin as it does for at least half its length (``subtask04_``), by name."""
    names = list(dict.fromkeys(names))
    holding = sorted((n for n in names if given.lower() in n.lower()), key=lambda n: (len(n), n))
    if holding:
        return holding
    close = difflib.get_close_matches(given, names, n=SHOWN, cutoff=0.6)
    if close:
        return close
    shared = {n: len(os.path.commonprefix([given.lower(), n.lower()])) for n in names}
    longest = max(shared.values(), default=0)
    return sorted(n for n, length in shared.items() if length == longest) if 2 * longest >= len(given) > 0 else []


def did_you_mean(given, names):
    """"did you mean A, B or C?" (and how many more are close), or "" when no name is close."""
    return _question(close_matches(given, names))


def _question(matches):
    if not matches:
        return ""
    shown = matches[:SHOWN]
    listed = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    return f"did you mean {listed}?" + (f" ({len(matches) - SHOWN} more)" if len(matches) > SHOWN else "")


def nearest_paths(path):
    """Existing paths like the missing ``path``, spelt as it is: the names beside its first missing
    part (in the deepest folder of it that exists) that are close to that part, each followed by the
    rest of ``path`` where that exists too."""
    path = Path(path)
    parts = path.parts
    for depth in range(len(parts) - 1, -1, -1):
        folder = Path(*parts[:depth]) if depth else Path(".")
        if folder.is_dir():
            break
    else:
        return []
    missing, rest = parts[depth], parts[depth + 1:]
    try:
        beside = [entry.name for entry in folder.iterdir()]
    except OSError:  # a folder that cannot be listed suggests nothing
        return []
    found = []
    for name in close_matches(missing, beside):
        near = (folder / name if depth else Path(name))
        found.append(near.joinpath(*rest) if rest and near.joinpath(*rest).exists() else near)
    return [str(p) for p in found]


def missing_path_advice(path):
    """": did you mean X?" for a missing ``path``, or "" when nothing close exists."""
    near = nearest_paths(path)
    return f": {_question(near)}" if near else ""
