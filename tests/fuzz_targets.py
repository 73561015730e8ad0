"""Property-based fuzz targets for the two boundaries where outside bytes enter: image files and CSV manifests.

The properties: `load_image` on any bytes returns an 8-bit RGB image or raises `BadImage` (nothing else, no
hang); `read_manifest` on any text returns labelled files that all lie inside the manifest's folder, or raises
`UserError`. `tests/test_fuzz.py` runs each for a few seconds; `benchmarks/fuzz.py --minutes 10` for longer.
Images decode under a small pixel budget (`FUZZ_PIXEL_BUDGET`) so that no single example takes seconds.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from transferkit.data.files import read_manifest
from transferkit.data.images import BadImage, load_image
from transferkit.errors import UserError

__all__ = ["TARGETS", "fuzz_for", "run_for"]

_EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def _seed_images() -> list[tuple[str, bytes]]:
    """Small valid files of every format and several modes: mutations of real files reach deep into decoders."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    variants = [("PNG", rgb), ("PNG", rgb.convert("LA")), ("PNG", rgb.convert("P")), ("JPEG", rgb),
                ("JPEG", rgb.convert("CMYK")), ("GIF", rgb.convert("P")), ("BMP", rgb), ("TIFF", rgb.convert("I")),
                ("TIFF", rgb.convert("F")), ("WEBP", rgb.convert("RGBA"))]
    seeds = []
    for fmt, image in variants:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        seeds.append((fmt, buffer.getvalue()))
    return seeds


SEEDS = _seed_images()


@st.composite
def _mutated_image(draw: st.DrawFn) -> tuple[str, bytes]:
    fmt, data = draw(st.sampled_from(SEEDS))
    buffer = bytearray(data)
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "zero-run"]))
        position = draw(st.integers(0, max(0, len(buffer) - 1)))
        if action == "flip" and buffer:
            buffer[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del buffer[position:]
        elif action == "insert":
            buffer[position:position] = draw(st.binary(max_size=64))
        else:
            buffer[position:position + draw(st.integers(1, 64))] = bytes(draw(st.integers(1, 64)))
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:
        return fmt, draw(st.binary(max_size=512))  # now and then, bytes with no structure at all
    return fmt, bytes(buffer)


# Pillow's own limit is ~89M pixels: one flipped byte in a seed's header makes a file of a few hundred bytes
# claim 80M, and decoding and converting that took 8-10 s (several GB) on an idle machine, 98 s for a test
# meant to take 4 on a busy one. A 1M-pixel budget takes the same code paths; above it the file must come back
# as BadImage("too large").
FUZZ_PIXEL_BUDGET = 1 << 20


@contextmanager
def _pixel_budget(pixels: int) -> Iterator[None]:
    """Pillow's documented limit (`Image.MAX_IMAGE_PIXELS`), lowered while one example decodes."""
    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def check_image_bytes(fmt: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{_EXTENSIONS[fmt]}"
        path.write_bytes(data)
        try:
            with _pixel_budget(FUZZ_PIXEL_BUDGET):
                image = load_image(path, min_size=8)
        except BadImage as exc:
            assert exc.path == path and exc.reason
            return
        assert image.mode == "RGB" and image.width > 0 and image.height > 0
        image.tobytes()  # every pixel is really there


_CELL = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["a.png", "cat/1.jpg", "../x.png", "/etc/passwd", "sub/../../y.jpg", "..", ".", "",
                     " ", "cat", "dog", "C:\\x.png", "a,b.png", '"q".png', "ü/é.png", "./a.png", "//host/x"]),
)


@st.composite
def _manifest_text(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=300))  # anything at all
    header = draw(st.sampled_from(["path,label", "label,path", "path,label,extra", "Path , LABEL", "file,class",
                                   "path", ""]))
    rows = draw(st.lists(st.lists(_CELL, min_size=0, max_size=4), max_size=8))
    lines = [header] + [",".join(_quote(cell, draw(st.booleans())) for cell in row) for row in rows]
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))


def _quote(cell: str, quote: bool) -> str:
    return '"' + cell.replace('"', '""') + '"' if quote else cell


def check_manifest_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        manifest = folder / "labels.csv"
        manifest.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            files = read_manifest(manifest)
        except UserError as exc:
            assert str(exc) and "\n" not in str(exc) and "\r" not in str(exc), repr(str(exc))  # the CLI shows one line
            return
        root = folder.resolve()
        assert files.classes and files.samples
        for sample in files.samples:
            assert sample.path.resolve().is_relative_to(root), sample.path
            assert 0 <= sample.label < len(files.classes)


def _image_case(case: tuple[str, bytes]) -> None:
    check_image_bytes(*case)


TARGETS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
    "images": (_mutated_image(), _image_case),
    "manifests": (_manifest_text(), check_manifest_text),
}


def run_for(target: str, seconds: float, batch: int = 200) -> int:
    """Run one target for about `seconds`; returns the number of examples checked. See `fuzz_for`."""
    strategy, check = TARGETS[target]
    return fuzz_for(strategy, check, seconds, batch)


def fuzz_for(strategy: st.SearchStrategy[Any], check: Callable[[Any], None], seconds: float, batch: int = 200) -> int:
    """Check random examples in rounds of `batch` until `seconds` have passed; returns the number checked.

    The clock is read before every example, not only between rounds (a round may hold slow examples): once
    time is up, the rest of the round passes unchecked, at the cost of generating it. A check that fails stops
    the clock for good, so hypothesis shrinks the failure to its simplest example however long that takes
    (an example it saw fail, then pass unchecked, would be reported as 'flaky', unshrunk)."""
    deadline = time.monotonic() + seconds
    tried = 0
    failed = False

    def counted(case: Any) -> None:
        nonlocal tried, failed
        if time.monotonic() >= deadline and not failed:
            return
        tried += 1
        try:
            check(case)
        except Exception:
            failed = True
            raise

    test = settings(max_examples=batch, deadline=None, database=None, suppress_health_check=list(HealthCheck))(
        given(strategy)(counted))
    while time.monotonic() < deadline:
        test()
    return tried
