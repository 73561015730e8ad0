"""Exit code 1: a bug (any exception that is not bad input) is one line naming the error and a file holding the
full traceback; TRANSFERKIT_DEBUG=1 prints the traceback too."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

import transferkit.cli.commands
from transferkit.cli.main import main


def _broken_listing(as_json: bool) -> None:
    raise RuntimeError("index 7 is out of range\nfor a list of 3")  # stands in for any bug


def test_a_bug_is_one_line_exit_1_and_a_traceback_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(transferkit.cli.commands, "_print_models", _broken_listing)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the traceback file goes
    monkeypatch.delenv("TRANSFERKIT_DEBUG", raising=False)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("transferkit: internal error: RuntimeError: index 7 is out of range for a list of 3")
    found = re.search(r"the full traceback is in (\S+) ", lines[0])
    assert found is not None, lines[0]
    log = Path(found[1])
    assert log.parent == tmp_path
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "_broken_listing" in text and "['models']" in text


def test_debug_variable_prints_the_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(transferkit.cli.commands, "_print_models", _broken_listing)
    monkeypatch.setenv("TRANSFERKIT_DEBUG", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith(
        "transferkit: internal error: RuntimeError")
