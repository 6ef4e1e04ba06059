"""No import cycles in the product packages, read from the source.

Every ``import``/``from ... import`` counts, at module level or inside a function (a function-level
import hides a cycle from the interpreter, not from a reader); in a module that calls
``import_module``, so does every string constant naming a product module (the name may sit in a
list of "extension" modules rather than in the call). Two graphs are checked: modules, and the subpackages they
belong to (``search_client.models`` -> ``search_client.search`` -> ``search_client.models`` is a
cycle even when no single module closes it). A failure names the cycle, edge by edge, with the
line that makes each edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "profiler_server", "android_harness", "search_client")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def product_modules() -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join(parts)] = Module(".".join(parts), path, is_package)
    return modules


def _known(name: str, modules: dict[str, Module]) -> str | None:
    """The longest prefix of ``name`` that is a product module (``a.b.func`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(tree: ast.AST, module: Module, modules: dict[str, Module]) -> Iterator[tuple[str, int]]:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                yield f"{origin}.{alias.name}", node.lineno
    calls_import_module = any(isinstance(node, ast.Call)
                              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
                              for node in ast.walk(tree))
    if calls_import_module:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
                yield node.value, node.lineno


def import_graph(modules: dict[str, Module], root: Path = ROOT) -> dict[str, dict[str, str]]:
    """module -> {imported product module: "path:line"}. Importing ``a.b.c`` also runs the
    ``__init__`` of ``a`` and ``a.b``; those count unless the importer lives inside them."""
    graph: dict[str, dict[str, str]] = {}
    for module in modules.values():
        edges: dict[str, str] = {}
        tree = ast.parse(module.path.read_text(), str(module.path))
        where = module.path.relative_to(root).as_posix()
        for name, line in _imported_names(tree, module, modules):
            target = _known(name, modules)
            while target:
                inside = module.name == target or module.name.startswith(target + ".")
                if not inside:
                    edges.setdefault(target, f"{where}:{line}")
                target = target.rpartition(".")[0]
                target = target if target in modules else ""
        graph[module.name] = edges
    return graph


def unit_of(name: str, modules: dict[str, Module]) -> str:
    """The subpackage a module belongs to (``search_client.search.derive`` -> ``search_client.search``);
    a module directly in a top-level package is its own unit."""
    parts = name.split(".")
    if len(parts) >= 2 and modules.get(".".join(parts[:2]), Module("", ROOT, False)).is_package:
        return ".".join(parts[:2])
    return name


def unit_graph(graph: dict[str, dict[str, str]], modules: dict[str, Module]) -> dict[str, dict[str, str]]:
    units: dict[str, dict[str, str]] = {}
    for source, edges in graph.items():
        mine = units.setdefault(unit_of(source, modules), {})
        for target, where in edges.items():
            if unit_of(target, modules) != unit_of(source, modules):
                mine.setdefault(unit_of(target, modules), f"{where} ({source} -> {target})")
    return units


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, set(c)) for c in components]


def _closed_path(graph: dict[str, dict[str, str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first node, found by breadth-first search."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(set(graph.get(node, {})) & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if nxt not in parents:
                    parents[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def describe(cycle: list[str], graph: dict[str, dict[str, str]]) -> str:
    return " -> ".join(cycle) + "\n" + "\n".join(
        f"    {a} -> {b}: {graph[a][b]}" for a, b in zip(cycle, cycle[1:], strict=False))


MODULES = product_modules()
GRAPH = import_graph(MODULES)


@pytest.mark.parametrize("level", ["modules", "subpackages"])
def test_no_import_cycles(level: str) -> None:
    graph = GRAPH if level == "modules" else unit_graph(GRAPH, MODULES)
    found = cycles(graph)
    assert not found, f"import cycles between {level}:\n" + "\n".join(describe(c, graph) for c in found)


def test_the_checker_sees_function_level_and_importlib_cycles(tmp_path: Path) -> None:
    """The checker itself: a cycle closed by a function-level import and one by importlib are found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from pkg import a\n")
    (package / "c.py").write_text("import importlib\nEXTRA = ('pkg.d',)\nfor name in EXTRA:\n"
                                  "    importlib.import_module(name)\n")
    (package / "d.py").write_text("from . import c\n")
    modules = {name: Module(name, package / f"{name.split('.')[-1]}.py", False)
               for name in ("pkg.a", "pkg.b", "pkg.c", "pkg.d")}
    modules["pkg"] = Module("pkg", package / "__init__.py", True)
    found = cycles(import_graph(modules, root=tmp_path))
    assert sorted(sorted(set(c)) for c in found) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
