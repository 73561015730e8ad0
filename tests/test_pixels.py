"""`data.pixels.crop_pixels` (the torch-free resize and crop the server uses) equals `eval_transform` pixel for
pixel, on real photos and on the shapes where rounding, the aspect cap and the padding decide."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from transferkit.data.pixels import crop_pixels, resized_size
from transferkit.data.preprocess import Preprocessing
from transferkit.data.transforms import eval_transform

LITE0 = Preprocessing(224, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _torch_pixels(image: Image.Image, p: Preprocessing) -> np.ndarray:
    return eval_transform(p, normalise=False)(image).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("photo", ["chelsea", "coffee", "astronaut"])
def test_real_photos_match_eval_transform(photo: str, interpolation: str) -> None:
    p = Preprocessing(240, 0.882, interpolation, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    image = Image.fromarray(getattr(skdata, photo)())
    assert np.array_equal(crop_pixels(image, p), _torch_pixels(image, p))


@pytest.mark.parametrize("size", [(256, 256), (255, 257), (300, 97), (97, 300), (31, 17), (1, 1), (2000, 3),
                                  (3, 2000), (256, 2100), (224, 224), (225, 223), (4097, 255)])
def test_shapes_match_eval_transform(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    ours = crop_pixels(image, LITE0)
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    assert np.array_equal(ours, _torch_pixels(image, LITE0))


def test_resized_size_caps_the_long_side() -> None:
    assert resized_size(4000, 30, 256, 2048) == (2048, 15)  # 34133 wide at 256 high: capped, short side follows
    assert resized_size(640, 480, 256, 2048) == (341, 256)
    assert resized_size(480, 640, 256, 2048) == (256, 341)
