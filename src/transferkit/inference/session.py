"""`OnnxClassifier`: a whole model run by ONNX Runtime on a CPU, reading uint8 images (N, H, W, 3) at the model's
input size and returning class probabilities (N, classes). The commands use it in this process; a server can
load an exported file (`OnnxClassifier.load`) and needs no torch to run it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.preprocess import Preprocessing

__all__ = ["OnnxClassifier"]


class OnnxClassifier:
    """`predict(images)` → probabilities; `classes` names the columns; `meta` is the file's metadata (for an
    exported file: classes, preprocessing, bundle sha256, transferkit version, backbone)."""

    def __init__(self, session: Any, classes: Sequence[str], meta: dict[str, str] | None = None) -> None:
        self.session = session
        self.classes = list(classes)
        self.meta = dict(meta or {})
        shape = session.get_inputs()[0].shape  # ["batch", H, W, 3]
        self.input_size = int(shape[1])
        self._input = session.get_inputs()[0].name

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int | None = None) -> OnnxClassifier:
        """A file written by `transferkit export` (its classes and preprocessing are in its metadata)."""
        from transferkit.errors import UserError
        from transferkit.inference.onnx import cpu_session

        path = Path(path)
        try:
            session: Any = cpu_session(path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"cannot load {path} with ONNX Runtime ({str(exc).splitlines()[0]}): pass a file "
                            f"written by `transferkit export`") from None
        meta = dict(session.get_modelmeta().custom_metadata_map)
        if "classes" not in meta:
            raise UserError(f"{path} has no class names in its metadata: export it with `transferkit export`")
        return cls(session, json.loads(meta["classes"]), meta)

    @property
    def preprocessing(self) -> Preprocessing | None:
        """How the input is made from a picture, for an exported file (None for a graph without metadata):
        `transferkit.data.transforms.eval_transform(classifier.preprocessing, normalise=False)` makes it."""
        if "preprocessing" not in self.meta:
            return None
        return Preprocessing.from_json(json.loads(self.meta["preprocessing"]))

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
