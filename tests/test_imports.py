"""One way through the house: the project's modules import one another without a circle, so
that a reader can follow the imports downwards from the command lines to the kernels."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("minway", "weights")  # minway.kernels is under minway


def module_name(path):
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph():
    """{module: the project's modules it imports, at the top or inside a function}."""
    paths = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in paths else node.module
                             for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        graph[name] = {m for m in imported if m in paths and m != name}
    return graph


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


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert {"minway.sweep", "minway.report", "minway.figures", "minway.model", "minway.kernels.attention"} <= set(graph)
    assert find_circle(graph) is None, " -> ".join(find_circle(graph))


def test_the_circle_finder_finds_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_reports_read_a_sweep_without_the_code_that_trains():
    graph = import_graph()
    for reader in ("minway.report", "minway.figures"):
        assert "minway.sweep" not in graph[reader] and "minway.training" not in graph[reader], reader
