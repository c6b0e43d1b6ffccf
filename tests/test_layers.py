"""ferkit's layers import downward only (docs/ARCHITECTURE.md): a fast unit test, no data needed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ferkit"

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


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """Every ``ferkit.*`` module ``path`` imports (at any depth, also inside functions), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("ferkit")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == TOP:  # ``from ferkit import labels``: the sub-module itself
                out += [(f"{name}.{a.name}", node.lineno) for a in node.names]
            elif name.startswith("ferkit."):
                out.append((name, node.lineno))
    return out


def _all_modules() -> list[tuple[Path, str]]:
    return [(p, _module_name(p)) for p in sorted(PACKAGE.rglob("*.py"))]


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


def test_no_cycles_between_folders_of_one_layer():
    edges: dict[str, set[str]] = {}
    for path, module in _all_modules():
        if module == TOP:
            continue
        for name, _ in _imports(path, module):
            a, b = _unit(module), _unit(name)
            if name != TOP and a != b:
                edges.setdefault(a, set()).add(b)
    for a, targets in edges.items():
        for b in targets:
            assert a not in edges.get(b, set()), f"{a} and {b} import each other"


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


def test_no_source_file_is_much_over_500_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p, _ in _all_modules() if (n := len(p.read_text().splitlines())) > 550}
    assert not long, f"files over 550 lines (split them by job): {long}"
