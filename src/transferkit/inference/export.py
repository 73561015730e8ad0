"""`transferkit export`: a bundle as one ONNX file to deploy, checked against PyTorch before it is written.

The file is the graph of `graph.Probabilities` (uint8 images (N, H, W, 3) at the model's input size in, class
probabilities out, dynamic batch axis) with what a deployment needs to feed it in `metadata_props`: the class
names and the preprocessing (JSON), the source bundle's weights sha256, the transferkit version and the backbone.
It is checked on real images at batch sizes 1, 3 and 8 against the PyTorch path `transferkit predict` uses; a file
that does not match (max |Δprobability| ≤ 1e-4, top-1 agreement 100%) is refused and nothing is written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from transferkit.data.images import BadImage, load_image
from transferkit.data.preprocess import Preprocessing
from transferkit.data.transforms import eval_transform
from transferkit.errors import UserError
from transferkit.inference.graph import PARITY_TOLERANCE, Probabilities, export_graph, graph_path
from transferkit.inference.quantize import Int8Result, quantize_int8
from transferkit.inference.runner import make_runner
from transferkit.inference.session import OnnxClassifier, cpu_session, metadata
from transferkit.io.atomic import atomic_write_bytes
from transferkit.io.bundle import load_bundle
from transferkit.runtime import Runtime

__all__ = ["CHECK_BATCHES", "CHECK_IMAGES", "Export", "Parity", "export_onnx", "metadata"]

log = logging.getLogger(__name__)

CHECK_BATCHES = (1, 3, 8)  # batch sizes every exported file is checked at
CHECK_IMAGES = 64  # at most this many check images (spread evenly over what is given)


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against PyTorch on the check images, run `batch_size` at a time."""

    batch_size: int
    max_difference: float  # largest |Δ probability|
    top1_agreement: float  # fraction of images with the same most probable class

    @property
    def ok(self) -> bool:
        return self.max_difference <= PARITY_TOLERANCE and self.top1_agreement == 1.0


@dataclass(frozen=True)
class Export:
    """What `export_onnx` wrote and measured."""

    path: Path
    size_bytes: int
    checked_on: str  # which images the parity check used
    images: int
    parity: list[Parity]
    int8: Int8Result | None  # None unless asked for


def export_onnx(run: str | os.PathLike[str], out: str | os.PathLike[str], check: str | os.PathLike[str] | None = None,
                int8: bool = False, calibrate: str | os.PathLike[str] | None = None) -> Export:
    """Write the bundle in `run` to `out` as one ONNX file (see the module docstring); with `int8`, also a
    statically quantized copy beside it (`<out stem>.int8.onnx`) if it is accurate and fast enough
    (`quantize.quantize_int8`; `Export.int8` has the measurements either way). `check`: images for the parity
    check (default: the bundle's validation images if they still exist, else generated ones); `calibrate`:
    images for the int8 calibration (default: the check images). Raises `UserError` (nothing written) when the
    file does not match PyTorch."""
    out = Path(out)
    bundle = load_bundle(run)
    model, p = bundle.model, bundle.model.preprocessing
    module = Probabilities(model, p).eval()
    path = graph_path(module, p.input_size)
    if not path.is_file():
        export_graph(module, p.input_size, path)
    data = _with_metadata(path.read_bytes(), metadata(bundle.meta, p))
    images, checked_on = check_images(bundle.meta, p, check)
    reference = make_runner(model, p, Runtime(torch.device("cpu")), prefer="torch")(
        torch.from_numpy(images).permute(0, 3, 1, 2))
    classifier = OnnxClassifier(cpu_session(data), bundle.model.class_names)
    figures = [_parity(classifier, images, reference, size) for size in CHECK_BATCHES]
    bad = [f for f in figures if not f.ok]
    if bad:
        raise UserError(f"the ONNX graph of {run} does not match PyTorch on {checked_on} ({_describe(bad)}; "
                        f"limits {PARITY_TOLERANCE:g}, 100%): not written; report this with the bundle's backbone")
    atomic_write_bytes(out, data)
    log.debug(f"exported {run} to {out}")
    quantized = None
    if int8:
        calibration = check_images(bundle.meta, p, calibrate)[0] if calibrate is not None else images
        quantized = quantize_int8(out, out.with_name(f"{out.stem}.int8.onnx"), calibration, images)
    return Export(out, out.stat().st_size, checked_on, len(images), figures, quantized)


def _describe(figures: list[Parity]) -> str:
    return "; ".join(f"batch {f.batch_size}: max |Δp| {f.max_difference:.2g}, top-1 agreement "
                     f"{100 * f.top1_agreement:.1f}%" for f in figures)


def _with_metadata(graph: bytes, props: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_model_from_string(graph)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    return bytes(proto.SerializeToString())


def _parity(classifier: OnnxClassifier, images: np.ndarray, reference: np.ndarray, batch_size: int) -> Parity:
    ours = np.concatenate([classifier.predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    agree = float(np.mean(ours.argmax(axis=1) == reference.argmax(axis=1)))
    return Parity(batch_size, float(np.abs(ours - reference).max()), agree)


def check_images(meta: dict[str, Any], p: Preprocessing,
                 given: str | os.PathLike[str] | None) -> tuple[np.ndarray, str]:
    """uint8 crops (N, H, W, 3) made exactly as prediction makes them, and a phrase saying what they are: from
    `given` (a folder or image files), else the bundle's validation split if its data still exists, else a
    fixed set of generated pictures."""
    if given is not None:
        from transferkit.evaluation.predict import expand_image_paths

        crops = _crops(_spread(expand_image_paths([given])), p)
        if not len(crops):
            raise UserError(f"no image in {given} could be read: pass a folder of JPEG or PNG files")
        return crops, f"{len(crops)} images from {given}"
    recorded = (meta.get("data") or {}).get("source")
    source = Path(recorded) if recorded else None
    if source is not None and source.exists():
        crops = _crops(_spread(_validation_paths(meta, source)), p)
        if len(crops):
            return crops, f"{len(crops)} validation images of {source}"
    why = f"the bundle's data at {source} is gone" if source is not None else "the bundle names no data"
    pictures = _generated(24, p.resize_size)
    transform = eval_transform(p, normalise=False)
    return (np.stack([transform(img).permute(1, 2, 0).numpy() for img in pictures]),
            f"{len(pictures)} generated pictures ({why}; pass --check DATA for real ones)")


def _validation_paths(meta: dict[str, Any], source: Path) -> list[Path]:
    """The bundle's validation split, made again from its data, fraction and seed (exact when no file was left
    out in training)."""
    from transferkit.data.files import load_labelled
    from transferkit.data.split import stratified_split

    files = load_labelled(source)
    cfg = meta.get("train_config", {})
    _, val = stratified_split(files.labels(), float(cfg.get("val_split", 0.2)), int(cfg.get("seed", 0)))
    return [files.samples[i].path for i in val]


def _spread(paths: list[Path]) -> list[Path]:
    """At most `CHECK_IMAGES` of `paths`, evenly spread (every class of a sorted class-per-folder list)."""
    if len(paths) <= CHECK_IMAGES:
        return paths
    return [paths[i] for i in np.linspace(0, len(paths) - 1, CHECK_IMAGES).round().astype(int)]


def _crops(paths: list[Path], p: Preprocessing) -> np.ndarray:
    transform = eval_transform(p, normalise=False)
    crops = []
    for path in paths:
        try:
            crops.append(transform(load_image(path, p.resize_size)).permute(1, 2, 0).numpy())
        except BadImage:
            continue
    return np.stack(crops) if crops else np.zeros((0, p.input_size, p.input_size, 3), np.uint8)


def _generated(count: int, size: int) -> list[Image.Image]:
    """Smooth random colour fields with noise, of varied shapes: not photographs, but not constant either."""
    rng = np.random.default_rng(0)
    pictures = []
    for i in range(count):
        h, w = size + int(rng.integers(0, size)), size + int(rng.integers(0, size))
        field = Image.fromarray(rng.integers(0, 256, (4 + i % 5, 4 + i % 7, 3), dtype=np.uint8)).resize((w, h))
        noisy = np.asarray(field).astype(np.int16) + rng.integers(-20, 21, (h, w, 3))
        pictures.append(Image.fromarray(noisy.clip(0, 255).astype(np.uint8)))
    return pictures
