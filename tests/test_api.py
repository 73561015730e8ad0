"""The package as a user and a maintainer see it: the public names, `str` paths everywhere, a root that stays
light, no import cycles, small modules."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

import transferkit as tk
from transferkit.data.files import load_labelled

SRC = Path(tk.__file__).resolve().parent


def test_every_public_name_resolves_and_none_is_shadowed_by_a_module() -> None:
    for name in tk.__all__:
        assert getattr(tk, name) is not None, name
        assert importlib.util.find_spec(f"transferkit.{name}") is None, f"transferkit.{name} is also a module"
    assert callable(tk.train) and callable(tk.evaluate)


def test_importing_the_package_imports_no_heavy_library() -> None:
    code = "import sys, transferkit; print(sorted(m for m in ('torch', 'timm', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _modules() -> dict[str, Path]:
    return {".".join(("transferkit", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in SRC.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """transferkit modules imported at module level (not inside functions, not under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("transferkit"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("transferkit")}
    return found


def test_nothing_inside_imports_the_package_root_and_there_is_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(path) & set(modules) for name, path in modules.items()}
    importers_of_root = [name for name, deps in graph.items() if "transferkit" in deps]
    assert importers_of_root == []

    def visit(name: str, stack: list[str], done: set[str]) -> None:
        assert name not in stack, f"import cycle: {' -> '.join([*stack[stack.index(name):], name])}"
        if name in done:
            return
        for dep in graph[name]:
            visit(dep, [*stack, name], done)
        done.add(name)

    done: set[str] = set()
    for name in graph:
        visit(name, [], done)


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_str_paths_are_accepted_everywhere(photo_data: Path, photo_test_data: Path, trained_run: tk.TrainResult,
                                           tmp_path: Path) -> None:
    data = tk.load_images(str(photo_data), val_split=0.25, seed=0, workers=0)
    assert data.classes == ("astronaut", "cat", "coffee")
    assert load_labelled(str(photo_test_data)).classes == data.classes
    backbone = trained_run.model.backbone
    cache = tk.extract_features(str(photo_test_data), backbone, str(tmp_path / "features"), engine="torch",
                                workers=0)
    assert cache.features.shape == (12, backbone.feature_dim)
    assert tk.load_features(str(tmp_path / "features")).paths == cache.paths
    evaluation = tk.evaluate(trained_run.model, str(photo_test_data))
    assert evaluation.metrics.count == 12 and evaluation.skipped == []
    files = [str(p) for p in sorted((photo_test_data / "cat").iterdir())]
    predictions = tk.predict(trained_run.model, files, top=2)
    assert [p.path for p in predictions] == files and len(predictions.items[0].predictions) == 2
    saved = tk.save_bundle(trained_run.model, str(tmp_path / "bundle"), {})
    bundle = tk.load_bundle(str(saved.parent))
    assert np.allclose(bundle.model.head[1].weight.detach().numpy(), trained_run.model.head[1].weight.detach().numpy())
