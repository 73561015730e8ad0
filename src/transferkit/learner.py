"""`Learner`: a model, its data and one optimizer, so the stages of transfer learning compose in a few lines.

    learner = Learner(model, data)
    learner.probe()                                  # warm start: the head fitted on frozen features
    learner.fit(epochs=4, lr=1e-3)                   # stage 1: base frozen, head trained with augmentation
    model.unfreeze_top(2)
    learner.fit(epochs=5, lr=3e-4, base_lr=1e-4)     # stage 2: lower, per-block rates

Hooks are plain callables: `on_epoch(result, improved)` runs after every epoch (the CLI logs and checkpoints
there). The optimizer's parameter groups are made once, at construction; freezing only flips `requires_grad`. The best
validation loss is tracked across stages, so a stage that only makes things worse leaves the earlier weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from transferkit.cpu import keep_freed_memory
from transferkit.data import LabelledFiles
from transferkit.inference import default_workers, infer_files, make_loader, micro_batch_size, pick_device
from transferkit.model import TransferModel
from transferkit.preprocess import Augmentation, eval_transform, train_transform
from transferkit.probe import fit_head
from transferkit.sampling import make_train_loader
from transferkit.train import Best, EpochResult, Progress, StageConfig, evaluate, fit_stage, make_optimizer

__all__ = ["ImageData", "Learner", "class_weights"]


@dataclass(frozen=True)
class ImageData:
    """Labelled image files split for training: `classes` is the shared class order of both splits."""

    classes: tuple[str, ...]
    train: LabelledFiles
    val: LabelledFiles
    skipped: tuple[tuple[Path, str], ...] = ()


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (k * n_c), the scikit-learn 'balanced' rule (absent classes get 1)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


class Learner:
    def __init__(self, model: TransferModel, data: ImageData, batch_size: int = 16,
                 augmentation: Augmentation = Augmentation(), weight_decay: float = 0.01,
                 label_smoothing: float = 0.1, balance_classes: bool = False,
                 seed: int = 0, workers: int | None = None,
                 on_epoch: Callable[[EpochResult, bool], None] | None = None) -> None:
        if list(data.classes) != model.class_names:
            raise ValueError(f"model classes {model.class_names} differ from data classes {list(data.classes)}")
        self.model = model
        self.data = data
        self.batch_size = batch_size
        self.workers = workers
        self.device = pick_device()
        if self.device.type == "cpu":
            keep_freed_memory()  # reuse activation buffers instead of re-mapping them: see transferkit/cpu.py
        self.model.to(self.device).to(memory_format=torch.channels_last)
        weight = class_weights(data.train.labels(), len(data.classes)).to(self.device) if balance_classes else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        self.optimizer = make_optimizer(model, weight_decay)
        self.best = Best()
        self.progress = Progress()  # where the current stage stands; a resumed run restores it
        self.history: list[EpochResult] = []
        self._on_epoch = on_epoch
        p = model.preprocessing
        self.train_loader, self.sampler = make_train_loader(
            data.train.samples, train_transform(p, augmentation), p.resize_size, batch_size,
            default_workers() if workers is None else workers, seed)
        self.val_loader = make_loader(data.val.samples, eval_transform(p), p.resize_size, batch_size, workers)
        self._weight_decay, self._seed = weight_decay, seed

    def _micro_batch(self) -> int:
        # Slicing a batch is exact only while no BatchNorm layer updates its statistics from the batch.
        return self.batch_size if self.model.train_bn else micro_batch_size(self.device, self.batch_size)

    def probe(self, epochs: int = 30, lr: float = 3e-3) -> EpochResult:
        """Linear-probe warm start: one pass of the frozen base over the training images (no augmentation),
        then `epochs` quick epochs of the head on those features; scored on validation like any epoch."""
        if self.model.trainable_blocks():
            raise ValueError("probe() needs the base frozen: call model.freeze_base() first")
        start = time.perf_counter()
        samples = self.data.train.samples
        pooled, kept = infer_files(self.model.base, self.model.preprocessing, [s.path for s in samples],
                                   self.batch_size, self.workers, softmax=False)
        labels = torch.tensor([samples[i].label for i in kept], device=self.device)
        features = torch.from_numpy(pooled).to(self.device)
        train_loss, train_acc = fit_head(self.model.head, features, labels, self.loss_fn, epochs, lr,
                                         self.batch_size, self._weight_decay, self._seed)
        val_loss, val_acc = evaluate(self.model, self.val_loader, self.loss_fn, self.device, self._micro_batch())
        result = EpochResult("probe", 1, train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - start)
        self._epoch_done(result, self.best.offer(self.model, val_loss, "probe"))
        return result

    def fit(self, epochs: int, lr: float, base_lr: float | None = None, lr_spread: float = 10.0,
            patience: int = 3, warmup_epochs: float = 1.0, name: str | None = None) -> list[EpochResult]:
        """Train what is unfrozen: the head at `lr`, the top unfrozen block at `base_lr` (default lr/10)."""
        stage = StageConfig(name=name or f"stage {len({r.stage for r in self.history}) + 1}", epochs=epochs,
                            head_lr=lr, base_lr=lr / 10 if base_lr is None else base_lr, lr_spread=lr_spread,
                            warmup_epochs=warmup_epochs, patience=patience)
        return fit_stage(self.model, self.train_loader, self.val_loader, self.optimizer, stage, self.loss_fn,
                         self.best, self.device, self._micro_batch(), self._epoch_done, self.progress)

    def _epoch_done(self, result: EpochResult, improved: bool) -> None:
        self.history.append(result)
        if self._on_epoch is not None:
            self._on_epoch(result, improved)
