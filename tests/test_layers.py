"""Import layers: no module imports from a layer above its own, and no import circles.

Layers, lowest first: core < metrics < results < datasets (the shared modules directly in
datasets/) < scorers < engine < tasks < datasets/<benchmark>/ (every sub-package of datasets)
< run < synth < cli (with densecap_eval/__main__ and densecap_eval/__init__, which only lazily
re-exports) < dashboard (the top-level dashboard/ folder, shipped as densecap_eval.dashboard).
A module may import from its own layer or a lower one.

The imports are read statically (ast), at module level and inside functions alike: a deferred
import is still a dependency. Imports under ``if TYPE_CHECKING:`` must point downward too: they
never run, so they cannot make a circle at import time, but a lower layer that names a higher
layer's types depends on it all the same (the contract belongs in the lower layer, as the
protocols of metrics.length do). They are left out of the circle search only, since a circle
through an annotation is no import-time circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "densecap_eval"
# The package's folders that are mapped from elsewhere (symlinked in some checkouts): read
# dashboard/ from the top level, and data/ holds no code.
MAPPED = {"dashboard": ROOT / "dashboard", "bundled": None}

LAYERS: tuple[str, ...] = (
    "core",
    "metrics",
    "results",
    "datasets",
    "scorers",
    "engine",
    "tasks",
    "benchmark",
    "run",
    "synth",
    "cli",
    "dashboard",
)

# Current offenders outside the import-layer work, as (importer, imported) for an upward edge
# or the sorted members of a circle. Being removed in the parallel work; the integrator empties
# this set. The test fails on any violation not listed here (and on a listed one that is gone,
# so the set only shrinks).
KNOWN_VIOLATIONS: set[tuple[str, ...]] = set()


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    type_checking: bool


def package_files() -> dict[str, Path]:
    """Module name -> file, for densecap_eval/ and the top-level dashboard/."""
    out: dict[str, Path] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        rel = path.relative_to(ROOT / PACKAGE)
        if rel.parts[0] in MAPPED:
            continue
        out[_module_name(PACKAGE, rel)] = path
    for path in sorted(ROOT.joinpath("dashboard").rglob("*.py")):
        out[_module_name(f"{PACKAGE}.dashboard", path.relative_to(ROOT / "dashboard"))] = path
    return out


def _module_name(prefix: str, rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts])


def layer_of(module: str) -> str:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top in ("__init__", "__main__"):
        return "cli"
    if top == "datasets" and len(parts) > 2:
        is_benchmark = (ROOT / PACKAGE / "datasets" / parts[2]).is_dir()
        return "benchmark" if is_benchmark else "datasets"
    if top not in LAYERS:
        raise AssertionError(f"{module}: densecap_eval/{top} has no layer; add it to LAYERS")
    return top


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules an import statement names (``from a import b``: ``a.b`` if a module, else a)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    if base == "dashboard" or base.startswith("dashboard."):
        base = f"{PACKAGE}.{base}"
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_edges() -> list[Edge]:
    files = package_files()
    edges: set[Edge] = set()
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        checking = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = _targets(node, module, path.name == "__init__.py")
            named = [t for t in targets if t in files]
            # ``from pkg import sub``: an edge to the submodule, and to pkg itself only when
            # some other name is read from pkg's __init__
            if isinstance(node, ast.ImportFrom) and len(named) == len(targets) > 1:
                named = named[1:]
            for target in named:
                if target != module:
                    edges.add(Edge(module, target, node.lineno, id(node) in checking))
    return sorted(edges, key=lambda e: (e.importer, e.imported, e.line))


def upward_edges(edges: list[Edge]) -> list[Edge]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    return [e for e in edges if rank[layer_of(e.imported)] > rank[layer_of(e.importer)]]


def circles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.importer, set()).add(e.imported)
        graph.setdefault(e.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(root: str) -> None:
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for start in sorted(graph):
        if start not in index:
            visit(start)
    return sorted(found)


def violations() -> dict[tuple[str, ...], str]:
    """Each violation's key (as in KNOWN_VIOLATIONS) -> a line naming it."""
    edges = import_edges()
    out: dict[tuple[str, ...], str] = {}
    for e in upward_edges(edges):
        how = " (under TYPE_CHECKING)" if e.type_checking else ""
        out[(e.importer, e.imported)] = (
            f"upward import{how}: {e.importer} ({layer_of(e.importer)}) line {e.line} imports "
            f"{e.imported} ({layer_of(e.imported)})"
        )
    runtime = [e for e in edges if not e.type_checking]
    for component in circles(runtime):
        inside = [
            f"{e.importer} -> {e.imported} (line {e.line})"
            for e in runtime
            if e.importer in component and e.imported in component
        ]
        out[tuple(component)] = "import circle: " + "; ".join(inside)
    return out


def test_no_upward_imports_and_no_circles() -> None:
    found = violations()
    new = [line for key, line in sorted(found.items()) if key not in KNOWN_VIOLATIONS]
    assert not new, "\n".join(new)
    gone = sorted(KNOWN_VIOLATIONS - set(found))
    assert not gone, f"fixed, so remove from KNOWN_VIOLATIONS: {gone}"


def test_every_module_has_a_layer() -> None:
    for module in package_files():
        assert layer_of(module) in LAYERS


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("densecap_eval", "cli"),
        ("densecap_eval.__main__", "cli"),
        ("densecap_eval.core.registry", "core"),
        ("densecap_eval.datasets", "datasets"),
        ("densecap_eval.datasets.records", "datasets"),
        ("densecap_eval.datasets.dci", "benchmark"),
        ("densecap_eval.datasets.dci.loader", "benchmark"),
        ("densecap_eval.dashboard.app", "dashboard"),
    ],
)
def test_layer_of(module: str, layer: str) -> None:
    assert layer_of(module) == layer


def test_the_checks_catch_what_they_should() -> None:
    def edge(a: str, b: str, checking: bool = False) -> Edge:
        return Edge(a, b, 1, checking)

    up = edge("densecap_eval.metrics.length", "densecap_eval.scorers.base", checking=True)
    down = edge("densecap_eval.engine.engine", "densecap_eval.scorers.base")
    assert upward_edges([up, down]) == [up]
    loop = [edge("a.x", "a.y"), edge("a.y", "a.z"), edge("a.z", "a.x"), edge("a.z", "a.w")]
    assert circles(loop) == [["a.x", "a.y", "a.z"]]
    assert circles(loop[1:]) == []
