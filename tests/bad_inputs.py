"""The bad-input corpus: one generator per case, written to disk at test time, and what every command must do.

Kinds of case:
- `file`: one odd file planted in a shared messy data folder (next to good photos); the command must still
  succeed and report the file as skipped (with the reason), use it, or ignore it silently.
- `data`: the whole data argument is bad (a CSV that escapes its folder, a folder with nothing usable, ...).
- `bundle`: a damaged or untrustworthy model bundle.
- `flag`: a bad flag value.
`tests/test_bad_input.py` runs every case through every command it applies to.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image
from safetensors.torch import save_file

__all__ = ["CASES", "Case", "Expect"]

SKIPPED, USED, IGNORED, FAILS = "skipped", "used", "ignored", "fails"


@dataclass(frozen=True)
class Expect:
    """`outcome` is SKIPPED/USED/IGNORED for file cases (exit 0), FAILS for exit 2; `fragment` must appear in
    the skip line or the one-line error (or, for IGNORED/USED, in the command's output when given)."""

    outcome: str
    fragment: str = ""


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "file", "data", "bundle" or "flag"
    make: Callable[..., object]  # file: (class folder) -> Path; data: (tmp, good data) -> Path;
    #                               bundle: (tmp, run) -> Path; flag: () -> list[str] of extra arguments
    expect: Expect
    per_command: dict[str, Expect] = field(default_factory=dict)  # exceptions to `expect`
    needs: frozenset[str] = frozenset()  # what a command must take for the case to apply (see COMMANDS)
    unprivileged: bool = False  # run as a user other than root (an unreadable file means nothing to root)

    def expect_for(self, command: str) -> Expect:
        return self.per_command.get(command, self.expect)


_made = itertools.count()


def _photo(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """The cat photo, shifted differently on every call: no two generated files have the same content."""
    shift = next(_made) * 7
    return Image.fromarray(np.roll(skimage.data.chelsea(), shift, axis=1)).resize(size)


def _save(image: Image.Image, path: Path, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _png_chunks(width: int, height: int, pixels: bytes) -> bytes:
    """A PNG made by hand, so the header can claim any size without the pixels existing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    _photo((96, 96)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _exif_rotated(folder: Path) -> Path:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    return _save(_photo(), folder / "phone shot.jpg", exif=exif)


def _animated_gif(folder: Path) -> Path:
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return _save(frames[0], folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)


def _palette_transparent(folder: Path) -> Path:
    image = _photo().convert("P", palette=Image.Palette.ADAPTIVE)
    return _save(image, folder / "palette.png", transparency=0)


def _sixteen_bit(folder: Path) -> Path:
    values = (np.asarray(_photo().convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return _save(Image.fromarray(values), folder / "scan16.png")


def _float_tiff(folder: Path) -> Path:
    values = np.asarray(_photo().convert("L"), dtype=np.float32) / 7.0 - 3.0
    return _save(Image.fromarray(values, mode="F"), folder / "float.tif")


def _symlink_loop(folder: Path) -> Path:
    first, second = folder / "loop_a.jpg", folder / "loop_b.jpg"
    first.symlink_to(second)
    second.symlink_to(first)
    return first


def _broken_symlink(folder: Path) -> Path:
    link = folder / "moved.jpg"
    link.symlink_to(folder / "no-such-file.jpg")
    return link


def _fifo(folder: Path) -> Path:
    path = folder / "pipe.jpg"
    os.mkfifo(path)
    return path


def _directory_loop(folder: Path) -> Path:
    link = folder / "again"
    link.symlink_to(folder, target_is_directory=True)
    return link / "00.jpg"  # what a walk that followed the loop would list


def _leak(folder: Path) -> Path:
    """The same bytes as a photo of another class: the copy in the later class is the leak."""
    original = _write(folder / "shared.jpg", _jpeg_bytes())
    return _write(folder.parent / "coffee" / "shared copy.jpg", original.read_bytes())


def _duplicate(folder: Path) -> Path:
    data = _photo((40, 40)).tobytes()
    original = _save(Image.frombytes("RGB", (40, 40), data), folder / "dup_a.png")
    return _write(folder / "dup_b.png", original.read_bytes())


def _empty_class(folder: Path) -> Path:
    empty = folder.parent / "zebra"
    _write(empty / ".DS_Store", b"\0\0\0\1Bud1")
    return empty


def _unreadable(folder: Path) -> Path:
    path = _save(_photo(), folder / "locked.png")
    path.chmod(0)
    return path


# ---- data cases: (tmp, good class folders) -> the data argument ----

def _csv(tmp: Path, good: Path, body: str, name: str = "labels.csv", encoding: str = "utf-8") -> Path:
    folder = tmp / "csvdata"
    shutil.copytree(good, folder, dirs_exist_ok=True)
    path = folder / name
    path.write_bytes(body.encode(encoding))
    return path


def _csv_rows(good: Path) -> list[str]:
    return [f"{p.relative_to(good).as_posix()},{p.parent.name}" for p in sorted(good.glob("*/*.*"))]


def _csv_missing_files(tmp: Path, good: Path) -> Path:
    rows = [f"{row},extra" for row in _csv_rows(good)] + ["cat/gone.jpg,cat,extra", "coffee/gone.png,coffee,x"]
    return _csv(tmp, good, "path,label,source\n" + "\n".join(rows) + "\n")


def _csv_escape_dotdot(tmp: Path, good: Path) -> Path:
    return _csv(tmp, good, "path,label\n" + "\n".join(_csv_rows(good)) + "\n../../etc/passwd,cat\n")


def _csv_escape_absolute(tmp: Path, good: Path) -> Path:
    return _csv(tmp, good, "path,label\n/etc/hostname,cat\n" + "\n".join(_csv_rows(good)) + "\n")


def _csv_blank_label(tmp: Path, good: Path) -> Path:
    return _csv(tmp, good, "path,label\n" + _csv_rows(good)[0] + "\ncat/01.png,\n")


def _csv_blank_path(tmp: Path, good: Path) -> Path:
    return _csv(tmp, good, "path,label\n" + _csv_rows(good)[0] + "\n ,cat\n")


def _csv_wrong_columns(tmp: Path, good: Path) -> Path:
    return _csv(tmp, good, "file,class\ncat/00.jpg,cat\n")


def _csv_header_only(tmp: Path, good: Path) -> Path:
    return _csv(tmp, good, "path,label\n")


def _csv_nul_path(tmp: Path, good: Path) -> Path:
    return _csv(tmp, good, "path,label\n" + _csv_rows(good)[0] + "\ncat/0\0.jpg,cat\n")


def _csv_latin1(tmp: Path, good: Path) -> Path:
    return _csv(tmp, good, "path,label\ncat/00.jpg,chat noir à Paris\n", encoding="latin-1")


def _all_bad(tmp: Path, good: Path) -> Path:
    for name in ("cat", "coffee"):
        _write(tmp / "allbad" / name / "a.jpg", b"<html>not found</html>")
        _write(tmp / "allbad" / name / "b.jpg", b"")
    return tmp / "allbad"


def _no_images(tmp: Path, good: Path) -> Path:
    """(Not .txt files: a folder of class folders of .txt files is text data, see test_text_data.py.)"""
    for name in ("cat", "coffee"):
        _write(tmp / "noimages" / name / "readme.md", b"nothing here")
    return tmp / "noimages"


def _missing(tmp: Path, good: Path) -> Path:
    return tmp / "no such folder"


def _text_file(tmp: Path, good: Path) -> Path:
    return _write(tmp / "data.txt", b"cats and dogs\n")


def _single_class(tmp: Path, good: Path) -> Path:
    shutil.copytree(good / "cat", tmp / "oneclass" / "cat")
    return tmp / "oneclass"


def _unknown_class(tmp: Path, good: Path) -> Path:
    shutil.copytree(good, tmp / "renamed")
    (tmp / "renamed" / "cat").rename(tmp / "renamed" / "dog")
    return tmp / "renamed"


# ---- bundle cases: (tmp, trained run folder) -> a damaged copy ----

def _copy_run(tmp: Path, run: Path) -> Path:
    return Path(shutil.copytree(run, tmp / "bundle"))


def _edit_json(tmp: Path, run: Path, edit: Callable[[dict], None]) -> Path:
    bundle = _copy_run(tmp, run)
    meta = json.loads((bundle / "model.json").read_text())
    edit(meta)
    (bundle / "model.json").write_text(json.dumps(meta))
    return bundle


def _bundle_no_weights(tmp: Path, run: Path) -> Path:
    bundle = _copy_run(tmp, run)
    (bundle / "model.safetensors").unlink()
    return bundle


def _bundle_flipped_bytes(tmp: Path, run: Path) -> Path:
    bundle = _copy_run(tmp, run)
    data = bytearray((bundle / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.safetensors").write_bytes(bytes(data))
    return bundle


def _bundle_truncated_with_matching_hash(tmp: Path, run: Path) -> Path:
    bundle = _copy_run(tmp, run)
    weights = bundle / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    meta = json.loads((bundle / "model.json").read_text())
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (bundle / "model.json").write_text(json.dumps(meta))
    return bundle


def _bundle_future_version(tmp: Path, run: Path) -> Path:
    return _edit_json(tmp, run, lambda meta: meta.update(format_version=99))


def _bundle_escaping_weights(tmp: Path, run: Path) -> Path:
    return _edit_json(tmp, run, lambda meta: meta.update(weights_file="../../etc/passwd"))


def _bundle_unknown_backbone(tmp: Path, run: Path) -> Path:
    return _edit_json(tmp, run, lambda meta: meta["backbone"].update(name="resnet9000"))


def _bundle_no_classes(tmp: Path, run: Path) -> Path:
    return _edit_json(tmp, run, lambda meta: meta.pop("class_names"))


def _bundle_garbage_json(tmp: Path, run: Path) -> Path:
    bundle = _copy_run(tmp, run)
    (bundle / "model.json").write_text("{not json")
    return bundle


def _bundle_no_json(tmp: Path, run: Path) -> Path:
    bundle = _copy_run(tmp, run)
    (bundle / "model.json").unlink()
    return bundle


def _bundle_foreign_safetensors(tmp: Path, run: Path) -> Path:
    path = tmp / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    return path


def _bundle_pickle(tmp: Path, run: Path) -> Path:
    return _write(tmp / "model.pth", pickle.dumps({"w": 1}))


# ---- flag cases ----

class _Exploit:
    """Unpickling this would create the file `target`; loading with weights_only=True must refuse it."""

    target = ""

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (Path(_Exploit.target),))


def malicious_weights(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _Exploit.target = str(folder / "pwned")
    return _write(folder / "evil.pth", pickle.dumps({"conv_stem.weight": _Exploit()}))


def _flag(*args: str) -> Callable[[], list[str]]:
    return lambda: list(args)


def _file(name: str, make: Callable[[Path], Path], expect: Expect, unprivileged: bool = False,
          **per_command: Expect) -> Case:
    return Case(name, "file", make, expect, dict(per_command), frozenset({"images"}), unprivileged)


def _data(name: str, make: Callable[[Path, Path], Path], expect: Expect, needs: str = "images",
          **per_command: Expect) -> Case:
    return Case(name, "data", make, expect, dict(per_command), frozenset({needs}))


def _bundle(name: str, make: Callable[[Path, Path], Path], fragment: str) -> Case:
    return Case(name, "bundle", make, Expect(FAILS, fragment), {}, frozenset({"bundle"}))


def _bad_flag(name: str, flag: str, value: str, fragment: str = "") -> Case:
    return Case(name, "flag", _flag(flag, value), Expect(FAILS, fragment or flag), {}, frozenset({flag}))


_LEAK_IN_TRAINING = Expect(SKIPPED, "a leak between classes")
_DUPLICATE_IN_TRAINING = Expect(SKIPPED, "a duplicate")

CASES: list[Case] = [
    # files that cannot be used: skipped, listed with the reason
    _file("truncated-jpeg", lambda d: _write(d / "cut.jpg", _jpeg_bytes()[:1500]), Expect(SKIPPED, "truncated")),
    _file("zero-byte", lambda d: _write(d / "empty.jpg", b""), Expect(SKIPPED, "empty file")),
    _file("html-as-jpg", lambda d: _write(d / "page.jpg", b"<!DOCTYPE html><html>404</html>"),
          Expect(SKIPPED, "not an image")),
    _file("text-as-png", lambda d: _write(d / "notes.png", b"shopping list\n"), Expect(SKIPPED, "not an image")),
    _file("random-bytes", lambda d: _write(d / "noise.webp", np.random.default_rng(0).bytes(3000)),
          Expect(SKIPPED, "not an image")),
    _file("truncated-png", lambda d: _write(d / "cut.png", _png_chunks(64, 64, b"\0" * 50)),
          Expect(SKIPPED, "truncated")),
    _file("decompression-bomb", lambda d: _write(d / "bomb.png", _png_chunks(20000, 20000, b"\0" * 100)),
          Expect(SKIPPED, "too large")),
    _file("symlink-loop", _symlink_loop, Expect(SKIPPED, "symlink loop")),
    _file("broken-symlink", _broken_symlink, Expect(SKIPPED, "broken symlink")),
    _file("fifo", _fifo, Expect(SKIPPED, "not a regular file")),
    _file("unreadable", _unreadable, Expect(SKIPPED, "permission denied"), unprivileged=True),
    _file("leak-between-classes", _leak, Expect(USED), train=_LEAK_IN_TRAINING, extract=_LEAK_IN_TRAINING),
    _file("duplicate-in-class", _duplicate, Expect(USED), train=_DUPLICATE_IN_TRAINING,
          extract=_DUPLICATE_IN_TRAINING),
    # odd but valid images: used
    _file("16-bit-png", _sixteen_bit, Expect(USED)),
    _file("cmyk-jpeg", lambda d: _save(_photo().convert("CMYK"), d / "print.jpg"), Expect(USED)),
    _file("palette-transparency", _palette_transparent, Expect(USED)),
    _file("la-png", lambda d: _save(_photo().convert("LA"), d / "grey-alpha.png"), Expect(USED)),
    _file("rgba-webp", lambda d: _save(_photo().convert("RGBA"), d / "alpha.webp"), Expect(USED)),
    _file("grey-jpeg", lambda d: _save(_photo().convert("L"), d / "grey.jpg"), Expect(USED)),
    _file("one-bit-bmp", lambda d: _save(_photo().convert("1"), d / "mono.bmp"), Expect(USED)),
    _file("float-tiff", _float_tiff, Expect(USED)),
    _file("exif-rotated", _exif_rotated, Expect(USED)),
    _file("animated-gif", _animated_gif, Expect(USED)),
    _file("1x1", lambda d: _save(Image.new("RGB", (1, 1), (9, 9, 9)), d / "dot.png"), Expect(USED)),
    _file("very-wide", lambda d: _save(_photo((6000, 3)), d / "strip.png"), Expect(USED)),
    _file("very-tall", lambda d: _save(_photo((3, 6000)), d / "pole.png"), Expect(USED)),
    _file("png-named-jpg", lambda d: _save(_photo(), d / "actually-png.jpg", format="PNG"), Expect(USED)),
    _file("upper-case-extension", lambda d: _save(_photo(), d / "SHOUT.JPG"), Expect(USED)),
    _file("unicode-and-spaces", lambda d: _save(_photo(), d / "café noir ☕ 01.jpg"), Expect(USED)),
    _file("nested-folders", lambda d: _save(_photo(), d / "2024" / "summer trip" / "deep.png"), Expect(USED)),
    # clutter: never listed, never used
    _file("ds-store", lambda d: _write(d / ".DS_Store", b"\0\0\0\1Bud1\0"), Expect(IGNORED)),
    _file("thumbs-db", lambda d: _write(d / "Thumbs.db", b"\xd0\xcf\x11\xe0"), Expect(IGNORED)),
    _file("desktop-ini", lambda d: _write(d / "desktop.ini", b"[.ShellClassInfo]\n"), Expect(IGNORED)),
    _file("hidden-image", lambda d: _save(_photo(), d / ".secret.jpg"), Expect(IGNORED)),
    _file("hidden-folder", lambda d: _save(_photo(), d / ".git" / "objects.png"), Expect(IGNORED)),
    _file("not-an-image-extension", lambda d: _write(d / "labels.txt", b"cat\n"), Expect(IGNORED)),
    _file("directory-symlink-loop", _directory_loop, Expect(IGNORED)),
    _file("empty-class-folder", _empty_class, Expect(IGNORED), train=Expect(IGNORED, "empty class folder(s): zebra")),
    # the data argument as a whole
    _data("missing-path", _missing, Expect(FAILS, "not found")),
    _data("all-files-bad", _all_bad, Expect(FAILS, "could be read"), train=Expect(FAILS, "too few images")),
    _data("no-images", _no_images, Expect(FAILS, "no image"), needs="images"),
    _data("text-file-as-data", _text_file, Expect(FAILS, "not a .csv manifest"), needs="labelled"),
    _data("single-class", _single_class, Expect(FAILS, "at least two class folders"), needs="trains"),
    _data("unknown-class", _unknown_class, Expect(FAILS, "not trained on"), needs="evaluates"),
    _data("csv-missing-files-extra-column", _csv_missing_files,
          Expect(SKIPPED, "cat/gone.jpg: file not found"), needs="labelled"),
    _data("csv-dotdot-escape", _csv_escape_dotdot, Expect(FAILS, "outside the manifest's folder"), needs="labelled"),
    _data("csv-absolute-escape", _csv_escape_absolute, Expect(FAILS, "outside the manifest's folder"),
          needs="labelled"),
    _data("csv-blank-label", _csv_blank_label, Expect(FAILS, "line 3: blank label"), needs="labelled"),
    _data("csv-blank-path", _csv_blank_path, Expect(FAILS, "line 3: blank path"), needs="labelled"),
    _data("csv-wrong-columns", _csv_wrong_columns, Expect(FAILS, "lacks path and label"), needs="labelled"),
    _data("csv-header-only", _csv_header_only, Expect(FAILS, "no rows"), needs="labelled"),
    _data("csv-nul-in-path", _csv_nul_path, Expect(FAILS, "line 3: the path contains a NUL"), needs="labelled"),
    _data("csv-not-utf8", _csv_latin1, Expect(FAILS, "not UTF-8"), needs="labelled"),
    # model bundles
    _bundle("bundle-missing-weights", _bundle_no_weights, "no weights file"),
    _bundle("bundle-corrupted-weights", _bundle_flipped_bytes, "does not match the sha256"),
    _bundle("bundle-truncated-weights", _bundle_truncated_with_matching_hash, "cannot read weights"),
    _bundle("bundle-incompatible-version", _bundle_future_version, "version 99"),
    _bundle("bundle-weights-path-escape", _bundle_escaping_weights, "not a file name inside"),
    _bundle("bundle-unknown-backbone", _bundle_unknown_backbone, "resnet9000"),
    _bundle("bundle-without-classes", _bundle_no_classes, "incomplete"),
    _bundle("bundle-garbage-json", _bundle_garbage_json, "damaged"),
    _bundle("bundle-missing-json", _bundle_no_json, "model.json is missing"),
    _bundle("bundle-foreign-safetensors", _bundle_foreign_safetensors, "not a transferkit checkpoint"),
    _bundle("bundle-pickle", _bundle_pickle, "model bundle not found"),
    # flag values
    _bad_flag("top-zero", "--top", "0"),
    _bad_flag("top-text", "--top", "three"),
    _bad_flag("epochs-zero", "--epochs", "0"),
    _bad_flag("epochs-negative", "--epochs", "-2"),
    _bad_flag("epochs-fraction", "--epochs", "1.5"),
    _bad_flag("lr-zero", "--lr", "0"),
    _bad_flag("lr-text", "--lr", "fast"),
    _bad_flag("lr-infinite", "--lr", "inf"),
    _bad_flag("lr-nan", "--lr", "nan"),
    _bad_flag("batch-size-zero", "--batch-size", "0"),
    _bad_flag("val-split-one", "--val-split", "1"),
    _bad_flag("unfreeze-negative", "--unfreeze-blocks", "-1"),
    _bad_flag("unknown-backbone", "--backbone", "resnet9000", "resnet9000"),
    _bad_flag("unknown-layer", "--layer", "blocks.99", "blocks.99"),
    _bad_flag("weights-missing-file", "--weights", "/nonexistent/w.pth", "/nonexistent/w.pth"),
    Case("weights-malicious-pickle", "flag", lambda: ["--weights", "MALICIOUS"], Expect(FAILS, "could run code"),
         {}, frozenset({"--weights"})),
]
