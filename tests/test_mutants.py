"""The mutation-testing tool (scripts/mutants.py) on small sources; no campaign is run."""
import importlib.util
import sys

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("mutants", ROOT / "scripts" / "mutants.py")
mutants = importlib.util.module_from_spec(_spec)
sys.modules["mutants"] = mutants  # dataclasses look their module up while the class is made
_spec.loader.exec_module(mutants)

SAMPLE = '''"""A docstring that says a < b and x + 1."""
import os
from math import sqrt as root

LIMIT: int = 3


def f(a: int, b: list[int] = None, c: int = 2) -> float:
    """Sum below the limit; é before code moves the byte offsets."""
    s = f"é{a + 1}"; total = a + 1
    if a < LIMIT and not b:
        raise ValueError("too big", a + 1, LIMIT - 1)
    assert a >= 0, f"negative {a - 1}"
    total += min(b[:a], default=0)
    print(f"total {total}", a + 2)
    bar = tqdm(range(a, 4), leave=False)
    return max(total * 2, -1) if b is None else sorted(b, reverse=True)[1:a]


@dataclass(frozen=True)
class C:
    x: int = 1


def g(t):
    return t.to(device="cpu", dtype=float)
'''


def all_mutants(text):
    """Every mutant of ``text`` that compiles to its intended tree."""
    src, per_line = mutants.module_mutants("sample.py", text)
    found = [mutants.realize("sample.py", src, line, k, site) for line, sites in per_line.items()
             for k, site in enumerate(sites)]
    return [m for m in found]


def changed_line(original, mutated):
    """The one line that differs; every other line must be byte-identical."""
    a, b = original.splitlines(keepends=True), mutated.splitlines(keepends=True)
    assert len(a) == len(b)
    differing = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    assert len(differing) == 1, differing
    return differing[0] + 1, a[differing[0]], b[differing[0]]


def test_every_mutant_edits_one_span_of_one_line():
    found = [m for m in all_mutants(SAMPLE)]
    assert len(found) > 20
    for m in found:
        line, before, after = changed_line(SAMPLE, m.source)
        assert line == m.line and before.rstrip("\n") == m.original and after.rstrip("\n") == m.mutated
        before, after = before.encode(), after.encode()
        start, end = m.span
        tail = len(before) - end
        assert after[:start] == before[:start] and after[len(after) - tail:] == before[end:]


def test_docstrings_strings_messages_annotations_imports_and_display_are_left_alone():
    found = all_mutants(SAMPLE)
    on = {line: [m.mutated for m in found if m.line == line] for line in range(1, 27)}
    # docstrings, imports, raise, print, decorator
    assert not on[1] + on[2] + on[3] + on[9] + on[12] + on[15] + on[20]
    # defaults, conditions and code beside a string change; annotations, messages and strings do not
    assert on[5] and all(m.startswith("LIMIT: int = ") for m in on[5])
    assert on[8] and all("a: int, b: list[int] = None, c: int = " in m and m.endswith(") -> float:") for m in on[8])
    assert on[10] and all(m.startswith('    s = f"é{a + 1}"; total = a ') for m in on[10])
    assert on[13] and all(m.endswith(', f"negative {a - 1}"') for m in on[13])
    assert on[22] == ["    x: int = 2", "    x: int = 0"]
    assert "    bar = tqdm(range(4, a), leave=False)" in on[16]  # the range counts, the display does not
    assert all("leave=False" in m for m in on[16])
    assert on[26] and all('device="cpu"' in m for m in on[26])  # no use dropping it on a CPU


@pytest.mark.parametrize("line, mutated", [
    ("y = (a + b) * c", "y = (a + b) / c"),
    ("y = (a + b) * c", "y = (a - b) * c"),
    ("ok = x < 1 <= z", "ok = x <= 1 <= z"),
    ("ok = x < 1 <= z", "ok = x < 1 < z"),
    ("ok = k not in seen", "ok = k in seen"),
    ("ok = k is not None", "ok = k is None"),
    ("ok = p and (q or r)", "ok = p or (q or r)"),
    ("ok = not (p or q)", "ok = (p or q)"),
    ("v = -x", "v = x"),
    ("m = ~mask", "m = mask"),
    ("n += 2", "n -= 2"),
    ("n += 2", "n += 3"),
    ("n += 2", "n += 1"),
    ("flag = True", "flag = False"),
    ("head = xs[:n]", "head = xs[:n + 1]"),
    ("head = xs[:n]", "head = xs[:n - 1]"),
    ("s = t.sum(1)", "s = t.sum()"),
    ("r = range(0, v, step)", "r = range(v, 0, step)"),
    ("r = range(0, v, step)", "r = range(0, step, v)"),
    ("g = F.gelu(x, approximate='tanh')", "g = F.gelu(x)"),
    ("b = t.argmin(1)", "b = t.argmax(1)"),
    ("b = max(a, c)", "b = min(a, c)"),
])
def test_each_operator_makes_its_edit(line, mutated):
    assert mutated in [m.mutated for m in all_mutants(line + "\n")]


def test_a_mutant_that_parses_to_another_tree_is_dropped():
    src = mutants.Source("y = a * b\n")
    node = src.tree.body[0].value
    # textually "a - b * b" is not BinOp(a, -, b) with the rest unchanged
    bad = mutants.Site(node, "arith", mutants._with(node, op=mutants.ast.Sub()), "a - b * b")
    assert src.mutated(bad) is None
    good = mutants.Site(node, "arith", mutants._with(node, op=mutants.ast.Sub()), "a - b")
    assert src.mutated(good) == "y = a - b\n"


def test_sampling_is_deterministic_and_spread_over_the_lines():
    text = (ROOT / "minway" / "metrics.py").read_text()
    first = mutants.sample("minway/metrics.py", text, 6, seed=0)
    again = mutants.sample("minway/metrics.py", text, 6, seed=0)
    assert [(m.id, m.mutated) for m in first] == [(m.id, m.mutated) for m in again]
    assert len(first) == 6 and len({m.line for m in first}) == 6
    assert [m.line for m in first] == sorted(m.line for m in first)  # one from each run of lines, in order
    other = mutants.sample("minway/metrics.py", text, 6, seed=1)
    assert [m.id for m in other] != [m.id for m in first]


def test_an_id_reruns_the_same_mutant(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(SAMPLE)
    for m in mutants.sample("pkg/mod.py", SAMPLE, 5, seed=3):
        again = mutants.by_id(m.id, root=tmp_path)
        assert (again.line, again.operator, again.mutated) == (m.line, m.operator, m.mutated)


def test_runs_of_lines_cover_all_and_differ_by_one_at_most():
    runs = mutants._runs(list(range(10)), 4)
    assert [len(r) for r in runs] == [3, 3, 2, 2] and sum(runs, []) == list(range(10))
    assert mutants._runs([1, 2], 5) == [[1], [2]]


@pytest.mark.slow
def test_pytest_outcomes(tmp_path):
    (tmp_path / "test_ok.py").write_text("def test_ok():\n    assert True\n")
    (tmp_path / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    (tmp_path / "test_hangs.py").write_text("import time\n\ndef test_hangs():\n    time.sleep(60)\n")
    env = mutants.test_env(1)
    assert mutants.run_pytest(tmp_path, ["test_ok.py"], 60, env)[0] == "survived"
    status, _, failed = mutants.run_pytest(tmp_path, ["test_ok.py", "test_bad.py"], 60, env)
    assert (status, failed) == ("killed", "test_bad.py::test_bad")
    assert mutants.run_pytest(tmp_path, ["test_hangs.py"], 1, env)[0] == "timeout"
    # a mutant that crashes the test process is caught; a command that runs no test is the tool's error
    (tmp_path / "test_crash.py").write_text("import os, signal\n\n\ndef test_crash():\n"
                                            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert mutants.run_pytest(tmp_path, ["test_crash.py"], 60, env)[0] == "killed"
    assert mutants.run_pytest(tmp_path, ["test_missing.py"], 60, env)[0] == "error"


@pytest.mark.parametrize("seed, how, chosen", [(4, "a sample", "seed 4, budget 6 per module"),
                                               (None, "--id", "chosen by --id"),
                                               (None, "the regressions", "the bugs that once survived (--regressions)")])
def test_the_summary_counts_timeouts_as_caught_and_errors_apart(seed, how, chosen):
    done = [mutants.Mutant(f"pkg/{name}.py:1:0", f"pkg/{name}.py", 1, (0, 1), "arith", "a + 1", "a - 1", status)
            for name, status in [("a", "killed"), ("a", "timeout"), ("b", "survived"), ("b", "error")]]
    meta = {"date": "2026-01-01", "commit": "abc1234", "seed": seed, "budget": None if seed is None else 6,
            "jobs": 2, "wall_seconds": 90, "baseline_seconds": 30, "chosen": how}
    lines = mutants.summary(done, meta).splitlines()
    assert lines[2] == (f"4 mutants ({chosen}): 1 killed, 1 timed out, 1 survived, 0 equivalent, 1 errors; kill rate "
                        "66.7% (2/3) (killed and timed out / all but equivalents and errors), 66.7% (2/3) with the "
                        "equivalents counted as survivors; 1.5 min with 2 job(s), baseline 0.5 min more.")
    assert "| pkg/a.py | 2 | 2 | 0 | 0 | 100.0% (2/2) |" in lines and "| pkg/b.py | 2 | 0 | 1 | 0 | 0.0% (0/1) |" in lines


def test_every_regression_still_plants_its_bug_in_todays_code():
    """Each entry edits one line of its core module, into code that compiles to another tree."""
    import ast

    assert len(mutants.REGRESSIONS) == 9
    for entry in mutants.REGRESSIONS:
        module = entry[0]
        assert module in mutants.TESTS, module
        m = mutants.regression(*entry)
        original = (ROOT / module).read_text()
        line, before, after = changed_line(original, m.source)
        assert (line, before.rstrip("\n"), after.rstrip("\n")) == (m.line, m.original, m.mutated)
        assert ast.dump(ast.parse(original)) != ast.dump(ast.parse(m.source)), m.id
        start, end = m.span
        assert before.encode()[start:end].decode() == entry[1]


def test_a_regression_whose_text_moved_stops_the_run(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\nx = 1\n")
    with pytest.raises(SystemExit, match="'x = 1' is on 2 lines of m.py, not one: bring"):
        mutants.regression("m.py", "x = 1", "x = 2", "twice", root=tmp_path)
    with pytest.raises(SystemExit, match="'y = 1' is on 0 lines of m.py"):
        mutants.regression("m.py", "y = 1", "y = 2", "gone", root=tmp_path)


@pytest.mark.slow
def test_every_listed_equivalent_is_a_mutant_of_todays_code():
    """An entry names a mutant the tool makes now (so that it can match), with a reason."""
    sources = {module: mutants.module_mutants(module, (ROOT / module).read_text())
               for module in {entry[0] for entry in mutants.EQUIVALENT}}
    for module, before, after, why in mutants.EQUIVALENT:
        assert module in mutants.TESTS and why, module
        src, per_line = sources[module]
        lines = [n for n, line in enumerate(src.text.splitlines(), 1) if line.strip() == before]
        made = {m.mutated.strip() for m in (mutants.realize(module, src, n, k, site) for n in lines
                                            for k, site in enumerate(per_line.get(n, []))) if m}
        assert after in made, (module, before, after)


def test_an_equivalent_survivor_is_counted_apart_and_a_caught_one_is_named():
    listed_module, before, after, _ = mutants.EQUIVALENT[0]

    def mutant(status, original=before, mutated=after, module=listed_module):
        return mutants.Mutant(f"{module}:1:0", module, 1, (0, 1), "unary", original, mutated, status)
    done = [mutant("killed", "a", "b"), mutant("survived", "a", "c"), mutant("equivalent"), mutant("killed")]
    assert mutants.is_equivalent(done[2]) and not mutants.is_equivalent(done[1])
    assert mutants.rate(done) == (2, 3) and mutants.rate(done, equivalents_count=True) == (2, 4)
    meta = {"date": "2026-01-01", "commit": "abc1234", "seed": 1, "budget": 6, "jobs": 2}
    text = mutants.summary(done, meta)
    assert "2 killed, 0 timed out, 1 survived, 1 equivalent, 0 errors; kill rate 66.7% (2/3) " in text
    assert "50.0% (2/4) with the equivalents counted as survivors" in text
    caught_but_listed = text.split("## Listed as equivalent but caught")[1]
    assert after in caught_but_listed and "\n+ c" not in caught_but_listed


def test_symmetric_calls_are_not_swapped_and_restated_defaults_not_dropped():
    text = ("def near(q, E, k=1, metric='dot'):\n    return q\n\n\n"
            "def f(x, y):\n    return near(x, y, k=1, metric='l2') + x.transpose(1, 2) + c_dist(x, y) + g(x, y)\n")
    found = {m.mutated.strip() for m in all_mutants(text)}
    assert "return near(x, y, metric='l2') + x.transpose(1, 2) + c_dist(x, y) + g(x, y)" not in found  # k=1 kept
    assert "return near(x, y, k=1) + x.transpose(1, 2) + c_dist(x, y) + g(x, y)" in found  # metric='l2' dropped
    assert "return near(x, y, k=1, metric='l2') + x.transpose(2, 1) + c_dist(x, y) + g(x, y)" not in found
    assert "return near(x, y, k=1, metric='l2') + x.transpose(1, 2) + c_dist(y, x) + g(x, y)" not in found
    assert "return near(x, y, k=1, metric='l2') + x.transpose(1, 2) + c_dist(x, y) + g(y, x)" in found


def test_a_name_defined_twice_keeps_only_the_defaults_both_agree_on():
    import ast
    tree = ast.parse("def h(a, k=1, n=2):\n    pass\n\n\nclass C:\n    def h(self, k=1, n=3):\n        pass\n")
    assert set(mutants._defaults_of(tree)["h"]) == {"k"}


def test_the_calls_taken_as_symmetric_are():
    import random
    from minway.metrics import position_match_rate, released_f1
    from minway.objective import c_dist
    import torch

    rng = random.Random(0)
    words = ["the", "cat", "Sat", "on", "a", "mat.", "cats", "sat", ""]
    for _ in range(200):
        a, b = (" ".join(rng.choices(words, k=rng.randint(0, 6))) for _ in range(2))
        assert released_f1(a, b) == released_f1(b, a), (a, b)
        ids_a = [rng.randint(0, 3) for _ in range(5)]
        ids_b = [rng.randint(0, 3) for _ in range(5)]
        assert position_match_rate(ids_a, ids_b) == position_match_rate(ids_b, ids_a)
    x, y = torch.randn(2, 4, 7, 5).unbind()
    assert torch.equal(c_dist(x, y), c_dist(y, x))
    project = mutants.SYMMETRIC_CALLS - {"transpose", "swapaxes", "swapdims"}
    assert project == {"c_dist", "released_f1", "position_match_rate"}
