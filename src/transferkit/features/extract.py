"""Feature extraction: run the frozen base once over a data set and keep the pooled features on disk.

Running again reuses every row whose file content (sha256) is unchanged, even if it moved or was relabelled,
computes only new or changed files and drops deleted ones. Features stream from the engine straight into a
memory-mapped file, so memory stays flat however large the data set is. Decoding runs in worker processes
beside the engine (see `engine.py`, `compute.py`).

Under torchrun (a process group started by `transferkit.distributed.start`) the update is one collective step:
rank 0 plans it and writes the cache, every rank computes a share of the images (`sharded.py`), and every rank
returns the same cache.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import transferkit.distributed as distributed
from transferkit._version import __version__
from transferkit.data.files import LabelledFiles, load_labelled
from transferkit.data.preprocess import Augmentation
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
from transferkit.features.compute import Work, compute_rows, extract_workers
from transferkit.features.engine import Engine, make_engine, module_sha256
from transferkit.features.sharded import compute_shared
from transferkit.io.atomic import atomic_write_text, atomic_writer, locked, remove_stale_temporaries
from transferkit.model import Backbone
from transferkit.runtime import Runtime

__all__ = ["cache_key", "extract_features", "extract_workers"]  # extract_workers: see compute.py

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


@dataclass(frozen=True)
class _Job:
    """What to compute, and how: the same on every rank of a torchrun job."""

    backbone: Backbone
    views: int
    augmentation: Augmentation
    seed: int
    runtime: Runtime
    engine: str
    workers: int


def extract_features(files: LabelledFiles | str | os.PathLike[str], backbone: Backbone,
                     folder: str | os.PathLike[str], views: int = 0, augmentation: Augmentation = Augmentation(),
                     seed: int = 0, runtime: Runtime | None = None, engine: str = "auto",
                     workers: int | None = None) -> FeatureSet:
    """Bring the cache in `folder` up to date with the labelled images `files` (a `LabelledFiles`, a class-per-
    folder directory or a CSV manifest) and return it (see the module docstring). `workers` decode beside the
    engine (default: a quarter of the cores, see `extract_workers`). Processes that share `folder` take turns.
    Under torchrun every rank must call this with the same arguments (only rank 0 reads `files`' contents); the
    cache must be on a file system every rank sees, since each returns it."""
    files = files if isinstance(files, LabelledFiles) else load_labelled(files)
    folder = Path(folder)
    job = _Job(backbone, views, augmentation, seed, runtime or Runtime.detect(), engine,
               extract_workers() if workers is None else workers)
    if not distributed.active():
        with locked(folder):
            return _update(files, folder, job)
    if not job.runtime.is_main:
        return _follow(folder, job)
    with locked(folder):
        cache = _update(files, folder, job)
    distributed.broadcast(cache.stats)  # the cache is written: the other ranks may read it
    return cache


def _follow(folder: Path, job: _Job) -> FeatureSet:
    """A rank other than 0: compute the share of rank 0's plan, then read the cache rank 0 wrote."""
    work: Work | None = distributed.broadcast(None)
    if work is not None:
        runner = make_engine(job.backbone.module, job.backbone.preprocessing, job.runtime, work.engine)
        _compute(runner, work, job, None, None)
    stats: ExtractStats = distributed.broadcast(None)
    cache, why = load_checked(folder, verify=False)  # rank 0 hashed it a moment ago
    if cache is None:
        raise RuntimeError(f"rank {job.runtime.rank} cannot read the feature cache rank 0 wrote to {folder} ({why}); "
                           f"on several machines the cache folder must be on a file system they share")
    return replace(cache, stats=stats)


def _update(files: LabelledFiles, folder: Path, job: _Job) -> FeatureSet:
    """Plan, compute (with the other ranks under torchrun) and write the cache: the only writer."""
    started = time.perf_counter()
    backbone, views = job.backbone, job.views
    remove_stale_temporaries(folder)  # left by a run that was killed while writing
    key = cache_key(backbone, views, job.augmentation, job.seed)
    old, why = load_checked(folder)
    if old is not None and old.key != key:
        why = f"it was made with other settings ({_key_change(old.key, key)})"
        old = None
    if why and (folder / MANIFEST).exists():
        log.info(f"rebuilding the feature cache in {folder}: {why}")

    found = survey(files, old)
    hashes, repeats, rows, todo, old_rows = found.hashes, found.repeats, list(found.rows), found.todo, found.old_rows
    runner = make_engine(backbone.module, backbone.preprocessing, job.runtime, job.engine) if todo else None
    work = Work(tuple(files.samples[rows[r]].path for r in todo), tuple(todo),
                tuple(str(hashes[rows[r]]) for r in todo),
                "torch" if runner.name == "pytorch" else job.engine) if runner is not None else None
    distributed.broadcast(work)  # the plan every rank follows (nothing in one process)
    if found.unchanged:
        assert old is not None
        return replace(old, stats=ExtractStats(reused=len(found.rows), seconds=time.perf_counter() - started))
    unreadable = dict(found.unreadable)

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
        if work is not None:
            assert runner is not None
            log.info(f"extracting features of {len(todo)} image(s) with {runner.note}"
                     + (f" on {job.runtime.world_size} processes" if distributed.active() else ""))
            rate, failed = _compute(runner, work, job, feats, view_arr)
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


def _compute(runner: Engine, work: Work, job: _Job, feats: np.ndarray | None,
             views: np.ndarray | None) -> tuple[float, dict[int, str]]:
    """The features of `work` into `feats` and `views` (rank 0's or a single process's cache arrays; None on the
    other ranks, which only compute their share). Returns images per second and the cache rows whose file failed
    to decode, with the reason."""
    p, rt = job.backbone.preprocessing, job.runtime
    started = time.perf_counter()
    with tqdm(total=len(work.paths), desc="extracting features", unit="img",
              disable=None if rt.is_main else True) as progress:
        if distributed.active():
            failed = compute_shared(runner, work, job.backbone.feature_dim, job.views, p, job.augmentation, job.seed,
                                    feats, views, job.workers, rt, progress.update)
        else:
            assert feats is not None
            failed = compute_rows(runner, work.paths, work.rows, work.hashes, p, job.augmentation, job.seed, feats,
                                  views, job.workers, rt.pin_memory, progress.update)
    return len(work.paths) / max(time.perf_counter() - started, 1e-9), failed
