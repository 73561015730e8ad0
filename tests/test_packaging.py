"""pyproject.toml declares every library the package and its tests import: an undeclared one works here only
because something else happened to install it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


BENCHMARKS = ROOT / "benchmarks"  # on the tests' path too (pyproject's pythonpath): fashion_mnist


def _requirement_names(requirements: list[str]) -> set[str]:
    return {_normalise(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0]) for r in requirements}


def _imported_top_levels(folder: Path) -> set[str]:
    """Top-level modules imported by the files under `folder`, less the standard library and the folder's own."""
    own = {p.stem for p in folder.glob("*.py")} | {p.stem for p in BENCHMARKS.glob("*.py")} | {"transferkit"}
    names: set[str] = set()
    for source in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
    return names - set(sys.stdlib_module_names) - own


def _undeclared(folder: Path, declared: set[str]) -> dict[str, list[str]]:
    """Imported modules whose installed distribution is not declared (PIL → pillow, sklearn → scikit-learn)."""
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(_imported_top_levels(folder)):
        distributions = [_normalise(d) for d in providers.get(module, [module])]
        if not set(distributions) & declared:
            missing[module] = distributions
    return missing


def test_every_imported_library_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = _requirement_names(project["dependencies"])
    tests = runtime | _requirement_names(project["optional-dependencies"]["test"])
    assert _undeclared(ROOT / "src" / "transferkit", runtime) == {}
    assert _undeclared(ROOT / "tests", tests) == {}
