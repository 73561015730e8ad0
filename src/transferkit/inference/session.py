"""`OnnxClassifier`: a whole model run by ONNX Runtime on a CPU, reading uint8 images (N, H, W, 3) at the model's
input size and returning class probabilities (N, classes). The commands use it in this process, and the server
uses it for an exported file and for a run whose graph is cached. Nothing here imports torch: serving an ONNX
graph starts in about a second.

What a deployment needs to feed a graph travels with it as string metadata (`metadata`): the class names, the
preprocessing, the source bundle's sha256, the transferkit version and the backbone. `transferkit export` writes
it into the file's `metadata_props`; a run's cached graph keeps it beside the graph (`inference.bundle_graph`).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit._version import __version__
from transferkit.data.pixels import crop_pixels
from transferkit.data.preprocess import Preprocessing

__all__ = ["CLASSES", "PREPROCESSING", "OnnxClassifier", "cpu_session", "default_threads", "metadata"]

CLASSES, PREPROCESSING, BUNDLE_SHA256, VERSION, BACKBONE = (
    "classes", "preprocessing", "bundle_sha256", "transferkit_version", "backbone")


def metadata(meta: dict[str, Any], p: Preprocessing) -> dict[str, str]:
    """A bundle's description (its `model.json`) as a graph's metadata: everything needed to feed the graph,
    without transferkit."""
    return {
        CLASSES: json.dumps(list(meta["class_names"])),
        PREPROCESSING: json.dumps({
            "input": "uint8 RGB (N, H, W, 3); the graph normalises", "resize": "shorter side", "crop": "center",
            "resize_size": p.resize_size, "input_size": p.input_size, "crop_pct": p.crop_pct,
            "interpolation": p.interpolation, "mean": list(p.mean), "std": list(p.std)}),
        BUNDLE_SHA256: str(meta.get("weights_sha256", "")),
        VERSION: __version__,
        BACKBONE: str(meta["backbone"]["name"]),
    }


def default_threads() -> int:
    """ONNX Runtime's intra-op threads: torch's count when torch is loaded (it may have been set), else this
    process's share of the cores it may run on (torchrun starts LOCAL_WORLD_SIZE processes per machine)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def cpu_session(path: Path | bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU with every graph optimisation on (`threads`: `default_threads()`)."""
    import onnxruntime  # optional at import time: a missing runtime means PyTorch

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or default_threads()
    options.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """`predict(images)` → probabilities; `classes` names the columns; `meta` is the graph's metadata (see
    `metadata`; empty for a bare graph); `preprocess(bytes)` makes an input picture as `transferkit predict` does."""

    def __init__(self, session: Any, classes: Sequence[str], meta: dict[str, str] | None = None,
                 source: Path | None = None) -> None:
        self.session = session
        self.classes = list(classes)
        self.meta = dict(meta or {})
        self.source = source
        shape = session.get_inputs()[0].shape  # ["batch", H, W, 3]
        self.input_size = int(shape[1])
        self._input = session.get_inputs()[0].name
        self._preprocessing = (Preprocessing.from_json(json.loads(self.meta[PREPROCESSING]))
                               if PREPROCESSING in self.meta else None)

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int | None = None) -> OnnxClassifier:
        """A file written by `transferkit export` (its classes and preprocessing are in its metadata)."""
        from transferkit.errors import UserError

        path = Path(path)
        try:
            session = cpu_session(path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"cannot load {path} with ONNX Runtime ({str(exc).splitlines()[0]}): the file is "
                            f"damaged or not an ONNX model; pass a file written by `transferkit export`") from None
        meta = dict(session.get_modelmeta().custom_metadata_map)
        try:
            classifier = cls(session, [str(c) for c in json.loads(meta[CLASSES])], meta, path)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{path} has no usable transferkit metadata ({type(exc).__name__}: {exc}): export "
                            f"it with `transferkit export`") from None
        if classifier.preprocessing is None:
            raise UserError(f"{path} has no usable transferkit metadata (no preprocessing): export it with "
                            f"`transferkit export`")
        return classifier

    @property
    def preprocessing(self) -> Preprocessing | None:
        """How the input is made from a picture (None for a graph without metadata): `preprocess` applies it."""
        return self._preprocessing

    def info(self) -> dict[str, Any]:
        """What the server's `GET /info` shows."""
        import onnxruntime

        return {
            "model": str(self.source) if self.source is not None else None,
            "engine": "onnxruntime",
            "classes": self.classes,
            "backbone": {"name": self.meta.get(BACKBONE)},
            "preprocessing": json.loads(self.meta[PREPROCESSING]) if PREPROCESSING in self.meta else None,
            "bundle_sha256": self.meta.get(BUNDLE_SHA256),
            "versions": {"transferkit": __version__, "bundle_transferkit": self.meta.get(VERSION),
                         "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        }

    def preprocess(self, data: bytes, name: str = "upload") -> np.ndarray:
        """Upload bytes to a uint8 (input_size, input_size, 3) picture: decoded by the safe loader, resized and
        centre-cropped as `transferkit predict` does; `BadImage` naming `name` if unusable."""
        from transferkit.data.images import decode_image

        if self._preprocessing is None:
            raise ValueError("this graph has no preprocessing in its metadata: resize and crop the images yourself")
        p = self._preprocessing
        return crop_pixels(decode_image(data, name, min_size=p.resize_size), p)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) of uint8 images (N, H, W, 3) at the model's input size."""
        images = np.asarray(images)
        size = self.input_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 images of shape (N, {size}, {size}, 3), got {images.dtype} "
                             f"{images.shape}: resize and centre-crop to {size} pixels first")
        out = self.session.run(None, {self._input: np.ascontiguousarray(images)})[0]
        return np.asarray(out, dtype=np.float32)

    __call__ = predict
