"""Images in memory (numpy arrays, PIL images) or as a list of paths, with labels, → `LabelledFiles`.

Keras users train with `model.fit(X_train, y_train)`; transferkit's pipeline reads files. Instead of a second
pipeline for arrays, each in-memory image is written once as a lossless PNG into a content-addressed folder
(`cache_dir()/images`, file name = sha256 of the PNG bytes), and the samples point at those files; paths are used
as they are. Everything downstream is then the one pipeline a folder goes through: duplicate detection, the
decode check, the seeded split, the feature cache (keyed by file content, so the same picture is never run
through the base twice), training and the bundle.

What X may be: a uint8 array (N, H, W) (grey) or (N, H, W, 3) (RGB; (N, H, W, 1) is grey), or a list (or 1-D
array) whose items are PIL images, uint8 arrays (H, W) / (H, W, 3) of any sizes, or paths (str or PathLike).
Anything else (float arrays, other integer types, 4 channels, channels first) is refused with the conversion to
make: silently rescaling would guess wrong as often as right.

Labels (a list or 1-D array, or a column (N, 1) as Keras' CIFAR-10 labels come): strings are class names, in
sorted order. Integers (and whole-number floats, as pandas may hold them) become the names "0", "1", ... -- the
decimal string of each value, in numeric order (so labels 0..9 are classes "0".."9" at indices 0..9, and a saved
bundle predicts the same numbers as strings). `LabelledImages.classes` keeps the values as given, for
scikit-learn's `classes_`. Booleans are the classes "False" and "True".
"""

from __future__ import annotations

import hashlib
import io
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from transferkit.data.files import LabelledFiles, Sample
from transferkit.errors import InputError
from transferkit.features.engine import cache_dir
from transferkit.io.atomic import atomic_write_bytes

__all__ = ["SOURCE", "ImageLike", "Images", "Labels", "LabelledImages", "image_files", "labelled_images"]

ImageLike = Union[np.ndarray, Image.Image, str, os.PathLike]
Images = Union[np.ndarray, Sequence[ImageLike]]
Labels = Union[Sequence[str], Sequence[int], Sequence[float], np.ndarray]

SOURCE = Path("<images passed in memory>")  # LabelledFiles.source of in-memory data, as named in messages
_EXPECTED = ("expected uint8 images as an array (N, H, W) or (N, H, W, 3), or a list of PIL images, "
             "uint8 arrays or file paths")
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})  # what Pillow writes as PNG as is


@dataclass(frozen=True)
class LabelledImages:
    """The samples as the pipeline reads them, and the label values as given (index = label of a sample)."""

    files: LabelledFiles
    classes: np.ndarray


def labelled_images(X: Images, y: Labels, folder: str | os.PathLike[str] | None = None) -> LabelledImages:
    """X and y as `LabelledFiles` (classes as in the module docstring), in the order of X; in-memory images are
    written to `folder` (default `cache_dir()/images`) unless a file with their content is there already."""
    count = _count(X)
    values, names, labels = _classes(y, count)
    paths = image_files(X, folder)
    samples = tuple(Sample(path, int(label)) for path, label in zip(paths, labels))
    return LabelledImages(LabelledFiles(SOURCE, names, samples), values)


def image_files(X: Images, folder: str | os.PathLike[str] | None = None) -> list[Path]:
    """One file per image of X, in order: paths as given, in-memory images as PNG files in `folder`."""
    _count(X)
    folder = Path(folder) if folder is not None else cache_dir() / "images"
    if isinstance(X, np.ndarray) and X.dtype.kind not in "OU":
        images = _as_batch(X)
        return [_store(Image.fromarray(images[i]), folder) for i in range(len(images))]
    return [_file(item, f"X[{i}]", folder) for i, item in enumerate(_items(X))]


def _count(X: Images) -> int:
    """The number of images in X, or a one-line error saying what X should be."""
    if isinstance(X, (str, bytes, os.PathLike)):
        raise InputError(f"X is a single {type(X).__name__} ({str(X)[:80]!r}): pass a list of paths, one per image")
    if isinstance(X, np.ndarray):
        if X.ndim == 0:
            raise InputError(f"X is a 0-d array: {_EXPECTED}")
        count = len(X)
    elif isinstance(X, Sequence):
        count = len(X)
    else:
        raise InputError(f"X is of type {type(X).__name__}: {_EXPECTED}")
    if count == 0:
        raise InputError(f"X holds no images (shape {getattr(X, 'shape', (0,))}): pass at least one image")
    return count


def _items(X: Images) -> Sequence[ImageLike]:
    if isinstance(X, np.ndarray):  # a 1-D array of paths or objects, as scikit-learn's indexing may hand back
        if X.ndim != 1:
            raise InputError(f"X is a {X.ndim}-d array of {X.dtype} items: {_EXPECTED}")
        return list(X)
    return X


def _as_batch(X: np.ndarray) -> np.ndarray:
    """X as (N, H, W) or (N, H, W, 3) uint8, or a one-line error naming its shape or dtype and the fix."""
    if X.ndim == 4 and X.shape[-1] == 1:
        X = X[..., 0]
    _check_pixels(X, "X", batch=True)
    return X


def _check_pixels(a: np.ndarray, name: str, batch: bool) -> None:
    """Refuse what is not 8-bit grey or RGB, saying what was received and how to convert it."""
    n = "N, " if batch else ""
    grey, rgb = a.ndim == 2 + batch, a.ndim == 3 + batch and a.shape[-1] == 3
    if a.ndim == 3 + batch and a.shape[-1] == 4:
        raise InputError(f"{name} has 4 channels (shape {a.shape}): pass RGB (if it is RGBA, drop the alpha "
                         f"channel with {name}[..., :3]) or PIL images, whose transparency is shown on white")
    if a.ndim == 3 + batch and a.shape[batch] in (1, 3) and a.shape[-1] not in (1, 3):
        order = (0, 2, 3, 1) if batch else (1, 2, 0)
        raise InputError(f"{name} has shape {a.shape}, channels first ({n}C, H, W): move them last with "
                         f"{name}.transpose{order}")
    if not (grey or rgb):
        raise InputError(f"{name} has shape {a.shape}: expected ({n}H, W) grey or ({n}H, W, 3) RGB images")
    if a.dtype != np.uint8:
        raise InputError(f"{name} has dtype {a.dtype}: expected uint8 (0..255); {_conversion(a, name)}")


def _conversion(a: np.ndarray, name: str) -> str:
    """How to turn `a` into uint8 pixels, judged from its dtype and range (computed only for this message)."""
    if a.dtype.kind == "b":
        return f"convert with ({name} * 255).astype(np.uint8)"
    if a.dtype.kind not in "iuf" or a.size == 0:
        return "pass pixel values 0..255 as uint8"
    low, high = float(np.nanmin(a)), float(np.nanmax(a))
    if a.dtype.kind == "f" and 0.0 <= low and high <= 1.0:
        return f"its values lie in [0, 1]: convert with ({name} * 255).round().astype(np.uint8)"
    if 0.0 <= low and high <= 255.0:
        rounding = ".round()" if a.dtype.kind == "f" else ""
        return f"its values lie in [0, 255]: convert with {name}{rounding}.astype(np.uint8)"
    if a.dtype == np.uint16:
        return f"for 16-bit images convert with ({name} // 257).astype(np.uint8)"
    return f"its values run from {low:g} to {high:g}: scale them to 0..255, then .astype(np.uint8)"


def _file(item: ImageLike, name: str, folder: Path) -> Path:
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    if isinstance(item, Image.Image):
        return _store(item if item.mode in _PNG_MODES else item.convert("RGB"), folder)
    if isinstance(item, np.ndarray):
        pixels = item[..., 0] if item.ndim == 3 and item.shape[-1] == 1 else item
        _check_pixels(pixels, name, batch=False)
        return _store(Image.fromarray(pixels), folder)
    raise InputError(f"{name} is of type {type(item).__name__}: expected a PIL image, a uint8 array or a file path")


def _store(image: Image.Image, folder: Path) -> Path:
    """The image as a PNG file named by the sha256 of its bytes, written once (atomically) however often the
    same picture is passed. Fast compression: the files are a cache, and lossless either way."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = folder / digest[:2] / f"{digest}.png"
    if not path.is_file():
        atomic_write_bytes(path, data)
    return path


def _classes(y: Labels, count: int) -> tuple[np.ndarray, tuple[str, ...], np.ndarray]:
    """(the distinct label values in class order, their class names, each sample's class index)."""
    if y is None:  # scikit-learn's wording, which its users (and its estimator checks) know
        raise InputError("training requires y to be passed, but the target y is None: pass one label per image "
                         "(a list or 1-D array of class names or integers)")
    if isinstance(y, (str, bytes)):
        raise InputError(f"y is a single {type(y).__name__} ({y[:80]!r}): pass one label per image, e.g. a list")
    # A list goes through an object array: np.asarray([1, "a"]) would quietly make both strings.
    labels = y if isinstance(y, np.ndarray) else np.asarray(list(y), dtype=object)
    if labels.dtype.kind == "O" and labels.size:  # all names or all numbers (as a list or a pandas column)
        items = labels.ravel().tolist()
        if all(isinstance(v, str) for v in items):
            labels = labels.astype(str)
        elif all(isinstance(v, bool) for v in items):
            labels = labels.astype(bool)
        elif all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
            labels = labels.astype(np.int64 if all(isinstance(v, numbers.Integral) for v in items) else np.float64)
    if labels.ndim == 2 and labels.shape[1] == 1:  # a column vector, as Keras' CIFAR-10 labels come
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(f"y has shape {labels.shape}: pass one label per image (a 1-D list or array; for one-hot "
                         f"labels, y.argmax(axis=1))")
    if len(labels) != count:
        raise InputError(f"X has {count} images but y has {len(labels)} labels: pass one label per image")
    kind = labels.dtype.kind
    if kind not in "iubUf":
        types = sorted({type(v).__name__ for v in labels.tolist()})
        raise InputError(f"y holds {', '.join(types)} values: labels must all be str or all integers")
    if kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            raise InputError(f"Unknown label type: y holds continuous values (such as {labels[~whole][0]}): a "
                             f"classifier needs class names (str) or integers")
    values, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    names = tuple(str(int(v)) if kind == "f" else str(v) for v in values.tolist())
    if len(values) < 2:
        raise InputError(f"y has only one class ({names[0]!r}): a classifier needs at least two")
    small = [f"{name!r} ({n})" for name, n in zip(names, counts) if n < 2]
    if small:
        raise InputError(f"too few images for class {', '.join(small)} in y: each class needs at least 2")
    return values, names, index.reshape(-1)
