"""The feature cache: run the frozen base over a data set once, keep the pooled features on disk, reuse them.

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
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from transferkit import __version__
from transferkit.atomic import atomic_write_text, atomic_writer, remove_stale_temporaries
from transferkit.data import LabelledFiles, repeated_files
from transferkit.engine import Engine, make_engine, module_sha256
from transferkit.errors import UserError
from transferkit.images import BadImage, file_problem, load_image, os_error_reason
from transferkit.model import TransferModel
from transferkit.preprocess import Augmentation, eval_transform, train_transform
from transferkit.weights import sha256_file

__all__ = ["MANIFEST", "FeatureSet", "extract_features", "load_features"]

FORMAT = "transferkit.features"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_ARRAYS = ("features.npy", "labels.npy", "views.npy")
_COPY_ROWS = 4096  # rows copied from the old cache at a time (memory stays bounded)


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
    stats: dict[str, Any]  # reused / computed / removed counts, engine, seconds, images per second


def cache_key(model: TransferModel, views: int, augmentation: Augmentation, seed: int) -> dict[str, Any]:
    key = {
        "backbone": model.spec.name,
        "base_sha256": module_sha256(model.base),
        "layer": model.layer or "deep",
        "preprocessing": model.preprocessing.to_json(),
        "views": views,
        "augmentation": {**augmentation.__dict__, "seed": seed} if views else None,
    }
    return json.loads(json.dumps(key))  # as it reads back from the manifest (tuples become lists)


def extract_features(files: LabelledFiles, model: TransferModel, folder: Path, views: int = 0,
                     augmentation: Augmentation = Augmentation(), seed: int = 0, workers: int | None = None,
                     engine: str = "auto", log: Callable[[str], None] = print) -> FeatureSet:
    """Bring the cache in `folder` up to date with `files` and return it (see the module docstring)."""
    started = time.perf_counter()
    remove_stale_temporaries(folder)  # left by a run that was killed while writing
    key = cache_key(model, views, augmentation, seed)
    old, why = _load_checked(folder)
    if old is not None and old.key != key:
        why = f"it was made with other settings ({_key_change(old.key, key)})"
        old = None
    if why and (folder / MANIFEST).exists():
        log(f"rebuilding the feature cache in {folder}: {why}")

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
    old_rows = {h: r for r, h in enumerate(old.stats["hashes"])} if old is not None else {}
    old_bad = dict(old.stats["bad_hashes"]) if old is not None else {}
    for i, h in enumerate(hashes):
        if h is not None and h in old_bad:
            unreadable[i] = old_bad[h]
    rows = [i for i in range(len(files.samples)) if i not in unreadable]
    todo = [r for r, i in enumerate(rows) if hashes[i] not in old_rows]
    same = old is not None and not todo and [hashes[i] for i in rows] == old.stats["hashes"] \
        and [files.samples[i].path for i in rows] == list(old.paths) and old.classes == files.classes \
        and [files.samples[i].label for i in rows] == old.labels.tolist() \
        and sorted(str(files.samples[i].path) for i in unreadable) == sorted(str(p) for p, _ in old.skipped)
    if same:
        assert old is not None
        return _with_stats(old, reused=len(rows), computed=0, removed=0, engine="none (all cached)",
                           seconds=time.perf_counter() - started)

    base = model.base
    runner = make_engine(base, model.preprocessing, engine) if todo else None
    dim = model.feature_dim
    views_writer = atomic_writer(folder / "views.npy") if views else nullcontext(None)
    with atomic_writer(folder / "features.npy") as feat_tmp, views_writer as views_tmp:
        feats = np.lib.format.open_memmap(feat_tmp, mode="w+", dtype=np.float32, shape=(len(rows), dim))
        view_arr = (np.lib.format.open_memmap(views_tmp, mode="w+", dtype=np.float32, shape=(len(rows), views, dim))
                    if views_tmp is not None else None)
        if old is not None:
            _copy_reused(old, [old_rows.get(hashes[i]) for i in rows], feats, view_arr)  # type: ignore[arg-type]
        failed: dict[int, str] = {}
        rate = 0.0
        if todo:
            assert runner is not None
            log(f"extracting features of {len(todo)} image(s) with {runner.note}")
            rate, failed = _compute(runner, [files.samples[rows[r]].path for r in todo], todo, model, feats, view_arr,
                                    augmentation, [hashes[rows[r]] for r in todo], seed, workers)  # type: ignore[misc]
        feats.flush()
        if view_arr is not None:
            view_arr.flush()
        del feats, view_arr
        for r, reason in failed.items():
            unreadable[rows[r]] = reason
        keep = [r for r in range(len(rows)) if r not in failed]
        if failed:
            _compact(feat_tmp, keep)
            if views_tmp is not None:
                _compact(views_tmp, keep)
        rows = [rows[r] for r in keep]
        labels = np.array([files.samples[i].label for i in rows], dtype=np.int64)
        with atomic_writer(folder / "labels.npy") as labels_tmp:
            with open(labels_tmp, "wb") as f:  # np.save(path) would append ".npy" to the temporary name
                np.save(f, labels, allow_pickle=False)
            manifest = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "transferkit_version": __version__,
                "key": key, "source": str(files.source), "classes": list(files.classes),
                "arrays": {name: _describe(tmp) for name, tmp in
                           (("features.npy", feat_tmp), ("labels.npy", labels_tmp), ("views.npy", views_tmp))
                           if tmp is not None},
                "files": [{"path": str(files.samples[i].path), "sha256": hashes[i]} for i in rows],
                "bad": [{"path": str(files.samples[i].path), "reason": reason,
                         "sha256": None if i in repeats else hashes[i]}  # a copy's content is not bad
                        for i, reason in sorted(unreadable.items())],
            }
    if not views:
        (folder / "views.npy").unlink(missing_ok=True)
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=1))
    fresh, why = _load_checked(folder, verify=False)  # `_describe` hashed the arrays a moment ago
    if fresh is None:
        raise RuntimeError(f"the feature cache just written to {folder} fails its own check: {why}")
    removed = len(old_rows) - len({hashes[i] for i in rows if hashes[i] in old_rows}) if old is not None else 0
    return _with_stats(fresh, reused=len(rows) - len(todo) + len(failed), computed=len(todo) - len(failed),
                       removed=removed, engine=runner.note if runner else "none (all cached)",
                       seconds=time.perf_counter() - started, rate=rate)


def load_features(folder: Path) -> FeatureSet:
    """A cache made by `extract_features`, checked (one-line error if it is missing or damaged)."""
    cache, why = _load_checked(folder)
    if cache is None:
        raise UserError(f"no usable feature cache in {folder}: {why}; run `transferkit extract DATA --out {folder}`")
    return cache


def _describe(path: Path) -> dict[str, Any]:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return {"shape": list(array.shape), "sha256": sha256_file(path)}


def _load_checked(folder: Path, verify: bool = True) -> tuple[FeatureSet | None, str]:
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
            stats={"hashes": [r["sha256"] for r in rows],
                   "bad_hashes": [(b["sha256"], b["reason"]) for b in manifest["bad"] if b["sha256"]]},
        ), ""
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"{MANIFEST} is malformed ({type(exc).__name__}: {exc})"


def _key_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} changed" for k in changed) or "format changed"


def _with_stats(cache: FeatureSet, reused: int, computed: int, removed: int, engine: str, seconds: float,
                rate: float = 0.0) -> FeatureSet:
    stats = {**cache.stats, "reused": reused, "computed": computed, "removed": removed, "unreadable":
             len(cache.skipped), "engine": engine, "seconds": round(seconds, 2), "images_per_second": round(rate, 1)}
    return FeatureSet(cache.folder, cache.classes, cache.paths, cache.labels, cache.features, cache.views,
                      cache.skipped, cache.key, stats)


def _copy_reused(old: FeatureSet, old_index: Sequence[int | None], feats: np.ndarray,
                 views: np.ndarray | None) -> None:
    pairs = np.array([(r, o) for r, o in enumerate(old_index) if o is not None], dtype=np.int64).reshape(-1, 2)
    for start in range(0, len(pairs), _COPY_ROWS):
        new_rows, old_rows = pairs[start:start + _COPY_ROWS].T
        feats[new_rows] = old.features[old_rows]
        if views is not None and old.views is not None:
            views[new_rows] = old.views[old_rows]


def _compact(path: Path, keep: list[int]) -> None:
    """Drop rows of the .npy file at `path` (files that failed to decode), in place via a second temp file."""
    source = np.load(path, mmap_mode="r")
    with atomic_writer(path) as tmp:
        target = np.lib.format.open_memmap(tmp, mode="w+", dtype=source.dtype, shape=(len(keep), *source.shape[1:]))
        index = np.asarray(keep, dtype=np.int64)
        for start in range(0, len(index), _COPY_ROWS):
            target[start:start + _COPY_ROWS] = source[index[start:start + _COPY_ROWS]]
        target.flush()
        del target
    del source


def extract_workers() -> int:
    """Decoding processes beside the engine, which uses every core: decoding, resizing and cropping cost about a
    quarter of what the engine spends per image, so a quarter of the cores (at least one) keeps it fed without
    taking cores from it (on 2 cores, 1 worker measured faster than 2: benchmarks/RESULTS.md)."""
    return max(1, (os.cpu_count() or 1) // 4)


class _Views(Dataset):
    """Row r's image as the eval crop followed by `views` augmented crops. Each augmented crop is seeded from the
    file's content hash, so a cached view is the same whichever run or worker computed it."""

    def __init__(self, paths: Sequence[Path], rows: Sequence[int], hashes: Sequence[str], model: TransferModel,
                 views: int, augmentation: Augmentation, seed: int) -> None:
        self.paths, self.rows, self.hashes = list(paths), list(rows), list(hashes)
        p = model.preprocessing
        self.min_size = p.resize_size
        self.plain = eval_transform(p, normalise=False)  # uint8: the engine normalises, batched
        self.augment = train_transform(p, augmentation, normalise=False) if views else None
        self.views, self.seed = views, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | tuple[None, int, str]:
        try:
            image: Image.Image = load_image(self.paths[index], self.min_size)
        except BadImage as exc:
            return None, self.rows[index], exc.reason
        crops = [self.plain(image)]
        if self.augment is not None:
            rng_state = torch.get_rng_state()
            for k in range(self.views):
                torch.manual_seed((int(self.hashes[index][:12], 16) + 1_000_003 * k + self.seed) % 2**63)
                crops.append(self.augment(image))
            torch.set_rng_state(rng_state)
        return torch.stack(crops), self.rows[index]


def _collate(batch: list[Any]) -> tuple[torch.Tensor | None, list[int], dict[int, str]]:
    good = [item for item in batch if item[0] is not None]
    bad = {item[1]: item[2] for item in batch if item[0] is None}
    images = torch.stack([item[0] for item in good]) if good else None
    return images, [item[1] for item in good], bad


def _compute(runner: Engine, paths: list[Path], rows: list[int], model: TransferModel, feats: np.ndarray,
             views: np.ndarray | None, augmentation: Augmentation, hashes: list[str], seed: int,
             workers: int | None) -> tuple[float, dict[int, str]]:
    """Features of `paths` into `feats[rows]` (and views); decoding overlaps the engine in worker processes.
    Returns images per second and the rows whose file failed to decode, with the reason."""
    k = views.shape[1] if views is not None else 0
    workers = extract_workers() if workers is None else workers
    per_batch = max(1, runner.batch_size // (k + 1))
    dataset = _Views(paths, rows, hashes, model, k, augmentation, seed)
    loader = DataLoader(dataset, batch_size=per_batch, num_workers=workers, collate_fn=_collate,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    failed: dict[int, str] = {}
    started = time.perf_counter()
    with tqdm(total=len(paths), desc="extracting features", unit="img", disable=None) as progress:
        for images, batch_rows, bad in loader:
            failed.update(bad)
            if images is not None:
                n, crops = images.shape[:2]
                out = runner(images.reshape(n * crops, *images.shape[2:])).reshape(n, crops, -1)
                feats[batch_rows] = out[:, 0]
                if views is not None:
                    views[batch_rows] = out[:, 1:]
            progress.update(len(batch_rows) + len(bad))
    return len(paths) / max(time.perf_counter() - started, 1e-9), failed
