"""Batched inference over image files: the one place that turns paths into class probabilities, and the jobs
built on it -- score and evaluate labelled data, predict with a trained model, classify with ImageNet's head."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from timm.data import ImageNetInfo
from torch import nn
from tqdm import tqdm

from transferkit.backbones.registry import get_backbone
from transferkit.backbones.weights import build_network
from transferkit.data.files import LabelledFiles, Sample, image_files_under, load_labelled
from transferkit.data.images import IMAGE_EXTENSIONS, none_readable, skip_reason
from transferkit.data.loaders import make_loader
from transferkit.data.preprocess import Preprocessing
from transferkit.data.transforms import eval_transform
from transferkit.errors import UserError
from transferkit.evaluation.metrics import Metrics, compute_metrics
from transferkit.features.engine import Engine, make_engine
from transferkit.features.extract import extract_workers
from transferkit.inference.runner import EXPORT_PAYS, RUNNERS, Runner, make_runner
from transferkit.model import TransferModel
from transferkit.runtime import Runtime

__all__ = ["Evaluation", "Prediction", "Predictions", "Scored", "classify", "evaluate", "expand_image_paths",
           "infer_files", "predict", "score", "top_k"]

log = logging.getLogger(__name__)


def expand_image_paths(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; folders searched recursively for image files (hidden and system files ignored)."""
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = image_files_under(item)
            if not found:
                raise UserError(f"no image files in {item}: expected {', '.join(sorted(IMAGE_EXTENSIONS))} files")
            paths.extend(found)
        elif item.exists():
            paths.append(item)
        else:
            raise UserError(f"image not found: {item} — check the path")
    return paths


def infer_files(net: nn.Module, preprocessing: Preprocessing, paths: Sequence[str | os.PathLike[str]],
                runtime: Runtime | None = None, batch_size: int = 32, softmax: bool = True,
                runner: str = "auto") -> tuple[np.ndarray, list[int]]:
    """The network's class probabilities (with `softmax=False`: its raw outputs, such as a base's pooled features)
    for every file that decodes, and the indices (into `paths`) of those files. `runner`: one of `RUNNERS` (auto:
    ONNX Runtime on a CPU when it pays and matches PyTorch; see `transferkit.inference.runner`). Decoding, resizing
    and cropping run in worker processes beside the model, which normalises the uint8 crops batched."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")
    runtime = runtime or Runtime.detect()
    net.eval()
    run: Runner | Engine
    if softmax:
        run = make_runner(net, preprocessing, runtime, len(paths), runner)
    else:  # the feature engine: the same choice for a frozen base
        small = runner == "auto" and len(paths) < EXPORT_PAYS
        run = make_engine(net, preprocessing, runtime, "torch" if runner == "torch" or small else "auto")
    log.debug(f"scoring {len(paths)} image(s) with {run.note}")
    onnx = run.name == "onnxruntime"  # uses every core: decode in as few workers as keep it fed (as `extract`)
    samples = [Sample(Path(p), i) for i, p in enumerate(paths)]
    loader = make_loader(samples, eval_transform(preprocessing, normalise=False), preprocessing.resize_size,
                         run.batch_size if onnx else runtime.micro_batch_size(batch_size),
                         min(runtime.workers, extract_workers()) if onnx else runtime.workers, runtime.pin_memory)
    outputs: list[np.ndarray] = []
    kept: list[int] = []
    with tqdm(total=len(samples), desc="scoring images", unit="img", leave=False, disable=None) as bar:
        for batch in loader:
            if batch is None:
                continue
            images, index = batch
            outputs.append(run(images))
            kept.extend(index.tolist())
            bar.update(len(index))
    return (np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)), kept


@dataclass(frozen=True)
class Prediction:
    path: str
    predictions: list[dict[str, float | str]]  # {"label", "probability"}, most probable first


@dataclass(frozen=True)
class Predictions:
    """Top-k classes per image that could be read, and the files that could not."""

    items: list[Prediction]
    skipped: list[Path]

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(p) for p in self.items]


@dataclass(frozen=True)
class Evaluation:
    """Metrics of a model on labelled files, and the files that could not be read and were left out."""

    metrics: Metrics
    skipped: list[Path]


def top_k(probs: np.ndarray, names: Sequence[str], k: int) -> list[list[dict[str, float | str]]]:
    """For each row, the k most probable classes as {"label", "probability"}, most probable first."""
    k = min(k, probs.shape[1]) if probs.ndim == 2 else 0
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": names[j], "probability": float(row[j])} for j in idx] for row, idx in zip(probs, order)]


@dataclass(frozen=True)
class Scored:
    """One inference pass over labelled files, image by image: what `evaluate` summarises and a report shows
    (per-image probabilities for calibration and the most confident mistakes)."""

    paths: list[Path]  # the files that decoded, in the order of `labels` and `probs`
    labels: np.ndarray  # true classes as indices into the model's class names
    probs: np.ndarray  # (images, classes) softmax probabilities
    skipped: list[Path]  # files that could not be decoded and were left out


def score(model: TransferModel, files: LabelledFiles | str | os.PathLike[str], runtime: Runtime | None = None,
          batch_size: int = 32, runner: str = "auto") -> Scored:
    """Class probabilities of `model` for every labelled file (their class names must be among the model's)."""
    if not isinstance(files, LabelledFiles):
        files = load_labelled(files)
    unknown = [c for c in files.classes if c not in model.class_names]
    if unknown:
        raise UserError(f"{files.source} has classes the model was not trained on: {', '.join(unknown)}; "
                        f"the model knows {', '.join(model.class_names)}")
    to_model = np.array([model.class_names.index(c) for c in files.classes], dtype=np.int64)
    paths = [s.path for s in files.samples]
    probs, kept = infer_files(model, model.preprocessing, paths, runtime, batch_size, runner=runner)
    if not kept:
        raise none_readable(len(paths), f"images in {files.source}", paths[0], skip_reason(paths[0]))
    labels = to_model[np.array([files.samples[i].label for i in kept], dtype=np.int64)]
    return Scored([paths[i] for i in kept], labels, probs, _left_out(paths, kept))


def evaluate(model: TransferModel, files: LabelledFiles | str | os.PathLike[str], runtime: Runtime | None = None,
             batch_size: int = 32, runner: str = "auto") -> Evaluation:
    """Metrics of `model` on labelled files (their class names must be among the model's), and the files that
    could not be decoded and were left out."""
    scored = score(model, files, runtime, batch_size, runner)
    return Evaluation(compute_metrics(scored.labels, scored.probs, model.class_names), scored.skipped)


def predict(model: TransferModel, paths: Sequence[str | os.PathLike[str]], top: int = 3,
            runtime: Runtime | None = None, runner: str = "auto") -> Predictions:
    """Top-`top` classes for each image file, and the files that could not be decoded."""
    probs, kept = infer_files(model, model.preprocessing, paths, runtime, runner=runner)
    return _to_predictions(probs, kept, paths, model.class_names, top)


def classify(paths: Sequence[str | os.PathLike[str]], backbone: str, top: int = 5, weights: str | None = None,
             runtime: Runtime | None = None, runner: str = "auto") -> Predictions:
    """ImageNet classes from the backbone's own pretrained head (no training)."""
    spec = get_backbone(backbone)
    net, info = build_network(spec, weights)
    if not info.has_imagenet_head:
        raise UserError(f"the weights of {spec.name} ({info.source}) have no ImageNet classifier, so `classify` "
                        f"cannot name ImageNet classes with them")
    imagenet = ImageNetInfo()
    names = [imagenet.index_to_description(i) for i in range(1000)]
    probs, kept = infer_files(net, spec.preprocessing, paths, runtime, runner=runner)
    return _to_predictions(probs, kept, paths, names, top)


def _to_predictions(probs: np.ndarray, kept: list[int], paths: Sequence[str | os.PathLike[str]],
                    names: Sequence[str], top: int) -> Predictions:
    if paths and not kept:
        raise none_readable(len(paths), "image(s)", Path(paths[0]), skip_reason(Path(paths[0])))
    rows = top_k(probs, names, top)
    return Predictions([Prediction(str(paths[i]), row) for i, row in zip(kept, rows)], _left_out(paths, kept))


def _left_out(paths: Sequence[str | os.PathLike[str]], kept: list[int]) -> list[Path]:
    """The paths that `infer_files` could not decode."""
    kept_set = set(kept)
    return [Path(p) for i, p in enumerate(paths) if i not in kept_set]
