"""The package's shape: an import graph without cycles and modules short enough to read.

The graph is read from the source with :mod:`ast` (nothing is imported), one edge per
``import mnistkit.X`` / ``from mnistkit.X import Y`` between the package's own modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mnistkit"
MAX_LINES = 500
#: Modules allowed over the limit, with their size when allowed: each may only shrink. Empty: every
#: module is split by concern.
OVERSIZED: dict[str, int] = {}


def module_files() -> dict[str, Path]:
    """``mnistkit.data.files`` -> its path, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _statements(tree: ast.Module, top_level: bool):
    """Import statements: all of them, or only those run on import (not inside functions or
    ``if TYPE_CHECKING:``, which imports nothing at run time)."""
    if not top_level:
        yield from (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))
        return
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.Try):
            yield from (n for n in node.body if isinstance(n, (ast.Import, ast.ImportFrom)))


def import_graph(top_level: bool) -> dict[str, set[str]]:
    """module -> the package modules it imports (``from mnistkit.data import files`` counts as
    ``mnistkit.data.files`` when that is a module, else as ``mnistkit.data``)."""
    modules = module_files()

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for node in _statements(ast.parse(path.read_text(encoding="utf-8")), top_level):
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names if a.name.startswith("mnistkit")}
            elif node.module and node.module.startswith("mnistkit") and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else owner(node.module))
        graph[module] = targets - {module, ""}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_reports_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_real_edges():
    """A guard on the reader itself: known imports must show up as edges."""
    graph = import_graph(top_level=True)
    assert "mnistkit.errors" in graph["mnistkit.config"]
    assert {"mnistkit.data.roots", "mnistkit.data.spec"} <= import_graph(top_level=False)["mnistkit.data.files"]


def test_package_imports_without_cycles():
    """No cycle among the imports that run when a module is imported."""
    cycle = find_cycle(import_graph(top_level=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_data_package_has_no_cycle_even_through_deferred_imports():
    """``mnistkit.data`` is layered (spec, roots, files and emnist, registry, the package API):
    not even an import inside a function goes back up."""
    graph = {m: {t for t in ts if t.startswith("mnistkit.data")} for m, ts in import_graph(top_level=False).items()}
    cycle = find_cycle({m: ts for m, ts in graph.items() if m.startswith("mnistkit.data")})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("module", sorted(module_files()))
def test_module_is_short_enough_to_read(module):
    path = module_files()[module]
    name = path.relative_to(PACKAGE).as_posix()
    lines = len(path.read_text(encoding="utf-8").splitlines())
    limit = OVERSIZED.get(name, MAX_LINES)
    assert lines <= limit, f"{name} has {lines} lines; split it by concern (limit {limit})"


#: Bench and helper scripts read like the library: each function one named step, at most this many lines.
SCRIPT_FUNCTION_LINES = 80
SCRIPT_FOLDERS = ("bench", "scripts")


def long_functions(root: Path, folders: tuple[str, ...], limit: int) -> list[str]:
    """``path:line name (N lines)`` for every function (methods and nested ones included) in the
    ``.py`` files under ``root/folder`` whose definition spans more than ``limit`` lines."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > limit:
                        found.append(f"{path.relative_to(root).as_posix()}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_long_functions_finds_a_long_function_and_passes_short_ones(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(SCRIPT_FUNCTION_LINES))
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "long.py").write_text(f"def short():\n    pass\n\n\ndef main():\n{body}\n")
    assert long_functions(tmp_path, ("bench",), SCRIPT_FUNCTION_LINES) == ["bench/long.py:5 main (81 lines)"]


def test_bench_and_script_functions_are_short_enough_to_read():
    """Every function in bench/ and scripts/ within :data:`SCRIPT_FUNCTION_LINES` lines: a long main is
    split into named steps."""
    assert long_functions(PACKAGE.parents[1], SCRIPT_FOLDERS, SCRIPT_FUNCTION_LINES) == []
