"""Feature extraction shared out between the processes of a torchrun job.

Rank 0 plans the update alone (it hashes the files and compares them with the old cache) and broadcasts the
`Work`; then every rank takes every `world_size`-th image of each chunk of `CHUNK` images, and the chunk's
features are collected on rank 0, which writes them into its cache arrays. Only one chunk of results is in
flight at a time, so memory stays bounded however large the data set is, and the cache is written once, by
rank 0, with the same rows in the same order as a single process writes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import transferkit.distributed as distributed
from transferkit.data.preprocess import Augmentation, Preprocessing
from transferkit.features.compute import Work, compute_rows
from transferkit.features.engine import Engine
from transferkit.runtime import Runtime

__all__ = ["CHUNK", "compute_shared"]

CHUNK = 1024  # images computed by all ranks together between two collections on rank 0


def compute_shared(runner: Engine, work: Work, dim: int, view_count: int, preprocessing: Preprocessing,
                   augmentation: Augmentation, seed: int, feats: np.ndarray | None, views: np.ndarray | None,
                   workers: int, runtime: Runtime, progress: Callable[[int], object]) -> dict[int, str]:
    """Run on every rank: this rank's share of `work`, chunk by chunk. On rank 0, whose `feats` and `views` are
    the cache arrays (None on the others), the features land in `feats[work.rows]`, and the result is the cache
    rows whose file failed to decode, with the reason, as `compute_rows` reports them in one process (the other
    ranks get {}). `progress` hears, on rank 0, how many images each chunk finished."""
    failed: dict[int, str] = {}
    for start in range(0, len(work.paths), CHUNK):
        chunk = range(start, min(len(work.paths), start + CHUNK))
        mine = distributed.shard(chunk, runtime)
        part_feats = np.zeros((len(mine), dim), dtype=np.float32)
        part_views = np.zeros((len(mine), view_count, dim), dtype=np.float32) if view_count else None
        bad = compute_rows(runner, [work.paths[i] for i in mine], range(len(mine)), [work.hashes[i] for i in mine],
                           preprocessing, augmentation, seed, part_feats, part_views, workers, runtime.pin_memory,
                           lambda done: None)
        parts = distributed.collect((mine, part_feats, part_views, bad))
        if parts is None:  # not rank 0: the chunk is on its way there
            continue
        assert feats is not None
        for indices, their_feats, their_views, their_bad in parts:
            good = [j for j in range(len(indices)) if j not in their_bad]
            rows = np.asarray([work.rows[indices[j]] for j in good], dtype=np.int64)
            feats[rows] = their_feats[good]
            if views is not None and their_views is not None:
                views[rows] = their_views[good]
            failed.update({work.rows[indices[j]]: reason for j, reason in their_bad.items()})
        progress(len(chunk))
    return failed
