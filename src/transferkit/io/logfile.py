"""A run's log file: everything the library logs during a run (the console shows less) appended to one file."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["log_to_file"]

_LOGGER = "transferkit"


@contextmanager
def log_to_file(path: Path) -> Iterator[None]:
    """Append every record of transferkit's loggers (DEBUG and up) to `path` while the block runs. The console
    is the caller's business (the CLI shows INFO); this only makes sure the file gets the details too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger(_LOGGER)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
