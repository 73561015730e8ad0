"""`predict`'s resize and centre crop (`transforms.eval_transform` with `normalise=False`) in Pillow and NumPy only,
for what must start without torch (serving an ONNX graph). The arithmetic is torchvision's for a PIL image:
shorter side to `resize_size` (the longer one truncated, and capped at 8x), then a centre crop that pads with black
where the picture is smaller; `tests/test_pixels.py` checks it equals `eval_transform` pixel for pixel."""

from __future__ import annotations

import numpy as np
from PIL import Image

from transferkit.data.preprocess import Preprocessing

__all__ = ["MAX_ASPECT", "crop_pixels", "resized_size"]

# A 40000x3 strip is a small file, but scaling its short side up to 256 would make a 3.4-gigapixel picture.
# Beyond this aspect ratio the long side is capped instead (the centre crop then pads the short side).
MAX_ASPECT = 8

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


def resized_size(width: int, height: int, short_side: int, max_size: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to `short_side`, the longer side at most `max_size`."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = short_side, int(short_side * long / short)
    if new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_short, new_long) if width <= height else (new_long, new_short)


def crop_pixels(image: Image.Image, p: Preprocessing) -> np.ndarray:
    """An RGB picture as the model's uint8 input (input_size, input_size, 3)."""
    size = resized_size(image.width, image.height, p.resize_size, MAX_ASPECT * p.resize_size)
    if size != image.size:
        image = image.resize(size, resample=_RESAMPLE[p.interpolation])
    pixels = np.asarray(image, dtype=np.uint8)
    crop = p.input_size
    height, width = pixels.shape[:2]
    if crop > height or crop > width:
        pad_h, pad_w = max(crop - height, 0), max(crop - width, 0)
        pixels = np.pad(pixels, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
        height, width = pixels.shape[:2]
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    return np.ascontiguousarray(pixels[top:top + crop, left:left + crop])
