"""Running the engine over image files: the rows a cache update must compute (`Work`), decoded in worker
processes beside the engine and written into arrays, in one process (`compute_rows`) or shared out between the
processes of a torchrun job (`features.sharded`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from transferkit.data.images import BadImage, load_image
from transferkit.data.loaders import pass_workers
from transferkit.data.preprocess import Augmentation, Preprocessing
from transferkit.data.transforms import eval_transform, train_transform
from transferkit.features.engine import Engine

__all__ = ["Work", "compute_rows", "extract_workers"]


@dataclass(frozen=True)
class Work:
    """The images a cache update computes, as rank 0 planned it and broadcast it to every rank: `rows[i]` is the
    cache row of `paths[i]`, whose content hash is `hashes[i]`; `engine` is the engine every rank uses (rank 0's
    choice, so that all of them compute the same features)."""

    paths: tuple[Path, ...]
    rows: tuple[int, ...]
    hashes: tuple[str, ...]
    engine: str


def extract_workers() -> int:
    """Decoding processes beside the engine, which uses every core: decoding, resizing and cropping cost about a
    quarter of what the engine spends per image, so a quarter of the cores (at least one) keeps it fed without
    taking cores from it (on 2 cores, 1 worker measured faster than 2: benchmarks/RESULTS.md). Under torchrun
    the processes on one machine share its cores (`LOCAL_WORLD_SIZE`)."""
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, (os.cpu_count() or 1) // 4 // local_processes)


class _Views(Dataset):
    """Row r's image as the eval crop followed by `views` augmented crops. Each augmented crop is seeded from the
    file's content hash, so a cached view is the same whichever run, worker or process computed it."""

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


def compute_rows(runner: Engine, paths: Sequence[Path], rows: Sequence[int], hashes: Sequence[str],
                 preprocessing: Preprocessing, augmentation: Augmentation, seed: int, feats: np.ndarray,
                 views: np.ndarray | None, workers: int, pin_memory: bool,
                 progress: Callable[[int], object]) -> dict[int, str]:
    """Features of `paths` into `feats[rows]` (and their augmented views into `views[rows]`); decoding overlaps
    the engine in `workers` processes, into pinned memory on a GPU (the engine copies without blocking).
    `progress` hears how many images each batch finished. Returns the rows whose file failed to decode, with
    the reason."""
    k = views.shape[1] if views is not None else 0
    workers = pass_workers(len(paths), workers)
    dataset = _Views(paths, rows, hashes, preprocessing, k, augmentation, seed)
    loader = DataLoader(dataset, batch_size=max(1, runner.batch_size // (k + 1)), num_workers=workers,
                        collate_fn=_collate, prefetch_factor=4 if workers else None, persistent_workers=False,
                        pin_memory=pin_memory)
    failed: dict[int, str] = {}
    for images, batch_rows, bad in loader:
        failed.update(bad)
        if images is not None:
            n, crops = images.shape[:2]
            out = runner(images.reshape(n * crops, *images.shape[2:])).reshape(n, crops, -1)
            feats[batch_rows] = out[:, 0]
            if views is not None:
                views[batch_rows] = out[:, 1:]
        progress(len(batch_rows) + len(bad))
    return failed
