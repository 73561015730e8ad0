"""What every export shares, whatever the model reads: the parity figures of a graph against PyTorch at a few
batch sizes, the one-line description of a failed check, and writing a graph's `metadata_props`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from transferkit.inference.graph import PARITY_TOLERANCE

__all__ = ["CHECK_BATCHES", "Parity", "describe_parity", "parity_at", "with_metadata"]

CHECK_BATCHES = (1, 3, 8)  # batch sizes every exported file is checked at


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against PyTorch on the check inputs, run `batch_size` at a time."""

    batch_size: int
    max_difference: float  # largest |Δ probability|
    top1_agreement: float  # fraction of inputs with the same most probable class

    @property
    def ok(self) -> bool:
        return self.max_difference <= PARITY_TOLERANCE and self.top1_agreement == 1.0


def parity_at(batch_size: int, ours: np.ndarray, reference: np.ndarray) -> Parity:
    """The figures of `ours` (the graph's probabilities, run `batch_size` at a time) against `reference`."""
    agree = float(np.mean(ours.argmax(axis=1) == reference.argmax(axis=1)))
    return Parity(batch_size, float(np.abs(ours - reference).max()), agree)


def describe_parity(figures: Sequence[Parity]) -> str:
    return "; ".join(f"batch {f.batch_size}: max |Δp| {f.max_difference:.2g}, top-1 agreement "
                     f"{100 * f.top1_agreement:.1f}%" for f in figures)


def with_metadata(graph: bytes, props: dict[str, str]) -> bytes:
    """`graph` with its `metadata_props` replaced by `props`."""
    import onnx

    proto = onnx.load_model_from_string(graph)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    return bytes(proto.SerializeToString())
