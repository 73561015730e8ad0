"""The torchvision transforms built from a `Preprocessing` (and, for training, an `Augmentation`): the one place
where the preprocessing values of `preprocess` become code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

from transferkit.data.pixels import MAX_ASPECT
from transferkit.data.preprocess import Augmentation, Preprocessing

__all__ = ["eval_transform", "random_rotation", "random_zoom", "train_transform"]

_INTERPOLATIONS = {
    "bicubic": v2.InterpolationMode.BICUBIC,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "nearest": v2.InterpolationMode.NEAREST,
}


def _to_normalised_tensor(p: Preprocessing) -> list[Callable[[Any], Any]]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(p.mean), std=list(p.std))]


def eval_transform(p: Preprocessing, normalise: bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side to `resize_size` (the longer one to at most 8x that), centre-crop `input_size`,
    normalise (or, with `normalise=False`, stop at a uint8 tensor and leave normalisation to the engine,
    batched: much cheaper). `pixels.crop_pixels` is the same resize and crop without torch."""
    interpolation = _INTERPOLATIONS[p.interpolation]
    return v2.Compose([
        v2.Resize(p.resize_size, interpolation=interpolation, antialias=True, max_size=MAX_ASPECT * p.resize_size),
        v2.CenterCrop(p.input_size),
        *(_to_normalised_tensor(p) if normalise else [v2.ToImage()]),
    ])


def random_zoom(p: Preprocessing, min_scale: float) -> v2.RandomResizedCrop:
    """Training's zoom/crop: a random `min_scale`-to-whole share of the image's area, resized to `input_size`."""
    return v2.RandomResizedCrop(p.input_size, scale=(min_scale, 1.0), interpolation=_INTERPOLATIONS[p.interpolation],
                                antialias=True)


def random_rotation(degrees: float) -> v2.RandomRotation:
    """Training's rotation: by an angle drawn uniformly within +-`degrees`."""
    return v2.RandomRotation(degrees, interpolation=v2.InterpolationMode.BILINEAR)


def train_transform(p: Preprocessing, aug: Augmentation,
                    normalise: bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """Random zoom/crop to `input_size`, optional flip and small rotation, then the same normalisation (or a
    uint8 tensor, as in `eval_transform`)."""
    steps: list[Callable[[Any], Any]] = [random_zoom(p, aug.min_scale)]
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.rotation_degrees > 0:
        steps.append(random_rotation(aug.rotation_degrees))
    return v2.Compose([*steps, *(_to_normalised_tensor(p) if normalise else [v2.ToImage()])])
