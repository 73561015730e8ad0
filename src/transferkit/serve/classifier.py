"""What the server needs from a model, and nothing else: its classes, how to turn upload bytes into the
picture it takes, and probabilities for a batch of those pictures.

The server (`app`, `batcher`) only knows this protocol. An exported `.onnx` file, and on a CPU a run folder or
checkpoint, are served by ONNX Runtime (`inference.session.OnnxClassifier`; a run's checked graph is found in the
cache without importing torch, `inference.bundle_graph`). On a GPU, when asked (`engine="torch"`), or when the
graph cannot be used, a run is served by PyTorch (`torch_classifier`). Both preprocess as `transferkit predict`
does (the safe decoder, then its resize and centre crop, `data.pixels`), stopping at uint8 pixels; normalisation
happens batched inside `predict`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from transferkit.errors import UserError
from transferkit.inference.session import OnnxClassifier

__all__ = ["ENGINES", "Classifier", "check_model_path", "gpu_visible", "load_classifier"]

ENGINES = ("auto", "onnx", "torch")


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


def gpu_visible() -> bool:
    """Whether an NVIDIA GPU is there for this process, told without importing torch (its driver's listing)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return gpus.is_dir() and any(gpus.iterdir())
    except OSError:
        return False


def load_classifier(path: str | os.PathLike[str], engine: str = "auto",
                    say: Callable[[str], None] = lambda message: None) -> Classifier:
    """The classifier of an .onnx file, a run folder or a checkpoint; `say` is told which engine runs it and why.
    `engine`: auto (ONNX Runtime, but PyTorch for a run on a machine with a GPU), onnx, or torch (runs only)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    path = check_model_path(path)
    if path.suffix.lower() == ".onnx":
        if engine == "torch":
            raise UserError(f"{path} is an ONNX file, which only ONNX Runtime runs: drop --engine torch, or serve "
                            f"the run folder it was exported from")
        say("engine: ONNX Runtime (an exported file)")
        return OnnxClassifier.load(path)
    if engine == "auto" and gpu_visible():
        engine, why = "torch", "a GPU is present"
    else:
        why = "asked for"
    if engine != "torch":
        from transferkit.inference.bundle_graph import cached_classifier, graph_classifier

        found = cached_classifier(path)
        if found.classifier is None:
            say(f"{found.note}: loading the run with PyTorch to make and check it")
            found = graph_classifier(path)
        if found.classifier is not None:
            say(f"engine: {found.note}")
            return found.classifier
        why = found.note
    from transferkit.serve.torch_classifier import TorchClassifier

    classifier = TorchClassifier.load(path)
    say(f"engine: PyTorch on {classifier.runtime.device.type} ({why})")
    return classifier
