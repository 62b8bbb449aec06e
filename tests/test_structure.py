"""The shape of the package: imports point one way (no cycles) and the metric math stays pure.

The import graph is read with :mod:`ast` from every module of ``src/imblab``: every ``import``
and ``from ... import`` anywhere in a file (inside functions and ``if TYPE_CHECKING:`` blocks
too) is an arrow from that module to the imblab module it names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import imblab

PACKAGE_DIR = Path(imblab.__file__).parent
FORBIDDEN_IN_METRICS = ("lightning", "hydra", "omegaconf")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_names(path: Path, name: str) -> list[str]:
    """Absolute dotted names of everything ``path`` imports (and ``module.attribute`` for each
    name of a ``from module import attribute``)."""
    is_package = path.name == "__init__.py"
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            out.append(source)
            out += [f"{source}.{alias.name}" for alias in node.names]
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the imblab modules it imports (a name that is a module, else its package)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for imported in imported_names(path, name):
            if not imported.startswith("imblab"):
                continue
            while imported and imported not in known:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_package_imports_resolve():
    # the graph must see relative imports and `from package import module`
    graph = import_graph()
    assert "imblab.metrics.counts" in graph["imblab.metrics"]
    assert all(target in modules() for targets in graph.values() for target in targets)


def test_import_graph_has_no_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles in src/imblab: " + "; ".join(" <-> ".join(c) for c in found)


def test_metrics_modules_import_no_lightning_or_hydra():
    offenders = []
    for name, path in modules().items():
        if name != "imblab.metrics" and not name.startswith("imblab.metrics."):
            continue
        for imported in imported_names(path, name):
            if imported.split(".")[0] in FORBIDDEN_IN_METRICS:
                offenders.append(f"{name} imports {imported}")
    assert not offenders, offenders


@pytest.mark.parametrize(
    "statement",
    [
        "import imblab.metrics",
        "from imblab.metrics import CountState, Counts, evaluate, summarize",
    ],
)
def test_importing_metrics_loads_no_lightning_or_hydra(statement):
    probe = (
        f"{statement}; import sys; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_METRICS!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out
