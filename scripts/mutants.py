"""Mutation testing of minway's core: plant one-line bugs, run the tests that should catch them.

A mutant is one small edit of one expression that sits on one line of a core module:

    compare   < <=, > >=, == !=, in / not in, is / is not, each to its twin
    arith     + -, * /, // /, & |, << >> (also in += and the like), each to its twin
    boolop    and <-> or
    unary     a dropped `not`, unary minus or `~`
    constant  an integer n (|n| <= 1024) -> n + 1 or n - 1;  True <-> False
    slice     a slice bound b -> b + 1 or b - 1
    call      a keyword argument dropped, a number as last argument dropped (x.sum(1) -> x.sum()),
              two neighbouring simple arguments swapped (range(0, V) -> range(V, 0))
    name      min <-> max, any <-> all, argmin <-> argmax, clamp_min <-> clamp_max, floor <-> ceil

Two edits are never made, as they cannot change behaviour: swapping the arguments of a
symmetric call (``SYMMETRIC_CALLS``: transpose(1, 2), c_dist(a, b)...), and dropping a keyword
argument that restates the default of the project's function it is passed to
(``nearest_tokens(q, E, k=1)``, whose k defaults to 1).

Nothing is planted in strings, docstrings, f-strings, the arguments of `raise` and the message
of `assert` (error texts), type annotations, decorators, imports, or calls that only display
(print, warnings.warn, a progress bar's write and set_postfix, tqdm's keyword arguments), and
no device= is dropped (on the CPU the suite runs on, that changes nothing).

A mutant replaces the exact source span of one node (``lineno``, ``col_offset``,
``end_col_offset``) and nothing else: the rest of the file stays byte-identical. It is kept
only if the edited file compiles and parses to the original tree with just that node changed.

Sampling is deterministic: each module's lines that can be mutated are cut into ``--budget``
runs of consecutive lines, and one mutant is drawn from each run with a generator seeded by
``--seed`` and the module's path. A mutant's id, ``<module>:<line>:<k>`` (the k-th possible
mutation of that line), depends on the source alone, so ``--id`` reruns any mutant of a listing.

Each mutant is tested in a private copy of the checkout (the files git knows, copied once
into a temporary directory), with the module's own test files
(``TESTS`` below, the fastest and most specific first), ``pytest -x``: the first failure
ends the run. The unmutated code first passes the same tests once (the baseline), which also
times them: a mutant whose tests run past ``--timeout-factor`` times the baseline is stopped
and counted as killed (a timeout), shown apart.

    python scripts/mutants.py                       # the default campaign, into mutants/
    python scripts/mutants.py --list                # the mutants it would plant
    python scripts/mutants.py --modules minway/metrics.py minway/tasks.py --budget 10
    python scripts/mutants.py --id minway/metrics.py:46:2    # rerun one mutant (a survivor)
    python scripts/mutants.py --regressions         # the bugs that once survived every test, again

Results: ``<out>/results.json`` (every mutant: id, module, line, operator, original and mutated
line, status, seconds, the first failing test) and ``<out>/summary.md`` (kill rate overall and
per module, the survivors with their diffs).
"""
import argparse
import ast
import copy
import functools
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Core module -> the test files that exercise it, in the order they run: the fastest and most
# specific first, so that a killed mutant is usually stopped within seconds. Together they run
# every line of the module that the whole suite runs (checked with coverage.py, test file by
# test file, again for the modules of the packed model); no test runs GPT2Config.from_json.
# The sweep and Ray tests, which run most of the core again, are left out, but for the sweep's runner
# and train.py, whose bugs of state over two invocations (issue 23) only those tests see.
TESTS = {
    "minway/model.py": ["tests/test_model.py", "tests/test_objective.py", "tests/test_dropout.py",
                        "tests/test_classify.py"],
    "minway/packing.py": ["tests/test_packing.py", "tests/test_model.py", "tests/test_objective.py",
                          "tests/test_classify.py", "tests/test_dropout.py"],
    "minway/dropout.py": ["tests/test_dropout.py"],
    "minway/batch.py": ["tests/test_objective.py", "tests/test_dropout.py", "tests/test_classify.py"],
    "minway/classify.py": ["tests/test_classify.py", "tests/test_objective.py"],
    "minway/objective.py": ["tests/test_objective.py"],
    "minway/prompt.py": ["tests/test_prompt.py", "tests/test_objective.py", "tests/test_evaluation.py",
                         "tests/test_reachability.py"],
    "minway/metrics.py": ["tests/test_metrics.py", "tests/test_evaluation.py", "tests/test_reachability.py"],
    "minway/evaluation.py": ["tests/test_evaluation.py", "tests/test_reachability.py", "tests/test_storage.py",
                             "tests/test_train_cli.py", "tests/test_faults.py"],
    "minway/loop.py": ["tests/test_loop.py", "tests/test_train_cli.py"],
    "minway/run/training.py": ["tests/test_training.py", "tests/test_loop.py", "tests/test_train_cli.py",
                               "tests/test_multi_prompt.py", "tests/test_twice.py", "tests/test_faults.py"],
    "minway/run/storage.py": ["tests/test_storage.py", "tests/test_train_cli.py", "tests/test_links.py",
                              "tests/test_faults.py"],
    "minway/tasks.py": ["tests/test_tasks_data.py", "tests/test_classify.py", "tests/test_task_file.py"],
    "minway/run/task_file.py": ["tests/test_task_file.py"],
    "minway/run/data.py": ["tests/test_tasks_data.py", "tests/test_task_file.py", "tests/test_released_split.py"],
    "minway/run/tokenizer.py": ["tests/test_tokenizer.py", "tests/test_resources.py"],
    "minway/reachability.py": ["tests/test_reachability.py"],
    "minway/run/config.py": ["tests/test_config.py", "tests/test_storage.py", "tests/test_tasks_data.py",
                             "tests/test_train_cli.py", "tests/test_released_split.py"],
    "minway/kernels/attention.py": ["tests/test_attention.py", "tests/test_model.py", "tests/test_dropout.py"],
    "minway/kernels/flash_attention.py": ["tests/test_attention.py", "tests/test_objective.py", "tests/test_model.py"],
    "minway/kernels/projection.py": ["tests/test_projection.py", "tests/test_reachability.py"],
    "minway/kernels/projection_triton.py": ["tests/test_projection.py"],
    "minway/run/adapters.py": ["tests/test_adapters.py"],
    "weights/checkpoint.py": ["tests/test_weights.py"],
    "weights/resolve.py": ["tests/test_weights.py"],
    "minway/llama.py": ["tests/test_llama.py"],
    "minway/run/bpe_files.py": ["tests/test_bpe_files.py"],
    "weights/llama_checkpoint.py": ["tests/test_llama_checkpoint.py"],
    "weights/models.py": ["tests/test_llama_checkpoint.py"],
    "minway/experiments/runner.py": ["tests/test_twice.py", "tests/test_sweep.py", "tests/test_links.py"],
    "train.py": ["tests/test_twice.py", "tests/test_train_cli.py", "tests/test_resources.py", "tests/test_hostile.py"],
}
PYTEST = ["-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]

MAX_CONSTANT = 1024
COMPARE_TWINS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
COMPARE_SYMBOLS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
                   ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
ARITH_TWINS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
               ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.LShift: ast.RShift, ast.RShift: ast.LShift}
ARITH_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.BitAnd: "&",
                 ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>"}
UNARY_SYMBOLS = {ast.Not: "not", ast.USub: "-", ast.Invert: "~"}
NAME_TWINS = {"min": "max", "max": "min", "any": "all", "all": "any"}
ATTRIBUTE_TWINS = {**NAME_TWINS, "argmin": "argmax", "argmax": "argmin", "clamp_min": "clamp_max",
                   "clamp_max": "clamp_min", "floor": "ceil", "ceil": "floor"}
DISPLAY_CALLS = {"print", "warnings.warn", "bar.write", "bar.set_postfix"}  # their arguments are only shown
DISPLAY_KEYWORDS = {"desc"}  # a progress bar's title
# Dropping device= changes nothing on the CPU the suite runs on (everything is there already):
# such a mutant could only survive, so none is made.
KEPT_KEYWORDS = {"device"}
# Calls whose two arguments may trade places with no effect: a swap is no bug, so none is made.
# The project's own three are checked to be symmetric by tests/test_mutants.py.
SYMMETRIC_CALLS = {"transpose", "swapaxes", "swapdims", "c_dist", "released_f1", "position_match_rate"}
PROJECT_PACKAGES = ("minway", "weights")  # where the defaults of the project's functions are read


# ---------------------------------------------------------------------------------------------
# Where a module can be mutated


@dataclass
class Site:
    """One possible mutation: the span of ``node`` becomes ``text``, which parses as ``replacement``."""
    node: ast.AST
    operator: str
    replacement: ast.AST
    text: str


class Source:
    """A module's text, its tree, and the source of single-line nodes (offsets are UTF-8 bytes)."""

    def __init__(self, text, path="<source>"):
        self.text, self.path = text, path
        self.lines = text.encode().splitlines(keepends=True)
        self.tree = ast.parse(text)
        self.defaults = _merge_defaults(project_defaults(), _defaults_of(self.tree))
        self.parents = {}
        for parent in ast.walk(self.tree):
            for name, value in ast.iter_fields(parent):
                for index, child in enumerate(value if isinstance(value, list) else [value]):
                    if isinstance(child, ast.AST):
                        self.parents[child] = (parent, name, index if isinstance(value, list) else None)

    def segment(self, node):
        return self.lines[node.lineno - 1][node.col_offset:node.end_col_offset].decode()

    def between(self, a, b):
        """The text from the end of node ``a`` to the start of node ``b`` on their line."""
        return self.lines[a.lineno - 1][a.end_col_offset:b.col_offset].decode()

    def after_start(self, node, child):
        """The text of ``node`` before its child ``child``."""
        return self.lines[node.lineno - 1][node.col_offset:child.col_offset].decode()

    def offset_in(self, node, child):
        """Character offsets of ``child``'s span within ``segment(node)``."""
        line = self.lines[node.lineno - 1]
        start = len(line[node.col_offset:child.col_offset].decode())
        return start, start + len(self.segment(child))

    def mutated(self, site):
        """The whole text with ``site`` applied, or None if it does not compile to the intended tree."""
        node = site.node
        line = self.lines[node.lineno - 1]
        new_line = line[:node.col_offset] + site.text.encode() + line[node.end_col_offset:]
        text = b"".join(self.lines[:node.lineno - 1] + [new_line] + self.lines[node.lineno:]).decode()
        try:
            compile(text, self.path, "exec")
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return None
        return text if ast.dump(tree) == self._dump_with(node, site.replacement) else None

    def _dump_with(self, node, replacement):
        parent, name, index = self.parents[node]
        if index is None:
            setattr(parent, name, replacement)
        else:
            getattr(parent, name)[index] = replacement
        try:
            return ast.dump(self.tree)
        finally:
            if index is None:
                setattr(parent, name, node)
            else:
                getattr(parent, name)[index] = node


def _defaults_of(tree):
    """{function name: {keyword: its default, as ast.dump}} of the functions defined in ``tree``."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = (a.posonlyargs + a.args)[len(a.posonlyargs + a.args) - len(a.defaults):]
            pairs = list(zip(positional, a.defaults)) + [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d]
            found = _merge_defaults(found, {node.name: {arg.arg: ast.dump(d) for arg, d in pairs}})
    return found


def _merge_defaults(a, b):
    """Both maps in one; a name that both define differently keeps only the keywords they agree on."""
    merged = dict(a)
    for name, defaults in b.items():
        merged[name] = defaults if name not in a else {k: v for k, v in defaults.items() if a[name].get(k) == v}
    return merged


@functools.cache
def project_defaults():
    """The defaults of every function of the project's packages, by name (see ``_defaults_of``)."""
    found = {}
    for package in PROJECT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found = _merge_defaults(found, _defaults_of(ast.parse(path.read_text(encoding="utf-8"))))
    return found


def _restates_default(src, call, keyword):
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
    return src.defaults.get(name, {}).get(keyword.arg, object()) == ast.dump(keyword.value)


def _frozen_children(node):
    """Children of ``node`` under which nothing is mutated (messages, annotations, display)."""
    if isinstance(node, ast.Raise):
        return [node.exc, node.cause]
    if isinstance(node, ast.Assert):
        return [node.msg]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        # decorators declare (@dataclass(frozen=True), @triton.jit), they do not compute
        return [getattr(node, "returns", None), *node.decorator_list]
    if isinstance(node, ast.arg):
        return [node.annotation]
    if isinstance(node, ast.AnnAssign):
        return [node.annotation]
    if isinstance(node, ast.Call):
        name = ast.unparse(node.func)
        if name in DISPLAY_CALLS:
            return [node]
        if name.split(".")[-1] == "tqdm":
            return list(node.keywords)
    if isinstance(node, ast.keyword) and node.arg in DISPLAY_KEYWORDS:
        return [node]
    return []


def _mutable_nodes(tree):
    """Every node outside the frozen parts: strings, f-strings and the children above."""
    frozen = set()
    for node in ast.walk(tree):
        for child in _frozen_children(node):
            if child is not None:
                frozen.update(id(n) for n in ast.walk(child))
        if isinstance(node, ast.JoinedStr):
            frozen.update(id(n) for n in ast.walk(node))
    return [n for n in ast.walk(tree) if id(n) not in frozen]


def _is_text(node):
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _replace_symbol(gap, old, new):
    """``gap`` (the text between two operands: spaces, brackets and the operator) with ``old``
    replaced by ``new``; None when the gap holds anything else."""
    bare = gap.replace("(", " ").replace(")", " ")
    if " ".join(bare.split()) != old:
        return None
    start = len(bare) - len(bare.lstrip())
    end = len(bare.rstrip())
    return gap[:start] + new + gap[end:]


def _with(node, **changes):
    new = copy.deepcopy(node)
    for name, value in changes.items():
        setattr(new, name, value)
    return new


def _compare_sites(src, node):
    text = src.segment(node)
    for i, op in enumerate(node.ops):
        if type(op) not in COMPARE_TWINS:
            continue
        left = node.left if i == 0 else node.comparators[i - 1]
        right = node.comparators[i]
        twin = COMPARE_TWINS[type(op)]
        gap = _replace_symbol(src.between(left, right), COMPARE_SYMBOLS[type(op)], COMPARE_SYMBOLS[twin])
        if gap is None:
            continue
        (_, gap_start), (gap_end, _) = src.offset_in(node, left), src.offset_in(node, right)
        ops = node.ops[:i] + [twin()] + node.ops[i + 1:]
        yield Site(node, "compare", _with(node, ops=ops), text[:gap_start] + gap + text[gap_end:])


def _arith_sites(src, node):
    if isinstance(node, ast.BinOp):
        left, right, op = node.left, node.right, node.op
        if _is_text(left) or _is_text(right):
            return
    else:  # AugAssign
        left, right, op = node.target, node.value, node.op
        if _is_text(right):
            return
    if type(op) not in ARITH_TWINS:
        return
    twin = ARITH_TWINS[type(op)]
    old, new = ARITH_SYMBOLS[type(op)], ARITH_SYMBOLS[twin]
    if isinstance(node, ast.AugAssign):
        old, new = old + "=", new + "="
    gap = _replace_symbol(src.between(left, right), old, new)
    if gap is None:
        return
    text = src.segment(node)
    (_, gap_start), (gap_end, _) = src.offset_in(node, left), src.offset_in(node, right)
    yield Site(node, "arith", _with(node, op=twin()), text[:gap_start] + gap + text[gap_end:])


def _boolop_sites(src, node):
    old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
    text, pieces, last = src.segment(node), [], 0
    for left, right in zip(node.values, node.values[1:]):
        gap = _replace_symbol(src.between(left, right), old, new)
        if gap is None:
            return
        (_, gap_start), (gap_end, _) = src.offset_in(node, left), src.offset_in(node, right)
        pieces += [text[last:gap_start], gap]
        last = gap_end
    twin = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    yield Site(node, "boolop", _with(node, op=twin), "".join(pieces) + text[last:])


def _unary_sites(src, node):
    if type(node.op) not in UNARY_SYMBOLS:
        return
    prefix = _replace_symbol(src.after_start(node, node.operand), UNARY_SYMBOLS[type(node.op)], "")
    if prefix is not None:
        rest = src.segment(node)[src.offset_in(node, node.operand)[0]:]  # the operand and any closing bracket
        yield Site(node, "unary", copy.deepcopy(node.operand), prefix.lstrip() + rest)


def _constant_sites(src, node):
    value = node.value
    if isinstance(value, bool):
        yield Site(node, "constant", ast.Constant(not value), str(not value))
    elif isinstance(value, int) and abs(value) <= MAX_CONSTANT:
        for new in (value + 1, value - 1):
            if new >= 0:  # a negative number is a unary minus on a constant, never one constant
                yield Site(node, "constant", ast.Constant(new), str(new))


def _signed_constant(node):
    """A number, possibly with a sign: 1, -1, 0.5."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        node = node.operand
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _slice_sites(src, node):
    for bound in (node.lower, node.upper):
        # a constant bound is already an off-by-one of the constant operator
        if bound is None or _signed_constant(bound) or bound.lineno != bound.end_lineno:
            continue
        text = src.segment(bound)
        binds_tighter = isinstance(bound, (ast.Name, ast.Attribute, ast.Call, ast.Subscript, ast.BinOp)) or (
            isinstance(bound, ast.UnaryOp) and not isinstance(bound.op, ast.Not))
        if not binds_tighter:
            text = f"({text})"
        for op, symbol in ((ast.Add, "+"), (ast.Sub, "-")):
            yield Site(bound, "slice", ast.BinOp(copy.deepcopy(bound), op(), ast.Constant(1)), f"{text} {symbol} 1")


def _is_message(node):
    return isinstance(node, ast.JoinedStr)


def _simple(node):
    return isinstance(node, (ast.Name, ast.Attribute, ast.Constant, ast.Subscript)) or _signed_constant(node)


def _call_sites(src, node):
    """Drop a keyword argument (not a message, nor one that restates the callee's default); drop a
    last positional argument that is a number (x.sum(1) -> x.sum()); swap two neighbouring
    positional arguments that are names, attributes, constants or subscripts (range(0, V) ->
    range(V, 0)), unless the call is symmetric. Other drops mostly make a TypeError."""
    text = src.segment(node)
    items = sorted(node.args + node.keywords, key=lambda n: n.col_offset)

    def without(i):
        item = items[i]
        if i > 0:
            start, end = src.offset_in(node, items[i - 1])[1], src.offset_in(node, item)[1]
        elif len(items) > 1:
            start, end = src.offset_in(node, item)[0], src.offset_in(node, items[1])[0]
        else:
            start, end = src.offset_in(node, item)
        return text[:start] + text[end:]

    display = ast.unparse(node.func).split(".")[-1] == "tqdm"  # its keywords only show progress
    for i, item in enumerate(items):
        if isinstance(item, ast.keyword) and item.arg not in (None, *DISPLAY_KEYWORDS, *KEPT_KEYWORDS) \
                and not _is_message(item.value) and not display and not _restates_default(src, node, item):
            keywords = [k for k in node.keywords if k is not item]
            yield Site(node, "call", _with(node, keywords=keywords), without(i))
    if node.args and _signed_constant(node.args[-1]):
        yield Site(node, "call", _with(node, args=node.args[:-1]), without(items.index(node.args[-1])))
    symmetric = ast.unparse(node.func).split(".")[-1] in SYMMETRIC_CALLS and len(node.args) == 2
    for i, (a, b) in enumerate(zip(node.args, node.args[1:])):
        if _simple(a) and _simple(b) and src.segment(a) != src.segment(b) and not symmetric:
            (a0, a1), (b0, b1) = src.offset_in(node, a), src.offset_in(node, b)
            swapped = text[:a0] + text[b0:b1] + text[a1:b0] + text[a0:a1] + text[b1:]
            args = node.args[:i] + [node.args[i + 1], node.args[i]] + node.args[i + 2:]
            yield Site(node, "call", _with(node, args=args), swapped)


def _name_sites(src, node):
    if isinstance(node, ast.Name) and node.id in NAME_TWINS:
        yield Site(node, "name", _with(node, id=NAME_TWINS[node.id]), NAME_TWINS[node.id])
    elif isinstance(node, ast.Attribute) and node.attr in ATTRIBUTE_TWINS:
        text, twin = src.segment(node), ATTRIBUTE_TWINS[node.attr]
        if text.endswith(node.attr):
            yield Site(node, "name", _with(node, attr=twin), text[:-len(node.attr)] + twin)


SITE_FINDERS = [
    (ast.Compare, _compare_sites),
    ((ast.BinOp, ast.AugAssign), _arith_sites),
    (ast.BoolOp, _boolop_sites),
    (ast.UnaryOp, _unary_sites),
    (ast.Constant, _constant_sites),
    (ast.Slice, _slice_sites),
    (ast.Call, _call_sites),
    ((ast.Name, ast.Attribute), _name_sites),
]


def sites(src):
    """Every possible mutation of a module, in source order."""
    found = []
    for node in _mutable_nodes(src.tree):
        if not hasattr(node, "lineno") or node.lineno != node.end_lineno:
            continue
        for kind, finder in SITE_FINDERS:
            if isinstance(node, kind):
                found += finder(src, node)
    # a slice site's node is the bound, which may span lines even when the Slice does not
    found = [s for s in found if s.node.lineno == s.node.end_lineno]
    found.sort(key=lambda s: (s.node.lineno, s.node.col_offset))  # stable: ties keep the walk's order
    return found


# ---------------------------------------------------------------------------------------------
# Mutants: sampled sites, applied


@dataclass
class Mutant:
    id: str
    module: str
    line: int
    span: tuple               # (start, end) of the edited node on its line, in UTF-8 bytes
    operator: str
    original: str
    mutated: str
    status: str = "pending"   # killed, timeout, survived, equivalent (survived, listed in EQUIVALENT),
    #                           or error (the tests could not run)
    seconds: float = 0.0
    failed: str = ""          # the first failing test, or the tail of pytest's output
    source: str = field(default="", repr=False)  # the whole mutated module

    def diff(self):
        return f"{self.id} [{self.operator}]\n- {self.original.strip()}\n+ {self.mutated.strip()}"


def module_mutants(module, text):
    """{id: (site index, Mutant or None)} for every site of a module; a Mutant is made on demand."""
    src = Source(text, module)
    per_line = {}
    for site in sites(src):
        per_line.setdefault(site.node.lineno, []).append(site)
    return src, per_line


def realize(module, src, line, k, site):
    text = src.mutated(site)
    if text is None:
        return None
    return Mutant(id=f"{module}:{line}:{k}", module=module, line=line,
                  span=(site.node.col_offset, site.node.end_col_offset), operator=site.operator,
                  original=src.lines[line - 1].decode().rstrip("\n"),
                  mutated=text.splitlines()[line - 1], source=text)


def sample(module, text, budget, seed):
    """Up to ``budget`` mutants spread over the module's lines: one from each of ``budget`` runs
    of consecutive mutable lines, drawn with a generator seeded by ``seed`` and the module."""
    src, per_line = module_mutants(module, text)
    lines = sorted(per_line)
    rng = random.Random(f"{seed}:{module}")
    chosen = []
    for run in _runs(lines, budget):
        run = list(run)
        rng.shuffle(run)
        mutant = None
        for line in run:
            # operators first, then their sites: a line full of calls still gets its comparison mutated
            operators = sorted({site.operator for site in per_line[line]})
            rng.shuffle(operators)
            order = []
            for operator in operators:
                mine = [(k, site) for k, site in enumerate(per_line[line]) if site.operator == operator]
                rng.shuffle(mine)
                order += mine
            for k, site in order:
                mutant = realize(module, src, line, k, site)
                if mutant:
                    break
            if mutant:
                break
        if mutant:
            chosen.append(mutant)
    return chosen


def _runs(items, n):
    """``items`` cut into ``n`` runs of consecutive items whose lengths differ by at most one."""
    n = min(n, len(items))
    size, extra = divmod(len(items), n) if n else (0, 0)
    runs, start = [], 0
    for i in range(n):
        stop = start + size + (i < extra)
        runs.append(items[start:stop])
        start = stop
    return runs


def by_id(mutant_id, root=ROOT):
    module, line, k = mutant_id.rsplit(":", 2)
    src, per_line = module_mutants(module, (root / module).read_text())
    candidates = per_line.get(int(line), [])
    if not 0 <= int(k) < len(candidates):
        raise SystemExit(f"{mutant_id}: line {line} of {module} has {len(candidates)} possible mutations")
    mutant = realize(module, src, int(line), int(k), candidates[int(k)])
    if mutant is None:
        raise SystemExit(f"{mutant_id} does not compile to the intended tree: nothing to run")
    return mutant


# Bugs that once survived every test (issue 15's five, issue 23's four), each one line's edit: old -> new, in
# the one line of the module that holds old. ``--regressions`` plants them like sampled mutants;
# the suite must keep catching every one. An entry whose text has moved stops the run.
REGRESSIONS = [
    ("minway/kernels/flash_attention.py", "return (first_pos + 1) // BLOCK_N", "return (first_pos + 2) // BLOCK_N",
     "one key block too many skips the causal mask"),
    ("minway/kernels/projection.py", "if len(unsure):", "if False:",
     "the torch projection's tie repair never runs"),
    ("minway/loop.py", "return lr * (1 - step / steps)", "return lr", "a constant learning rate, no linear decay"),
    ("minway/tasks.py", 'Task("sst5", " It was {} .", ("terrible", "bad", "okay", "good", "great"), 112, 8)',
     'Task("sst5", " It was {} .", ("terrible", "bad", "okay", "good", "great"), 240, 8)',
     "sst5's input limit of 128 tokens made 256"),
    ("minway/evaluation.py", "prompt_f1(text, target_text, lemmatize=False)",
     "prompt_f1(text, target_text, lemmatize=True)", "f1_no_lemma computed with lemmas"),
    ("minway/experiments/runner.py", 'with DirectoryLock(plain_directory(sweep_dir, "the sweep directory")):',
     'with DirectoryLock(plain_directory(sweep_dir, "the sweep directory")).__enter__().__exit__() or open(os.devnull):',
     "the sweep's lock taken and released before the sweep runs"),
    ("minway/experiments/runner.py", 'state.entry[run.run_id]["status"] != "done"',
     'state.entry[run.run_id]["status"] == "pending"', "a sweep started again never retries its failed runs"),
    ("train.py", 'finished = results is not None and (not args.compare or "compare" in results)',
     "finished = results is not None", "--compare on a finished run shows it instead of training the twin"),
    ("minway/evaluation.py", 'hard = c_proj(model, main["ids"])', "hard = c_proj(model, target_ids)",
     "hard-prompt accuracy measured on the target's tokens, not the projection's"),
]


# Mutants that survived a campaign and, read by hand, change no behaviour: (module, the line as it
# is, the line as mutated, both stripped; why). A sampled mutant that matches one and survives is
# counted apart, as equivalent, not as a gap in the tests; one that is killed is counted as caught
# and named in the summary, for its entry is wrong. tests/test_mutants.py checks that each entry
# is still a mutant of today's code.
_WHOLE_BLOCKS = "the causal mask applied to blocks the queries see whole: it is all true there"
_BATCH_DEFAULT = "the evaluation batch size changes memory and speed, not results (beyond rounding)"
EQUIVALENT = [
    ("minway/loop.py", "optimizer = torch.optim.AdamW([prompt], lr=lr, betas=ADAM_BETAS, weight_decay=weight_decay)",
     "optimizer = torch.optim.AdamW([prompt], lr=lr, weight_decay=weight_decay)",
     "ADAM_BETAS, the released code's, are torch's default (0.9, 0.999)"),
    ("minway/loop.py", "optimizer.zero_grad(set_to_none=True)", "optimizer.zero_grad()",
     "set_to_none=True is zero_grad's default since torch 2.0"),
    ("minway/run/training.py", "optimizer.zero_grad(set_to_none=True)", "optimizer.zero_grad()",
     "set_to_none=True is zero_grad's default since torch 2.0"),
    ("minway/model.py", "C = x.shape[-1]", "C = x.shape[1]", "x is (N, d): axis 1 is the last"),
    ("minway/dropout.py", "keep = torch.cat([self._keep((sum(lengths), x.shape[-1]), generator)",
     "keep = torch.cat([self._keep((sum(lengths), x.shape[1]), generator)", "x is (N, d): axis 1 is the last"),
    ("minway/dropout.py", "return (torch.rand(shape, generator=generator, device=generator.device) >= self.p).float()",
     "return (torch.rand(shape, generator=generator, device=generator.device) > self.p).float()",
     "torch.rand draws multiples of 2^-24, never p = 0.1 (for another p, once in 2^24 draws)"),
    ("minway/classify.py", "logp = logits.float().log_softmax(-1)  # (B + sum of the option rows' lengths, V)",
     "logp = logits.float().log_softmax(1)  # (B + sum of the option rows' lengths, V)",
     "the logits are (N, V): axis 1 is the last"),
    ("minway/batch.py",
     "embedded = model.embed(torch.tensor([t for row in rows for t in row], dtype=torch.long, device=device))",
     "embedded = model.embed(torch.tensor([t for row in rows for t in row], device=device))",
     "torch makes int64 of Python ints; the rows are never all empty (a text has a token)"),
    ("minway/batch.py", "targets = torch.tensor([t for o in outputs for t in o], dtype=torch.long, device=logits.device)",
     "targets = torch.tensor([t for o in outputs for t in o], device=logits.device)",
     "torch makes int64 of Python ints; every output has a token"),
    ("minway/packing.py", "return torch.tensor([0, *accumulate(counts)], dtype=torch.long, device=device)",
     "return torch.tensor([0, *accumulate(counts)], device=device)",
     "torch makes int64 of Python ints, and the list holds at least the 0"),
    ("minway/metrics.py", "return sum(p == y for p, y in zip(predictions, labels)) / len(labels)",
     "return sum(p == y for p, y in zip(labels, predictions)) / len(labels)", "== is symmetric"),
    ("minway/tasks.py", "return Options(list(options[0][:n]), [list(o[n:]) + [eot_id] for o in options])",
     "return Options(list(options[1][:n]), [list(o[n:]) + [eot_id] for o in options])",
     "n is the length of the part all options share: any option's first n tokens are it"),
    ("minway/kernels/projection.py", "E = embeddings if embeddings.stride(1) == 1 else embeddings.contiguous()",
     "E = embeddings if embeddings.stride() == 1 else embeddings.contiguous()",
     "a tuple is never 1: every matrix is copied by .contiguous(), which changes no value"),
    ("minway/kernels/projection.py", "CHUNK_ELEMENTS = 1 << 22", "CHUNK_ELEMENTS = 0 << 22",
     "the chunks are then of the fewest rows allowed: the same result, more slowly"),
    ("minway/kernels/flash_attention.py", "qk_scale, D, BLOCK_N, False, MASKED, PRECISION)",
     "qk_scale, D, BLOCK_N, True, MASKED, PRECISION)", _WHOLE_BLOCKS),
    ("minway/kernels/flash_attention.py", "D, BLOCK_N, False, MASKED, PRECISION)", "D, BLOCK_N, True, MASKED, PRECISION)",
     _WHOLE_BLOCKS),
    ("minway/kernels/flash_attention.py", "TQ, TK, H, stride_qt, stride_dot, qk_scale, D, BLOCK_M, False, PRECISION)",
     "TQ, TK, H, stride_qt, stride_dot, qk_scale, D, BLOCK_M, True, PRECISION)", _WHOLE_BLOCKS),
    ("minway/kernels/projection_triton.py", "drop = tl.max(tl.where(best_s == worst[None, :], best_i, -1), axis=0)",
     "drop = tl.max(tl.where(best_s == worst[None, :], best_i, -0), axis=0)",
     "kept indices are >= 0 and one always equals the worst score: the fill is never the max"),
    ("minway/kernels/projection_triton.py", "drop = tl.max(tl.where(best_s == worst[None, :], best_i, -1), axis=0)",
     "drop = tl.max(tl.where(best_s == worst[None, :], best_i, -2), axis=0)",
     "kept indices are >= 0 and one always equals the worst score: the fill is never the max"),
    ("minway/classify.py", "longer = [c for c, option in enumerate(options) if len(option) > 1]",
     "longer = [c for c, option in enumerate(options) if len(option) >= 1]",
     "a one-token option then gets a row of no token, which adds no logit and no loss"),
    ("minway/run/data.py", 'with opener(path, "rt", newline="", encoding="utf-8") as f:',
     'with opener(path, "rt", encoding="utf-8") as f:',
     "each line is read alone by readline, which ends it at \\r, \\n or \\r\\n in either mode; csv strips the end"),
    ("minway/run/tokenizer.py",
     'printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]',
     'printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 2)]',
     "256 is no byte: chr(256) is then given to byte 0, as it is without it"),
    ("minway/kernels/projection.py", "chunk = max(kp, CHUNK_ELEMENTS // width)", "chunk = min(kp, CHUNK_ELEMENTS // width)",
     "the chunks are then of the fewest rows allowed: the same result, more slowly"),
    ("minway/kernels/attention.py", "weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)",
     "weights = torch.softmax(scores, dim=-1).nan_to_num()", "nan_to_num's nan is 0.0 by default"),
    ("minway/kernels/projection_triton.py",
     '_BLOCKS = {"bf16": {16: (128, 32, 4), 32: (128, 32, 4), 64: (64, 32, 4), 128: (64, 16, 4)},',
     '_BLOCKS = {"bf16": {16: (128, 32, 4), 32: (128, 32, 4), 64: (64, 32, 4), 128: (64, 16, 5)},',
     "a fifth pipeline stage changes speed on a GPU, not results; it fits the shared memory (64 x 16 tiles)"),
    ("minway/kernels/flash_attention.py", "if start_m >= TQ:", "if start_m > TQ:",
     "a query block that starts at TQ holds no query: it runs, and every store of it is masked"),
    ("minway/kernels/flash_attention.py", "dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)",
     "dq = torch.empty(q.shape, device=q.device)",
     "autograd casts a gradient to its input's dtype: an fp32 buffer more, rounded to the same values on a GPU"),
    *(("minway/classify.py", 'def predict(model, prompt, inputs, options, batch_size=32, progress=False, desc="eval"):',
       f'def predict(model, prompt, inputs, options, batch_size={n}, progress=False, desc="eval"):', _BATCH_DEFAULT)
      for n in (31, 33)),
    *(("minway/evaluation.py", "batch_size=32, progress=False, hard_prompt=True):",
       f"batch_size={n}, progress=False, hard_prompt=True):", _BATCH_DEFAULT) for n in (31, 33)),
    ("minway/reachability.py",
     "own = nearest_tokens(embeddings[tokens].float(), embeddings, k=1, metric=metric).indices[:, 0]",
     "own = nearest_tokens(embeddings[tokens].float(), embeddings, k=2, metric=metric).indices[:, 0]",
     "the nearest token comes first whatever k"),
    ("minway/run/adapters.py",
     'return named.group(1) if named and "gpt2" not in base.lower().replace("-", "") else None',
     'return named.group() if named and "gpt2" not in base.lower().replace("-", "") else None',
     "the pattern's one group is the whole match (the look-behind takes no character)"),
]
_EQUIVALENT_KEYS = {(module, before, after) for module, before, after, _ in EQUIVALENT}


def is_equivalent(mutant):
    return (mutant.module, mutant.original.strip(), mutant.mutated.strip()) in _EQUIVALENT_KEYS


def regression(module, old, new, what, root=ROOT):
    """The Mutant that replaces ``old`` with ``new`` in the one line of ``module`` holding it."""
    text = (root / module).read_text()
    lines = text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if old in line]
    if len(found) != 1:
        raise SystemExit(f"regression '{what}': {old!r} is on {len(found)} lines of {module}, not one: "
                         "bring scripts/mutants.py's REGRESSIONS up to date with the code")
    i = found[0]
    start = lines[i].index(old)
    mutated = lines[i].replace(old, new)
    source = "".join(lines[:i] + [mutated] + lines[i + 1:])
    compile(source, module, "exec")
    return Mutant(id=f"{module}:{i + 1}:regression", module=module, line=i + 1,
                  span=(len(lines[i][:start].encode()), len(lines[i][:start + len(old)].encode())),
                  operator=f"regression: {what}", original=lines[i].rstrip("\n"), mutated=mutated.rstrip("\n"),
                  source=source)


# ---------------------------------------------------------------------------------------------
# Running the tests in private copies of the checkout


def checkout_files(root=ROOT):
    """The files git knows (tracked, and untracked ones it does not ignore), as they are now."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             check=True, capture_output=True).stdout.decode()
    return [name for name in listing.split("\0") if name and (root / name).is_file()]


def make_copy(files, root=ROOT):
    """A private copy of the checkout in a temporary directory."""
    base = Path(tempfile.mkdtemp(prefix="minway-mutants-"))
    copy_root = base / root.name
    for name in files:
        (copy_root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, copy_root / name)
    return copy_root


def test_env(jobs):
    env = dict(os.environ)
    # no .pyc: a mutant of the same size written within the same second would otherwise
    # run the cached bytecode of the one before
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_pytest(copy_root, files, timeout, env, extra=()):
    """(status, seconds, first failure or tail of the output)."""
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, *PYTEST, *extra, *files], cwd=copy_root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # pytest and any script it started
        process.communicate()
        return "timeout", time.monotonic() - started, f"no result after {timeout:.0f} s"
    seconds = time.monotonic() - started
    if process.returncode == 0:
        return "survived", seconds, output.strip().splitlines()[-1]  # "N passed, M skipped in ..."
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    detail = failures[0] if failures else "\n".join(output.strip().splitlines()[-5:])
    # 4 and 5 (a usage error, no test collected) say the command is wrong, not the code; the
    # others are failures: 1 tests failed, 2 collection broke (an import), < 0 the process crashed
    return ("error" if process.returncode in (4, 5) else "killed"), seconds, detail


def baseline(copy_root, modules, env):
    """Run every test file of ``modules`` once on the unmutated code; seconds per file."""
    files = list(dict.fromkeys(f for m in modules for f in TESTS[m]))
    report = copy_root / "baseline.xml"
    status, seconds, detail = run_pytest(copy_root, files, None, env, [f"--junitxml={report}"])
    if status != "survived":
        raise SystemExit(f"the unmutated code fails its tests ({detail}): fix that first")
    per_file = dict.fromkeys(files, 0.0)
    for case in ET.parse(report).getroot().iter("testcase"):
        per_file["/".join(case.get("classname").split(".")[:2]) + ".py"] += float(case.get("time", 0))
    report.unlink()
    return per_file, seconds, detail


def check_copy_is_imported(copy_root, env):
    """The tests must import the copy's modules, not an installed minway (an editable install
    points at another checkout)."""
    where = subprocess.run([sys.executable, "-c", "import minway, minway.kernels, weights; "
                            "print(minway.__file__, minway.kernels.__file__, weights.__file__)"],
                           cwd=copy_root, env=env, capture_output=True, text=True, check=True).stdout.split()
    if not all(Path(w).resolve().is_relative_to(copy_root.resolve()) for w in where):
        raise SystemExit(f"the tests would import {where}, not the copy in {copy_root}")


def run_campaign(mutants, modules, jobs, timeout_factor, out, meta):
    from tqdm import tqdm

    files = checkout_files()
    copies = [make_copy(files) for _ in range(jobs)]
    env = test_env(jobs)
    try:
        check_copy_is_imported(copies[0], env)
        print(f"baseline: the unmutated code on the tests of {len(modules)} module(s)...", file=sys.stderr)
        per_file, seconds, outcome = baseline(copies[0], modules, env)
        meta.update(baseline_seconds=round(seconds, 1), baseline=outcome)
        print(f"baseline: {outcome}", file=sys.stderr)
        timeouts = {m: 60 + timeout_factor * sum(per_file[f] for f in TESTS[m]) for m in modules}
        free = queue.Queue()
        for c in copies:
            free.put(c)

        def run_one(mutant):
            copy_root = free.get()
            path = copy_root / mutant.module
            original = path.read_bytes()
            try:
                path.write_text(mutant.source)
                mutant.status, mutant.seconds, mutant.failed = run_pytest(
                    copy_root, TESTS[mutant.module], timeouts[mutant.module], env)
                mutant.seconds = round(mutant.seconds, 1)
                if mutant.status == "survived":
                    mutant.failed = ""
                    if is_equivalent(mutant):
                        mutant.status = "equivalent"
            finally:
                path.write_bytes(original)
                free.put(copy_root)
            return mutant

        started = time.monotonic()
        counts = dict.fromkeys(STATUSES, 0)
        with ThreadPoolExecutor(jobs) as pool, tqdm(total=len(mutants), desc="mutants", dynamic_ncols=True) as bar:
            for done in as_completed([pool.submit(run_one, m) for m in mutants]):
                mutant = done.result()
                counts[mutant.status] += 1
                bar.set_postfix(counts)
                bar.update()
                if mutant.status == "survived":
                    bar.write("survived: " + mutant.diff().replace("\n", "\n    "))
                meta["wall_seconds"] = round(time.monotonic() - started, 1)
                write_results(out, mutants, meta)
    finally:
        for c in copies:
            shutil.rmtree(c.parent, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Reporting


STATUSES = ("killed", "timeout", "survived", "equivalent", "error")


def rate(mutants, equivalents_count=False):
    """(caught, counted): the killed and timed-out mutants among all but the errors and, unless
    ``equivalents_count``, the known equivalents."""
    kinds = ("killed", "timeout", "survived") + (("equivalent",) if equivalents_count else ())
    counted = [m for m in mutants if m.status in kinds]
    caught = sum(m.status in ("killed", "timeout") for m in counted)
    return caught, len(counted)


def summary(mutants, meta):
    done = [m for m in mutants if m.status != "pending"]
    caught, counted = rate(done)
    status = {s: sum(m.status == s for m in done) for s in STATUSES}
    lines = [f"# Mutation testing: {meta['date']}, commit {meta['commit']}", "",
             f"{len(done)} mutants ({_chosen(meta)}): "
             f"{status['killed']} killed, {status['timeout']} timed out, {status['survived']} survived, "
             f"{status['equivalent']} equivalent, {status['error']} errors; kill rate {_percent(caught, counted)} "
             f"(killed and timed out / all but equivalents and errors), {_percent(*rate(done, True))} with the "
             f"equivalents counted as survivors; {meta.get('wall_seconds', 0) / 60:.1f} min with "
             f"{meta['jobs']} job(s), baseline {meta.get('baseline_seconds', 0) / 60:.1f} min more.", "",
             "| module | mutants | caught | survived | equivalent | kill rate |", "|---|---|---|---|---|---|"]
    for module in dict.fromkeys(m.module for m in done):
        mine = [m for m in done if m.module == module]
        caught, counted = rate(mine)
        equivalent = sum(m.status == "equivalent" for m in mine)
        lines.append(f"| {module} | {len(mine)} | {caught} | {counted - caught} | {equivalent} | "
                     f"{_percent(caught, counted)} |")
    wrongly_listed = [m for m in done if m.status in ("killed", "timeout") and is_equivalent(m)]
    for title, chosen in (("Survivors", [m for m in done if m.status == "survived"]),
                          ("Equivalent (listed in EQUIVALENT, survived)", [m for m in done if m.status == "equivalent"]),
                          ("Listed as equivalent but caught: remove them from EQUIVALENT", wrongly_listed),
                          ("Timeouts", [m for m in done if m.status == "timeout"]),
                          ("Errors", [m for m in done if m.status == "error"])):
        if chosen:
            lines += ["", f"## {title}", "", "```"]
            lines += [m.diff() + (f"\n  ({m.failed})" if m.failed else "") + "\n" for m in chosen]
            lines.append("```")
    return "\n".join(lines) + "\n"


def _chosen(meta):
    if meta["seed"] is not None:
        return f"seed {meta['seed']}, budget {meta['budget']} per module"
    return "the bugs that once survived (--regressions)" if meta.get("chosen") == "the regressions" else "chosen by --id"


def _percent(part, whole):
    return f"{100 * part / whole:.1f}% ({part}/{whole})" if whole else "n/a"


def write_results(out, mutants, meta):
    out.mkdir(parents=True, exist_ok=True)
    rows = [{k: v for k, v in asdict(m).items() if k != "source"} for m in mutants]
    (out / "results.json").write_text(json.dumps({**meta, "mutants": rows}, indent=1) + "\n")
    (out / "summary.md").write_text(summary(mutants, meta))


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(TESTS), metavar="PATH",
                        help="core modules to mutate (default: all of them)")
    parser.add_argument("--budget", type=int, default=6, help="mutants per module (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--list", action="store_true", help="list the mutants and run nothing")
    parser.add_argument("--id", nargs="+", metavar="ID", help="run these mutants (ids from a listing) only")
    parser.add_argument("--regressions", action="store_true",
                        help="run the bugs that once survived every test (REGRESSIONS) instead of a sample")
    parser.add_argument("--jobs", type=int, default=2,
                        help="mutants run at once, each in its own copy with one torch thread (default 2)")
    parser.add_argument("--timeout-factor", type=float, default=3.0,
                        help="a mutant's tests may take this many times their baseline time, plus 60 s")
    parser.add_argument("--out", type=Path, default=ROOT / "mutants", help="results directory (default mutants/)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modules if m not in TESTS]
    if unknown:
        parser.error(f"not a core module: {', '.join(unknown)}; choose from {', '.join(TESTS)}")

    if args.id and args.regressions:
        parser.error("--id and --regressions each choose the mutants: give one of them")
    if args.regressions:
        mutants = [regression(*entry) for entry in REGRESSIONS]
    elif args.id:
        mutants = [by_id(i) for i in args.id]
    else:
        mutants = [m for module in args.modules for m in sample(module, (ROOT / module).read_text(), args.budget,
                                                                 args.seed)]
    if args.list:
        for m in mutants:
            print(m.diff().replace("\n", "\n    "))
        print(f"{len(mutants)} mutants", file=sys.stderr)
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": commit + ("+changes" if dirty else ""),
            "seed": None if args.id or args.regressions else args.seed,
            "budget": None if args.id or args.regressions else args.budget, "jobs": args.jobs,
            "chosen": "the regressions" if args.regressions else "--id" if args.id else "a sample"}
    run_campaign(mutants, list(dict.fromkeys(m.module for m in mutants)), args.jobs, args.timeout_factor,
                 args.out, meta)
    print(summary(mutants, meta))


if __name__ == "__main__":
    main()
