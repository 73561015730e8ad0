"""The two ONNX steps every graph here goes through: torch's exporter (dynamic batch axis, traced with a batch
of 2 so nothing is specialised to one size, written atomically) and an ONNX Runtime session on the CPU with
every graph optimisation on. The feature engine and the whole-model classifier both use them."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from transferkit.io.atomic import atomic_writer

__all__ = ["OPSET", "cpu_session", "export_module"]

OPSET = 18


def export_module(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    """Write `module` (run on `example`, whose first axis is the batch) to `path` as one ONNX file."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module.cpu().eval(), (example,), input_names=[input_name],
                                    output_names=[output_name], dynamic_shapes=({0: batch},), opset_version=OPSET,
                                    external_data=False, dynamo=True, verbose=False)
    assert program is not None
    with atomic_writer(path) as tmp:
        program.save(str(tmp))


def cpu_session(path: Path | bytes, threads: int | None = None) -> object:
    """An ONNX Runtime session on the CPU (`threads`: intra-op threads, default torch's thread count)."""
    import onnxruntime  # optional at import time: a missing runtime means PyTorch

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
