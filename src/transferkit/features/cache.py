"""The feature cache on disk: its format, and the check that it is whole and matches what it claims.

A cache folder holds `features.npy` (N x D float32, memory-mappable), `labels.npy` (N int64), optionally
`views.npy` (N x K x D: K augmented views of each image) and `manifest.json`: the key (backbone, a hash of the
base's weights, layer, preprocessing, views and their augmentation), the class names, and for each row the
file's path, class and content hash. Each array's sha256 and shape are in the manifest, which is written last,
so a cache that was truncated, corrupted or left half-written by a crash fails its check and is rebuilt.

Running again reuses every row whose file content (sha256) is unchanged, even if it moved or was relabelled,
computes only new or changed files and drops deleted ones (`survey` compares the files with the cache). The
manifest may also hold a cheap `source_key` (see `source`): `up_to_date` uses it to tell, without torch, that a
cache needs no work at all. Nothing here imports torch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from transferkit.data.files import LabelledFiles
from transferkit.data.images import file_problem, os_error_reason
from transferkit.data.repeats import repeated_files
from transferkit.errors import UserError
from transferkit.io.atomic import atomic_write_text, remove_stale_temporaries
from transferkit.io.hashing import sha256_file

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "ExtractStats", "FeatureSet", "Survey", "describe",
           "load_checked", "load_features", "record_source_key", "survey", "up_to_date"]

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
    source_key: dict[str, Any] | None = None  # the cheap key of what made it (see `source`), when recorded


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
            source_key=manifest.get("source_key"),
        ), ""
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"{MANIFEST} is malformed ({type(exc).__name__}: {exc})"


@dataclass(frozen=True)
class Survey:
    """The labelled files as they are now, against an old cache (or none)."""

    hashes: list[str | None]  # each sample's content sha256 (None: it could not be read)
    unreadable: dict[int, str]  # samples left out and why: unreadable, a repeat, or known bad to the old cache
    repeats: dict[int, str]  # those of them left out only for repeating another (their content is not bad)
    rows: list[int]  # the samples that get a feature row, in order
    todo: list[int]  # positions in `rows` whose content the old cache does not hold
    old_rows: dict[str, int]  # content sha256 -> its row in the old cache
    unchanged: bool  # the old cache holds exactly these files, labels and classes: nothing to compute or write


def survey(files: LabelledFiles, old: FeatureSet | None) -> Survey:
    """Hash every file (never opening a FIFO or the like), set aside what cannot be used, and compare with `old`."""
    hashes: list[str | None] = []
    unreadable: dict[int, str] = {}
    for i, sample in enumerate(tqdm(files.samples, desc="hashing files", unit="file", leave=False, disable=None)):
        hashes.append(None)
        problem = file_problem(sample.path)  # before opening: a FIFO would block a read forever
        try:
            hashes[i] = None if problem else sha256_file(sample.path)
        except OSError as exc:
            problem = os_error_reason(exc)
        if problem:
            unreadable[i] = problem
    repeats = repeated_files(files, {i: h for i, h in enumerate(hashes) if h is not None})
    unreadable |= repeats
    old_rows = {h: r for r, h in enumerate(old.file_sha256)} if old is not None else {}
    old_bad = old.bad_sha256 if old is not None else {}
    for i, h in enumerate(hashes):
        if h is not None and h in old_bad:
            unreadable[i] = old_bad[h]
    rows = [i for i in range(len(files.samples)) if i not in unreadable]
    todo = [r for r, i in enumerate(rows) if hashes[i] not in old_rows]
    unchanged = old is not None and not todo and tuple(hashes[i] for i in rows) == old.file_sha256 \
        and [files.samples[i].path for i in rows] == list(old.paths) and old.classes == files.classes \
        and [files.samples[i].label for i in rows] == old.labels.tolist() \
        and sorted(str(files.samples[i].path) for i in unreadable) == sorted(str(p) for p, _ in old.skipped)
    return Survey(hashes, unreadable, repeats, rows, todo, old_rows, unchanged)


def up_to_date(files: LabelledFiles, folder: str | Path, source_key: dict[str, Any] | None) -> FeatureSet | None:
    """The cache in `folder`, checked, if its recorded source key is `source_key` and it holds exactly `files` as
    they are now: what `extract_features` would return for them, found without torch. None whenever that is not
    certain (no key, another key, a damaged cache, any changed file); `extract_features` then decides."""
    started = time.perf_counter()
    folder = Path(folder)
    if source_key is None:
        return None
    remove_stale_temporaries(folder)  # left by a run that was killed while writing, as extract_features does
    old, _ = load_checked(folder)
    if old is None or old.source_key != source_key:
        return None
    found = survey(files, old)
    if not found.unchanged:
        return None
    return replace(old, stats=ExtractStats(reused=len(found.rows), seconds=time.perf_counter() - started))


def record_source_key(cache: FeatureSet, source_key: dict[str, Any] | None) -> None:
    """Record `source_key` in the manifest of `cache` (just made or checked by `extract_features` with a base built
    from exactly those settings), unless the manifest on disk is no longer the one for `cache`."""
    path = cache.folder / MANIFEST
    if source_key is None or cache.source_key == source_key:
        return
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("key") != cache.key:
        return
    atomic_write_text(path, json.dumps({**manifest, "source_key": source_key}, indent=1))
