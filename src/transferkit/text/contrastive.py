"""A SetFit-style contrastive fine-tune of a sentence encoder on a few labelled texts, then a head on its
embeddings (Tunstall et al., 2022, "Efficient Few-Shot Learning Without Prompts").

With 8-64 texts per class a classifier head alone has little to learn from, but the pairs of texts are many: the
encoder is tuned so that texts of one class embed close together (cosine similarity 1) and texts of different
classes apart (cosine similarity 0), with the cosine-similarity loss sentence-transformers uses for SetFit
(mean squared error between the pair's cosine and its target). All O(n²) pairs are never listed: each epoch,
every text draws one partner of its class and one of another class, so an epoch holds 2n pairs (half of them
positive) in O(n) memory, and more epochs draw fresh partners. Then a logistic-regression head is fitted on the
tuned encoder's embeddings.

Runs are seeded: the partners, the order and dropout are drawn from the seed (dropout inside a forked torch RNG,
so the process's own random state is left as it was).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from transferkit.errors import InputError
from transferkit.text.encoder import SentenceEncoder
from transferkit.training.schedule import lr_at

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

__all__ = [
    "ContrastiveConfig",
    "ContrastiveResult",
    "Pairs",
    "contrastive_fine_tune",
    "fit_logistic_head",
    "pair_loss",
    "sample_pairs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContrastiveConfig:
    """`epochs` of 2n pairs each, `batch_size` pairs per step, AdamW at `lr` after a linear warmup over the first
    `warmup` share of the steps, then cosine decay. `max_tokens` cuts the texts while tuning (the cost of a step
    grows with it; the encoder's own window still applies when embedding). SetFit tunes at 2e-5, batch 16, on 20
    pairs of each kind per text; 12 epochs give each text 12 of each. Measured on SpamAssassin at 16 texts per
    class (benchmarks/RESULTS.md, "Text"): 4 epochs 0.883 test accuracy, 12 epochs 0.938."""

    epochs: int = 12
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_tokens: int | None = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"contrastive {name} must be at least 1, got {getattr(self, name)}")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise InputError(f"contrastive max_tokens must be at least 2 (or None), got {self.max_tokens}")


@dataclass(frozen=True)
class Pairs:
    """Pairs of text indices and their target cosine: 1.0 for the same class, 0.0 for different classes."""

    left: np.ndarray  # (P,) int64
    right: np.ndarray  # (P,) int64
    target: np.ndarray  # (P,) float32

    def __len__(self) -> int:
        return len(self.left)


@dataclass(frozen=True)
class ContrastiveResult:
    """The mean training loss of each epoch, the optimiser steps taken, and the wall time."""

    epoch_losses: list[float]
    steps: int
    seconds: float


def sample_pairs(labels: np.ndarray, rng: np.random.Generator) -> Pairs:
    """For every text one positive partner (another text of its class; none for a class of one text) and one
    negative partner (a text of any other class), in O(n) memory. A positive partner is an offset of 1..m-1
    places round the class's shuffled members, so it is never the text itself."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(np.unique(labels)) < 2:
        raise InputError(f"contrastive pairs need texts of at least two classes, got {len(np.unique(labels))}")
    left, right, target = [], [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        others = np.flatnonzero(labels != label)
        if len(members) > 1:
            offsets = rng.integers(1, len(members), size=len(members))
            left.append(members)
            right.append(members[(np.arange(len(members)) + offsets) % len(members)])
            target.append(np.ones(len(members), dtype=np.float32))
        left.append(members)
        right.append(others[rng.integers(0, len(others), size=len(members))])
        target.append(np.zeros(len(members), dtype=np.float32))
    order = rng.permutation(sum(len(part) for part in left))
    return Pairs(np.concatenate(left)[order], np.concatenate(right)[order], np.concatenate(target)[order])


def _cut(ids: Sequence[Sequence[int]], max_tokens: int | None) -> list[list[int]]:
    """Cut token ids to `max_tokens`, keeping the last id (the closing special token) at the end."""
    if max_tokens is None:
        return [list(row) for row in ids]
    return [list(row) if len(row) <= max_tokens else [*row[: max_tokens - 1], row[-1]] for row in ids]


def _pair_cosines(encoder: SentenceEncoder, ids: list[list[int]], pairs: Pairs, start: int, stop: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosine of each pair in pairs[start:stop], its target): both sides run through the module in one pass."""
    chosen = np.concatenate([pairs.left[start:stop], pairs.right[start:stop]])
    input_ids, mask = encoder.pad([ids[i] for i in chosen])
    embeddings = encoder.module(input_ids.to(device), mask.to(device))
    half = stop - start
    cosines = nn.functional.cosine_similarity(embeddings[:half], embeddings[half:], dim=1)
    return cosines, torch.from_numpy(pairs.target[start:stop]).to(device)


def pair_loss(encoder: SentenceEncoder, texts: Sequence[str], pairs: Pairs, max_tokens: int | None = 128,
              batch_size: int = 32) -> float:
    """The mean cosine-similarity loss of `pairs` with the module in inference mode (no dropout): the figure
    that tuning lowers, measured the same way before and after."""
    ids = _cut(encoder.encode_ids(texts)[0], max_tokens)
    device = next(encoder.module.parameters()).device
    was_training = encoder.module.training
    encoder.module.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            stop = min(start + batch_size, len(pairs))
            cosines, target = _pair_cosines(encoder, ids, pairs, start, stop, device)
            total += float(nn.functional.mse_loss(cosines, target, reduction="sum"))
    encoder.module.train(was_training)
    return total / max(1, len(pairs))


def contrastive_fine_tune(encoder: SentenceEncoder, texts: Sequence[str], labels: Sequence[object],
                          config: ContrastiveConfig = ContrastiveConfig(),
                          on_epoch: Callable[[int, float], None] | None = None) -> ContrastiveResult:
    """Tune every parameter of `encoder.module` in place on pairs of `texts` (as SetFit tunes the whole body),
    then leave it in inference mode with each parameter's `requires_grad` as it was (a frozen `TextModel.base`
    stays frozen for the head). `on_epoch(epoch, mean_loss)` is called after each epoch (1-based)."""
    if len(texts) != len(labels):
        raise InputError(f"{len(texts)} texts but {len(labels)} labels")
    codes = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)[1].reshape(-1)
    rng = np.random.default_rng(config.seed)
    ids = _cut(encoder.encode_ids(texts)[0], config.max_tokens)
    module = encoder.module
    device = next(module.parameters()).device
    params = list(module.parameters())
    frozen = [p for p in params if not p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    pairs_per_epoch = len(sample_pairs(codes, np.random.default_rng(0)))
    steps_per_epoch = -(-pairs_per_epoch // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup * total_steps)
    losses: list[float] = []
    step, started = 0, time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        try:
            module.requires_grad_(True)
            module.train()
            for epoch in range(1, config.epochs + 1):
                pairs = sample_pairs(codes, rng)
                total = 0.0
                for start in range(0, len(pairs), config.batch_size):
                    stop = min(start + config.batch_size, len(pairs))
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr * lr_at(step, total_steps, warmup_steps)
                    cosines, target = _pair_cosines(encoder, ids, pairs, start, stop, device)
                    loss = nn.functional.mse_loss(cosines, target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * (stop - start)
                    step += 1
                losses.append(total / len(pairs))
                log.info(f"contrastive epoch {epoch}/{config.epochs}: loss {losses[-1]:.4f} ({len(pairs)} pairs)")
                if on_epoch is not None:
                    on_epoch(epoch, losses[-1])
        finally:
            module.eval()
            optimizer.zero_grad(set_to_none=True)
            for p in frozen:
                p.requires_grad_(False)
    return ContrastiveResult(losses, step, time.perf_counter() - started)


def fit_logistic_head(embeddings: np.ndarray, labels: Sequence[object], c: float = 1.0,
                      seed: int = 0) -> LogisticRegression:
    """The head SetFit fits on the tuned embeddings: scikit-learn's logistic regression (predicts the labels as
    given), the fitted estimator."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn only once a head is really fitted

    return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(embeddings, np.asarray(labels))
