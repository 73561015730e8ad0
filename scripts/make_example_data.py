"""Write the bundled demo data set: a small, seeded, stratified sample of Fashion-MNIST as PNG class folders.

Source: Debian's `dataset-fashion-mnist` package (`apt-get install dataset-fashion-mnist`), which ships the
official IDX files of Zalando Research's Fashion-MNIST (MIT licence). Re-running this script with the same
arguments writes byte-identical files.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))  # the Fashion-MNIST reader
from fashion_mnist import CLASSES, INSTALL_HINT, SOURCE, load_split  # noqa: E402


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
        raise SystemExit(f"{SOURCE} not found: {INSTALL_HINT}")
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        shutil.rmtree(args.out / split, ignore_errors=True)
        write_split(*load_split(split), per_class, args.out / split, args.seed)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
