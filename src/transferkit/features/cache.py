"""The feature cache on disk: its format, and the check that it is whole and matches what it claims.

A cache folder holds `features.npy` (N x D float32, memory-mappable), `labels.npy` (N int64), optionally
`views.npy` (N x K x D: K augmented views of each image) and `manifest.json`: the key (backbone, a hash of the
base's weights, layer, preprocessing, views and their augmentation), the class names, and for each row the
file's path, class and content hash. Each array's sha256 and shape are in the manifest, which is written last,
so a cache that was truncated, corrupted or left half-written by a crash fails its check and is rebuilt.

Running again reuses every row whose file content (sha256) is unchanged, even if it moved or was relabelled,
computes only new or changed files and drops deleted ones. Features stream from the engine straight into a
memory-mapped file, so memory stays flat however large the data set is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import UserError
from transferkit.io.hashing import sha256_file

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "ExtractStats", "FeatureSet", "describe", "load_checked",
           "load_features"]

FORMAT = "transferkit.features"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_ARRAYS = ("features.npy", "labels.npy", "views.npy")


@dataclass(frozen=True)
class ExtractStats:
    """What one `extract_features` call did."""

    reused: int = 0
    computed: int = 0
    removed: int = 0
    engine: str = "none (all cached)"
    seconds: float = 0.0
    images_per_second: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"reused": self.reused, "computed": self.computed, "removed": self.removed, "engine": self.engine,
                "seconds": round(self.seconds, 2), "images_per_second": round(self.images_per_second, 1)}


@dataclass(frozen=True)
class FeatureSet:
    """A verified cache: `features[i]` (and `views[i]`) belong to `paths[i]`, of class `classes[labels[i]]`."""

    folder: Path
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: np.ndarray
    features: np.ndarray  # read-only memory map
    views: np.ndarray | None  # (N, K, D) or None
    skipped: tuple[tuple[Path, str], ...]  # files that could not be read
    key: dict[str, Any]
    file_sha256: tuple[str, ...]  # content hash of each row's file: how a later run recognises it
    bad_sha256: dict[str, str] = field(default_factory=dict)  # content hash -> why it could not be read
    stats: ExtractStats = ExtractStats()


def load_features(folder: str | Path) -> FeatureSet:
    """A cache made by `extract_features`, checked (one-line error if it is missing or damaged)."""
    folder = Path(folder)
    cache, why = load_checked(folder)
    if cache is None:
        raise UserError(f"no usable feature cache in {folder}: {why}; run `transferkit extract DATA --out {folder}`")
    return cache


def describe(path: Path) -> dict[str, Any]:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return {"shape": list(array.shape), "sha256": sha256_file(path)}


def load_checked(folder: Path, verify: bool = True) -> tuple[FeatureSet | None, str]:
    """The cache in `folder` if every file is there and matches the manifest's hashes, else None and why.
    `verify=False` skips re-hashing the arrays (for a cache this process has just written and hashed)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "there is none yet"
    except (OSError, ValueError) as exc:
        return None, f"{MANIFEST} is unreadable ({exc})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None, f"{folder / MANIFEST} is not a transferkit feature cache"
    if manifest.get("format_version") != FORMAT_VERSION:
        return None, f"it has format version {manifest.get('format_version')}, this transferkit reads {FORMAT_VERSION}"
    arrays: dict[str, np.ndarray] = {}
    try:
        for name, expected in manifest["arrays"].items():
            if name not in _ARRAYS:
                return None, f"{MANIFEST} names an unknown file {name!r}"
            path = folder / name
            if not path.is_file():
                return None, f"{name} is missing"
            if verify and sha256_file(path) != expected["sha256"]:
                return None, f"{name} does not match its checksum (truncated or corrupted)"
            arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(arrays[name].shape) != expected["shape"]:
                return None, f"{name} has shape {list(arrays[name].shape)}, expected {expected['shape']}"
        rows = manifest["files"]
        labels = np.asarray(arrays["labels.npy"])
        features = arrays["features.npy"]
        if not (len(rows) == len(labels) == len(features)):
            return None, f"{MANIFEST} lists {len(rows)} files for {len(features)} feature rows"
        classes = tuple(str(c) for c in manifest["classes"])
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            return None, "labels.npy has labels outside the class list"
        return FeatureSet(
            folder=folder, classes=classes, paths=tuple(Path(r["path"]) for r in rows), labels=labels,
            features=features, views=arrays.get("views.npy"),
            skipped=tuple((Path(b["path"]), str(b["reason"])) for b in manifest["bad"]), key=manifest["key"],
            file_sha256=tuple(str(r["sha256"]) for r in rows),
            bad_sha256={str(b["sha256"]): str(b["reason"]) for b in manifest["bad"] if b["sha256"]},
        ), ""
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"{MANIFEST} is malformed ({type(exc).__name__}: {exc})"
