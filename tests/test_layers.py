"""The package's layers import one way (docs: README "Decisions"):

core -> data -> envs / forecasters -> agents -> backtest -> experiment -> sweep / quickstart
-> cli. A module may import its own subpackage and any lower layer, never a peer or a
higher one; function-local imports count too (a cycle hidden in a function is still a
cycle). Source files stay under 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "stockgym"
LAYER = {
    "core": 0,
    "data": 1,
    "envs": 2,
    "forecasters": 2,
    "agents": 3,
    "backtest": 4,
    "experiment": 5,
    "sweep": 6,
    "quickstart": 6,
    "cli": 7,
}
MODULES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


def _part(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imported_parts(tree: ast.AST) -> set[str]:
    """The stockgym subpackages a module imports, anywhere in its body."""
    parts: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = (
                [node.module]
                if node.module != "stockgym"
                else [f"stockgym.{a.name}" for a in node.names]
            )
        else:
            continue
        for name in names:
            bits = name.split(".")
            if bits[0] == "stockgym" and len(bits) > 1:
                parts.add(bits[1])
    return parts


def test_every_module_is_in_a_layer():
    assert {_part(p) for p in MODULES} <= set(LAYER)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    own = _part(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = sorted(p for p in _imported_parts(tree) - {own} if p in LAYER and LAYER[p] >= LAYER[own])
    assert not bad, f"{path.relative_to(ROOT)} ({own}) imports {bad}: same or higher layer"


def test_layer_check_catches_a_cycle():
    """The check itself: an upward import hidden in a function is found."""
    tree = ast.parse("def f():\n    from stockgym.experiment import train\n")
    assert _imported_parts(tree) == {"experiment"}
    tree = ast.parse("from stockgym import core, envs\n")
    assert _imported_parts(tree) == {"core", "envs"}


#: every Python file of the repository: the package, its tests, benchmarks and scripts
REPO = ROOT.parent
ALL_PY = sorted(
    p for d in ("stockgym", "tests", "benchmarks", "scripts") for p in (REPO / d).rglob("*.py")
)


@pytest.mark.parametrize("path", ALL_PY, ids=lambda p: str(p.relative_to(REPO)))
def test_source_files_stay_short(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= 600, f"{path.relative_to(REPO)} has {lines} lines"
