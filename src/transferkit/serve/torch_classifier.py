"""A trained run served with PyTorch (on a GPU, when asked, or when its ONNX graph cannot be used): the bundle
loaded by `io.bundle.load_bundle`, normalisation batched on uint8 pixels (the same arithmetic as `eval_transform`:
x / 255, minus mean, over std), then a softmax."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit._version import __version__
from transferkit.data.images import decode_image
from transferkit.data.pixels import crop_pixels
from transferkit.data.preprocess import Preprocessing
from transferkit.io.bundle import load_bundle
from transferkit.model import TransferModel
from transferkit.runtime import Runtime

__all__ = ["TorchClassifier"]


class TorchClassifier:
    """`Classifier` for a run folder or checkpoint file."""

    def __init__(self, model: TransferModel, meta: dict[str, Any], source: Path, runtime: Runtime) -> None:
        self.runtime = runtime
        runtime.place(model).eval()  # in place: Module.to returns the module itself
        self.model = model
        self.meta = meta
        self.source = source
        self.preprocessing: Preprocessing = model.preprocessing
        p = self.preprocessing
        self._mean = torch.tensor(p.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(p.std, dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def load(cls, path: str | os.PathLike[str], runtime: Runtime | None = None) -> TorchClassifier:
        bundle = load_bundle(path)
        return cls(bundle.model, bundle.meta, Path(path), runtime or Runtime.detect(workers=0))

    @property
    def classes(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def input_size(self) -> int:
        return self.preprocessing.input_size

    def info(self) -> dict[str, Any]:
        return {
            "model": str(self.source),
            "engine": "pytorch",
            "classes": self.classes,
            "backbone": self.meta.get("backbone"),
            "preprocessing": self.meta.get("preprocessing"),
            "bundle_sha256": self.meta.get("weights_sha256"),
            "versions": {"transferkit": __version__, "bundle_transferkit": self.meta.get("transferkit_version"),
                         "torch": torch.__version__, "python": platform.python_version()},
        }

    def preprocess(self, data: bytes, name: str = "upload") -> np.ndarray:
        return crop_pixels(decode_image(data, name, min_size=self.preprocessing.resize_size), self.preprocessing)

    @torch.inference_mode()
    def predict(self, batch: np.ndarray) -> np.ndarray:
        pixels = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
        images = (pixels.float() / 255.0 - self._mean) / self._std  # ToDtype(scale=True), then Normalize
        step = self.runtime.micro_batch_size(len(images))
        outputs = []
        for start in range(0, len(images), step):
            with self.runtime.autocast():
                out = self.model(self.runtime.images(images[start:start + step])).float()
            outputs.append(out.softmax(dim=1).cpu().numpy())
        return np.concatenate(outputs) if outputs else np.zeros((0, len(self.classes)), dtype=np.float32)
