"""`--strategy auto`: measure, then keep what did best on validation, never worse than the linear probe.

1. The linear probe (the `extract` strategy: the head on cached features of the frozen base) always runs first:
   seconds of work, and the floor every other choice must beat.
2. With fewer than `MIN_PER_CLASS` training images in the smallest class, the probe is kept: the classic size x
   similarity table's choice for small data, and on such data fine-tuning rarely beats it (issue 15's figures).
3. Otherwise the horizontal flip is tested before it is used (`flip_test`): a cross-validated probe on the cached
   features, trained with and without the mirror image of each training image added. A flip that costs the probe
   accuracy (digits, text, anything with handedness) is left out of the augmentation.
4. Fine-tuning (`finetune`, with that augmentation) runs, and is kept only if its validation accuracy is higher
   than the probe's on the same split; a tie keeps the probe.

Each candidate's bundle stays in `RUN/auto/<strategy>`; the chosen one is copied to `RUN`, with what was measured
and why in its `model.json` under `auto`. Not yet chosen by measurement: the input size and the frozen strategy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.data.files import check_trainable
from transferkit.data.images import BadImage, load_image
from transferkit.data.preprocess import Augmentation
from transferkit.data.transforms import eval_transform
from transferkit.features.engine import make_engine
from transferkit.features.extract import extract_features
from transferkit.io.atomic import atomic_write_bytes, atomic_write_text
from transferkit.io.names import META_FILE, WEIGHTS_FILE
from transferkit.model import Backbone
from transferkit.runtime import Runtime
from transferkit.selection.scores import probe_accuracy_with_views
from transferkit.training.run import Run, TrainResult

__all__ = ["AUTO_DIR", "FLIP_TOLERANCE", "MIN_PER_CLASS", "FlipTest", "flip_test", "train_auto"]

log = logging.getLogger(__name__)

AUTO_DIR = "auto"  # RUN/auto/<strategy>: each candidate's bundle
MIN_PER_CLASS = 10  # fewer training images in the smallest class: the probe, without trying fine-tuning
FLIP_TOLERANCE = 0.005  # cross-validated probe accuracy a flip may cost and still be kept (noise)
FLIP_MOST = 1000  # images the flip test looks at, at most (a stratified, seeded sample)


@dataclass(frozen=True)
class FlipTest:
    """Cross-validated probe accuracy without and with mirror images added to training, on `images` images."""

    without: float
    with_flip: float
    images: int

    @property
    def keep(self) -> bool:
        return self.with_flip >= self.without - FLIP_TOLERANCE

    def to_json(self) -> dict[str, Any]:
        return {"probe_accuracy": round(self.without, 4), "with_mirror_images": round(self.with_flip, 4),
                "images": self.images, "keep_flip": self.keep}


def _sample(labels: np.ndarray, most: int, seed: int) -> np.ndarray:
    """At most `most` rows, the same share of each class, seeded; all rows when there are fewer."""
    if len(labels) <= most:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:max(2, round(most * np.mean(labels == c)))]
            for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


@torch.inference_mode()
def _mirror_features(backbone: Backbone, paths: Sequence[Path], runtime: Runtime) -> np.ndarray:
    """Pooled features of each image's mirror image (the eval crop, flipped left to right)."""
    p = backbone.preprocessing
    crop = eval_transform(p, normalise=False)
    engine = make_engine(backbone.module, p, runtime)
    out = np.zeros((len(paths), backbone.feature_dim), dtype=np.float32)
    for start in range(0, len(paths), engine.batch_size):
        batch = []
        for path in paths[start:start + engine.batch_size]:
            try:
                batch.append(crop(load_image(path, p.resize_size)).flip(-1))
            except BadImage:  # read once already; changed since: its row keeps the plain features' place
                batch.append(torch.zeros(3, p.input_size, p.input_size, dtype=torch.uint8))
        out[start:start + len(batch)] = engine(torch.stack(batch))
    return out


def flip_test(run: Run, backbone: Backbone, folder: Path) -> FlipTest:
    """Does adding mirror images to training help or hurt a probe on these features? (cross-validated)"""
    cfg = run.cfg
    cache = extract_features(run.files(), backbone, folder, 0, Augmentation(), cfg.seed, run.runtime)
    rows = _sample(cache.labels, FLIP_MOST, cfg.seed)
    mirrored = _mirror_features(backbone, [cache.paths[i] for i in rows], run.runtime)
    without, with_flip = probe_accuracy_with_views(np.asarray(cache.features[rows]), mirrored, cache.labels[rows],
                                                   seed=cfg.seed)
    return FlipTest(without, with_flip, len(rows))


def _adopt(chosen: Path, out: Path, record: dict[str, Any]) -> None:
    """Copy the chosen candidate's bundle to `out`, its metadata saying how it was chosen (each file atomic)."""
    meta = json.loads((chosen / META_FILE).read_text(encoding="utf-8"))
    atomic_write_bytes(out / WEIGHTS_FILE, (chosen / WEIGHTS_FILE).read_bytes())
    atomic_write_text(out / META_FILE, json.dumps({**meta, "auto": record}, indent=2) + "\n")


def train_auto(run: Run, extract: Callable[[Run], TrainResult], images: Callable[[Run], TrainResult]) -> TrainResult:
    """The probe, then (given enough images) fine-tuning with a tested augmentation; the better on validation."""
    cfg = run.cfg
    files = run.files()
    check_trainable(files)
    folder = run.features or run.out / "features"
    per_class = int(np.bincount(files.labels()).min() * (1 - cfg.val_split))
    log.info(f"strategy auto: the linear probe first ({per_class} training images in the smallest class)")
    probe = extract(replace(run, out=run.out / AUTO_DIR / "extract", cfg=replace(cfg, strategy="extract"),
                            features=folder))
    scores = {"extract": probe.val_metrics.accuracy}
    record: dict[str, Any] = {"validation_accuracy": scores}
    chosen = probe
    if per_class < MIN_PER_CLASS:
        why = (f"{per_class} training images in the smallest class (under {MIN_PER_CLASS}): the linear probe, as "
               f"the size x similarity table says for so little data; fine-tuning was not tried")
    else:
        flip = flip_test(run, probe.model.backbone, folder)
        record["flip_test"] = flip.to_json()
        augmentation = replace(cfg.augmentation, hflip=cfg.augmentation.hflip and flip.keep)
        log.info(f"flip test (cross-validated probe, {flip.images} images): {flip.without:.3f} without mirror "
                 f"images, {flip.with_flip:.3f} with them: {'keep' if flip.keep else 'no'} horizontal flip")
        tuned = images(replace(run, out=run.out / AUTO_DIR / "finetune",
                               cfg=replace(cfg, strategy="finetune", augmentation=augmentation)))
        scores["finetune"] = tuned.val_metrics.accuracy
        if tuned.val_metrics.accuracy > probe.val_metrics.accuracy:
            chosen = tuned
            why = (f"fine-tuning reached validation accuracy {tuned.val_metrics.accuracy:.3f} against the probe's "
                   f"{probe.val_metrics.accuracy:.3f}")
        else:
            why = (f"fine-tuning reached validation accuracy {tuned.val_metrics.accuracy:.3f}, not above the "
                   f"probe's {probe.val_metrics.accuracy:.3f}: the probe is kept")
    name = "extract" if chosen is probe else "finetune"
    record |= {"chosen": name, "why": why}
    log.info(f"strategy auto chose {name}: {why}")
    if run.runtime.is_main:
        _adopt(chosen.run_dir, run.out, record)
    return replace(chosen, run_dir=run.out)
