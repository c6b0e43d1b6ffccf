"""ferkit's layers import downward only (docs/ARCHITECTURE.md): a fast unit test, no data needed.

The import graph is read from the source (``ast``): every ``import`` / ``from ... import`` at any depth (also inside
functions and ``if TYPE_CHECKING:``), ``importlib.import_module("ferkit.x.y")`` with a literal name, and the lazy
name -> module table of ``ferkit/__init__.py`` (``_API``). Cycles of any length are found as strongly connected
components and reported as a chain ``a -> b -> c -> a`` with the line of each import.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "ferkit"
MAX_LINES = 550
SIZE_CHECKED = {"src/ferkit": PACKAGE, "benchmarks": REPO / "benchmarks"}  # every *.py below these folders

# Lowest first. A module may import its own layer's modules and any lower layer's, never a higher one.
LAYERS = [
    {"ferkit.runtime", "ferkit.errors", "ferkit.labels", "ferkit.imageio", "ferkit.metrics", "ferkit.plots"},
    {"ferkit.models"},
    {"ferkit.data"},
    {"ferkit.engine"},
    {"ferkit.infer", "ferkit.report"},
    {"ferkit.app"},
]
TOP = "ferkit"  # the package's own __init__: the lazy public API, above everything
LAZY_TABLE = "_API"  # TOP's public name -> module table, imported with importlib.import_module(module)


def _unit(module: str) -> str:
    """The layer unit of a ``ferkit.*`` module name: ``ferkit.engine.trainer`` -> ``ferkit.engine``."""
    parts = module.split(".")
    for n in (2, 1):
        name = ".".join(parts[:n])
        if any(name in layer for layer in LAYERS):
            return name
    return module


def _level(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit}: in no layer; add it to LAYERS in tests/test_layers.py and to docs/ARCHITECTURE.md")


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _all_modules(package: Path = PACKAGE) -> list[tuple[Path, str]]:
    return [(p, _module_name(p, package)) for p in sorted(package.rglob("*.py"))]


def _literal_import_module(node: ast.AST) -> str | None:
    """``"ferkit.x"`` of a call ``importlib.import_module("ferkit.x")`` / ``import_module("ferkit.x")``, else None."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    arg = node.args[0]
    if name == "import_module" and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    return None


def _imports(path: Path, module: str, known: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, int]]:
    """Every module of the package ``path`` imports, with its line: at any depth (also inside functions), through
    ``importlib.import_module`` with a literal name, and in the top package's lazy ``_API`` table. ``from pkg import
    name`` counts as ``pkg.name`` when that is one of the ``known`` modules, else as ``pkg``."""
    top = module.split(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == top]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.split(".")[0] != top:
                continue
            for a in node.names:
                sub = f"{name}.{a.name}"
                out.append((sub if sub in known or name == top else name, node.lineno))
        elif (target := _literal_import_module(node)) and target.split(".")[0] == top:
            out.append((target, node.lineno))
        elif module == top and isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and \
                any(isinstance(t, ast.Name) and t.id == LAZY_TABLE for t in node.targets):
            out += [(v.value, v.lineno) for v in node.value.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, str]]:
    """``{module: {imported module: "file:line"}}`` over the package's own modules (imports of other packages left out)."""
    modules = _all_modules(package)
    known = {m for _, m in modules}
    graph: dict[str, dict[str, str]] = {m: {} for m in known}
    for path, module in modules:
        for name, line in _imports(path, module, known):
            if name != module:
                graph[module].setdefault(name, f"{path.relative_to(package.parent)}:{line}")
    return graph


def strongly_connected(graph: dict[str, dict[str, str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (or of a node importing itself), by Tarjan's
    algorithm: each is a group of modules that all reach each other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # iterative Tarjan: a deep graph does not hit the recursion limit
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.add(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def find_cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` per :func:`strongly_connected` component: the shortest through its first
    module (every other module of the component lies on a cycle through it too). Sorted, for a stable message."""
    cycles = []
    for comp in strongly_connected(graph):
        start = min(comp)
        # breadth-first from start's imports back to start, inside the component: the shortest chain through it
        prev: dict[str, str | None] = {}
        frontier = []
        for n in sorted(graph[start]):
            if n in comp and n not in prev:
                prev[n] = None
                frontier.append(n)
        while start not in prev:
            nxt = []
            for a in frontier:
                for b in sorted(graph.get(a, ())):
                    if b in comp and b not in prev:
                        prev[b] = a
                        nxt.append(b)
            frontier = nxt
        chain = [start]
        node = prev[start]
        while node is not None:
            chain.append(node)
            node = prev[node]
        cycles.append([start, *reversed(chain[1:]), start])
    return sorted(cycles)


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, str]]) -> str:
    """``a -> b -> a`` and where each import is: ``a -> b (a.py:12) -> a (b.py:3)``, then the other modules on
    cycles with them, if any."""
    steps = [cycle[0]] + [f"{b} ({graph[a][b]})" for a, b in itertools.pairwise(cycle)]
    comp = next(c for c in strongly_connected(graph) if cycle[0] in c)
    others = sorted(comp - set(cycle))
    return " -> ".join(steps) + (f"; on cycles with them too: {', '.join(others)}" if others else "")


def _unit_graph(graph: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The import graph between layer units (``ferkit.engine`` -> ``ferkit.models``), one import named per edge."""
    units: dict[str, dict[str, str]] = {}
    for module, targets in graph.items():
        if module == TOP:
            continue
        for name, where in targets.items():
            a, b = _unit(module), _unit(name)
            if name != TOP and a != b:
                units.setdefault(a, {}).setdefault(b, where)
    return units


# ------------------------------------------------------------------ the rules, on ferkit's own source


def test_every_module_belongs_to_a_layer():
    for path, module in _all_modules():
        if module != TOP:
            _level(_unit(module))


def test_imports_only_go_down_the_layers():
    bad = []
    for path, module in _all_modules():
        if module == TOP:
            continue
        here = _level(_unit(module))
        for name, line in _imports(path, module):
            if name == TOP:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports the top-level ferkit package")
                continue
            there = _level(_unit(name))
            if there > here:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} (layer {here}) imports {name} (layer {there})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles_between_modules():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (make the lower module not import the higher one):\n" + "\n".join(
        describe_cycle(c, graph) for c in cycles)


def test_no_cycles_between_folders_of_one_layer():
    units = _unit_graph(import_graph())
    cycles = find_cycles(units)
    assert not cycles, "folders that import each other:\n" + "\n".join(describe_cycle(c, units) for c in cycles)


def test_the_lazy_public_api_names_real_modules():
    """``ferkit.X`` loads ``_API[X]`` with importlib: each must be a module of the package (a typo fails only then)."""
    modules = {m for _, m in _all_modules()}
    targets = [name for name, _ in _imports(PACKAGE / "__init__.py", TOP)]
    assert len(targets) >= 10, f"the lazy table {LAZY_TABLE} of ferkit/__init__.py was not found: {targets}"
    assert set(targets) <= modules, f"{LAZY_TABLE} names modules that do not exist: {sorted(set(targets) - modules)}"


def test_only_the_plots_module_imports_matplotlib():
    users = []
    for path, module in _all_modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "matplotlib" for n in names):
                users.append(_unit(module))
    assert set(users) <= {"ferkit.plots"}, f"matplotlib imported outside ferkit.plots: {sorted(set(users))}"


def _long_files(root: Path, label: str) -> dict[str, int]:
    return {f"{label}/{p.relative_to(root)}": n for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}


@pytest.mark.parametrize("label", sorted(SIZE_CHECKED))
def test_no_source_file_is_much_over_500_lines(label):
    long = _long_files(SIZE_CHECKED[label], label)
    assert not long, f"files over {MAX_LINES} lines (split them by job): {long}"


# ------------------------------------------------------------------ the checker fires (synthetic packages)


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root / "pkg"


def test_the_checker_finds_a_three_cycle_and_names_each_import(tmp_path):
    pkg = _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def f():\n    from pkg import c  # inside a function\n",
        "pkg/c.py": "from . import a\n",  # relative
        "pkg/d.py": "import pkg.a\n",  # imports into the cycle, not part of it
    })
    graph = import_graph(pkg)
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert describe_cycle(find_cycles(graph)[0], graph) == \
        "pkg.a -> pkg.b (pkg/a.py:1) -> pkg.c (pkg/b.py:2) -> pkg.a (pkg/c.py:1)"
    # a module pair's two-way import (the old rule's only case) is found too, and a chain without a cycle is not
    assert find_cycles({"x": {"y": ""}, "y": {"x": ""}, "z": {"x": ""}}) == [["x", "y", "x"]]
    fan = {"reg": {"f1": "r:1", "f2": "r:1"}, "f1": {"reg": "f1:1"}, "f2": {"reg": "f2:1"}}  # a registry's plugins
    assert describe_cycle(find_cycles(fan)[0], fan) == "f1 -> reg (f1:1) -> f1 (r:1); on cycles with them too: f2"
    assert find_cycles({"x": {"y": ""}, "y": {"z": ""}, "z": {}}) == []


def test_the_checker_sees_importlib_with_a_literal_name_and_the_lazy_table(tmp_path):
    pkg = _write_package(tmp_path, {
        "pkg/__init__.py": '_API = {"thing": "pkg.low", "other": "pkg.high"}\n',
        "pkg/low.py": 'import importlib\n\ndef late():\n    return importlib.import_module("pkg.high")\n',
        "pkg/high.py": "from importlib import import_module\nmod = import_module('pkg.low')\n"
                       "name = 'x'\nnot_seen = import_module(f'pkg.{name}')  # not a literal\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg.low"] == {"pkg.high": "pkg/low.py:4"}
    assert graph["pkg.high"] == {"pkg.low": "pkg/high.py:2"}
    assert graph["pkg"] == {"pkg.low": "pkg/__init__.py:1", "pkg.high": "pkg/__init__.py:1"}
    assert find_cycles(graph) == [["pkg.high", "pkg.low", "pkg.high"]]


def test_the_size_rule_fires_on_a_long_file(tmp_path):
    (tmp_path / "short.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert _long_files(tmp_path, "benchmarks") == {"benchmarks/sub/long.py": MAX_LINES + 1}
