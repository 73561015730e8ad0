"""Decode one image file, whatever is in it, into a plain 8-bit RGB picture -- or say why not.

Real photo folders hold more than clean sRGB JPEGs: phone shots with EXIF rotation, PNGs with alpha,
16-bit scans, CMYK print files, animated GIFs, half-copied files, HTML pages saved as `.jpg`,
decompression bombs. Every model in the toolkit expects 8-bit RGB, so this is the one place where all of
that is turned into RGB, and where a file that cannot be used becomes a `BadImage` (skip it and report it)
rather than a crash in the middle of training.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from transferkit.data.files import IMAGE_EXTENSIONS, is_ignored  # re-exported: the index decides what is an image
from transferkit.errors import UserError

__all__ = ["IMAGE_EXTENSIONS", "BadImage", "decode_image", "file_problem", "is_ignored", "load_image",
           "none_readable", "os_error_reason", "skip_reason"]

# Modes that carry an alpha channel; they are composited onto white, as a viewer would show them.
_ALPHA_MODES: frozenset[str] = frozenset({"RGBA", "LA", "La", "RGBa", "PA"})

# 16-bit unsigned grey in its various byte orders; 65535 / 257 == 255 maps the full range onto 8 bits.
_UINT16_MODES: frozenset[str] = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

_WHITE = (255, 255, 255)


class BadImage(Exception):
    """This file cannot be used as an image: skip it and tell the user why.

    Deliberately not a `UserError`: one broken file in ten thousand should not stop a run.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def load_image(path: Path, min_size: int | None = None) -> Image.Image:
    """Return the fully decoded picture in `path` as an 8-bit RGB image, or raise `BadImage`.

    `min_size` lets big JPEGs decode at a reduced scale (both sides stay >= `min_size`), which is much faster
    when the model input is small anyway; other formats ignore it.
    """
    _check_regular_file(path)
    return _decode(path, path, min_size)


def decode_image(data: bytes, name: str = "upload", min_size: int | None = None) -> Image.Image:
    """`load_image` for bytes already in memory (an upload): the same checks and the same RGB picture, or
    `BadImage` naming `name`."""
    if not data:
        raise BadImage(Path(name), "empty file (0 bytes)")
    return _decode(io.BytesIO(data), Path(name), min_size)


def _decode(source: Path | io.BytesIO, path: Path, min_size: int | None) -> Image.Image:
    """Open, check the pixel budget, decode and convert `source`; every failure is a `BadImage` for `path`."""
    try:
        with warnings.catch_warnings():
            # Pillow's complaints about damaged metadata (EXIF, TIFF tags) would print as multi-line noise; the
            # pixels decide whether the file is usable.
            warnings.simplefilter("ignore", UserWarning)
            # Pillow only *warns* between 1x and 2x its pixel limit; a bomb is a bomb either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _check_pixel_budget(path, img.size)
                if min_size is not None and img.format == "JPEG":
                    img.draft("RGB", (min_size, min_size))
                img.load()  # first frame only, for animated GIF / WebP / multi-page TIFF
                return _to_rgb(path, _orient(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(path, _too_large_reason(str(exc))) from exc
    except UnidentifiedImageError as exc:
        raise BadImage(path, "not an image (cannot identify format)") from exc
    except OSError as exc:
        raise BadImage(path, os_error_reason(exc)) from exc
    except (ValueError, SyntaxError, struct.error, EOFError, IndexError, TypeError) as exc:
        raise BadImage(path, f"corrupt image data ({type(exc).__name__}: {exc})") from exc


def skip_reason(path: Path) -> str:
    """Why `path` was left out of a batch run (decoders there only say "unusable"): decoded again, once."""
    try:
        load_image(path)
    except BadImage as exc:
        return exc.reason
    return "could not be read during the run"


def none_readable(count: int, what: str, first: Path, reason: str) -> UserError:
    """The error for a job none of whose `count` files decoded: it names the first one and why."""
    more = ", ..." if count > 1 else ""
    return UserError(f"none of the {count} {what} could be read ({first}: {reason}{more}): "
                     f"pass image files (JPEG, PNG, ...)")


def file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as a file at all (missing, a folder, a pipe, empty), else None. Cheap: no
    decoding, and never blocks (a FIFO is not opened)."""
    try:
        _check_regular_file(path)
    except BadImage as exc:
        return exc.reason
    return None


def _check_regular_file(path: Path) -> None:
    """Reject what `Image.open` would choke on (or hang on: a FIFO) with a reason a person understands."""
    try:
        info = os.stat(path)
    except ValueError as exc:  # a NUL byte in the name
        raise BadImage(path, f"invalid file name ({exc})") from exc
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and os.path.islink(path):
            raise BadImage(path, "broken symlink (its target does not exist)") from exc
        raise BadImage(path, os_error_reason(exc)) from exc
    if stat.S_ISDIR(info.st_mode):
        raise BadImage(path, "is a directory, not an image file")
    if not stat.S_ISREG(info.st_mode):
        raise BadImage(path, "not a regular file (device, socket or pipe)")
    if info.st_size == 0:
        raise BadImage(path, "empty file (0 bytes)")


def _check_pixel_budget(path: Path, size: tuple[int, int]) -> None:
    """Refuse oversized images from their header alone, before a single pixel is decoded."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = size[0] * size[1]
    if limit is not None and pixels > limit:
        raise BadImage(path, f"too large: {pixels} pixels exceeds the {limit}-pixel safety limit")


def _too_large_reason(pillow_message: str) -> str:
    """Pillow's own bomb check fires inside `Image.open`; keep the pixel count it reports."""
    limit = Image.MAX_IMAGE_PIXELS
    found = re.search(r"\((\d+) pixels\)", pillow_message)
    if found is None:
        return f"too large: exceeds the {limit}-pixel safety limit"
    return f"too large: {found.group(1)} pixels exceeds the {limit}-pixel safety limit"


def os_error_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    message = str(exc)
    if "truncated" in message.lower():
        return "truncated image data"
    return f"cannot read or decode ({message})"


def _orient(img: Image.Image) -> Image.Image:
    """Apply the EXIF rotation a camera recorded, so portrait photos are not trained on sideways.

    The pixels are already decoded here, so a malformed EXIF block only costs the rotation, not the image.
    """
    try:
        oriented = ImageOps.exif_transpose(img)  # never None unless in_place=True
        return oriented if oriented is not None else img.copy()
    except (ValueError, SyntaxError, struct.error, TypeError, KeyError):
        return img.copy()


def _to_rgb(path: Path, img: Image.Image) -> Image.Image:
    """Map every colour mode Pillow can hand us onto 8-bit RGB without washing out or blacking out the picture."""
    mode = img.mode
    if mode in _ALPHA_MODES or "transparency" in img.info:
        # Pillow cannot go from premultiplied "La" straight to RGBA; "LA" is the way round.
        rgba = (img.convert("LA") if mode == "La" else img).convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _UINT16_MODES:
        return _grey_array_to_rgb(np.asarray(img).astype(np.float64) / 257.0)
    if mode == "I":
        return _grey_array_to_rgb(_int32_to_8bit(np.asarray(img)))
    if mode == "F":
        return _grey_array_to_rgb(_min_max(np.asarray(img).astype(np.float64)))
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise BadImage(path, f"unsupported colour mode {mode!r}") from exc


def _int32_to_8bit(values: np.ndarray) -> np.ndarray:
    """Mode "I" is what 16-bit PNGs and some TIFFs decode to; treat in-range data as 16-bit, else stretch it."""
    as_float = values.astype(np.float64)
    if as_float.size and as_float.min() >= 0 and as_float.max() <= 65535:
        return as_float / 257.0
    return _min_max(as_float)


def _min_max(values: np.ndarray) -> np.ndarray:
    """Stretch arbitrary-range data (float TIFFs) onto 0..255; a constant image becomes black."""
    finite = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if high <= low:
        return np.zeros_like(finite)
    return (finite - low) * (255.0 / (high - low))


def _grey_array_to_rgb(values: np.ndarray) -> Image.Image:
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
