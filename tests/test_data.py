"""Contracts for the data pipeline: indexing, manifests, validation, stratified splits, scanning, Dataset.

Every image is a real tiny file written with Pillow into `tmp_path`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from transferkit.data.files import LabelledFiles, Sample, check_trainable, index_folder, load_labelled, read_manifest
from transferkit.data.loaders import ImageDataset, collate_skip_bad
from transferkit.data.scan import scan_images
from transferkit.data.split import stratified_split
from transferkit.errors import UserError


def _png(path: Path, colour: tuple[int, int, int] = (200, 10, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- index_folder


def test_class_order_is_plain_sorted(tmp_path: Path) -> None:
    names = ["b", "a", "C", "10", "2"]
    for name in names:
        _png(tmp_path / name / "x.png")
    files = index_folder(tmp_path)
    assert files.classes == tuple(sorted(names)) == ("10", "2", "C", "a", "b")
    assert [files.classes[s.label] for s in files.samples] == list(files.classes)
    assert [s.path.parent.name for s in files.samples] == list(files.classes)


def test_nested_files_found_and_ordered_by_class_then_path(tmp_path: Path) -> None:
    _png(tmp_path / "dogs" / "z.png")
    _png(tmp_path / "cats" / "b.png")
    _png(tmp_path / "cats" / "sub" / "deeper" / "a.JPG")
    _png(tmp_path / "cats" / "a.png")
    files = index_folder(tmp_path)
    rel = [s.path.relative_to(tmp_path).as_posix() for s in files.samples]
    assert rel == ["cats/a.png", "cats/b.png", "cats/sub/deeper/a.JPG", "dogs/z.png"]
    assert files.labels() == [0, 0, 0, 1]
    assert files.counts() == {"cats": 3, "dogs": 1}
    assert files.source == tmp_path


def test_hidden_clutter_and_non_images_are_ignored(tmp_path: Path) -> None:
    keep = _png(tmp_path / "cats" / "cat.png")
    _png(tmp_path / "cats" / ".hidden.png")
    _png(tmp_path / "cats" / ".thumbnails" / "t.png")
    _png(tmp_path / ".git" / "objects.png")  # a hidden folder is not a class
    (tmp_path / "cats" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "cats" / "Thumbs.db").write_bytes(b"\0\0")
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    (tmp_path / "cats" / "raw.psd").write_bytes(b"8BPS")
    _png(tmp_path / "stray.png")  # a file at the top level belongs to no class
    _png(tmp_path / "dogs" / "dog.png")
    files = index_folder(tmp_path)
    assert files.classes == ("cats", "dogs")
    assert [s.path for s in files.samples][0] == keep
    assert len(files.samples) == 2


def test_empty_class_is_left_out_and_reported(tmp_path: Path) -> None:
    _png(tmp_path / "cats" / "1.png")
    _png(tmp_path / "dogs" / "1.png")
    (tmp_path / "birds").mkdir()
    (tmp_path / "fish").mkdir()
    (tmp_path / "fish" / "readme.txt").write_text("no images here")
    files = index_folder(tmp_path)
    assert files.classes == ("cats", "dogs")
    assert files.empty_classes == ("birds", "fish")
    assert files.labels() == [0, 1]


def test_directory_symlink_loop_is_not_followed(tmp_path: Path) -> None:
    _png(tmp_path / "cats" / "1.png")
    _png(tmp_path / "dogs" / "1.png")
    (tmp_path / "cats" / "loop").symlink_to(tmp_path / "cats", target_is_directory=True)
    files = index_folder(tmp_path)
    assert len(files.samples) == 2


def test_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for loader in (index_folder, load_labelled):
        with pytest.raises(UserError, match="data folder not found") as caught:
            loader(missing)
        assert str(missing) in str(caught.value)
        assert "\n" not in str(caught.value)


def test_folder_without_images_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("x")
    _png(tmp_path / "loose.png")
    with pytest.raises(UserError, match="no images found in") as caught:
        load_labelled(tmp_path)
    assert f"{tmp_path}/cats/1.jpg" in str(caught.value)


def test_file_that_is_not_csv_is_a_user_error(tmp_path: Path) -> None:
    path = _png(tmp_path / "photo.png")
    with pytest.raises(UserError) as caught:
        load_labelled(path)
    assert str(path) in str(caught.value)
    with pytest.raises(UserError):
        index_folder(path)


# ---------------------------------------------------------------- manifests


def test_manifest_resolves_relative_paths_and_sorts_classes(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    manifest = _csv(
        tmp_path / "labels.csv",
        "id,path,label,notes\n1,img/b.png,dog,x\n\n2,img/a.png,cat,y\n3,img/missing.png,dog,z\n",
    )
    files = load_labelled(manifest)
    assert files.classes == ("cat", "dog")
    assert files.source == manifest
    assert [(s.path, s.label) for s in files.samples] == [
        (tmp_path / "img" / "a.png", 0),
        (tmp_path / "img" / "b.png", 1),
        (tmp_path / "img" / "missing.png", 1),  # not fatal here: scan_images reports it
    ]


def test_manifest_accepts_absolute_path_inside_its_folder(tmp_path: Path) -> None:
    inside = _png(tmp_path / "a.png")
    files = read_manifest(_csv(tmp_path / "m.csv", f"path,label\n{inside},cat\nb.png,dog\n"))
    assert files.samples[0].path == inside


@pytest.mark.parametrize("bad_path", ["../evil.png", "img/../../evil.png", "/etc/passwd"])
def test_manifest_path_escaping_its_folder_is_rejected(tmp_path: Path, bad_path: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    manifest = _csv(folder / "m.csv", f"path,label\nok.png,cat\n{bad_path},dog\n")
    with pytest.raises(UserError) as caught:
        read_manifest(manifest)
    message = str(caught.value)
    assert str(manifest) in message and "line 3" in message and bad_path in message


@pytest.mark.parametrize(("row", "blank"), [("a.png,", "label"), (",cat", "path"), ("a.png,   ", "label")])
def test_manifest_blank_value_names_the_line(tmp_path: Path, row: str, blank: str) -> None:
    manifest = _csv(tmp_path / "m.csv", f"path,label\nb.png,dog\n{row}\n")
    with pytest.raises(UserError, match=f"line 3: blank {blank}"):
        read_manifest(manifest)


def test_manifest_missing_columns_names_what_was_found(tmp_path: Path) -> None:
    manifest = _csv(tmp_path / "m.csv", "file,class\na.png,cat\n")
    with pytest.raises(UserError) as caught:
        read_manifest(manifest)
    assert "file, class" in str(caught.value) and "path" in str(caught.value)


def test_manifest_empty_or_header_only_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="empty"):
        read_manifest(_csv(tmp_path / "empty.csv", ""))
    with pytest.raises(UserError, match="no rows"):
        read_manifest(_csv(tmp_path / "header.csv", "path,label\n"))


# ---------------------------------------------------------------- check_trainable


def _files(counts: dict[str, int]) -> LabelledFiles:
    samples = [Sample(Path(f"/d/{name}/{i}.png"), label) for label, (name, n) in enumerate(counts.items())
               for i in range(n)]
    return LabelledFiles(source=Path("/d"), classes=tuple(counts), samples=tuple(samples))


def test_check_trainable_needs_two_classes() -> None:
    with pytest.raises(UserError, match=r"only one class \(cats\) in /d"):
        check_trainable(_files({"cats": 5}))


def test_check_trainable_needs_two_images_per_class() -> None:
    with pytest.raises(UserError) as caught:
        check_trainable(_files({"cats": 5, "dogs": 1}))
    assert "dogs (1 image)" in str(caught.value) and "cats" not in str(caught.value)
    check_trainable(_files({"cats": 2, "dogs": 2}))


def test_subset_keeps_classes() -> None:
    files = _files({"cats": 3, "dogs": 3})
    part = files.subset([0, 4])
    assert part.classes == files.classes
    assert part.labels() == [0, 1]
    assert part.counts() == {"cats": 1, "dogs": 1}


# ---------------------------------------------------------------- stratified_split


LABELS = [0] * 50 + [1] * 20 + [2] * 7 + [3] * 2 + [4]


def test_split_is_disjoint_complete_and_stratified() -> None:
    train, val = stratified_split(LABELS, 0.2, seed=0)
    assert train == sorted(train) and val == sorted(val)
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(len(LABELS)))
    val_counts = Counter(LABELS[i] for i in val)
    train_counts = Counter(LABELS[i] for i in train)
    assert val_counts == {0: 10, 1: 4, 2: 1, 3: 1}  # round(n * 0.2), at least 1
    for label in range(4):
        assert train_counts[label] >= 1
    assert train_counts[4] == 1 and val_counts[4] == 0  # a singleton class trains


def test_split_keeps_one_training_image_at_high_fraction() -> None:
    train, val = stratified_split([0, 0, 1, 1, 1], 0.9, seed=1)
    assert Counter([0, 0, 1, 1, 1][i] for i in train) == {0: 1, 1: 1}
    assert len(val) == 3


def test_split_is_deterministic_per_seed() -> None:
    assert stratified_split(LABELS, 0.3, seed=7) == stratified_split(LABELS, 0.3, seed=7)
    assert stratified_split(LABELS, 0.3, seed=7) != stratified_split(LABELS, 0.3, seed=8)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_split_rejects_bad_fraction(fraction: float) -> None:
    with pytest.raises(UserError, match="between 0 and 1"):
        stratified_split(LABELS, fraction, seed=0)


# ---------------------------------------------------------------- scan_images


def _messy_folder(root: Path) -> LabelledFiles:
    _png(root / "cats" / "good1.png")
    _png(root / "cats" / "good2.png", (10, 200, 10))
    (root / "cats" / "empty.jpg").touch()
    (root / "dogs").mkdir()
    (root / "dogs" / "page.jpg").write_text("<html>not found</html>")
    rng = np.random.default_rng(0)
    whole = root / "dogs" / "whole.jpg"
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(whole, quality=95)
    (root / "dogs" / "truncated.jpg").write_bytes(whole.read_bytes()[:3000])
    _png(root / "fish" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    return index_folder(root)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_scan_separates_bad_files(tmp_path: Path, num_workers: int) -> None:
    files = _messy_folder(tmp_path)
    good, bad = scan_images(files, num_workers=num_workers)
    assert good.classes == files.classes == ("cats", "dogs", "fish")  # fish lost all images, label kept
    assert [s.path.name for s in good.samples] == ["good1.png", "good2.png", "whole.jpg"]
    assert good.counts() == {"cats": 2, "dogs": 1, "fish": 0}
    reasons = {path.name: reason for path, reason in bad}
    assert set(reasons) == {"empty.jpg", "page.jpg", "truncated.jpg", "broken.png"}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["page.jpg"] == "not an image (cannot identify format)"
    assert "truncated" in reasons["truncated.jpg"]


def test_scan_reports_duplicate_listing_once(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", (10, 200, 10))
    manifest = _csv(tmp_path / "m.csv", "path,label\na.png,cat\nb.png,cat\n./a.png,dog\nc.png,dog\n")
    good, bad = scan_images(read_manifest(manifest), num_workers=0)
    assert [(s.path.name, s.label) for s in good.samples] == [("a.png", 0), ("b.png", 0)]
    assert bad == [(tmp_path / "a.png", "listed twice (classes cat and dog)"), (tmp_path / "c.png", "file not found")]


def test_scan_keeps_copies_once_and_names_leaks_between_classes(tmp_path: Path) -> None:
    original = _png(tmp_path / "cats" / "a.png")
    _png(tmp_path / "cats" / "b.png", (10, 200, 10))
    (tmp_path / "cats" / "c.png").write_bytes(original.read_bytes())
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "x.png").write_bytes(original.read_bytes())
    _png(tmp_path / "dogs" / "y.png", (10, 10, 200))
    good, bad = scan_images(index_folder(tmp_path), num_workers=0)
    assert [s.path.name for s in good.samples] == ["a.png", "b.png", "y.png"]
    reasons = {path.name: reason for path, reason in bad}
    assert reasons["c.png"] == f"same content as {original} (a duplicate; kept once)"
    assert reasons["x.png"].startswith(f"same content as {original} of class cats: a leak between classes")


def test_scan_rejects_negative_workers(tmp_path: Path) -> None:
    _png(tmp_path / "cats" / "a.png")
    with pytest.raises(UserError, match="-1"):
        scan_images(index_folder(tmp_path), num_workers=-1)


# ---------------------------------------------------------------- ImageDataset and collate


def test_dataset_skips_file_deleted_after_scan(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "cats" / f"{i}.png", (10 * i + 5, 0, 0))
        _png(tmp_path / "dogs" / f"{i}.png", (0, 10 * i + 5, 0))
    good, bad = scan_images(index_folder(tmp_path), num_workers=0)
    assert bad == []
    good.samples[1].path.unlink()
    dataset = ImageDataset(good.samples, _to_tensor)
    assert len(dataset) == 6
    assert dataset[1] is None
    image, label = dataset[3]
    assert image.shape == (3, 8, 8) and label == 1
    batches = list(DataLoader(dataset, batch_size=4, collate_fn=collate_skip_bad))
    images, labels = batches[0]
    assert images.shape == (3, 3, 8, 8)
    assert labels.dtype == torch.long and labels.tolist() == [0, 0, 1]
    assert sum(len(b[1]) for b in batches) == 5


def test_collate_returns_none_when_whole_batch_is_bad() -> None:
    assert collate_skip_bad([None, None]) is None
    images, labels = collate_skip_bad([None, (torch.zeros(3, 2, 2), 4)])
    assert images.shape == (1, 3, 2, 2) and labels.tolist() == [4]
