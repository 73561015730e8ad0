"""In-memory images → the file pipeline (`transferkit.data.memory`): real photo crops and Fashion-MNIST arrays,
PIL images and paths; class names from string and integer labels; one-line errors for what is not an image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import fashion_arrays, photo_arrays, write_photo_dataset
from PIL import Image

from transferkit.data.memory import SOURCE, image_files, labelled_images
from transferkit.data.split import load_images
from transferkit.errors import InputError, UserError
from transferkit.features.engine import cache_dir


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_fashion_arrays_become_lossless_png_files_with_the_integers_as_class_names(tmp_path: Path) -> None:
    X, y = fashion_arrays((9, 0, 5), per_class=3)  # (9, 28, 28) uint8, labels 9, 0, 5 as Keras gives them
    data = labelled_images(X, y, tmp_path)
    assert data.files.classes == ("0", "5", "9")  # numeric order, so "10" would come after "9"
    assert data.classes.tolist() == [0, 5, 9] and data.classes.dtype == y.dtype
    assert data.files.source == SOURCE
    assert [data.classes[s.label] for s in data.files.samples] == y.tolist()  # in the order of X
    for image, sample in zip(X, data.files.samples):
        assert np.array_equal(pixels(sample.path), image)
        assert sample.path.parent.parent == tmp_path


def test_photo_crops_keep_their_colours_and_string_labels_sort(tmp_path: Path) -> None:
    X, y = photo_arrays(per_class=2)
    data = labelled_images(X, list(y), tmp_path)
    assert data.files.classes == ("astronaut", "cat", "coffee") and data.classes.tolist() == list(data.files.classes)
    assert all(np.array_equal(pixels(s.path), x) for s, x in zip(data.files.samples, X))


def test_one_picture_is_one_file_written_once_in_the_shared_cache() -> None:
    X, y = photo_arrays(per_class=2, seed=5)
    first = image_files(X)
    assert all(p.is_relative_to(cache_dir() / "images") for p in first)
    assert len(set(first)) == len(X) and all(p.name.endswith(".png") for p in first)
    stamps = [os.stat(p).st_mtime_ns for p in first]
    again = image_files(np.concatenate([X, X[:1]]))  # the same pictures: no new file, none rewritten
    assert again[:-1] == first and again[-1] == first[0]
    assert [os.stat(p).st_mtime_ns for p in first] == stamps


def test_pil_images_arrays_of_any_size_and_paths_mix_in_one_list(tmp_path: Path) -> None:
    folder = write_photo_dataset(tmp_path / "photos", per_class=1)
    path = sorted(folder.rglob("*.jpg"))[0]
    X, _ = photo_arrays(per_class=1, size=40)
    rgba = Image.fromarray(X[1]).convert("RGBA")
    cmyk = Image.fromarray(X[2]).convert("CMYK")  # not writable as PNG: stored as RGB
    grey_column = X[0][..., :1]  # (H, W, 1) is grey
    items = [str(path), path, rgba, cmyk, X[0], X[1][:20, :30], grey_column]
    files = image_files(items, tmp_path / "cache")
    assert files[:2] == [path, path]  # paths are used as they are
    assert pixels(files[2]).shape == (40, 40, 4) and pixels(files[3]).shape == (40, 40, 3)
    assert pixels(files[5]).shape == (20, 30, 3) and pixels(files[6]).shape == (40, 40)
    assert image_files(np.array([str(path)]))[0] == path  # a 1-D array of paths, as sklearn may index a list


def test_the_pipeline_reads_them_like_a_folder_and_finds_the_same_picture_twice(tmp_path: Path) -> None:
    X, y = photo_arrays(per_class=4)
    X, y = np.concatenate([X, X[:1]]), np.concatenate([y, ["coffee"]])  # one picture in two classes: a leak
    data = load_images(labelled_images(X, y, tmp_path).files, val_split=0.25, seed=0, workers=0)
    assert data.classes == ("astronaut", "cat", "coffee")
    assert len(data.train.samples) + len(data.val.samples) == 12
    assert [reason for _, reason in data.skipped] == ["listed twice (classes cat and coffee)"]


GREY = np.zeros((4, 8, 8), np.uint8)
BAD_X = [
    (GREY.astype(np.float32) / 255, r"dtype float32: .*\[0, 1\]: convert with \(X \* 255\)\.round\(\)\.astype"),
    (GREY.astype(np.int64) + 7, r"dtype int64: .*convert with X\.astype\(np\.uint8\)"),
    (GREY.astype(np.uint16) + 1000, r"16-bit images convert with \(X // 257\)"),
    (GREY.astype(np.float64) - 3, r"values run from -3 to -3: scale them to 0\.\.255"),
    (np.zeros((4, 8, 8, 4), np.uint8), r"4 channels .*X\[\.\.\., :3\]"),
    (np.zeros((4, 3, 8, 8), np.uint8), r"channels first .*X\.transpose\(0, 2, 3, 1\)"),
    (np.zeros((30, 3)), r"shape \(30, 3\): expected \(N, H, W\) grey or \(N, H, W, 3\) RGB"),
    (np.zeros((4,), np.uint8), r"shape \(4,\)"),
    (GREY[:0], "X holds no images"),
    ("photo.jpg", r"single str .*pass a list of paths"),
    ({"a": 1}, "X is of type dict: expected uint8 images"),
    ([GREY[0], 3, GREY[0], GREY[0]], "X\\[1\\] is of type int"),
    ([GREY[0], GREY[1], GREY[2], np.full((8, 8), 200.0)], r"X\[3\] has dtype float64: .*X\[3\]\.round\(\)"),
    ([GREY[0], GREY[1], np.zeros((3, 8, 8), np.uint8), GREY[0]], r"X\[2\] .*X\[2\]\.transpose\(1, 2, 0\)"),
]


@pytest.mark.parametrize(("X", "match"), BAD_X, ids=[m[:24] for _, m in BAD_X])
def test_what_is_not_an_image_is_refused_in_one_line_with_the_fix(X: object, match: str, tmp_path: Path) -> None:
    n = len(X) if isinstance(X, (list, np.ndarray)) and len(X) else 4
    with pytest.raises(InputError, match=match) as caught:  # labels are checked first (cheap): make them fine
        labelled_images(X, ["a", "b"] * (n // 2), tmp_path)  # type: ignore[arg-type]
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


BAD_Y = [
    (None, "requires y to be passed, but the target y is None"),
    ("abab", "single str"),
    (["a", "a", "b"], "X has 4 images but y has 3 labels"),
    (["a", 1, "b", 2], "labels must all be str or all integers"),
    ([0.5, 1.5, 0.5, 1.5], "Unknown label type: y holds continuous values"),
    ([[1, 0], [0, 1], [1, 0], [0, 1]], r"y\.argmax\(axis=1\)"),
    (["a", "a", "a", "a"], r"only one class \('a'\): a classifier needs at least two"),
    ([1, 2, 2, 2], r"too few images for class '1' \(1\)"),
]


@pytest.mark.parametrize(("y", "match"), BAD_Y, ids=[m[:24] for _, m in BAD_Y])
def test_labels_that_cannot_name_classes_are_refused(y: object, match: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=match):
        labelled_images(GREY, y, tmp_path)  # type: ignore[arg-type]


def test_labels_as_columns_bools_and_whole_floats_are_accepted(tmp_path: Path) -> None:
    as_column = labelled_images(GREY, np.array([[3], [1], [3], [1]]), tmp_path)  # Keras' CIFAR-10 shape
    assert as_column.files.classes == ("1", "3") and as_column.files.labels() == [1, 0, 1, 0]
    floats = labelled_images(GREY, [2.0, 10.0, 2.0, 10.0], tmp_path)
    assert floats.files.classes == ("2", "10") and floats.classes.tolist() == [2.0, 10.0]
    assert labelled_images(GREY, [True, False, True, False], tmp_path).files.classes == ("False", "True")
