"""Contracts for `load_image`: every colour mode ends as 8-bit RGB, every unusable file as `BadImage`.

All inputs are real files written with Pillow at test time.
"""

from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.data.images import IMAGE_EXTENSIONS, BadImage, is_ignored, load_image

RED = (255, 0, 0)
WHITE = (255, 255, 255)


def _pixel(img: Image.Image) -> tuple[int, int, int]:
    return img.getpixel((0, 0))


def _assert_rgb(img: Image.Image, size: tuple[int, int] = (8, 8)) -> None:
    assert img.mode == "RGB"
    assert img.size == size


def _close_to(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 6) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def test_extensions_are_lowercase_with_dot() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == IMAGE_EXTENSIONS


@pytest.mark.parametrize(
    ("name", "ignored"),
    [(".hidden.jpg", True), (".DS_Store", True), ("Thumbs.db", True), ("THUMBS.DB", True),
     ("Desktop.ini", True), ("cat.jpg", False), ("thumbs.jpg", False)],
)
def test_is_ignored(name: str, ignored: bool) -> None:
    assert is_ignored(Path("/data/cats") / name) is ignored


def test_rgb_png_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path)
    img = load_image(path)
    _assert_rgb(img)
    assert _pixel(img) == (10, 200, 30)


def test_grey_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (8, 8), 77).save(path)
    img = load_image(path)
    _assert_rgb(img)
    assert _pixel(img) == (77, 77, 77)


def test_one_bit_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "bw.png"
    Image.new("1", (8, 8), 1).save(path)
    img = load_image(path)
    _assert_rgb(img)
    assert _pixel(img) == WHITE


def test_rgba_transparent_pixel_composites_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    img.putpixel((1, 1), (255, 0, 0, 255))
    img.putpixel((2, 2), (0, 0, 0, 128))
    img.save(path)
    loaded = load_image(path)
    _assert_rgb(loaded)
    assert _pixel(loaded) == WHITE  # fully transparent red is invisible, not red and not black
    assert loaded.getpixel((1, 1)) == RED
    assert _close_to(loaded.getpixel((2, 2)), (127, 127, 127), tol=2)


def test_la_composites_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    img = Image.new("LA", (8, 8), (0, 0))
    img.putpixel((1, 1), (0, 255))
    img.save(path)
    loaded = load_image(path)
    _assert_rgb(loaded)
    assert _pixel(loaded) == WHITE
    assert loaded.getpixel((1, 1)) == (0, 0, 0)


def test_palette_with_transparency_composites_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    img.putpixel((1, 1), 1)
    img.save(path, transparency=0)
    assert Image.open(path).mode == "P"
    loaded = load_image(path)
    _assert_rgb(loaded)
    assert _pixel(loaded) == WHITE
    assert loaded.getpixel((1, 1)) == (0, 0, 255)


def test_palette_without_transparency_keeps_colours(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    img = Image.new("P", (8, 8), 0)
    img.putpalette([0, 128, 255] + [0, 0, 0] * 255)
    img.save(path)
    assert _pixel(load_image(path)) == (0, 128, 255)


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32768, 128), (0, 0), (257 * 10, 10)])
def test_sixteen_bit_png_scales_instead_of_clipping(tmp_path: Path, value: int, expected: int) -> None:
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(path)
    assert Image.open(path).mode in {"I;16", "I"}
    img = load_image(path)
    _assert_rgb(img)
    assert _close_to(_pixel(img), (expected,) * 3, tol=1)


def test_sixteen_bit_png_gradient_is_not_all_white(tmp_path: Path) -> None:
    path = tmp_path / "ramp.png"
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(path)
    grey = np.asarray(load_image(path))[:, :, 0]
    assert grey.min() == 0 and grey.max() == 255
    assert len(np.unique(grey)) == 64


def test_int32_tiff_in_16_bit_range_scales_by_257(tmp_path: Path) -> None:
    path = tmp_path / "int.tif"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.int32)).save(path)
    assert Image.open(path).mode == "I"
    assert _pixel(load_image(path)) == WHITE


def test_int32_tiff_beyond_16_bit_is_min_max_scaled(tmp_path: Path) -> None:
    path = tmp_path / "wide.tif"
    Image.fromarray(np.linspace(-100_000, 300_000, 64).astype(np.int32).reshape(8, 8)).save(path)
    grey = np.asarray(load_image(path))[:, :, 0]
    assert grey[0, 0] == 0 and grey[-1, -1] == 255 and 100 < grey[4, 0] < 160


def test_float_tiff_is_min_max_scaled(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    values = np.linspace(-3.0, 5.0, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "F"
    grey = np.asarray(load_image(path))[:, :, 0]
    assert grey[0, 0] == 0 and grey[-1, -1] == 255


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    img = load_image(path)
    _assert_rgb(img)
    assert _close_to(_pixel(img), RED, tol=10)


@pytest.mark.parametrize("mode", ["LAB", "YCbCr", "CMYK"])
def test_other_colour_spaces_in_tiff_become_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"{mode}.tif"
    Image.new("RGB", (8, 8), RED).convert(mode).save(path)
    assert Image.open(path).mode == mode
    img = load_image(path)
    _assert_rgb(img)
    assert _close_to(_pixel(img), RED, tol=10)


@pytest.mark.parametrize("suffix", [".bmp", ".webp", ".tif", ".jpg"])
def test_common_formats_decode(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"img{suffix}"
    Image.new("RGB", (8, 8), (20, 120, 220)).save(path, **({"quality": 95} if suffix == ".jpg" else {}))
    img = load_image(path)
    _assert_rgb(img)
    assert _close_to(_pixel(img), (20, 120, 220), tol=8)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animated_image_gives_first_frame(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"anim{suffix}"
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, (0, 0, 255), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert getattr(Image.open(path), "n_frames", 1) == 3
    img = load_image(path)
    _assert_rgb(img)
    assert _close_to(_pixel(img), RED, tol=12)


# 6 = turn 90 degrees clockwise to display, 8 = counter-clockwise: the marker stored around (5, 5) in the
# 40x20 file must appear top-right (14, 5) or bottom-left (5, 34) of the 20x40 upright picture.
@pytest.mark.parametrize(("orientation", "marker_at"), [(6, (14, 5)), (8, (5, 34))])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, marker_at: tuple[int, int]) -> None:
    path = tmp_path / "rotated.jpg"
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste(RED, (0, 0, 10, 10))
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    _assert_rgb(loaded, size=(20, 40))
    assert _close_to(loaded.getpixel(marker_at), RED, tol=20)


def test_zero_byte_file_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(BadImage) as caught:
        load_image(path)
    assert caught.value.reason == "empty file (0 bytes)"
    assert caught.value.path == path


def test_truncated_jpeg_is_bad(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    whole = tmp_path / "whole.jpg"
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(whole, quality=95)
    data = whole.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    load_image(whole)  # the intact file is fine
    with pytest.raises(BadImage) as caught:
        load_image(cut)
    assert "truncated" in caught.value.reason


def test_truncated_png_is_bad(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    whole = tmp_path / "whole.png"
    Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(BadImage):
        load_image(cut)


def test_text_renamed_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "page.jpg"
    path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>\n")
    with pytest.raises(BadImage) as caught:
        load_image(path)
    assert caught.value.reason == "not an image (cannot identify format)"


def test_decompression_bomb_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 10,000 pixels: between 1x and 2x the limit
    with pytest.raises(BadImage) as caught:
        load_image(path)
    assert caught.value.reason == "too large: 10000 pixels exceeds the 5000-pixel safety limit"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over 2x: Pillow's hard error
    with pytest.raises(BadImage) as caught:
        load_image(path)
    assert caught.value.reason.startswith("too large: 10000 pixels")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read a chmod 000 file, so nothing to test")
def test_unreadable_file_is_bad(tmp_path: Path) -> None:
    path = tmp_path / "locked.png"
    Image.new("RGB", (8, 8)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(BadImage) as caught:
            load_image(path)
        assert caught.value.reason == "permission denied"
    finally:
        path.chmod(0o644)


def test_missing_file_and_directory_are_bad(tmp_path: Path) -> None:
    with pytest.raises(BadImage) as missing:
        load_image(tmp_path / "gone.jpg")
    assert missing.value.reason == "file not found"
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    with pytest.raises(BadImage) as directory:
        load_image(folder)
    assert "directory" in directory.value.reason


def test_symlink_loop_and_broken_symlink_are_bad(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jpg", tmp_path / "b.jpg"
    first.symlink_to(second)
    second.symlink_to(first)
    with pytest.raises(BadImage) as loop:
        load_image(first)
    assert loop.value.reason == "symlink loop"
    dangling = tmp_path / "dangling.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(BadImage) as broken:
        load_image(dangling)
    assert "broken symlink" in broken.value.reason


def test_min_size_drafts_large_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "large.jpg"
    Image.new("RGB", (2000, 1000), (30, 60, 90)).save(path)
    assert load_image(path).size == (2000, 1000)
    small = load_image(path, min_size=224)
    _assert_rgb(small, size=small.size)
    assert small.size[0] < 2000 and small.size[1] < 1000
    assert min(small.size) >= 224
    assert _close_to(_pixel(small), (30, 60, 90), tol=8)


def test_min_size_is_a_no_op_for_png(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    Image.new("RGB", (600, 300)).save(path)
    assert load_image(path, min_size=32).size == (600, 300)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def _frames(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (8, 8), (255, 40 * i, 0)) for i in range(n)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc (Linux)")
def test_loaded_image_does_not_keep_the_file_open(tmp_path: Path) -> None:
    """Opening, decoding and converting leave this process's descriptor count as it was, while the images are
    still alive, and no file is left for the garbage collector to close (a ResourceWarning; on PyPy, or in a
    reference cycle, that file would stay open). Multi-frame files matter most: Pillow keeps their file open
    after `load()` for the other frames until the image is closed. (Unlinking the file would prove nothing on
    Linux: an open file unlinks fine.)"""
    first, *rest = _frames(3)
    first.save(tmp_path / "anim.gif", save_all=True, append_images=rest)
    first.save(tmp_path / "pages.tif", save_all=True, append_images=rest)
    first.save(tmp_path / "anim.webp", save_all=True, append_images=rest)
    first.save(tmp_path / "one.png")
    first.save(tmp_path / "one.jpg")
    files = sorted(tmp_path.iterdir())
    load_image(files[0])  # whatever Pillow opens once per process (plugins, codecs) is open before counting
    gc.collect()  # and whatever earlier tests left for the collector (loader pipes) is closed before counting
    before = _open_descriptors()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)  # a file closed by the garbage collector, not by us
        images = [load_image(path) for path in files for _ in range(3)]
        gc.collect()
    assert _open_descriptors() == before
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert all(_close_to(_pixel(img), RED, tol=8) for img in images)  # decoded while the file was open
