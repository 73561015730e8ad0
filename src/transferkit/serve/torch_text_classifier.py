"""A trained text run served with PyTorch: the bundle loaded by `text.bundle.load_text_bundle`, texts tokenised
and cut at the window exactly as `transferkit predict` does, each batch padded to its own longest text. (An
exported `.onnx` text model is served by ONNX Runtime instead, `inference.text_session`.)"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit._version import __version__
from transferkit.runtime import Runtime
from transferkit.text.bundle import load_text_bundle
from transferkit.text.model import TextModel

__all__ = ["TorchTextClassifier"]


class TorchTextClassifier:
    """`TextClassifier` for a text run folder or checkpoint file."""

    modality = "text"

    def __init__(self, model: TextModel, meta: dict[str, Any], source: Path, runtime: Runtime) -> None:
        self.runtime = runtime
        self.model = model.to(runtime.device).eval()
        self.meta, self.source = meta, source
        self.max_tokens = model.encoder.max_tokens

    @classmethod
    def load(cls, path: str | os.PathLike[str], runtime: Runtime | None = None) -> TorchTextClassifier:
        bundle = load_text_bundle(path)
        return cls(bundle.model, bundle.meta, Path(path), runtime or Runtime.detect(workers=0))

    @property
    def classes(self) -> list[str]:
        return list(self.model.class_names)

    def info(self) -> dict[str, Any]:
        return {
            "model": str(self.source),
            "modality": "text",
            "engine": "pytorch",
            "classes": self.classes,
            "encoder": {"name": self.model.encoder.spec.name},
            "preprocessing": self.meta.get("preprocessing"),
            "bundle_sha256": self.meta.get("weights_sha256"),
            "versions": {"transferkit": __version__, "bundle_transferkit": self.meta.get("transferkit_version"),
                         "torch": torch.__version__, "python": platform.python_version()},
        }

    def tokenize(self, texts: Sequence[str]) -> tuple[list[np.ndarray], list[bool]]:
        ids, cut = self.model.encoder.encode_ids(texts)
        return [np.asarray(row, dtype=np.int64) for row in ids], cut

    @torch.inference_mode()
    def predict(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        input_ids, mask = self.model.encoder.pad([row.tolist() for row in rows])
        device = self.runtime.device
        return self.model(input_ids.to(device), mask.to(device)).float().softmax(dim=1).cpu().numpy()
