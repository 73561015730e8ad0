"""The seeded stratified train/validation split, and `load_images`: a folder or manifest to split, checked data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferkit.data.files import LabelledFiles, check_trainable, load_labelled
from transferkit.data.scan import scan_images
from transferkit.errors import UserError
from transferkit.runtime import default_workers

__all__ = ["ImageData", "load_images", "stratified_split"]


@dataclass(frozen=True)
class ImageData:
    """Labelled image files split for training: `classes` is the shared class order of both splits; `skipped`
    lists the files left out, with the reason."""

    classes: tuple[str, ...]
    train: LabelledFiles
    val: LabelledFiles
    skipped: tuple[tuple[Path, str], ...] = ()


def load_images(path: str | os.PathLike[str] | LabelledFiles, val_split: float = 0.2, seed: int = 0,
                workers: int | None = None, min_size: int | None = None) -> ImageData:
    """Index a class-per-folder directory or CSV manifest (or take samples indexed already), decode every file
    once (bad ones are set aside), and make a seeded stratified train/validation split."""
    files = path if isinstance(path, LabelledFiles) else load_labelled(path)
    check_trainable(files)
    good, bad = scan_images(files, default_workers() if workers is None else workers, min_size)
    check_trainable(good)
    train_idx, val_idx = stratified_split(good.labels(), val_split, seed)
    return ImageData(good.classes, good.subset(train_idx), good.subset(val_idx), tuple(bad))


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (train, val) keeping each class's proportion; same seed, same split.

    Every class with at least two samples lands in both sides, so validation accuracy covers all classes.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1 (exclusive), got {val_fraction} — try 0.2")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    train: list[int] = []
    val: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        shuffled = [members[i] for i in rng.permutation(len(members))]
        n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        val.extend(shuffled[:n_val])
        train.extend(shuffled[n_val:])
    return sorted(train), sorted(val)
