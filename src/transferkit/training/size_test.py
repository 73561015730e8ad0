"""`auto`'s input-size test: small source images (a 28 px digit, a 64 px icon) upscaled to the backbone's 224 px
cost full price for detail that is not there. Where the source images' median shorter side is at most
`SMALL_SOURCE` of the backbone's input size, a cross-validated probe (standardised logistic regression, the same
folds at every size; `selection.scores.probe_accuracy`) is scored on the pooled features of a stratified sample at
the full size, about three quarters of it and half of it, and the smallest size whose accuracy is within
`SIZE_TOLERANCE` of the best is used for the rest of the run: the probe, the flip test and fine-tuning, and the
bundle's preprocessing (so `predict`, `export` and `serve` resize to it as well).

With fewer than `SIZE_FEWEST` images the full size is kept without a test: the saving is seconds, and the
cross-validated accuracy of a few hundred images moves by more than the tolerance from one size to the next by
chance (at 10 Fashion-MNIST images per class the test chose 160 px on 100 images, 0.750 against 0.740 at 224, and
the probe lost 1.6 points of test accuracy with it).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferkit.backbones.registry import get_backbone
from transferkit.data.files import LabelledFiles
from transferkit.data.preprocess import Augmentation
from transferkit.features.extract import extract_features
from transferkit.model import Backbone, fixed_input_size
from transferkit.runtime import Runtime
from transferkit.selection.rank import stratified_rows
from transferkit.selection.scores import probe_accuracy
from transferkit.training.config import MIN_INPUT_SIZE, TrainConfig

__all__ = ["SIZE_FEWEST", "SIZE_MOST", "SIZE_TOLERANCE", "SMALL_SOURCE", "SizeTest", "candidate_sizes",
           "size_test", "source_size"]

SMALL_SOURCE = 0.5  # source images at most this share of the input size (median shorter side) are small
SIZE_TOLERANCE = 0.005  # cross-validated probe accuracy a smaller size may cost and still be chosen (noise)
SIZE_MOST = 1000  # images the test scores, at most (a stratified, seeded sample)
SIZE_FEWEST = 500  # fewer images: the full size is kept (cheap on so few, and the test too noisy to trust)
LOOKED_AT = 200  # images whose header gives the source size, at most


@dataclass(frozen=True)
class SizeTest:
    """Cross-validated probe accuracy at each input size (largest first), on `images` images whose median
    shorter side is `source` pixels."""

    source: int
    accuracy: dict[int, float]
    images: int

    @property
    def chosen(self) -> int:
        """The smallest size within `SIZE_TOLERANCE` of the best one's accuracy."""
        best = max(self.accuracy.values())
        return min(size for size, score in self.accuracy.items() if score >= best - SIZE_TOLERANCE)

    def to_json(self) -> dict[str, Any]:
        return {"source_pixels": self.source, "images": self.images, "chosen": self.chosen,
                "probe_accuracy": {str(size): round(score, 4) for size, score in self.accuracy.items()}}


def candidate_sizes(full: int) -> tuple[int, ...]:
    """The backbone's own input size, about three quarters of it and half of it (multiples of 16, at least
    `MIN_INPUT_SIZE`), largest first."""
    smaller = (max(MIN_INPUT_SIZE, round(full * share / 16) * 16) for share in (0.75, 0.5))
    return tuple(dict.fromkeys((full, *smaller)))


def source_size(paths: list[Path]) -> int | None:
    """The median shorter side of the images (read from the headers of up to `LOOKED_AT`, spread over the list, so
    over every class of a list in class order), None if none could be read."""
    sides = []
    for path in paths[::max(1, len(paths) // LOOKED_AT)][:LOOKED_AT]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (OSError, UnidentifiedImageError, ValueError):  # scanned and reported elsewhere
            continue
    return int(statistics.median(sides)) if sides else None


def size_test(files: LabelledFiles, cfg: TrainConfig, folder: Path, runtime: Runtime) -> SizeTest | None:
    """Score the candidate sizes on a sample of `files` (each size's features cached in `folder/<pixels>`); None
    when the input size was configured, there are fewer than `SIZE_FEWEST` images, the backbone takes one size
    only, or the source images are not small."""
    if cfg.input_size is not None or len(files.samples) < SIZE_FEWEST:
        return None
    rows = stratified_rows(np.array(files.labels()), SIZE_MOST, cfg.seed, per_class=2)  # 2: a fold needs both
    sample = files.subset(rows.tolist())
    spec = get_backbone(cfg.backbone)
    if fixed_input_size(spec):
        return None
    full = spec.preprocessing.input_size
    source = source_size([s.path for s in sample.samples])
    if source is None or source > full * SMALL_SOURCE:
        return None
    accuracy = {}
    for size in candidate_sizes(full):
        backbone = Backbone.from_pretrained(cfg.backbone, cfg.weights, cfg.layer, size)
        cache = extract_features(sample, backbone, folder / str(size), 0, Augmentation(), cfg.seed, runtime)
        accuracy[size] = probe_accuracy(np.asarray(cache.features, dtype=np.float64), np.asarray(cache.labels),
                                        seed=cfg.seed)
    return SizeTest(source, accuracy, len(rows))
