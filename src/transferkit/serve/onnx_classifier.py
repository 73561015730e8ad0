"""An exported `.onnx` model served with ONNX Runtime: uint8 NHWC pixels in, probabilities out (normalisation and
softmax are inside the graph); classes and preprocessing come from the graph's metadata_props.

Metadata keys (each value a string; the first two JSON), as the export branch's `inference/export.py` writes
them: `classes`, `preprocessing` (`Preprocessing` fields; other keys ignored), `bundle_sha256`,
`transferkit_version`, `backbone`.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transferkit._version import __version__
from transferkit.data.preprocess import Preprocessing
from transferkit.errors import UserError
from transferkit.serve.classifier import pixels_from_bytes, uint8_transform

__all__ = ["BACKBONE_KEY", "CLASSES_KEY", "PREPROCESSING_KEY", "SHA256_KEY", "VERSION_KEY", "OnnxClassifier"]

CLASSES_KEY = "classes"
PREPROCESSING_KEY = "preprocessing"
SHA256_KEY = "bundle_sha256"
VERSION_KEY = "transferkit_version"
BACKBONE_KEY = "backbone"


class OnnxClassifier:
    """`Classifier` for an .onnx file made by `transferkit export`."""

    def __init__(self, session: Any, metadata: dict[str, str], source: Path) -> None:
        try:
            self._classes = [str(c) for c in json.loads(metadata[CLASSES_KEY])]
            pre = json.loads(metadata[PREPROCESSING_KEY])
            self.preprocessing = Preprocessing.from_json({k: v for k, v in pre.items() if k != "kind"})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{source} has no usable transferkit metadata ({type(exc).__name__}: {exc}): "
                            f"serve an .onnx file made by `transferkit export`") from None
        self.session = session
        self.metadata = metadata
        self.source = source
        self._input = session.get_inputs()[0].name
        self._transform: Callable[[Image.Image], np.ndarray] = uint8_transform(self.preprocessing)

    @classmethod
    def load(cls, path: str | os.PathLike[str], threads: int | None = None) -> OnnxClassifier:
        import onnxruntime

        path = Path(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for any unreadable graph
            raise UserError(f"cannot load {path} with ONNX Runtime ({str(exc).splitlines()[0]}): the file is "
                            f"damaged or not an ONNX model") from None
        return cls(session, dict(session.get_modelmeta().custom_metadata_map), path)

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    def info(self) -> dict[str, Any]:
        import onnxruntime

        return {
            "model": str(self.source),
            "engine": "onnxruntime",
            "classes": self.classes,
            "backbone": {"name": self.metadata.get(BACKBONE_KEY)},
            "preprocessing": json.loads(self.metadata[PREPROCESSING_KEY]),
            "bundle_sha256": self.metadata.get(SHA256_KEY),
            "versions": {"transferkit": __version__, "bundle_transferkit": self.metadata.get(VERSION_KEY),
                         "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        }

    def preprocess(self, data: bytes, name: str = "upload") -> np.ndarray:
        return pixels_from_bytes(data, name, self.preprocessing, self._transform)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.uint8)})[0]
        return np.asarray(out, dtype=np.float32)
