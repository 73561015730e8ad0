"""The learning-rate range test (Smith, 2017; fastai's `lr_find`), made stable, on a learner's current stage.

The rate grows geometrically from `start` to `end` over at most `iterations` training steps of the learner's own
loop, optimizer and augmented batches; the loss of each step is recorded and smoothed (an exponential moving
average with bias correction), and the test stops once the smoothed loss passes `DIVERGED` x its minimum.
Whatever it trained is then put back bit for bit: model weights and buffers, the optimizer's state, which
parameters were trainable, train/eval mode and every random state, so a test changes nothing a later `fit` sees.

The suggestion is fastai's `valley` rule: the rate half-way along the longest descent of the smoothed loss,
the longest decreasing sequence of it taken as a stretch of that many steps ending where the sequence ends. Half-way
down, the loss falls fast and is still far from where it turns up. Rules that read one point of the smoothed curve
are thrown by its lag: at 100 steps the average remembers tens of steps (at step 64 the mean age of what it
averages is ~25 steps, two decades of rate), so on the bundled data its minimum sat two decades and its steepest
descent one decade past the rates that train best (the old rule, a tenth of that minimum, was a decade too high).
The curve the rule reads is not `smoothed` but the steps after the first `SKIP`, smoothed afresh from there: a
bias-corrected average weighs its first steps the most, so a spike or a lucky batch among the noisy first steps of
a fresh head would draw a long false descent; smoothed afresh, nothing in the first `SKIP` of steps reaches the
suggestion at all (tested).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import transferkit.distributed as distributed
from transferkit.data.files import LabelledFiles
from transferkit.data.split import load_images
from transferkit.model import HeadConfig, TransferModel
from transferkit.runtime import Runtime
from transferkit.training.config import HEAD_LR_RATIO, LR_SPREAD, TrainConfig
from transferkit.training.learner import Learner
from transferkit.training.loop import Batch, Best, Callback, LoopState, Stage, fit
from transferkit.training.schedule import group_lrs

__all__ = ["LRFind", "find_lr", "lr_find", "suggest"]

SMOOTHING = 0.98  # weight of the past in the moving average of the loss
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum
SKIP = 0.1  # share of the first steps left out when looking for the minimum


@dataclass(frozen=True)
class LRFind:
    """The rates tried (the stage's reference rate: the head's while the base is frozen, else the top block's),
    the loss at each and its smoothed curve, and the suggested rate."""

    stage: str  # "head" (base frozen: the rate is --lr) or "fine-tune" (blocks unfrozen: --fine-tune-lr)
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    diverged: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def plot(self, path: str | Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, alpha=0.3, label="loss per step")
        ax.plot(self.lrs, self.smoothed, label="smoothed")
        ax.axvline(self.suggestion, color="tab:red", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate" + (" (top block)" if self.stage == "fine-tune" else " (head)"))
        ax.set_ylabel("training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def smooth(losses: list[float]) -> list[float]:
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        out.append(average / (1 - SMOOTHING**i))
    return out


def _longest_descent(curve: list[float]) -> tuple[int, int]:
    """Where the longest strictly decreasing sequence of `curve` ends and how many points it has."""
    lengths = [1] * len(curve)
    for i in range(1, len(curve)):
        lengths[i] = 1 + max((lengths[j] for j in range(i) if curve[j] > curve[i]), default=0)
    end = int(np.argmax(lengths))
    return end, lengths[end]


def suggest(lrs: list[float], losses: list[float]) -> float:
    """fastai's `valley` on the raw `losses` (one per rate) after the first `SKIP` of them, smoothed afresh: the
    rate half-way along the longest descent (the module docstring says why)."""
    skip = min(int(len(lrs) * SKIP), len(lrs) - 1)
    end, length = _longest_descent(smooth(losses[skip:]))
    start = max(end - length + 1, 0)
    return lrs[skip + start + (end - start) // 2]


class _Recorder(Callback):
    def __init__(self, rates: list[float]) -> None:
        self.rates, self.smallest = rates, math.inf
        self.losses: list[float] = []
        self.stop = False

    def after_step(self, stage: Stage, step: int, loss: float) -> None:
        self.losses.append(loss)
        current = smooth(self.losses)[-1]
        self.smallest = min(self.smallest, current)
        if not math.isfinite(current) or current > DIVERGED * self.smallest:
            self.stop = True


def _cycle(loader: Any, steps: int, recorder: _Recorder) -> Iterator[Batch]:
    """Batches of the training loader, again from the start if it runs out, until `steps` or divergence."""
    done = 0
    while done < steps:
        for batch in loader:
            if recorder.stop or done >= steps:
                return
            yield batch
            done += 1


class _Steps:
    def __init__(self, loader: Any, steps: int, recorder: _Recorder) -> None:
        self.loader, self.steps, self.recorder = loader, steps, recorder

    def __iter__(self) -> Iterator[Batch]:
        return _cycle(self.loader, self.steps, self.recorder)

    def __len__(self) -> int:
        return self.steps


def _random_states() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_random_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] is not None:
        torch.cuda.set_rng_state_all(states["cuda"])


def lr_find(learner: Learner, start: float = 1e-7, end: float = 10.0, iterations: int = 100) -> LRFind:
    """Run the range test on the learner's model as it is now (its trainable parameters, its BatchNorm policy)
    and put everything back afterwards; see the module docstring."""
    if iterations < 2:
        raise ValueError(f"lr_find needs at least 2 iterations, got {iterations}")
    model, optimizer = learner.model, learner.optimizer
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), model.training,
             [p.requires_grad for p in model.parameters()], learner.sampler.epoch, _random_states())
    unfrozen = bool(model.trainable_blocks())
    names = [g["name"] for g in optimizer.param_groups]
    # rates relative to the reference rate x: the head at x with the base frozen, else as in `fine_tune`
    rates = group_lrs(names, HEAD_LR_RATIO, 1.0, LR_SPREAD) if unfrozen else dict.fromkeys(names, 1.0)
    ratio = end / start
    tried = [start * ratio ** (i / (iterations - 1)) for i in range(iterations)]
    recorder = _Recorder(tried)
    stage = Stage("lr-find", 1, _Steps(learner.train_loader, iterations, recorder), lambda: (math.nan, math.nan),
                  optimizer, {n: r * start for n, r in rates.items()}, learner._micro_batch(),
                  schedule=lambda step: ratio ** (step / (iterations - 1)))
    try:
        fit(distributed.wrap(model, learner.runtime), stage, learner.loss_fn, learner.runtime, Best(), LoopState(),
            [recorder])
    finally:
        state, opt_state, training, trainable, epoch, randoms = saved
        model.load_state_dict(state)
        optimizer.load_state_dict(opt_state)
        for p, flag in zip(model.parameters(), trainable):
            p.requires_grad_(flag)
        model.train(training)
        learner.sampler.epoch = epoch
        _set_random_states(randoms)
    losses = recorder.losses
    lrs = tried[:len(losses)]
    smoothed = smooth(losses)
    return LRFind("fine-tune" if unfrozen else "head", lrs, losses, smoothed, suggest(lrs, losses), recorder.stop)


def find_lr(data: LabelledFiles | str | Path, cfg: TrainConfig, stage: str = "head", iterations: int = 100,
            runtime: Runtime | None = None) -> LRFind:
    """The range test as `train` would meet it, from the data and options alone: the model made and the data
    split as in training; for `stage="fine-tune"`, after the probe's warm start of the head, with the top
    `cfg.unfreeze_blocks` blocks unfrozen (the suggestion is then a `--fine-tune-lr`, else an `--lr`)."""
    if stage not in ("head", "fine-tune"):
        raise ValueError(f"stage must be 'head' or 'fine-tune', got {stage!r}")
    runtime = runtime or Runtime.detect()
    images = load_images(data, cfg.val_split, cfg.seed, runtime.workers)
    torch.manual_seed(cfg.seed)
    model = TransferModel.from_pretrained(cfg.backbone, list(images.classes), HeadConfig(cfg.hidden, cfg.dropout),
                                          cfg.weights, cfg.layer, cfg.input_size)
    model.train_bn = cfg.train_bn
    learner = Learner(model, images, cfg.batch_size, cfg.augmentation, cfg.weight_decay, cfg.label_smoothing,
                      cfg.class_weights, cfg.seed, runtime)
    if stage == "fine-tune":
        learner.probe(cfg.probe_epochs, HEAD_LR_RATIO * cfg.lr)
        model.unfreeze_top(cfg.unfreeze_blocks)
    return lr_find(learner, iterations=iterations)
