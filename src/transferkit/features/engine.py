"""The fastest way to run a frozen base here: ONNX Runtime on a CPU, PyTorch on a GPU.

A frozen base is a fixed function, so on a CPU it is exported once to ONNX (torch's own exporter), cached on
disk under a key made of its weights' hash and the software versions, and run by ONNX Runtime, which fuses
BatchNorm into the convolutions and picks kernels for this CPU (about 4x PyTorch eager on Lite0 here; see
benchmarks/extract.py). Every time an engine is made its output is checked against PyTorch on a fixed batch;
if it differs by more than `PARITY_TOLERANCE`, or ONNX Runtime is missing or the export fails, the engine is
PyTorch and `Engine.note` says why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferkit._version import __version__
from transferkit.data.preprocess import Preprocessing
from transferkit.features.source import ENGINES
from transferkit.inference.onnx import OPSET, export_module
from transferkit.inference.session import cpu_session
from transferkit.io.atomic import atomic_write_text
from transferkit.io.locations import cache_dir  # re-exported: the engine's callers found it here
from transferkit.runtime import Runtime

__all__ = ["ENGINES", "PARITY_TOLERANCE", "Engine", "cache_dir", "make_engine", "module_sha256"]

PARITY_TOLERANCE = 1e-3  # max absolute difference of pooled features, ONNX Runtime vs PyTorch


def module_sha256(module: nn.Module) -> str:
    """A hash of every tensor (parameters and buffers) with its name, shape and dtype."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class Normalised(nn.Module):
    """`module` behind the normalisation: reads uint8 images (N, 3, H, W), so the per-image work left to the
    decoding workers is decode, resize and crop, and the scaling runs batched inside the engine."""

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, module: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, 3, 1, 1)))
        self.register_buffer("shift", -torch.tensor(mean).view(1, 3, 1, 1) / torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.float() * self.scale + self.shift)


@dataclass
class Engine:
    """Pooled features of a batch of uint8 images (N, 3, H, W) as a float32 array (N, D)."""

    name: str  # "onnxruntime" or "pytorch"
    batch_size: int  # images per call that run fastest on this engine
    note: str  # why this engine (shown in logs)
    _module: nn.Module | None = None
    _session: object | None = None
    _runtime: Runtime | None = None

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if self._session is not None:
            out = self._session.run(None, {"images": images.numpy()})[0]  # type: ignore[attr-defined]
            return np.asarray(out, dtype=np.float32)
        assert self._module is not None and self._runtime is not None
        return _torch_features(self._module, images, self._runtime)


@torch.inference_mode()
def _torch_features(module: nn.Module, images: torch.Tensor, runtime: Runtime) -> np.ndarray:
    with runtime.autocast():
        return module(runtime.images(images)).float().cpu().numpy()


def make_engine(base: nn.Module, preprocessing: Preprocessing, runtime: Runtime, prefer: str = "auto") -> Engine:
    """An engine for `base` (a frozen base: normalised images → pooled features) that reads uint8 images.
    `prefer`: auto (ONNX Runtime on a CPU when it is installed and matches PyTorch, else PyTorch) or torch."""
    if prefer not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {prefer!r}")
    module = Normalised(base, preprocessing.mean, preprocessing.std).eval()
    input_size = preprocessing.input_size
    device = runtime.device

    def pytorch(reason: str) -> Engine:
        runtime.place(module)
        return Engine("pytorch", runtime.micro_batch_size(64), f"PyTorch ({reason})", _module=module,
                      _runtime=runtime)

    if prefer == "torch" or device.type != "cpu":
        return pytorch("asked for" if prefer == "torch" else f"on {device.type}")
    try:
        session, worst = _onnx_session(module, input_size)
    except Exception as exc:  # any failure to export or run falls back to the engine that always works
        return pytorch(f"ONNX Runtime unavailable: {type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}")
    if worst > PARITY_TOLERANCE:
        return pytorch(f"ONNX Runtime differs from PyTorch by {worst:.2g} > {PARITY_TOLERANCE}")
    return Engine("onnxruntime", 16, f"ONNX Runtime (matches PyTorch to {worst:.1e})", _session=session)


_SESSIONS: dict[Path, tuple[object, float]] = {}  # this process's sessions and their parity, by model file


def _onnx_session(module: nn.Module, input_size: int) -> tuple[object, float]:
    """An ONNX Runtime session for `module` (exported on first use, then loaded from the cache) and its largest
    difference from PyTorch."""
    import onnxruntime  # noqa: F401  # optional at import time: a missing runtime means the PyTorch engine

    key = hashlib.sha256(f"{module_sha256(module)}|{input_size}|torch {torch.__version__}|opset {OPSET}|"
                         f"transferkit {__version__}".encode()).hexdigest()[:32]
    path = cache_dir() / "onnx" / f"{key}.onnx"
    if path in _SESSIONS and path.is_file():
        return _SESSIONS[path]
    if not path.is_file():
        _export(module, input_size, path)
    try:
        session = cpu_session(path)
    except Exception:  # a damaged cache file: export again once
        _export(module, input_size, path)
        session = cpu_session(path)
    _SESSIONS[path] = session, _parity(session, module, input_size)
    return _SESSIONS[path]


def _export(module: nn.Module, input_size: int, path: Path) -> None:
    export_module(module, torch.zeros(2, 3, input_size, input_size, dtype=torch.uint8), path, "images", "features")
    atomic_write_text(path.with_suffix(".json"), json.dumps({"torch": torch.__version__, "opset": OPSET,
                                                             "input_size": input_size}))


def _parity(session: object, module: nn.Module, input_size: int) -> float:
    """Largest absolute difference from PyTorch on a fixed batch of random images."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, input_size, input_size), generator=generator, dtype=torch.uint8)
    ours = session.run(None, {"images": images.numpy()})[0]  # type: ignore[attr-defined]
    return float(np.abs(ours - _torch_features(module.cpu(), images, Runtime(torch.device("cpu")))).max())
