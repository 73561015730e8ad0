"""Shared by the speed benchmarks: Fashion-MNIST images upscaled and written as JPEG class folders.

Real, varied pixels from Debian's `dataset-fashion-mnist` package, upscaled (bicubic) to `size` px so decoding
and resizing cost what they cost for ordinary photos of that size. Written once per (split, size) under `root`
and reused: a rerun writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fashion_mnist import CLASSES, load_split
from PIL import Image


def write_jpegs(root: Path, count: int, size: int = 256, split: str = "train", offset: int = 0) -> list[Path]:
    """Images `offset` .. `offset + count` of the split as `root/<class>/<index>.jpg` (quality 90)."""
    images, labels = load_split(split)
    if offset + count > len(images):
        raise SystemExit(f"the {split} split has {len(images)} images, {offset + count} were asked for")
    paths = []
    for index in range(offset, offset + count):
        path = root / CLASSES[int(labels[index])] / f"{index:05d}.jpg"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(np.asarray(images[index]), mode="L").convert("RGB")
            tmp = path.with_suffix(".tmp")
            image.resize((size, size), Image.Resampling.BICUBIC).save(tmp, format="JPEG", quality=90)
            tmp.replace(path)
        paths.append(path)
    return paths
