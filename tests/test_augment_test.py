"""auto's augmentation test: each augmentation the configuration turns on is measured with a cross-validated
probe on cached features before fine-tuning uses it. Data whose classes are each other's mirror images must
lose the flip, data whose class is an orientation must lose a rotation as large as the angle between two classes
(the default +-10 degrees did not cost a probe on bars 12 degrees apart), data whose class is a size must lose
zoom; photos keep the flip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from transferkit.data.preprocess import Augmentation
from transferkit.model import Backbone
from transferkit.runtime import Runtime
from transferkit.selection.scores import probe_accuracy_with_views
from transferkit.training.augment_test import TOLERANCE, AugmentationTest, augmentation_test
from transferkit.training.config import TrainConfig
from transferkit.training.run import Run


def test_views_that_carry_another_class_lower_the_probe() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 40)
    features = rng.normal(size=(80, 8)) + 3.0 * labels[:, None]
    without, with_views = probe_accuracy_with_views(
        features, {"same": features + rng.normal(scale=0.1, size=features.shape),
                   "swapped": features[::-1]}, labels)  # each swapped view looks like the other class
    assert without == probe_accuracy_with_views(features, {}, labels)[0]  # the same folds, however many view sets
    assert with_views["same"] >= without - 0.02 and with_views["swapped"] < without - 0.2


def test_what_is_left_out_is_what_cost_the_probe() -> None:
    tested = AugmentationTest(0.80, {"flip": 0.80 - TOLERANCE, "rotation": 0.79, "zoom": 0.85}, 100)
    assert (tested.keeps("flip"), tested.keeps("rotation"), tested.keeps("zoom")) == (True, False, True)
    assert tested.apply(Augmentation(0.6, True, 10.0)) == Augmentation(0.6, True, 0.0)
    no_zoom = AugmentationTest(0.80, {"zoom": 0.70}, 100)
    assert no_zoom.keeps("flip") and no_zoom.apply(Augmentation(0.6, True, 10.0)) == Augmentation(1.0, True, 10.0)
    assert no_zoom.to_json() == {"images": 100, "probe_accuracy": 0.8, "with_views": {"zoom": 0.7}, "kept": []}
    assert "0.700 with zoom (left out)" in no_zoom.describe()


def _drawn(root: Path, classes: dict[str, object], per_class: int, draw: object) -> Path:
    """`per_class` 96-px images of each class, each drawn by `draw(canvas, value, rng)` on a random light colour."""
    rng = np.random.default_rng(0)
    for name, value in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(180, 256, 3)))
            draw(ImageDraw.Draw(image), value, rng)  # type: ignore[operator]
            image.save(root / name / f"{i:02d}.png")
    return root


def _ink(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(v) for v in rng.integers(0, 90, 3))


def _letter(canvas: ImageDraw.ImageDraw, letter: str, rng: np.random.Generator) -> None:
    font = ImageFont.load_default(size=int(rng.integers(50, 80)))
    canvas.text((int(rng.integers(5, 40)), int(rng.integers(-15, 10))), letter, font=font, fill=_ink(rng))


def _bar(canvas: ImageDraw.ImageDraw, degrees: float, rng: np.random.Generator) -> None:
    """A long bar through a point near the centre at `degrees` (+-2) from horizontal."""
    angle = np.radians(degrees + rng.uniform(-2, 2))
    cx, cy = rng.uniform(40, 56, 2)
    dx, dy = 40 * np.cos(angle), -40 * np.sin(angle)
    canvas.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=_ink(rng), width=7)


def _disc(canvas: ImageDraw.ImageDraw, radius: float, rng: np.random.Generator) -> None:
    """A disc of `radius` (+-1) pixels near the centre."""
    r = radius + rng.uniform(-1, 1)
    cx, cy = rng.uniform(40, 56, 2)
    canvas.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_ink(rng))


@pytest.mark.slow
def test_each_augmentation_is_tested_on_the_data(photo_data: Path, tmp_path: Path) -> None:
    backbone = Backbone.from_pretrained("efficientnet_lite0")

    def tested(data: Path, name: str, aug: Augmentation) -> AugmentationTest | None:
        cfg = TrainConfig(augmentation=aug)
        return augmentation_test(Run(data, tmp_path / name, cfg, Runtime.detect()), backbone, tmp_path / f"f{name}")

    assert tested(photo_data, "none", Augmentation(1.0, False, 0.0)) is None  # nothing turned on: nothing read
    assert not (tmp_path / "fnone").exists()

    letters = _drawn(tmp_path / "letters", {c: c for c in "bdpq"}, 16, _letter)  # each the mirror of another
    handed = tested(letters, "letters", Augmentation(1.0, True, 0.0))
    assert handed is not None and set(handed.with_views) == {"flip"} and not handed.keeps("flip")
    assert handed.with_views["flip"] < handed.without - 0.1
    bars = _drawn(tmp_path / "bars", {f"{d}deg": d for d in (0, 45, 90, 135)}, 16, _bar)  # the angle is the class
    turned = tested(bars, "bars", Augmentation(1.0, False, 45.0))  # as far as the angle between two classes
    assert turned is not None and set(turned.with_views) == {"rotation"} and not turned.keeps("rotation")
    discs = _drawn(tmp_path / "discs", {f"r{r}": r for r in (10, 13, 16, 19)}, 16, _disc)  # the size is the class
    zoomed = tested(discs, "discs", Augmentation(0.6, False, 0.0))
    assert zoomed is not None and set(zoomed.with_views) == {"zoom"} and not zoomed.keeps("zoom")
    photos = tested(photo_data, "photos", Augmentation())
    assert photos is not None and set(photos.with_views) == {"flip", "rotation", "zoom"} and photos.images == 24
    assert photos.keeps("flip")
