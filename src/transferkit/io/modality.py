"""Which modality a saved model reads, told from its JSON alone: no torch, no weights read, so the command line
can choose the image or the text path before importing either."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from transferkit.io.names import META_FILE

__all__ = ["bundle_modality"]

_META_KEY = "transferkit"  # where a checkpoint keeps the bundle JSON in its safetensors header


def _checkpoint_meta(path: Path) -> Any:
    """The bundle JSON in a safetensors file's header (8 bytes of length, then the header's JSON)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(min(length, 100 << 20)))
    return json.loads(header["__metadata__"][_META_KEY])


def bundle_modality(path: str | os.PathLike[str]) -> str:
    """"image" or "text": what the bundle in a run folder (or a checkpoint file) reads. A missing or damaged
    bundle counts as "image": loading it then gives the one-line error that says what is wrong."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8")) if path.is_dir() else _checkpoint_meta(path)
        kind = meta["preprocessing"].get("kind", "image")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        return "image"
    return "text" if kind == "text" else "image"
