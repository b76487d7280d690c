"""No circle of imports among irevnet's modules, counting imports inside functions.

An import inside a function only hides a circle until that function runs; so every
``import``/``from ... import`` anywhere in a module is an edge here. Importing ``a.b.c``
also runs the ``__init__`` of the packages ``a.b`` that do not contain the importer.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package)}`` of every module under ``root/irevnet``."""
    found = {}
    for path in (root / "irevnet").rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _imported(node: ast.AST, importer: str, package: bool) -> list[str]:
    """The dotted names ``node`` may import (a module, or a name of it that may be a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from the importer's package, ``level - 1`` packages up
        base = importer.split(".") if package else importer.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [module] + [f"{module}.{alias.name}" for alias in node.names]


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    modules = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _imported(node, name, package):
                if target not in modules or target == name:
                    continue
                edges.add(target)
                parts = target.split(".")
                # The enclosing packages run first, unless the importer is inside them (then they already run).
                edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts)))
                             if not (name + ".").startswith(p + ".") and p in modules)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle ``[a, b, ..., a]`` in ``graph``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walk_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "irevnet.model" in graph["irevnet.io.load"]  # from ..model import ... (two dots)
    assert "irevnet.io.names" in graph["irevnet.cli.common"]  # and the package irevnet.io is imported too
    assert "irevnet.io" in graph["irevnet.cli.common"]
    assert "irevnet.analysis.suite" in graph["irevnet.cli.analyze"]  # imported inside run()


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_circle_of_imports():
    cycle = find_cycle(import_graph())
    assert cycle is None, "circle of imports: " + " -> ".join(cycle)
