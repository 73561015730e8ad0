"""`transferkit --help`, `train --help` and the one-line errors for bad flags and data paths never import torch,
torchvision, timm or scikit-learn (they answer at once). How fast they are is benchmarks/startup.py's job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "timm", "sklearn")

_WRAPPER = """
import json, sys
from transferkit.cli.main import main
try:
    code = main(sys.argv[2:])
except SystemExit as exc:  # --help and argparse's errors
    code = exc.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules)}, f)
""".replace("HEAVY", repr(HEAVY))


def _run(tmp_path: Path, *argv: str) -> tuple[int, list[str], str]:
    result = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, str(result), *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(result.read_text())
    return found["code"], found["heavy"], proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["extract", "--help"], ["serve", "--help"],
                                  ["--version"]])
def test_help_imports_no_heavy_library(argv: list[str], tmp_path: Path) -> None:
    code, heavy, _ = _run(tmp_path, *argv)
    assert code == 0 and heavy == []


@pytest.mark.parametrize("command", ["train DATA --out X", "extract DATA --out X", "evaluate RUN DATA",
                                     "report RUN DATA --out X", "train . --out X --test DATA"])
def test_a_missing_data_folder_is_one_line_before_any_heavy_import(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    names = {"DATA": str(missing), "X": str(tmp_path / "x"), "RUN": str(tmp_path / "run"), ".": str(tmp_path)}
    code, heavy, err = _run(tmp_path, *[names.get(word, word) for word in command.split()])
    assert code == 2 and heavy == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transferkit: error: data folder not found") and str(missing) in err


def test_a_bad_flag_value_imports_no_heavy_library(tmp_path: Path) -> None:
    code, heavy, err = _run(tmp_path, "train", str(tmp_path), "--out", str(tmp_path / "x"), "--lr", "-1")
    assert code == 2 and heavy == [] and "argument --lr" in err and "got -1" in err
