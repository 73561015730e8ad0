"""Learning rates and the optimizer: a pure schedule and discriminative per-group rates (the recipe's constants,
`HEAD_LR_RATIO` and `LR_SPREAD`, are stated in `config.py` beside the options they shape)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from transferkit.model import TransferModel

__all__ = ["class_weights", "group_lrs", "lr_at", "make_optimizer"]



def lr_at(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warmup from 0 to 1, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def group_lrs(group_names: Sequence[str], head_lr: float, base_lr: float, spread: float) -> dict[str, float]:
    """Discriminative rates: `head_lr` for the head; the base blocks geometrically from `base_lr` (top block)
    down to `base_lr / spread` (stem)."""
    base = [n for n in group_names if n != "head"]
    rates = {"head": head_lr}
    for i, name in enumerate(base):
        depth_from_top = (len(base) - 1 - i) / max(1, len(base) - 1)
        rates[name] = base_lr / spread ** depth_from_top
    return rates


def make_optimizer(model: TransferModel, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over every parameter group, created once; frozen parameters get no gradient and are skipped."""
    groups = [{"params": list(g.params), "name": g.name, "lr": 0.0} for g in model.param_groups()]
    return torch.optim.AdamW(groups, lr=0.0, weight_decay=weight_decay)


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (k * n_c), the scikit-learn 'balanced' rule (absent classes get 1)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)
