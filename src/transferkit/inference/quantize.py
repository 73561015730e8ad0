"""`transferkit export --int8`: a statically quantized copy of an exported file, kept only when it pays.

ONNX Runtime's `quantize_static` in QDQ format with per-channel weights (uint8 activations, int8 weights: the
pairing its x86 kernels are made for), calibrated with MinMax on real crops. The preamble (uint8 input, layout
change, normalisation) and the final softmax stay float: only the network between them is quantized, so the
input contract and the normalisation are those of the float file. The copy is kept only if it agrees with the
float file on the top-1 class of at least `MIN_AGREEMENT` of the check images and runs at least `MIN_SPEEDUP`
times as fast on batches of `SPEED_BATCH` on this CPU (both timed in this process, interleaved, medians);
otherwise nothing is kept, and the command line refuses with the measured numbers.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from transferkit.inference.session import OnnxClassifier, cpu_session
from transferkit.io.atomic import atomic_write_bytes

__all__ = ["MIN_AGREEMENT", "MIN_SPEEDUP", "SPEED_BATCH", "Int8Result", "quantize_int8"]

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.99  # top-1 agreement with the float file on the check images
MIN_SPEEDUP = 1.3  # images/s of the int8 file over the float file, batch SPEED_BATCH, this CPU
SPEED_BATCH = 32
_REPEATS = 15  # the machine drifts: 7 gave 1.17x, 1.47x, 1.71x on one model within minutes here


@dataclass(frozen=True)
class Int8Result:
    """The measurements of an int8 copy, and where it was written (None: refused)."""

    path: Path | None
    size_bytes: int
    float_size_bytes: int
    top1_agreement: float  # with the float file, on the check images
    speedup: float  # median seconds per batch of SPEED_BATCH, float ÷ int8
    float_images_per_second: float
    int8_images_per_second: float

    @property
    def kept(self) -> bool:
        return self.path is not None

    @property
    def pays(self) -> bool:
        return self.top1_agreement >= MIN_AGREEMENT and self.speedup >= MIN_SPEEDUP

    def describe(self) -> str:
        return (f"{self.size_bytes / 1e6:.1f} MB (float {self.float_size_bytes / 1e6:.1f} MB), top-1 agreement "
                f"{100 * self.top1_agreement:.1f}% (need {100 * MIN_AGREEMENT:g}%), {self.int8_images_per_second:.1f}"
                f" vs {self.float_images_per_second:.1f} images/s at batch {SPEED_BATCH}: {self.speedup:.2f}x "
                f"(need {MIN_SPEEDUP:g}x)")


class _Batches:
    """ONNX Runtime's calibration reader: the calibration crops, 8 at a time."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self._batches = iter([{name: images[i:i + 8]} for i in range(0, len(images), 8)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(source: Path, out: Path, calibration: np.ndarray, check: np.ndarray) -> Int8Result:
    """Quantize the exported file `source` into `out` if that pays (see the module docstring); the measurements
    either way (`path` None and no file at `out` when it does not pay)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    CalibrationDataReader.register(_Batches)
    model = onnx.load(str(source))
    with tempfile.TemporaryDirectory(prefix="transferkit-int8-") as tmp, _quiet_root_logger():
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(model, prepared)  # shapes inferred and the graph simplified, as ORT advises
        graph = onnx.load(str(prepared))
        quantize_static(graph, quantized, _Batches(graph.graph.input[0].name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=_float_nodes(graph))
        int8 = onnx.load(str(quantized))
    del int8.metadata_props[:]
    int8.metadata_props.extend(model.metadata_props)
    int8.metadata_props.add(key="quantization", value=json.dumps({"format": "QDQ", "per_channel": True,
                                                                  "calibration_images": len(calibration)}))
    data = int8.SerializeToString()
    fp32 = OnnxClassifier(cpu_session(source), [])
    q8 = OnnxClassifier(cpu_session(data), [])
    agreement = float(np.mean(_run(fp32, check).argmax(axis=1) == _run(q8, check).argmax(axis=1)))
    float_s, int8_s = _timed(fp32, q8, check)
    result = Int8Result(None, len(data), source.stat().st_size, agreement, float_s / int8_s,
                        SPEED_BATCH / float_s, SPEED_BATCH / int8_s)
    if not result.pays:
        out.unlink(missing_ok=True)  # an int8 file from an earlier export is not this model's
        return result
    atomic_write_bytes(out, data)
    return replace(result, path=out)


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantization tools give advice through the root logger; it would reach the console."""
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR
    try:
        yield
    finally:
        root.setLevel(level)


def _float_nodes(model: object) -> list[str]:
    """The nodes before the first convolution (input cast, layout, normalisation) and every softmax."""
    nodes = model.graph.node  # type: ignore[attr-defined]
    first_conv = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), 0)
    return [n.name for i, n in enumerate(nodes) if i < first_conv or n.op_type == "Softmax"]


def _run(classifier: OnnxClassifier, images: np.ndarray) -> np.ndarray:
    return np.concatenate([classifier.predict(images[i:i + 8]) for i in range(0, len(images), 8)])


def _timed(first: OnnxClassifier, second: OnnxClassifier, images: np.ndarray) -> tuple[float, float]:
    """Median seconds per batch of `SPEED_BATCH` of each, timed alternately after a warm-up of each."""
    batch = images[np.arange(SPEED_BATCH) % len(images)]
    times: tuple[list[float], list[float]] = ([], [])
    for repeat in range(_REPEATS + 1):
        for classifier, seconds in zip((first, second), times):
            start = time.perf_counter()
            classifier.predict(batch)
            if repeat:  # the first round warms up
                seconds.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])
