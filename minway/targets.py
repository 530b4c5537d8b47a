"""Where a target text comes from: the command line, a text file, or a named entry
of a prompts file in the layout of the paper's release (``{name: text}`` JSON)."""
import json
from pathlib import Path

from minway.errors import MinwayError

SHARED_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "prompts"


def read_prompts_file(path):
    path = Path(path)
    try:
        prompts = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MinwayError(f"prompts file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MinwayError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise MinwayError(f"{path} must be a JSON object mapping names to target texts")
    return prompts


def find_named_target(name, prompts_file=None):
    files = [Path(prompts_file)] if prompts_file else sorted(SHARED_PROMPTS.glob("*.json"))
    if not files:
        raise MinwayError(f"--target-name {name} needs --prompts-file F.json (no {SHARED_PROMPTS} here)")
    for file in files:
        prompts = read_prompts_file(file)
        if name in prompts:
            return prompts[name]
    raise MinwayError(f"no target named {name!r} in {', '.join(str(f) for f in files)}")


def resolve_target(text=None, file=None, name=None, prompts_file=None):
    given = [x for x in (text, file, name) if x is not None]
    if len(given) != 1:
        raise MinwayError("give exactly one of --target TEXT, --target-file FILE, --target-name NAME")
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8").strip("\n")
        except FileNotFoundError:
            raise MinwayError(f"target file {file} does not exist") from None
    if name is not None:
        text = find_named_target(name, prompts_file)
    if not text.strip():
        raise MinwayError("the target text is empty: give a non-empty --target")
    return text
