"""The head alone on fixed features, in seconds: what the `extract` strategy of every modality runs once its
features are computed (images: the frozen base's pooled features; text: the sentence encoder's embeddings).

The head trains for `cfg.probe_epochs` epochs on the one loop (`loop.fit`) and keeps the epoch with the lowest
validation loss; the validation probabilities it returns are made at temperature 1, for calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transferkit.io.logfile import details
from transferkit.runtime import Runtime
from transferkit.training.callbacks import EpochLog, RestoreBest
from transferkit.training.config import HEAD_LR_RATIO, TrainConfig
from transferkit.training.features import FeatureBatches, head_optimizer
from transferkit.training.loop import Best, EpochResult, LoopState, Stage, fit
from transferkit.training.schedule import class_weights

__all__ = ["CalibrationSet", "HeadFit", "HeadFitter", "fit_head"]


@dataclass(frozen=True)
class CalibrationSet:
    """Held-out probabilities (temperature 1) and their labels to fit the calibration temperature on, and what
    they are, in words ("80 validation images")."""

    probs: np.ndarray
    labels: np.ndarray
    what: str

    @classmethod
    def validation(cls, probs: np.ndarray, labels: np.ndarray) -> CalibrationSet:
        return cls(probs, labels, f"{len(labels)} validation images")


@dataclass(frozen=True)
class HeadFit:
    """What training the head did: its epochs, where its best weights came from, and the best head's
    validation probabilities (temperature 1) with the true labels; `details`, what the bundle should record of
    how it was fitted (beyond the epochs), if anything."""

    history: list[EpochResult]
    best: str
    val_probs: np.ndarray
    val_labels: np.ndarray
    details: dict[str, Any] | None = None
    calibration: CalibrationSet | None = None  # to fit the temperature on, if not the validation probabilities
    warm_start: dict[str, torch.Tensor] | None = None  # the head fitted on the training split alone, if kept apart

    def calibration_set(self) -> CalibrationSet:
        return self.calibration or CalibrationSet.validation(self.val_probs, self.val_labels)


# How a head is fitted on fixed features: (head, x_train, y_train, x_val, y_val, num_classes, cfg, runtime).
HeadFitter = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, TrainConfig, Runtime],
                      HeadFit]


def fit_head(head: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
             y_val: torch.Tensor, num_classes: int, cfg: TrainConfig, runtime: Runtime) -> HeadFit:
    """Train `head` (moved to the runtime's device) on the training rows, validate each epoch, and leave the
    best epoch's weights in it."""
    details().info(f"training the head on fixed features ({cfg.probe_epochs} epochs, {len(y_train)} examples)")
    device = runtime.device
    x_val, y_val = x_val.to(device), y_val.to(device)
    weight = class_weights(y_train.tolist(), num_classes).to(device) if cfg.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    head = head.to(device)

    def validate() -> tuple[float, float]:
        head.eval()
        with torch.no_grad():
            logits = head(x_val)
        return float(loss_fn(logits, y_val)), float((logits.argmax(1) == y_val).float().mean())

    lr = HEAD_LR_RATIO * cfg.lr
    batches = FeatureBatches(x_train.to(device), y_train.to(device), cfg.batch_size, cfg.seed)
    stage = Stage("extract", cfg.probe_epochs, batches, validate, head_optimizer(head, lr, cfg.weight_decay),
                  {"head": lr}, micro_batch=cfg.batch_size)
    best = Best()
    history = fit(head, stage, loss_fn, runtime, best, LoopState(), [EpochLog(details()), RestoreBest(best, head)])
    head.eval()
    with torch.no_grad():
        val_probs = head(x_val).softmax(1).cpu().numpy()
    return HeadFit(history, best.where, val_probs, y_val.cpu().numpy())
