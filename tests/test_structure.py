"""The shape of the package: imports point one way (no cycles) and the metric math stays pure.

The import graph is read with :mod:`ast` from every module of ``src/imblab``: every ``import``
and ``from ... import`` anywhere in a file (inside functions and ``if TYPE_CHECKING:`` blocks
too) is an arrow from that module to the imblab module it names.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
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


# --- the map in docs/development.md -----------------------------------------------------------

DEVELOPMENT = Path(__file__).resolve().parents[1] / "docs" / "development.md"
SIBLINGS = ("data", "models", "callbacks", "reports")  # components that import none of the others
SCRAPE_MAX_LINES = 450


def section(title: str) -> str:
    """The text of the ``## title`` section of docs/development.md."""
    text = DEVELOPMENT.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def documented_modules() -> set[str]:
    """The modules the "Package layout" tables name (first column, a path under src/imblab)."""
    rows = re.findall(r"^\| `([\w/]+\.py)` \|", section("Package layout"), flags=re.M)
    return {module_name(PACKAGE_DIR / row) for row in rows}


def import_levels() -> list[list[str]]:
    """The "Import direction" block, top to bottom: each level's names (``pkg/`` for a package)."""
    block = section("Import direction").split("```")[1]
    levels: list[list[str]] = []
    for line in block.strip("\n").splitlines():
        label, _, names = line.strip().partition("   ")
        if not line.startswith(" "):  # a new level; an indented line continues the last one
            levels.append([])
            names = names if names else label
        else:
            names = line
        levels[-1] += [n.strip() for n in names.split(",") if n.strip()]
    return levels


def level_of(module: str, levels: list[list[str]]) -> int | None:
    """The index of the level whose names cover ``module`` (``imblab.x`` or a module of ``x/``)."""
    rest = module.removeprefix("imblab.")
    for index, names in enumerate(levels):
        for name in names:
            if name.endswith("/") and (rest + ".").startswith(name[:-1].replace("/", ".") + "."):
                return index
            if rest == name:
                return index
    return None


def test_the_map_names_every_module_and_only_existing_ones():
    known = set(modules())
    documented = documented_modules()
    assert not known - documented, f"modules missing from docs/development.md: {known - documented}"
    assert not documented - known, f"docs/development.md names no such module: {documented - known}"


def test_every_module_has_a_level_and_imports_point_down_the_map():
    levels = import_levels()
    assert len(levels) == 5, levels
    unplaced = [m for m in modules() if m != "imblab" and level_of(m, levels) is None]
    assert not unplaced, f"modules without a level in docs/development.md: {unplaced}"
    upward = []
    for source, targets in import_graph().items():
        if source == "imblab":
            continue
        here = level_of(source, levels)
        for target in targets:
            there = level_of(target, levels)
            assert here is not None and there is not None
            if there < here:
                upward.append(f"{source} -> {target}")
            top = (source.split(".")[1], target.split(".")[1])
            if top[0] != top[1] and top[0] in SIBLINGS and top[1] in SIBLINGS:
                upward.append(f"{source} -> {target} (sibling components)")
    assert not upward, "imports against docs/development.md's order: " + "; ".join(upward)


def test_level_finder_reads_packages_and_modules():
    levels = [["train", "scrape/"], ["pipelines/", "sweeps"], ["metrics/"]]
    assert level_of("imblab.scrape.guard", levels) == 0
    assert level_of("imblab.scrape", levels) == 0
    assert level_of("imblab.pipelines.training", levels) == 1
    assert level_of("imblab.sweeps", levels) == 1
    assert level_of("imblab.metrics", levels) == 2
    assert level_of("imblab.trainer", levels) is None


def test_no_lightning_callback_class_is_defined_in_the_pipelines():
    from lightning.pytorch import Callback

    offenders = []
    for name in modules():
        if not name.startswith("imblab.pipelines."):
            continue
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and value.__module__ == name and issubclass(value, Callback):
                offenders.append(f"{name}.{attr}")
    assert not offenders, f"Lightning callbacks belong in imblab.callbacks: {offenders}"


def test_no_scrape_module_is_over_450_lines():
    long = {
        name: n
        for name, path in modules().items()
        if name.startswith("imblab.scrape")
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > SCRAPE_MAX_LINES
    }
    assert not long, f"split these modules of imblab/scrape/: {long}"
