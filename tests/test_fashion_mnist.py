"""The Fashion-MNIST helpers behind the demo data and the accuracy benchmark: IDX reading, the seeded nested
per-class sampler, and the PNG cache."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from fashion_mnist import CLASSES, load_split, png_path, read_idx, sample_per_class, write_pngs
from PIL import Image

from transferkit.errors import UserError


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


def test_read_idx_round_trips_images_and_labels(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    got_images, got_labels = load_split("test", tmp_path)
    assert np.array_equal(got_images, images)
    assert np.array_equal(got_labels, labels)


def test_read_idx_refuses_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"PK\x03\x04 not idx"))
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(bad)


def test_missing_package_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="apt-get install -y dataset-fashion-mnist"):
        load_split("train", tmp_path)


def test_sampler_is_stratified_seeded_and_nested() -> None:
    labels = np.repeat(np.arange(10), 50)[np.random.default_rng(1).permutation(500)]
    small, large = sample_per_class(labels, 3, seed=7), sample_per_class(labels, 20, seed=7)
    assert np.bincount(labels[small], minlength=10).tolist() == [3] * 10
    assert np.bincount(labels[large], minlength=10).tolist() == [20] * 10
    assert set(small) <= set(large)  # more data adds images, never swaps them
    assert np.array_equal(small, sample_per_class(labels, 3, seed=7))
    assert not np.array_equal(small, sample_per_class(labels, 3, seed=8))
    assert np.array_equal(sample_per_class(labels, None, seed=7), np.arange(500))
    with pytest.raises(UserError, match="only 50"):
        sample_per_class(labels, 51, seed=0)


def test_write_pngs_makes_class_folders_once(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 0, 2])
    chosen = np.array([0, 1, 3])
    paths = write_pngs(images, labels, chosen, tmp_path)
    assert paths == [png_path(tmp_path, int(labels[i]), int(i)) for i in chosen]
    assert paths[1] == tmp_path / CLASSES[9] / "00001.png"
    assert np.array_equal(np.asarray(Image.open(paths[2])), images[3])
    before = [p.stat().st_mtime_ns for p in paths]
    paths[0].write_bytes(b"sentinel")  # a cached file is trusted, not rewritten
    write_pngs(images, labels, chosen, tmp_path)
    assert paths[0].read_bytes() == b"sentinel"
    assert [p.stat().st_mtime_ns for p in paths[1:]] == before[1:]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["00000.png", "00001.png", "00003.png"]
