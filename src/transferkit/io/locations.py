"""Where transferkit keeps what it can rebuild (exported graphs, feature caches, downloaded weights): one folder,
chosen without importing anything heavy, so a torch-free command finds the same files as the others."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """$TRANSFERKIT_CACHE, else $XDG_CACHE_HOME/transferkit, else ~/.cache/transferkit."""
    if os.environ.get("TRANSFERKIT_CACHE"):
        return Path(os.environ["TRANSFERKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "transferkit"
