"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package: the one reader of its IDX files, a seeded
per-class sampler, and PNG class folders written on demand.

Shared by the demo-data script (scripts/make_example_data.py) and the accuracy benchmark
(benchmarks/quality.py), so both read the same official files the same way. The package ships Zalando
Research's official 60k/10k split (MIT licence) as gzipped IDX files.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from transferkit.errors import UserError

__all__ = ["CLASSES", "INSTALL_HINT", "SOURCE", "load_split", "png_path", "read_idx", "sample_per_class", "write_pngs"]

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")
_FILES = {"train": "train", "test": "t10k"}
INSTALL_HINT = "install it with `apt-get update && apt-get install -y dataset-fashion-mnist`"


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzipped IDX file (the MNIST container format): magic, dims, then raw unsigned bytes."""
    data = gzip.decompress(path.read_bytes())
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes — reinstall dataset-fashion-mnist")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str, source: Path = SOURCE) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28, labels N) of the official "train" (60k) or "test" (10k) split."""
    prefix = _FILES[split]
    images, labels = source / f"{prefix}-images-idx3-ubyte.gz", source / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (images, labels):
        if not path.is_file():
            raise UserError(f"Fashion-MNIST file {path} not found: {INSTALL_HINT}")
    return read_idx(images), read_idx(labels)


def sample_per_class(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of `per_class` items of every class (None: all), chosen by a seeded shuffle per class.

    Samples are nested: the 10-per-class sample of a seed is part of its 100-per-class sample, so a curve over
    data sizes measures the effect of more data, not of different images."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if per_class is not None and per_class > len(members):
            raise UserError(f"asked for {per_class} images of class {label}, but it has only {len(members)}")
        chosen.append(members if per_class is None else members[:per_class])
    return np.sort(np.concatenate(chosen))


def png_path(root: Path, label: int, index: int) -> Path:
    """Where image `index` of a split lives: `root/<class name>/<index>.png`."""
    return root / CLASSES[label] / f"{index:05d}.png"


def write_pngs(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, root: Path) -> list[Path]:
    """Write the chosen images as PNG class folders under `root`, skipping files already there (a cache: a
    rerun writes nothing). Each file is written under a temporary name and renamed, so an interrupted run never
    leaves a truncated PNG behind. Returns the paths in `indices` order."""
    paths: list[Path] = []
    for index in indices.tolist():
        path = png_path(root, int(labels[index]), index)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            Image.fromarray(images[index], mode="L").save(tmp, format="PNG", optimize=True)
            os.replace(tmp, path)
        paths.append(path)
    return paths
