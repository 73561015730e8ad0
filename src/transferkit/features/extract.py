"""Feature extraction: run the frozen base once over a data set and keep the pooled features on disk.

Running again reuses every row whose file content (sha256) is unchanged, even if it moved or was relabelled,
computes only new or changed files and drops deleted ones. Features stream from the engine straight into a
memory-mapped file, so memory stays flat however large the data set is. Decoding runs in worker processes
beside the engine (see `engine.py`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from transferkit._version import __version__
from transferkit.data.files import LabelledFiles, load_labelled
from transferkit.data.images import BadImage, load_image
from transferkit.data.loaders import pass_workers
from transferkit.data.preprocess import Augmentation, Preprocessing
from transferkit.data.transforms import eval_transform, train_transform
from transferkit.features.cache import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ExtractStats,
    FeatureSet,
    describe,
    load_checked,
    survey,
)
from transferkit.features.engine import Engine, make_engine, module_sha256
from transferkit.io.atomic import atomic_write_text, atomic_writer, locked, remove_stale_temporaries
from transferkit.model import Backbone
from transferkit.runtime import Runtime

__all__ = ["cache_key", "extract_features", "extract_workers"]

log = logging.getLogger(__name__)

_COPY_ROWS = 4096  # rows copied from the old cache at a time (memory stays bounded)


def cache_key(backbone: Backbone, views: int, augmentation: Augmentation, seed: int) -> dict[str, Any]:
    key = {
        "backbone": backbone.spec.name,
        "base_sha256": module_sha256(backbone.module),
        "layer": backbone.layer or "deep",
        "preprocessing": backbone.preprocessing.to_json(),
        "views": views,
        "augmentation": {**augmentation.__dict__, "seed": seed} if views else None,
    }
    return json.loads(json.dumps(key))  # as it reads back from the manifest (tuples become lists)


def extract_features(files: LabelledFiles | str | os.PathLike[str], backbone: Backbone,
                     folder: str | os.PathLike[str], views: int = 0, augmentation: Augmentation = Augmentation(),
                     seed: int = 0, runtime: Runtime | None = None, engine: str = "auto",
                     workers: int | None = None) -> FeatureSet:
    """Bring the cache in `folder` up to date with the labelled images `files` (a `LabelledFiles`, a class-per-
    folder directory or a CSV manifest) and return it (see the module docstring). `workers` decode beside the
    engine (default: a quarter of the cores, see `extract_workers`). Processes that share `folder` take turns."""
    files = files if isinstance(files, LabelledFiles) else load_labelled(files)
    folder = Path(folder)
    with locked(folder):
        return _update(files, backbone, folder, views, augmentation, seed, runtime, engine, workers)


def _update(files: LabelledFiles, backbone: Backbone, folder: Path, views: int, augmentation: Augmentation,
            seed: int, runtime: Runtime | None, engine: str, workers: int | None) -> FeatureSet:
    started = time.perf_counter()
    remove_stale_temporaries(folder)  # left by a run that was killed while writing
    key = cache_key(backbone, views, augmentation, seed)
    old, why = load_checked(folder)
    if old is not None and old.key != key:
        why = f"it was made with other settings ({_key_change(old.key, key)})"
        old = None
    if why and (folder / MANIFEST).exists():
        log.info(f"rebuilding the feature cache in {folder}: {why}")

    found = survey(files, old)
    if found.unchanged:
        assert old is not None
        return replace(old, stats=ExtractStats(reused=len(found.rows), seconds=time.perf_counter() - started))
    hashes, repeats, rows, todo, old_rows = found.hashes, found.repeats, list(found.rows), found.todo, found.old_rows
    unreadable = dict(found.unreadable)

    runner = make_engine(backbone.module, backbone.preprocessing, runtime or Runtime.detect(), engine) if todo else None
    dim = backbone.feature_dim
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
            log.info(f"extracting features of {len(todo)} image(s) with {runner.note}")
            rate, failed = _compute(runner, [files.samples[rows[r]].path for r in todo], todo, backbone, feats,
                                    view_arr,
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
                "arrays": {name: describe(tmp) for name, tmp in
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
    fresh, why = load_checked(folder, verify=False)  # `describe` hashed the arrays a moment ago
    if fresh is None:
        raise RuntimeError(f"the feature cache just written to {folder} fails its own check: {why}")
    removed = len(old_rows) - len({hashes[i] for i in rows if hashes[i] in old_rows}) if old is not None else 0
    return replace(fresh, stats=ExtractStats(
        reused=len(rows) - len(todo) + len(failed), computed=len(todo) - len(failed), removed=removed,
        engine=runner.note if runner else "none (all cached)", seconds=time.perf_counter() - started,
        images_per_second=rate))


def _key_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} changed" for k in changed) or "format changed"


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

    def __init__(self, paths: Sequence[Path], rows: Sequence[int], hashes: Sequence[str], p: Preprocessing,
                 views: int, augmentation: Augmentation, seed: int) -> None:
        self.paths, self.rows, self.hashes = list(paths), list(rows), list(hashes)
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


def _compute(runner: Engine, paths: list[Path], rows: list[int], backbone: Backbone, feats: np.ndarray,
             views: np.ndarray | None, augmentation: Augmentation, hashes: list[str], seed: int,
             workers: int | None) -> tuple[float, dict[int, str]]:
    """Features of `paths` into `feats[rows]` (and views); decoding overlaps the engine in worker processes.
    Returns images per second and the rows whose file failed to decode, with the reason."""
    k = views.shape[1] if views is not None else 0
    workers = pass_workers(len(paths), extract_workers() if workers is None else workers)
    per_batch = max(1, runner.batch_size // (k + 1))
    dataset = _Views(paths, rows, hashes, backbone.preprocessing, k, augmentation, seed)
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
