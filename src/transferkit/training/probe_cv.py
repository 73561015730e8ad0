"""The linear probe's weight decay, chosen by k-fold cross-validation on cached features, for validation splits
too small to choose on (`auto.py`: under `SMALL_VALIDATION` images).

Every image (training and validation split together) is held out once: for each weight decay in
`WEIGHT_DECAYS` (and the configured one) the probe is trained `FOLDS` times exactly as the `extract` strategy
trains it (`fit_head`: same epochs, rate, batch, seed; the epoch with the lowest held-out loss kept) and scored on
the fold it did not see. The highest mean held-out accuracy wins; a tie goes to the lower mean held-out loss, then
to the configured value. The held-out fold also picks the epoch, as the validation split does in a real run, so
the scores are a little optimistic, but equally so for every candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from transferkit.model import HeadConfig, build_head
from transferkit.runtime import Runtime
from transferkit.training.config import TrainConfig
from transferkit.training.head_fit import fit_head

__all__ = ["FOLDS", "WEIGHT_DECAYS", "ProbeCV", "cross_validate_probe"]

FOLDS = 5  # at most: capped by the images of the smallest class
WEIGHT_DECAYS = (0.01, 0.1, 1.0)  # AdamW's decoupled decay: from almost none to a firm pull towards 0


@dataclass(frozen=True)
class ProbeCV:
    """Mean held-out accuracy and loss of the probe for each weight decay, over `folds` folds of `images` images."""

    folds: int
    images: int
    accuracy: dict[float, float]
    loss: dict[float, float]
    chosen: float

    def to_json(self) -> dict[str, Any]:
        return {"folds": self.folds, "images": self.images, "chosen_weight_decay": self.chosen,
                "accuracy": {str(wd): round(a, 4) for wd, a in self.accuracy.items()},
                "loss": {str(wd): round(v, 4) for wd, v in self.loss.items()}}


def _folds(labels: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    k = max(2, min(FOLDS, int(np.bincount(labels).min())))
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(labels, labels))


def cross_validate_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, cfg: TrainConfig,
                         runtime: Runtime) -> ProbeCV:
    """Each weight decay's k-fold held-out accuracy and loss for the probe `cfg` describes; the best one chosen."""
    x, y = torch.from_numpy(np.array(features, dtype=np.float32)), torch.from_numpy(np.array(labels, dtype=np.int64))
    folds = _folds(y.numpy(), cfg.seed)
    candidates = list(dict.fromkeys((cfg.weight_decay, *WEIGHT_DECAYS)))  # the configured one first: wins ties
    accuracy: dict[float, float] = {}
    loss: dict[float, float] = {}
    for wd in candidates:
        fold_cfg = replace(cfg, weight_decay=wd)
        right, nll = 0, 0.0
        for train, held_out in folds:
            torch.manual_seed(cfg.seed)
            head = build_head(x.shape[1], num_classes, HeadConfig(cfg.hidden, cfg.dropout))
            fitted = fit_head(head, x[train], y[train], x[held_out], y[held_out], num_classes, fold_cfg, runtime)
            picked = fitted.val_probs[np.arange(len(held_out)), fitted.val_labels]
            right += int(np.sum(fitted.val_probs.argmax(1) == fitted.val_labels))
            nll -= float(np.sum(np.log(np.maximum(picked, 1e-12))))
        accuracy[wd], loss[wd] = right / len(y), nll / len(y)
    chosen = min(candidates, key=lambda wd: (-accuracy[wd], loss[wd]))
    return ProbeCV(len(folds), len(y), accuracy, loss, chosen)
