"""The package's shape: layers, an import graph without cycles, names that say where a module
belongs, and modules and functions short enough to read.

The graph is read from the source with :mod:`ast` (nothing is imported), one edge per
``import mnistkit.X`` / ``from mnistkit.X import Y`` between the package's own modules, imports
inside functions included: a deferred import is still a dependency. Only ``if TYPE_CHECKING:``
blocks are left out (they import nothing at run time).
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "mnistkit"
MAX_LINES = 500
#: Modules allowed over the limit, with their size when allowed: each may only shrink. Empty: every
#: module is split by concern.
OVERSIZED: dict[str, int] = {}
#: The longest function (``def`` to its last line, docstring included; a click command's option
#: decorators are its parameter list and do not count) in src/.
MAX_FUNCTION_LINES = 60
#: Functions over the limit, with their size when allowed: each may only shrink. Their modules'
#: owners are splitting them (the command line, the server, training and tuning).
LONG_FUNCTIONS: dict[str, int] = {}

#: The package's layers, low to high: a module may import modules of its own layer or lower ones,
#: never a higher one. An entry names a module or a package (then every module under it); the
#: longest entry that matches a module places it. ``mnistkit`` itself (the version and the lazy
#: table of the public names) is the root and matches only itself.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "foundation: errors, files, settings, the unsure rule, what ships",
        ["mnistkit", "mnistkit.errors", "mnistkit.environ", "mnistkit.fileio", "mnistkit.precision"]
        + ["mnistkit.presets", "mnistkit.unsure", "mnistkit.bundled", "mnistkit.ctc", "mnistkit.tb"],
    ),
    (
        "tensors, images and networks",
        ["mnistkit.preprocess", "mnistkit.models", "mnistkit.losses", "mnistkit.calibration", "mnistkit.inference"]
        # the drawing of synthetic lines and non-digits, which the digit-lines dataset uses
        + ["mnistkit.reading.line", "mnistkit.reading.synth", "mnistkit.training.negatives"]
        + ["mnistkit.training.augment"],
    ),
    ("data and the config", ["mnistkit.data", "mnistkit.config"]),
    (
        "runs and checkpoints",
        ["mnistkit.runs", "mnistkit.checkpoint_meta", "mnistkit.novelty", "mnistkit.checkpoint", "mnistkit.card"]
        + ["mnistkit.evaluation", "mnistkit.export", "mnistkit.plots", "mnistkit.report"],
    ),
    ("prediction and reading", ["mnistkit.prediction", "mnistkit.number_reading", "mnistkit.reading"]),
    ("fitting", ["mnistkit.solvers", "mnistkit.estimators", "mnistkit.training", "mnistkit.tuning"]),
    ("serving", ["mnistkit.serving"]),
    ("the public face", ["mnistkit.api"]),
    ("the command line", ["mnistkit.cli", "mnistkit.__main__"]),
]
#: File names shared by modules that are one concept at two layers: ``cli/<command>.py`` is the
#: command line's face of the module it is named after (``cli/export.py`` over ``export.py``).
CLI_COMMAND_MODULES = {"export.py"}


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """``mnistkit.data.files`` -> its path, for every module of the package."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _statements(tree: ast.Module, top_level: bool):
    """Import statements: those run on import (not inside functions), or with ``top_level=False``
    also those inside functions; never those under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if _is_type_checking(node):
            stack.extend(reversed(getattr(node, "orelse", [])))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not (top_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))):
            stack.extend(reversed(list(ast.iter_child_nodes(node))))


def import_graph(top_level: bool, package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports. ``from mnistkit.data import files`` counts as
    ``mnistkit.data.files`` when that is a module, and always as ``mnistkit.data`` too: the name
    is read from the package, whose ``__init__`` runs first."""
    modules = module_files(package)

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
                targets.add(owner(node.module))
                targets |= {f"{node.module}.{a.name}" for a in node.names} & set(modules)
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
    assert {"mnistkit.data.roots", "mnistkit.data.download"} <= import_graph(top_level=False)["mnistkit.data.files"]
    assert "mnistkit.bundled" in import_graph(top_level=False)["mnistkit.checkpoint"]  # inside a function


def test_package_imports_without_cycles():
    """No cycle among the imports that run when a module is imported."""
    cycle = find_cycle(import_graph(top_level=True))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_package_has_no_cycle_even_through_deferred_imports():
    """Not even an import inside a function goes back up: a deferred import hides a cycle from
    the interpreter, not from the reader."""
    cycle = find_cycle(import_graph(top_level=False))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_solvers_sit_below_training_even_through_deferred_imports():
    """``mnistkit.solvers`` holds the numerics that ``mnistkit.training`` builds on (the trainers, the
    estimators' epochs): nothing it imports, directly or further down, not even inside a function,
    reaches back up into ``training``."""
    graph = import_graph(top_level=False)
    seen, todo = set(), [m for m in graph if m.startswith("mnistkit.solvers")]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    assert "mnistkit.solvers.lbfgs" in seen and "mnistkit.training.arrays" in graph  # the reader sees them
    assert not sorted(m for m in seen if m.startswith("mnistkit.training"))


def test_the_reader_sees_deferred_imports_but_not_type_checking_ones():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nimport mnistkit.a\nif TYPE_CHECKING:\n    import mnistkit.b\n"
        "def f():\n    import mnistkit.c\n"
    )
    names = lambda top: {a.name for n in _statements(tree, top) for a in n.names}  # noqa: E731
    assert names(True) == {"TYPE_CHECKING", "mnistkit.a"}
    assert names(False) == {"TYPE_CHECKING", "mnistkit.a", "mnistkit.c"}


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the longest entry naming ``module`` or a package above it."""
    best, found = -1, -1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            root_only = entry == "mnistkit"
            if (module == entry or (not root_only and module.startswith(entry + "."))) and len(entry) > best:
                best, found = len(entry), index
    assert found >= 0, f"{module} is in no layer: add it to LAYERS in tests/test_layout.py"
    return found


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for each import of a higher layer's module."""
    return [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in sorted(graph.items())
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]


def test_layers_place_the_longest_entry_and_refuse_an_import_upwards():
    assert layer_of("mnistkit") == 0 and layer_of("mnistkit.errors") == 0
    assert layer_of("mnistkit.reading.line") == 1 and layer_of("mnistkit.reading.model") == 4
    assert layer_of("mnistkit.cli.predict") == len(LAYERS) - 1
    assert layer_violations({"mnistkit.errors": {"mnistkit.cli"}, "mnistkit.cli": {"mnistkit.errors"}}) == [
        f"mnistkit.errors ({LAYERS[0][0]}) imports mnistkit.cli ({LAYERS[-1][0]})"
    ]


def test_every_module_imports_only_its_own_or_lower_layers():
    """The layers of :data:`LAYERS`, deferred imports included."""
    assert layer_violations(import_graph(top_level=False)) == []


def test_nothing_below_the_public_face_imports_it():
    graph = import_graph(top_level=False)
    assert [m for m, ts in graph.items() if "mnistkit.api" in ts and not m.startswith("mnistkit.cli")] == []


def test_no_two_modules_share_a_file_name():
    """A file name says where a module belongs: two modules share one only when they are one
    concept at two layers, which is the command line's ``cli/<command>.py`` over the module of the
    same name (:data:`CLI_COMMAND_MODULES`). Package ``__init__.py`` files are exempt."""
    names = Counter(p.name for p in module_files().values() if p.name != "__init__.py")
    shared = {n for n, count in names.items() if count > 1}
    assert shared - CLI_COMMAND_MODULES == set()
    for name in CLI_COMMAND_MODULES & shared:
        assert (PACKAGE / "cli" / name).is_file(), f"{name} is allowed twice only as a cli/ command module"


def long_functions(package: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (N lines)`` for each function or method longer than ``limit`` lines."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                name = f"{path.relative_to(package).as_posix()}::{node.name}"
                if lines > LONG_FUNCTIONS.get(name, limit):
                    found.append(f"{name} ({lines} lines)")
    return found


def test_no_function_in_the_package_is_longer_than_a_screen():
    """Each function reads on one screen; split a longer one into named steps."""
    assert long_functions() == []


def test_the_function_length_check_sees_a_long_function(tmp_path):
    (tmp_path / "m.py").write_text("def f():\n" + "    x = 1\n" * 60 + "\n\ndef g():\n    pass\n")
    assert long_functions(tmp_path) == ["m.py::f (61 lines)"]


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


def long_script_functions(root: Path, folders: tuple[str, ...], limit: int) -> list[str]:
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
    assert long_script_functions(tmp_path, ("bench",), SCRIPT_FUNCTION_LINES) == ["bench/long.py:5 main (81 lines)"]


def test_bench_and_script_functions_are_short_enough_to_read():
    """Every function in bench/ and scripts/ within :data:`SCRIPT_FUNCTION_LINES` lines: a long main is
    split into named steps."""
    assert long_script_functions(PACKAGE.parents[1], SCRIPT_FOLDERS, SCRIPT_FUNCTION_LINES) == []
