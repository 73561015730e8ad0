"""A run's log file: what the library logs during a run, plus details meant for the file only.

Library code logs through `logging.getLogger(__name__)` (under "transferkit"): what a person wants to see as it
happens, at INFO. Details that belong in the run's log but not on anyone's console (each skipped file, each
epoch of a head trained on cached features) go to `details()`, a logger that never propagates: so a program
that configured logging (`logging.basicConfig`) sees the same INFO lines as the CLI, never a flood.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["details", "log_to_file"]

_LOGGER = "transferkit"
_DETAILS = "transferkit.details"


def details() -> logging.Logger:
    """The logger for lines that go to a run's log file only."""
    logger = logging.getLogger(_DETAILS)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Append every INFO record of transferkit's loggers, and every detail, to `path` while the block runs. The
    console is the caller's business (the CLI shows INFO on stdout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger, detail = logging.getLogger(_LOGGER), details()
    level = logger.level
    logger.addHandler(handler)
    detail.addHandler(handler)
    if level == logging.NOTSET or level > logging.INFO:
        logger.setLevel(logging.INFO)  # the file gets INFO even where nobody configured logging
    try:
        yield
    finally:
        logger.removeHandler(handler)
        detail.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
