"""The export step every graph here goes through: torch's exporter (dynamic batch axis, traced with a batch of 2 so
nothing is specialised to one size, written atomically). The feature engine and the whole-model classifier both
use it; their sessions come from `session.cpu_session`, which needs no torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from transferkit.io.atomic import atomic_writer

__all__ = ["OPSET", "export_module"]

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
