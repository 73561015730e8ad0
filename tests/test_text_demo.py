"""`transferkit demo --text`: the text defaults on the bundled SpamAssassin sample, end to end (minutes on a
2-core CPU, so slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transferkit.cli.main import main


@pytest.mark.slow
def test_the_text_demo_trains_on_the_bundled_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo-text"
    assert main(["demo", "--text", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"the model is in {out}" in stdout and "test accuracy" in stdout and (out / "report.html").is_file()
    test_accuracy = json.loads((out / "model.json").read_text())["metrics"]["test"]["accuracy"]
    assert test_accuracy > 0.85, stdout  # 0.89 measured: the frozen encoder's embeddings and a linear head
