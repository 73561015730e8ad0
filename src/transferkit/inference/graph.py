"""The deployable graph of a classifier: uint8 images (N, H, W, 3) in, softmax probabilities out, with the
layout change and the normalisation inside, so whoever runs it only decodes, resizes and crops.

The same graph serves this process (cached under `cache_dir()/onnx`, keyed by a hash of every tensor, the input
size and the software versions) and `transferkit export`, which adds the metadata and writes it where asked.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferkit._version import __version__
from transferkit.data.preprocess import Preprocessing
from transferkit.features.engine import Normalised, cache_dir, module_sha256
from transferkit.inference.onnx import OPSET, export_module
from transferkit.inference.session import PARITY_TOLERANCE  # re-exported: the checks here use it

__all__ = ["INPUT", "OUTPUT", "PARITY_TOLERANCE", "Probabilities", "export_graph", "graph_path", "parity",
           "torch_probabilities"]

log = logging.getLogger(__name__)

INPUT, OUTPUT = "images", "probabilities"


class Probabilities(nn.Module):
    """`net` (normalised images (N, 3, H, W) → logits) behind the normalisation and before a softmax, reading
    uint8 images (N, H, W, 3) as decoders hand them out."""

    def __init__(self, net: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.normalised = Normalised(net, preprocessing.mean, preprocessing.std)
        self.temperature = float(getattr(net, "temperature", 1.0))  # a plain attribute, not a tensor: in the key

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.normalised(images.permute(0, 3, 1, 2)).softmax(dim=1)


def graph_path(module: Probabilities, input_size: int) -> Path:
    """Where the graph of `module` is cached: its name says which tensors, input size and versions made it."""
    key = hashlib.sha256(f"classifier|{module_sha256(module)}|T {module.temperature!r}|{input_size}|"
                         f"torch {torch.__version__}|opset {OPSET}|transferkit {__version__}".encode()).hexdigest()[:32]
    return cache_dir() / "onnx" / f"classifier-{key}.onnx"


def export_graph(module: Probabilities, input_size: int, path: Path) -> Path:
    """Write the graph of `module` to `path` (atomically); traced with a batch of 2, so the axis stays dynamic."""
    log.debug(f"exporting the model to ONNX: {path}")
    export_module(module, torch.zeros(2, input_size, input_size, 3, dtype=torch.uint8), path, INPUT, OUTPUT)
    return path


@torch.inference_mode()
def torch_probabilities(module: Probabilities, images: np.ndarray) -> np.ndarray:
    """What PyTorch gives for uint8 images (N, H, W, 3), on the CPU in float32 (the reference of every check)."""
    return module.cpu().eval()(torch.from_numpy(np.ascontiguousarray(images))).float().numpy()


def parity(run: object, module: Probabilities, input_size: int) -> float:
    """Largest absolute probability difference between `run` (uint8 NHWC → probabilities) and PyTorch on a fixed
    batch of random images."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, input_size, input_size, 3), generator=generator, dtype=torch.uint8).numpy()
    ours = np.asarray(run(images))  # type: ignore[operator]
    return float(np.abs(ours - torch_probabilities(module, images)).max())
