"""From a folder or CSV manifest to labelled samples, a seeded stratified split and a torch Dataset.

The pipeline is a chain of pure steps -- index (`load_labelled`) -> validate (`check_trainable`) -> decode
every file once (`scan_images`) -> split (`stratified_split`) -> `ImageDataset` -- so each step can be tested
on its own and a training run is reproducible from the data folder and a seed. Class order is plain
`sorted()` on names, the same as torchvision's ImageFolder and Keras, so label indices match theirs.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from transferkit.errors import UserError
from transferkit.images import IMAGE_EXTENSIONS, BadImage, is_ignored, load_image

__all__ = [
    "LEAK",
    "repeated_files",
    "ImageDataset",
    "LabelledFiles",
    "Sample",
    "check_trainable",
    "collate_skip_bad",
    "image_files_under",
    "index_folder",
    "load_labelled",
    "read_manifest",
    "scan_images",
    "stratified_split",
]

_FORMAT_HINT = "pass a folder with one sub-folder per class, or a CSV manifest with path,label columns"
_SCAN_BATCH_SIZE = 16


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass(frozen=True)
class LabelledFiles:
    """Where the data came from, the class names (index = label) and the samples.

    `empty_classes` are class folders that held no image; they get no label index, and are kept here only so
    the caller can warn about them instead of silently training without them.
    """

    source: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    empty_classes: tuple[str, ...] = ()

    def labels(self) -> list[int]:
        return [sample.label for sample in self.samples]

    def counts(self) -> dict[str, int]:
        """Images per class name, in class order; a class that lost all its images shows 0."""
        per_label = [0] * len(self.classes)
        for sample in self.samples:
            per_label[sample.label] += 1
        return dict(zip(self.classes, per_label))

    def subset(self, indices: Sequence[int]) -> LabelledFiles:
        """Same classes (so label indices stay valid), only the chosen samples."""
        return replace(self, samples=tuple(self.samples[i] for i in indices))


def load_labelled(path: Path) -> LabelledFiles:
    """The CLI's entry point: a folder is indexed, a `.csv` file is read as a manifest."""
    if not path.exists():
        raise UserError(f"data folder not found: {path} — {_FORMAT_HINT}")
    if path.is_dir():
        return index_folder(path)
    if path.suffix.lower() == ".csv":
        return read_manifest(path)
    raise UserError(f"{path} is a file but not a .csv manifest — {_FORMAT_HINT}")


def index_folder(root: Path) -> LabelledFiles:
    """Index a class-per-folder tree: every image file under `root/<class>/`, nested folders included."""
    if not root.exists():
        raise UserError(f"data folder not found: {root} — {_FORMAT_HINT}")
    if not root.is_dir():
        raise UserError(f"{root} is not a folder — {_FORMAT_HINT}")
    try:
        class_dirs = sorted(
            (entry for entry in root.iterdir() if entry.is_dir() and not is_ignored(entry)),
            key=lambda entry: entry.name,
        )
    except PermissionError as exc:
        raise UserError(f"cannot read data folder {root}: permission denied — fix its permissions") from exc

    classes: list[str] = []
    empty: list[str] = []
    samples: list[Sample] = []
    for class_dir in class_dirs:
        files = image_files_under(class_dir)
        if not files:
            empty.append(class_dir.name)
            continue
        label = len(classes)
        classes.append(class_dir.name)
        samples.extend(Sample(path=file, label=label) for file in files)

    if not samples:
        raise UserError(f"no images found in {root}: expected one sub-folder per class, e.g. {root}/cats/1.jpg")
    return LabelledFiles(source=root, classes=tuple(classes), samples=tuple(samples), empty_classes=tuple(empty))


def image_files_under(folder: Path) -> list[Path]:
    """Image files anywhere below `folder`, sorted; never follows directory symlinks (they can loop)."""

    def fail(exc: OSError) -> None:
        raise UserError(f"cannot read folder {exc.filename}: {exc.strerror} — fix its permissions or remove it")

    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=fail, followlinks=False):
        dirnames[:] = [name for name in dirnames if not is_ignored(Path(name))]
        for name in filenames:
            file = Path(dirpath) / name
            if not is_ignored(file) and file.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(file)
    return sorted(found)


def read_manifest(csv_path: Path) -> LabelledFiles:
    """Read a CSV with `path` and `label` columns (others ignored); paths must stay inside the CSV's folder.

    Listed files are not checked for existence here: a missing file is reported by `scan_images` along with
    every other unusable file, instead of stopping at the first one.
    """
    if not csv_path.is_file():
        raise UserError(f"manifest not found: {csv_path} — {_FORMAT_HINT}")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            rows = _manifest_rows(csv_path, handle)
    except UnicodeDecodeError as exc:
        raise UserError(f"manifest {csv_path} is not UTF-8 text — save it as UTF-8 CSV") from exc
    except csv.Error as exc:
        raise UserError(f"manifest {csv_path} is not valid CSV ({exc}) — check its quoting") from exc
    if not rows:
        raise UserError(f"manifest {csv_path} has a header but no rows — add one line per image: path,label")

    classes = tuple(sorted({label for _, label in rows}))
    index = {name: i for i, name in enumerate(classes)}
    # Sorted like a folder index, so reordering the CSV does not change the split for a given seed.
    ordered = sorted(rows, key=lambda row: (index[row[1]], row[0]))
    samples = tuple(Sample(path=path, label=index[label]) for path, label in ordered)
    return LabelledFiles(source=csv_path, classes=classes, samples=samples)


def _manifest_rows(csv_path: Path, handle: TextIO) -> list[tuple[Path, str]]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise UserError(f"manifest {csv_path} is empty — the first line must be a header: path,label")
    columns = [name.strip().lower() for name in header]
    missing = [name for name in ("path", "label") if name not in columns]
    if missing:
        raise UserError(
            f"manifest {csv_path} has columns {', '.join(header) or '(none)'} but lacks "
            f"{' and '.join(missing)} — the header must name a 'path' and a 'label' column"
        )
    path_col, label_col = columns.index("path"), columns.index("label")
    folder = csv_path.parent
    rows: list[tuple[Path, str]] = []
    for values in reader:
        if not any(value.strip() for value in values):
            continue  # blank lines are harmless
        line = reader.line_num
        raw_path = values[path_col].strip() if path_col < len(values) else ""
        label = values[label_col].strip() if label_col < len(values) else ""
        if not raw_path or not label:
            blank = "path" if not raw_path else "label"
            raise UserError(f"{csv_path} line {line}: blank {blank} — every row needs both a path and a label")
        if "\0" in raw_path:  # no file system allows it; os.stat would fail on it later with a ValueError
            raise UserError(f"{csv_path} line {line}: the path contains a NUL character — fix or remove the row")
        rows.append((_inside_folder(csv_path, line, folder, raw_path), label))
    return rows


def _inside_folder(csv_path: Path, line: int, folder: Path, raw_path: str) -> Path:
    """Resolve a manifest path and refuse one that leaves the manifest's folder (`../`, absolute elsewhere)."""
    bases = {os.path.abspath(folder), os.path.realpath(folder)}
    candidate = Path(raw_path)
    for base in bases:
        full = os.path.normpath(candidate if candidate.is_absolute() else Path(base) / candidate)
        if os.path.commonpath([base, full]) == base:
            return Path(full)
    raise UserError(
        f"{csv_path} line {line}: path {raw_path} is outside the manifest's folder {folder} — "
        "list only files inside that folder, relative to it"
    )


def check_trainable(files: LabelledFiles) -> None:
    """Refuse data that cannot train a classifier, naming what to add or remove."""
    if len(files.classes) < 2:
        found = f"only one class ({files.classes[0]})" if files.classes else "no classes"
        raise UserError(f"{found} in {files.source}: training needs at least two class folders")
    counts = files.counts()
    small = [f"{name} ({count} image{'' if count == 1 else 's'})" for name, count in counts.items() if count < 2]
    if small:
        raise UserError(
            f"too few images in {files.source} for class {', '.join(small)}: each class needs at least 2 — "
            "add more images or remove the folder"
        )


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


class _DecodeCheck(Dataset):
    """Decodes one file per item and reports ("" = fine); a Dataset so DataLoader workers can share the work."""

    def __init__(self, paths: Sequence[Path], min_size: int | None) -> None:
        self.paths = list(paths)
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, str, str]:
        """(index, why it is unusable or "", sha256 of its bytes: how copies of one file are found)."""
        try:
            load_image(self.paths[index], self.min_size)
            digest = hashlib.sha256(self.paths[index].read_bytes()).hexdigest()
        except BadImage as exc:
            return index, exc.reason, ""
        except OSError as exc:  # changed between the decode and the read: unusable all the same
            return index, f"cannot read ({exc.strerror})", ""
        return index, "", digest


def _collate_lists(batch: list[tuple[int, str, str]]) -> tuple[list[int], list[str], list[str]]:
    return [item[0] for item in batch], [item[1] for item in batch], [item[2] for item in batch]


def scan_images(
    files: LabelledFiles, num_workers: int, min_size: int | None = None
) -> tuple[LabelledFiles, list[tuple[Path, str]]]:
    """Decode every file once, up front, and split the usable ones from (path, reason) for the rest.

    Catching bad files here, before training, turns a crash at epoch 7 into one report at startup.
    The classes tuple is kept even when a class loses every image, so label indices never shift.
    """
    if num_workers < 0:
        raise UserError(f"number of workers must be 0 or more, got {num_workers} — use 0 to decode in-process")
    reasons: dict[int, str] = _duplicate_reasons(files)
    to_check = [i for i in range(len(files.samples)) if i not in reasons]
    loader = DataLoader(
        _DecodeCheck([files.samples[i].path for i in to_check], min_size),
        batch_size=_SCAN_BATCH_SIZE,
        num_workers=num_workers,
        collate_fn=_collate_lists,
    )
    digests: dict[int, str] = {}
    for positions, batch_reasons, batch_digests in tqdm(loader, desc="checking images", unit="batch", leave=False,
                                                        disable=None):
        for position, reason, digest in zip(positions, batch_reasons, batch_digests):
            if reason:
                reasons[to_check[position]] = reason
            else:
                digests[to_check[position]] = digest
    reasons |= _copy_reasons(files, digests)
    good = [i for i in range(len(files.samples)) if i not in reasons]
    bad = [(files.samples[i].path, reasons[i]) for i in sorted(reasons)]
    return files.subset(good), bad


def _duplicate_reasons(files: LabelledFiles) -> dict[int, str]:
    """The second and later listings of one file (by real path) -- e.g. a CSV giving it two labels."""
    first_label: dict[str, int] = {}
    reasons: dict[int, str] = {}
    for index, sample in enumerate(files.samples):
        key = os.path.realpath(sample.path)
        if key in first_label:
            classes = (files.classes[first_label[key]], files.classes[sample.label])
            reasons[index] = f"listed twice (classes {classes[0]} and {classes[1]})"
        else:
            first_label[key] = sample.label
    return reasons


LEAK = "a leak between classes"


def repeated_files(files: LabelledFiles, digests: dict[int, str]) -> dict[int, str]:
    """Why to leave out a sample: its path listed before, or its content (sha256 in `digests`) seen before."""
    return _copy_reasons(files, digests) | _duplicate_reasons(files)


def _copy_reasons(files: LabelledFiles, digests: dict[int, str]) -> dict[int, str]:
    """Files with the same bytes as an earlier one are kept once (the first, in class then path order).

    A copy in the same class would only weigh double, and could land in both the training and the validation
    split; a copy in another class teaches two labels for one picture. The second case is called a leak."""
    first: dict[str, int] = {}
    reasons: dict[int, str] = {}
    for index in sorted(digests):
        original = first.setdefault(digests[index], index)
        if original == index:
            continue
        here, there = files.samples[index], files.samples[original]
        if here.label == there.label:
            reasons[index] = f"same content as {there.path} (a duplicate; kept once)"
        else:
            reasons[index] = (f"same content as {there.path} of class {files.classes[there.label]}: {LEAK} "
                              f"(kept once, in {files.classes[there.label]}); remove the wrong copy")
    return reasons


class ImageDataset(Dataset):
    """Samples decoded on demand; a file that broke after the scan yields None instead of killing training."""

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Image.Image], torch.Tensor],
        min_size: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        sample = self.samples[index]
        try:
            image = load_image(sample.path, self.min_size)
        except BadImage:
            return None
        return self.transform(image), sample.label


def collate_skip_bad(batch: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Stack a batch without its unreadable items; None when nothing usable is left."""
    items = [item for item in batch if item is not None]
    if not items:
        return None
    images = torch.stack([image for image, _ in items])
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return images, labels
