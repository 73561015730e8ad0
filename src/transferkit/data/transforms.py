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

__all__ = ["eval_transform", "train_transform"]

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


def train_transform(p: Preprocessing, aug: Augmentation,
                    normalise: bool = True) -> Callable[[Image.Image], torch.Tensor]:
    """Random zoom/crop to `input_size`, optional flip and small rotation, then the same normalisation (or a
    uint8 tensor, as in `eval_transform`)."""
    interpolation = _INTERPOLATIONS[p.interpolation]
    steps: list[Callable[[Any], Any]] = [
        v2.RandomResizedCrop(p.input_size, scale=(aug.min_scale, 1.0), interpolation=interpolation, antialias=True),
    ]
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.rotation_degrees > 0:
        steps.append(v2.RandomRotation(aug.rotation_degrees, interpolation=v2.InterpolationMode.BILINEAR))
    return v2.Compose([*steps, *(_to_normalised_tensor(p) if normalise else [v2.ToImage()])])
