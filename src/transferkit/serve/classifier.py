"""What the server needs from a model, and nothing else: its classes, how to turn upload bytes into the
picture it takes, and probabilities for a batch of those pictures.

The server (`app`, `batcher`) only knows this protocol, so a run folder (PyTorch, `torch_classifier`) and an
exported `.onnx` file (ONNX Runtime, `onnx_classifier`) serve the same way. Both preprocess with the same code
as `transferkit predict` (`data.images` decoding, `data.transforms.eval_transform` resize and crop), stopping
at uint8 pixels; normalisation happens batched inside `predict`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from transferkit.errors import UserError

if TYPE_CHECKING:
    from PIL import Image

    from transferkit.data.preprocess import Preprocessing

__all__ = ["Classifier", "check_model_path", "load_classifier", "pixels_from_bytes", "uint8_transform"]


class Classifier(Protocol):
    """A loaded image classifier as the server sees it."""

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of `predict`'s columns."""

    @property
    def input_size(self) -> int:
        """Side of the square picture `preprocess` returns and `predict` takes."""

    def info(self) -> dict[str, Any]:
        """What `GET /info` shows: classes, backbone, preprocessing, versions, the bundle's sha256."""

    def preprocess(self, data: bytes, name: str = "upload") -> np.ndarray:
        """Upload bytes to a uint8 (input_size, input_size, 3) picture; `BadImage` naming `name` if unusable."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, input_size, input_size, 3) pictures to float (N, classes) probabilities."""


def uint8_transform(preprocessing: Preprocessing) -> Callable[[Image.Image], np.ndarray]:
    """`predict`'s resize and centre crop (`eval_transform`), stopping at uint8 HWC pixels."""
    from transferkit.data.transforms import eval_transform

    transform = eval_transform(preprocessing, normalise=False)

    def pixels(image: Image.Image) -> np.ndarray:
        return np.ascontiguousarray(transform(image).permute(1, 2, 0).numpy())

    return pixels


def pixels_from_bytes(data: bytes, name: str, preprocessing: Preprocessing,
                      transform: Callable[[Image.Image], np.ndarray]) -> np.ndarray:
    """Decode like `predict` (the safe loader, JPEGs drafted at the resize size) and transform."""
    from transferkit.data.images import decode_image

    return transform(decode_image(data, name, min_size=preprocessing.resize_size))


def check_model_path(path: str | os.PathLike[str]) -> Path:
    """A run folder, a checkpoint.safetensors or an .onnx file that exists: checked before anything heavy loads."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model not found: {path} — pass a run folder made by `transferkit train`, a "
                        f"checkpoint.safetensors file or an .onnx file made by `transferkit export`")
    if path.is_file() and path.suffix.lower() not in (".onnx", ".safetensors"):
        raise UserError(f"cannot serve {path}: expected a run folder, a checkpoint.safetensors file or an .onnx "
                        f"file made by `transferkit export`")
    return path


def load_classifier(path: str | os.PathLike[str]) -> Classifier:
    """The classifier in a run folder or checkpoint (PyTorch) or an exported .onnx file (ONNX Runtime)."""
    path = check_model_path(path)
    if path.suffix.lower() == ".onnx":
        from transferkit.serve.onnx_classifier import OnnxClassifier

        return OnnxClassifier.load(path)
    from transferkit.serve.torch_classifier import TorchClassifier

    return TorchClassifier.load(path)
