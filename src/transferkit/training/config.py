"""Training configuration: one frozen dataclass, validated at the boundary, saved as JSON in every bundle."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from transferkit.backbones.registry import DEFAULT_BACKBONE
from transferkit.data.preprocess import Augmentation
from transferkit.errors import UserError

__all__ = ["STRATEGY_NAMES", "TrainConfig"]

# extract: only the head, trained on features the frozen base computed once (cached); frozen: stage 1 only;
# finetune: stage 1, then stage 2 (the top blocks unfrozen)
STRATEGY_NAMES = ("extract", "frozen", "finetune")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Stage 1 trains the head on the frozen base; stage 2 unfreezes
    the top `unfreeze_blocks` blocks (None: all) and retrains with lower, per-block learning rates. The
    `extract` strategy instead trains the head for `probe_epochs` epochs on cached features (and `views`
    augmented views of each training image, computed once)."""

    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None  # None: the backbone's pretrained weights; "random"; or a weights file
    layer: str | None = None  # features from: None/"deep" (the whole base), "mid", "shallow" or a block name
    strategy: str = "finetune"  # one of STRATEGIES
    views: int = 0  # extract strategy: augmented views of each training image cached besides the plain one
    probe_epochs: int = 30  # linear-probe warm start of the head on frozen features (cheap); 0 skips it
    epochs: int = 4  # stage 1 (head only, augmented), an upper bound: early stopping may end it sooner
    fine_tune_epochs: int = 4  # stage 2; 0 skips it
    unfreeze_blocks: int | None = 2
    lr: float = 1e-3  # head learning rate in stage 1 (the probe uses 3x)
    fine_tune_lr: float = 1e-4  # top unfrozen block in stage 2; the head gets 3x, lower blocks less
    lr_spread: float = 10.0  # top block lr / stem lr in stage 2
    batch_size: int = 16
    val_split: float = 0.2
    seed: int = 0
    class_weights: bool = False
    patience: int = 3
    warmup_epochs: float = 1.0
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    hidden: int = 0
    dropout: float = 0.2
    train_bn: bool = False
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        checks = [
            (self.strategy in STRATEGY_NAMES, "--strategy", self.strategy, f"one of {', '.join(STRATEGY_NAMES)}"),
            (self.views >= 0, "--views", self.views, "0 or more"),
            (self.probe_epochs >= 1 or self.strategy != "extract", "--probe-epochs", self.probe_epochs,
             "1 or more with --strategy extract (it is how long the head trains)"),
            (self.epochs >= 1, "--epochs", self.epochs, "1 or more"),
            (self.probe_epochs >= 0, "--probe-epochs", self.probe_epochs, "0 or more"),
            (self.fine_tune_epochs >= 0, "--fine-tune-epochs", self.fine_tune_epochs, "0 or more"),
            (self.unfreeze_blocks is None or self.unfreeze_blocks >= 0, "--unfreeze-blocks", self.unfreeze_blocks,
             "0 or more, or 'all'"),
            (self.lr > 0, "--lr", self.lr, "a positive number such as 1e-3"),
            (self.fine_tune_lr > 0, "--fine-tune-lr", self.fine_tune_lr, "a positive number such as 1e-4"),
            (self.batch_size >= 1, "--batch-size", self.batch_size, "1 or more"),
            (0 < self.val_split < 1, "--val-split", self.val_split, "between 0 and 1, such as 0.2"),
            (self.patience >= 1, "--patience", self.patience, "1 or more"),
            (0 <= self.dropout < 1, "--dropout", self.dropout, "in [0, 1)"),
            (self.hidden >= 0, "--hidden", self.hidden, "0 (no hidden layer) or more"),
        ]
        for ok, flag, value, expected in checks:
            if not ok:
                raise UserError(f"{flag} must be {expected}, got {value}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown training option(s) {', '.join(unknown)}: "
                            f"known options are {', '.join(sorted(known))}")
        values = dict(data)
        if isinstance(values.get("augmentation"), dict):
            values["augmentation"] = Augmentation(**values["augmentation"])
        return cls(**values)
