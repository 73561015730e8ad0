"""What the library logs, and where: INFO lines for whoever configured logging (the CLI prints them), details
(each skipped file) in the run's log file only, never on a program's console."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from transferkit.training.config import TrainConfig
from transferkit.training.strategies import train


class _Console(logging.Handler):
    """What `logging.basicConfig(level=logging.DEBUG)` would print: every record that reaches the root logger.
    (pytest's caplog is no stand-in: it also hooks loggers that do not propagate.)"""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_details_reach_the_run_log_but_not_a_configured_console(photo_data: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(photo_data, tmp_path / "data"))
    (data / "cat" / "broken.jpg").write_bytes(b"not a picture")
    out = tmp_path / "run"
    root, console = logging.getLogger(), _Console()
    level, root_level = logging.getLogger("transferkit").level, root.level
    root.addHandler(console)
    root.setLevel(logging.DEBUG)
    try:
        train(data, out, TrainConfig(strategy="frozen", epochs=1, probe_epochs=2, batch_size=8, val_split=0.25))
    finally:
        root.removeHandler(console)
        root.setLevel(root_level)
    messages = [r.getMessage() for r in console.records if r.name.startswith("transferkit")]
    assert any("skipped 1 unreadable file(s)" in m for m in messages)  # the summary is for everyone
    assert not any("broken.jpg" in m for m in messages)  # the list of files is a detail
    assert all(r.levelno >= logging.INFO for r in console.records if r.name.startswith("transferkit"))
    log = (out / "train.log").read_text(encoding="utf-8")
    assert "broken.jpg" in log and "head epoch 1" in log and log.startswith("=== transferkit")
    assert logging.getLogger("transferkit").level == level  # the run left the logger as it found it
