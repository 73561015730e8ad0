"""Linear probing: the head fitted on features the frozen base computed once (`infer_files`), in a blink.

Used as the warm start of stage 1 (LP-FT, Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"):
a head that starts at the linear-probe optimum makes the augmented head training and the fine-tuning that
follow start from a good model instead of a random head whose large early gradients disturb the base.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from transferkit.train import lr_at

__all__ = ["fit_head"]


def fit_head(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, loss_fn: nn.Module, epochs: int,
             lr: float, batch_size: int, weight_decay: float, seed: int,
             on_epoch: Callable[[int, float, float], None] | None = None) -> tuple[float, float]:
    """Train `head` on fixed features with AdamW and a warmup+cosine schedule. Returns the last epoch's
    (mean loss, accuracy); `on_epoch(epoch, loss, accuracy)` runs after each epoch (it may evaluate the head)."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(labels)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    step, loss_sum, correct = 0, 0.0, 0
    for epoch in range(1, epochs + 1):
        head.train()
        order = torch.randperm(n, generator=generator).to(features.device)
        loss_sum, correct = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_at(step, total, steps_per_epoch)
            logits = head(features[idx])
            loss = loss_fn(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        if on_epoch is not None:
            on_epoch(epoch, loss_sum / max(1, n), correct / max(1, n))
    return loss_sum / max(1, n), correct / max(1, n)
