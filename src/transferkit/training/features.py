"""Training a head on fixed features: the batches and the optimizer that the linear probe and the `extract`
strategy hand to the one loop (`loop.fit`).

Features computed once make an epoch of the head cost milliseconds, so the probe runs many shuffled passes,
and the `extract` strategy trains for as many epochs as it likes, without running the base again.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["FeatureBatches", "head_optimizer"]


class FeatureBatches:
    """Shuffled mini-batches of `(features, labels)`. Each epoch of the loop is `passes` passes over the data,
    each in a fresh permutation drawn from one generator seeded with `seed`, so the order depends on the seed and
    the number of passes so far only."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int,
                 passes: int = 1) -> None:
        if len(features) != len(labels):
            raise ValueError(f"{len(features)} feature rows for {len(labels)} labels")
        self.features, self.labels = features, labels
        self.batch_size, self.passes = batch_size, passes
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.passes * -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        for _ in range(self.passes):
            order = torch.randperm(n, generator=self.generator).to(self.features.device)
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                yield self.features[idx], self.labels[idx]


def head_optimizer(head: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """A fresh AdamW for the head alone (one group named "head"): the probe's moments must not leak into the
    optimizer of the stages that follow it."""
    return torch.optim.AdamW([{"params": list(head.parameters()), "name": "head"}], lr=lr, weight_decay=weight_decay)
