"""What scores a batch of decoded images in this process: the model's ONNX graph on ONNX Runtime when that pays and
matches PyTorch, else PyTorch, with the reason (`Runner.note`).

On a CPU, ONNX Runtime runs these networks much faster than PyTorch eager (it fuses BatchNorm into the
convolutions and picks kernels for this CPU), but exporting a model costs about 10 s here. The graph is cached by
a hash of the weights, so it is exported once per model: on first sight of a model, a pass of fewer than
`EXPORT_PAYS` images runs on PyTorch instead (the export would cost more than it saves); a model whose graph is
cached (a bundle exported or scored before) always runs on ONNX Runtime. Every graph is checked against PyTorch
when this process first loads it (`graph.parity`); a cached file that fails to load or to match is exported again
once, and a graph that still fails leaves the work to PyTorch. On a GPU, PyTorch runs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferkit.data.preprocess import Preprocessing
from transferkit.inference.graph import PARITY_TOLERANCE, Probabilities, export_graph, graph_path, parity
from transferkit.inference.session import OnnxClassifier, cpu_session
from transferkit.runtime import Runtime

__all__ = ["EXPORT_PAYS", "RUNNERS", "Runner", "make_runner"]

log = logging.getLogger(__name__)

RUNNERS = ("auto", "onnx", "torch")  # auto: see the module docstring; onnx: ONNX Runtime whatever the pass size
EXPORT_PAYS = 256  # images: from about here, exporting (~10 s) costs less than it saves over PyTorch on a CPU
ONNX_BATCH = 16  # images per ONNX Runtime call (as the feature engine)


@dataclass
class Runner:
    """Probabilities (N, classes) of uint8 images (N, 3, H, W) as the decoding workers hand them out."""

    name: str  # "onnxruntime" or "pytorch"
    batch_size: int  # images per call
    note: str  # which, and why
    classifier: OnnxClassifier | None = None
    graph: Path | None = None  # the ONNX graph file the classifier runs
    parity: float | None = None  # its largest probability difference from PyTorch
    _module: Probabilities | None = None
    _runtime: Runtime | None = None

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        if self.classifier is not None:
            return self.classifier.predict(images.permute(0, 2, 3, 1).numpy())
        assert self._module is not None and self._runtime is not None
        return _torch_run(self._module, images, self._runtime)


@torch.inference_mode()
def _torch_run(module: Probabilities, images: torch.Tensor, runtime: Runtime) -> np.ndarray:
    with runtime.autocast():
        return module.normalised(runtime.images(images)).float().softmax(dim=1).cpu().numpy()


def make_runner(net: nn.Module, preprocessing: Preprocessing, runtime: Runtime, images: int | None = None,
                prefer: str = "auto", classes: tuple[str, ...] = ()) -> Runner:
    """The runner for `net` (normalised images → logits) over a pass of `images` images (None: unknown, as
    many as it takes); `prefer`: one of `RUNNERS`."""
    if prefer not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {prefer!r}")
    module = Probabilities(net, preprocessing).eval()

    def pytorch(reason: str) -> Runner:
        runtime.place(module)
        return Runner("pytorch", runtime.micro_batch_size(32), f"PyTorch ({reason})", _module=module,
                      _runtime=runtime)

    if prefer == "torch" or runtime.device.type != "cpu":
        return pytorch("asked for" if prefer == "torch" else f"on {runtime.device.type}")
    size = preprocessing.input_size
    path = graph_path(module, size)
    if prefer == "auto" and images is not None and images < EXPORT_PAYS and not _readable(path):
        return pytorch(f"{images} images: exporting this model to ONNX would cost more than it saves")
    try:
        classifier, worst = _checked(module, size, path, classes)
    except Exception as exc:  # any failure to export or run falls back to the runner that always works
        reason = f"no usable ONNX graph: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.warning(f"running on PyTorch: {reason}")
        return pytorch(reason)
    if worst > PARITY_TOLERANCE:
        reason = f"ONNX Runtime differs from PyTorch by {worst:.2g} > {PARITY_TOLERANCE}"
        log.warning(f"running on PyTorch: {reason}")
        return pytorch(reason)
    return Runner("onnxruntime", ONNX_BATCH, f"ONNX Runtime (matches PyTorch to {worst:.1e})", classifier, path,
                  worst)


def _readable(path: Path) -> bool:
    """Whether a cached graph is there for us; a cache folder this user may not enter counts as empty."""
    try:
        return path.is_file()
    except OSError:
        return False


_LOADED: dict[Path, tuple[object, float, tuple[int, int]]] = {}  # sessions, their parity and file stamp, by file


def _stamp(path: Path) -> tuple[int, int]:
    """The file's modification time and size: a graph rewritten since this process checked it is checked again."""
    status = path.stat()
    return status.st_mtime_ns, status.st_size


def _checked(module: Probabilities, size: int, path: Path, classes: tuple[str, ...]) -> tuple[OnnxClassifier, float]:
    """A classifier on the graph at `path` and its largest difference from PyTorch. A cached file that does not
    load or does not match is exported again, once."""
    if path not in _LOADED or not path.is_file() or _LOADED[path][2] != _stamp(path):
        fresh = not path.is_file()
        if fresh:
            export_graph(module, size, path)
        try:
            session = cpu_session(path)
            worst = parity(OnnxClassifier(session, classes).predict, module, size)
        except Exception:
            if fresh:
                raise
            worst = float("inf")
        if worst > PARITY_TOLERANCE and not fresh:
            log.info(f"the cached ONNX graph {path} is damaged or stale ({worst:.2g}); exporting it again")
            export_graph(module, size, path)
            session = cpu_session(path)
            worst = parity(OnnxClassifier(session, classes).predict, module, size)
        _LOADED[path] = session, worst, _stamp(path)
    session, worst, _ = _LOADED[path]
    return OnnxClassifier(session, classes), worst
