"""Preprocessing as data: what a backbone expects at its input, and the augmentation used in training.

The same `Preprocessing` value is stored in the backbone spec, copied into every bundle and read back at
prediction time, so a user never calls a per-family `preprocess_input` and prediction always sees exactly the
transform that training used (`transforms` builds the torchvision transforms from these values). Plain data,
no torch: the backbone table and `TrainConfig` use it, and the command line imports those before torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Augmentation", "Preprocessing"]


@dataclass(frozen=True)
class Preprocessing:
    """Input size, resize/crop ratio, interpolation and normalisation a pretrained network was trained with."""

    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize_size(self) -> int:
        """Shorter side before the centre crop (timm's convention: input_size / crop_pct)."""
        return math.floor(self.input_size / self.crop_pct)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            crop_pct=float(data["crop_pct"]),
            interpolation=str(data["interpolation"]),
            mean=(float(data["mean"][0]), float(data["mean"][1]), float(data["mean"][2])),
            std=(float(data["std"][0]), float(data["std"][1]), float(data["std"][2])),
        )


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation: zoom+crop (random resized crop), horizontal flip, small rotation."""

    min_scale: float = 0.6
    hflip: bool = True
    rotation_degrees: float = 10.0
