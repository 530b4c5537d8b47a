"""One way through the house. The project is in layers, and a module imports only from its own
layer or the ones below, without a circle, so that a reader can follow the imports downwards from
the command lines to the kernels:

    0  minway.errors, minway.resources       an exception, the files that ship
    1  minway.kernels                        the Triton kernels and their torch paths
    2  minway (its own modules)              the method: model, prompt, loss, objective, projection, F1
    3  minway.run, weights                   the run machinery: files, checks, checkpoints, set-up
    4  minway.experiments                    sweeps, their state, reports and figures
    5  train.py, eval.py, sweep.py           the command lines
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("minway", "weights")
SCRIPTS = ("train.py", "eval.py", "sweep.py")
LAYERS = ["the bottom (errors, resources)", "the kernels", "the method", "the run machinery", "the experiments",
          "the command lines"]


def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def layer(module):
    """The layer of a module of the project, by its dotted name (see the docstring)."""
    if module in SCRIPTS or module in (s.removesuffix(".py") for s in SCRIPTS):
        return 5
    parts = module.split(".")
    if parts[0] == "weights":
        return 3
    if parts[0] != "minway":
        raise ValueError(f"{module} is not a module of the project")
    if len(parts) == 1 or parts[1] in ("errors", "resources"):
        return 0
    return {"kernels": 1, "run": 3, "experiments": 4}.get(parts[1], 2)


def imports_of(path, known):
    """The project's modules ``path`` imports, at the top or inside a function."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                         for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    return {m for m in imported if m in known}


def import_graph():
    """{module: the project's modules it imports}, the command lines included."""
    paths = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    paths.update({script.removesuffix(".py"): ROOT / script for script in SCRIPTS})
    return {name: imports_of(path, paths) - {name} for name, path in paths.items()}


def upward_imports(graph):
    """(module, what it imports from a higher layer) for every import that points upwards."""
    return sorted((m, i) for m, imported in graph.items() for i in imported if layer(i) > layer(m))


def find_circle(graph):
    """A list of modules that import one another in a circle, or None."""
    done, on_path = set(), []

    def visit(module):
        if module in on_path:
            return on_path[on_path.index(module):] + [module]
        if module in done:
            return None
        on_path.append(module)
        for imported in sorted(graph[module]):
            circle = visit(imported)
            if circle:
                return circle
        on_path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        circle = visit(module)
        if circle:
            return circle
    return None


def test_every_layer_is_populated_as_the_layout_says():
    graph = import_graph()
    by_layer = {n: {m for m in graph if layer(m) == n} for n in range(len(LAYERS))}
    assert {"minway.errors", "minway.resources"} <= by_layer[0]
    assert {"minway.kernels.projection", "minway.kernels.flash_attention", "minway.kernels.gpu_compile"} <= by_layer[1]
    assert {"minway.model", "minway.objective", "minway.loop", "minway.metrics", "minway.prompt"} <= by_layer[2]
    assert {"minway.run.training", "minway.run.storage", "weights.checkpoint"} <= by_layer[3]
    assert {"minway.experiments.runner", "minway.experiments.report"} <= by_layer[4]
    assert {"train", "eval", "sweep"} == by_layer[5]


def test_no_import_points_upwards():
    upward = upward_imports(import_graph())
    assert not upward, "\n".join(f"{m} ({LAYERS[layer(m)]}) imports {i} ({LAYERS[layer(i)]})" for m, i in upward)


def test_the_method_and_the_kernels_import_neither_the_machinery_nor_the_experiments():
    graph = import_graph()
    for module, imported in graph.items():
        if layer(module) <= 2:
            assert not {i for i in imported if layer(i) >= 3}, module


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert find_circle(graph) is None, " -> ".join(find_circle(graph))


def test_reports_read_a_sweep_without_the_code_that_trains():
    graph = import_graph()
    for reader in ("minway.experiments.report", "minway.experiments.figures"):
        assert "minway.experiments.runner" not in graph[reader] and "minway.run.training" not in graph[reader], reader


# the checkers themselves, on graphs made up for them

def test_the_circle_finder_finds_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


@pytest.mark.parametrize("module, imported", [
    ("minway.model", "minway.run.files"), ("minway.kernels.gpu_compile", "minway.run.storage"),
    ("minway.kernels.projection", "minway.prompt"), ("minway.run.training", "minway.experiments.runner"),
    ("weights.checkpoint", "train"), ("minway.errors", "minway.model"), ("minway.resources", "minway.run.files"),
])
def test_an_upward_import_is_found(module, imported):
    assert upward_imports({module: {imported}, imported: set()}) == [(module, imported)]


@pytest.mark.parametrize("module, imported", [
    ("minway.model", "minway.kernels.attention"), ("minway.model", "minway.errors"), ("weights.checkpoint",
     "minway.run.files"), ("minway.run.model_and_data", "weights.checkpoint"), ("train", "minway.experiments.runner"),
    ("minway.experiments.runner", "minway.run.training"), ("minway.run.tokenizer", "minway.resources"),
])
def test_a_downward_or_level_import_is_allowed(module, imported):
    assert upward_imports({module: {imported}, imported: set()}) == []
