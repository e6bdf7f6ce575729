"""The import graph of `cadre`: no module imports, directly or through others, a module
that imports it back (at module level or inside a function; ``if TYPE_CHECKING:`` blocks
do not count, they never run). A circle means two layers that cannot be read, tested or
loaded one without the other."""

from __future__ import annotations

import ast
from pathlib import Path

import cadre

ROOT = Path(cadre.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, modules: set[str]) -> set[str]:
    """The cadre modules `path` imports when it runs (module level and function bodies)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _type_checking(node):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "cadre")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                if target.split(".")[0] != "cadre":
                    continue
                for alias in node.names:  # `from . import telemetry` imports a module
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
            else:
                visit([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports(path, set(paths)) for name, path in paths.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_scanner_sees_relative_and_function_level_imports() -> None:
    graph = import_graph()
    assert "cadre.settings" in graph["cadre.cli"]  # `from .settings import Settings`
    assert "cadre.stores.postgres" in graph["cadre.cli"]  # inside a function
    assert "cadre.telemetry" in graph["cadre.context"]  # `from . import telemetry`
    assert "cadre.hosts._client" in graph["cadre.hosts.local"]  # `from ._client import`
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles_in_cadre() -> None:
    assert circles(import_graph()) == []


def test_no_module_imports_the_cli_and_the_registry_imports_no_agent() -> None:
    graph = import_graph()
    assert [m for m, deps in graph.items() if "cadre.cli" in deps] == []
    assert not graph["cadre.registry"] & {"cadre.inbox", "cadre.agent"}
