"""Write the bundled demo data set: a small, seeded, stratified sample of Fashion-MNIST as PNG class folders.

Source: Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`), which ships the
official IDX files of Zalando Research's Fashion-MNIST (MIT licence). Re-running this script with the same
arguments writes byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (the MNIST container format): magic, dims, then raw unsigned bytes."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_split(images: np.ndarray, labels: np.ndarray, per_class: int, out: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        chosen = np.sort(rng.choice(np.flatnonzero(labels == label), size=per_class, replace=False))
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in chosen:
            Image.fromarray(images[index], mode="L").save(folder / f"{index:05d}.png", optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_out = Path(__file__).resolve().parents[1] / "src" / "transferkit" / "example_data" / "fashion-mnist"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--train-per-class", type=int, default=40)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not SOURCE.is_dir():
        raise SystemExit(f"{SOURCE} not found: install it with `apt-get install dataset-fashion-mnist`")
    for split in ("train", "test"):
        shutil.rmtree(args.out / split, ignore_errors=True)
    write_split(read_idx(SOURCE / "train-images-idx3-ubyte.gz"), read_idx(SOURCE / "train-labels-idx1-ubyte.gz"),
                args.train_per_class, args.out / "train", args.seed)
    write_split(read_idx(SOURCE / "t10k-images-idx3-ubyte.gz"), read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz"),
                args.test_per_class, args.out / "test", args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
