"""From a folder or CSV manifest to labelled samples and a seeded stratified split.

The pipeline is a chain of pure steps -- index (`load_labelled`) -> validate (`check_trainable`) -> decode
every file once (`scan.scan_images`) -> split (`split.stratified_split`) -> `loaders.ImageDataset` -- so each step
can be tested on its own and a training run is reproducible from the data folder and a seed. Class order is
plain `sorted()` on names, the same as torchvision's ImageFolder and Keras, so label indices match theirs.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from transferkit.errors import UserError

__all__ = [
    "EXAMPLE_DATA",
    "IMAGE_EXTENSIONS",
    "LabelledFiles",
    "Sample",
    "check_data_path",
    "check_trainable",
    "image_files_under",
    "index_folder",
    "is_ignored",
    "load_labelled",
    "read_manifest",
]

EXAMPLE_DATA = Path(__file__).resolve().parent.parent / "example_data" / "fashion-mnist"
_FORMAT_HINT = "pass a folder with one sub-folder per class, or a CSV manifest with path,label columns"

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

# Files that operating systems and tools drop into folders; they are never training data.
_IGNORED_NAMES: frozenset[str] = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})


def is_ignored(path: Path) -> bool:
    """True for hidden entries and OS clutter (`.DS_Store`, `Thumbs.db`, `desktop.ini`), judged by name only."""
    name = path.name
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


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


def load_labelled(path: str | os.PathLike[str]) -> LabelledFiles:
    """The entry point: a folder is indexed, a `.csv` file is read as a manifest."""
    path = check_data_path(path)
    return index_folder(path) if path.is_dir() else read_manifest(path)


def check_data_path(path: str | os.PathLike[str]) -> Path:
    """`path` if it is something `load_labelled` reads (a folder, or a `.csv` file), else the one-line error
    saying what it should be. Cheap (no numpy, no torch): the command line calls it before loading either."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data folder not found: {path} — {_FORMAT_HINT}")
    if not path.is_dir() and path.suffix.lower() != ".csv":
        raise UserError(f"{path} is a file but not a .csv manifest — {_FORMAT_HINT}")
    return path


def index_folder(root: str | os.PathLike[str]) -> LabelledFiles:
    """Index a class-per-folder tree: every image file under `root/<class>/`, nested folders included."""
    root = Path(root)
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


def read_manifest(csv_path: str | os.PathLike[str]) -> LabelledFiles:
    """Read a CSV with `path` and `label` columns (others ignored); paths must stay inside the CSV's folder.

    Listed files are not checked for existence here: a missing file is reported by `scan_images` along with
    every other unusable file, instead of stopping at the first one.
    """
    csv_path = Path(csv_path)
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
