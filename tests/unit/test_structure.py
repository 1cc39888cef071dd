"""The shape of the code: no import cycle among its modules, and no module too long to read.

The import graph is built with ``ast`` from the source files of ``kraken``, ``tasks`` and
``kraken_pay_cli``, without importing anything. Both module-level imports and imports
inside functions count: a function-level import only postpones a cycle to run time (the
command line and the demo once imported each other that way), so it still ties two modules
to each other. Imports under ``if TYPE_CHECKING:`` never run and do not count. A package's
``__init__`` is the node of its package's name; importing ``a.b.c`` is an edge to ``a.b.c``
alone, not to the parents Python initialises first (every submodule would otherwise form a
cycle with a package ``__init__`` that re-exports it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("kraken", "tasks", "kraken_pay_cli")
MAX_LINES = 420


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for branch in node.orelse for n in _imports_in(branch))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    elif not (isinstance(node, ast.If) and _is_type_checking(node)):
        yield from _imports(node)


def _base(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The module ``from ... import`` reads from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def graph() -> dict[str, set[str]]:
    """module -> the modules of the packages it imports."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _base(name, path, node)
                # ``from a import b`` names the module a.b when there is one, else a's name b.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            edges[name] |= {target for target in targets if target in known and target != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_imports_it_should():
    edges = graph()
    assert "kraken_pay_cli.app" in edges["kraken_pay_cli.cancel"]  # module level
    assert "tasks.runtime" in edges["kraken_pay_cli.cancel"]  # inside a function
    assert "kraken.pay.simulator.cli" in edges["kraken_pay_cli.simulator"]  # inside a function
    assert "tasks.cancel" in edges["tasks"]  # a package's __init__
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    found = cycles(graph())
    assert found == [], "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_integration_never_imports_the_tooling():
    edges = graph()
    reaching = {
        (name, target)
        for name, targets in edges.items()
        if not name.startswith("kraken_pay_cli")
        for target in targets
        if target.startswith("kraken_pay_cli")
    }
    assert reaching == set()


def test_no_module_is_too_long():
    long = {
        name: lines
        for name, path in modules().items()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"
