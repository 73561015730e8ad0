"""The one training loop: epochs of `train_one_epoch` + validation, a warmup+cosine rate, the best weights kept.

Everything that trains runs through `fit`: the head on cached features (the linear probe and the `extract`
strategy), the head on the frozen base with augmentation, and fine-tuning. What differs between them is data:
a `Stage` names its batches, its validation, its optimizer and rates. Everything else -- early stopping,
restoring the best weights, checkpoints, resume state, progress bars, log lines -- is a `Callback`, told of
the loop's events (fastai's before/after fit, epoch and batch) and never reaching into another callback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import transferkit.distributed as distributed
from transferkit.runtime import Runtime
from transferkit.training.schedule import lr_at

__all__ = ["Batch", "Best", "Callback", "EpochResult", "LoopState", "Stage", "evaluate_loss", "fit",
           "train_one_epoch"]

Batch = tuple[torch.Tensor, torch.Tensor] | None  # None: every image of the batch failed to decode


class Batches(Protocol):
    def __iter__(self) -> Any: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class EpochResult:
    stage: str
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stage:
    """One call of `fit`: `epochs` passes over `batches`, each followed by `validate()` (loss, accuracy).
    `rates` are the peak learning rates per optimizer group name; `micro_batch` the most examples per forward
    pass (gradients add up to the whole batch's). `blank` is an empty input batch: under torchrun, a process
    whose share of a step is empty still runs it (every process must take part in each gradient all-reduce)."""

    name: str
    epochs: int
    batches: Batches
    validate: Callable[[], tuple[float, float]]
    optimizer: torch.optim.Optimizer
    rates: dict[str, float]
    micro_batch: int
    warmup_epochs: float = 1.0
    blank: torch.Tensor | None = None
    schedule: Callable[[int], float] | None = None  # step -> rate multiplier (None: warmup + cosine, `lr_at`)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.batches))

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)

    def set_lr(self, step: int) -> float:
        factor = self.schedule(step) if self.schedule else lr_at(step, self.total_steps, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = self.rates[group["name"]] * factor
        return factor


@dataclass
class LoopState:
    """Where the current stage stands after its last complete epoch (what a resumed run continues from), and
    whether a callback asked to stop."""

    stage: str = ""
    epoch: int = 0
    step: int = 0
    since_best: int = 0
    stop: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "epoch": self.epoch, "step": self.step, "since_best": self.since_best}


@dataclass
class Best:
    """The best validation loss seen so far (across stages) and a copy of the weights of `module` that gave it."""

    val_loss: float = math.inf
    state: dict[str, torch.Tensor] | None = None
    where: str = ""

    def offer(self, module: nn.Module, val_loss: float, where: str) -> bool:
        if not val_loss < self.val_loss:
            return False
        self.val_loss, self.where = val_loss, where
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        return True

    def restore(self, module: nn.Module) -> None:
        if self.state is not None:
            module.load_state_dict(self.state)


class Callback:
    """Told of the loop's events; every hook does nothing unless overridden. To stop training after the current
    epoch, a callback sets `state.stop`."""

    def before_fit(self, stage: Stage, state: LoopState) -> None:
        pass

    def before_epoch(self, stage: Stage, epoch: int) -> None:
        pass

    def after_batch(self, stage: Stage, loss: float, accuracy: float) -> None:
        """`loss` and `accuracy`: the running means of the epoch so far."""

    def after_step(self, stage: Stage, step: int, loss: float) -> None:
        """`loss`: the mean loss of the batch just trained on (at the rate of `step`)."""

    def after_epoch(self, stage: Stage, result: EpochResult, improved: bool, state: LoopState) -> None:
        pass

    def after_fit(self, stage: Stage, history: list[EpochResult]) -> None:
        pass


@dataclass
class _Totals:
    loss: float = 0.0
    correct: int = 0
    seen: int = 0

    def add(self, loss: float, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss += loss * len(labels)
        self.correct += int((logits.argmax(1) == labels).sum())

    @property
    def mean(self) -> tuple[float, float]:
        return self.loss / max(1, self.seen), self.correct / max(1, self.seen)

    def over_all_processes(self, runtime: Runtime) -> _Totals:
        """The totals of every process of a torchrun job (these totals in a single process)."""
        if not distributed.active():
            return self
        loss, correct, seen = distributed.all_sum([self.loss, self.correct, self.seen], runtime)
        return _Totals(loss, int(correct), int(seen))


def _to_device(inputs: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    return runtime.images(inputs) if inputs.ndim == 4 else inputs.to(runtime.device)


def _step_total(loss_fn: nn.Module, labels: torch.Tensor, runtime: Runtime, parallel: bool) -> float | torch.Tensor:
    """What the step's mean loss divides by: its examples, or the sum of their class weights (a class-weighted
    mean divides by that); for a data-parallel model, over every process's share of the step."""
    weight = getattr(loss_fn, "weight", None)
    total: float | torch.Tensor = len(labels) if weight is None else weight[labels].sum()
    return distributed.all_sum([float(total)], runtime)[0] if parallel else total


def _slice_share(loss_fn: nn.Module, part: torch.Tensor, total: float | torch.Tensor,
                 processes: int) -> float | torch.Tensor:
    """The weight of a micro-batch's mean loss in its step's mean loss. DDP averages the gradients of its
    `processes`, hence the factor."""
    weight = getattr(loss_fn, "weight", None)
    share = (len(part) if weight is None else weight[part].sum()) / total
    return share * processes if processes > 1 else share


def train_one_epoch(model: nn.Module, stage: Stage, loss_fn: nn.Module, runtime: Runtime, step: int,
                    callbacks: Sequence[Callback]) -> tuple[float, float, int]:
    """One pass over the stage's batches. Returns (mean loss, accuracy, next global step).

    Each batch runs in slices of `stage.micro_batch` examples whose gradients add up to the batch's (exact while
    BatchNorm is in inference mode); with several processes, gradients are all-reduced on the last slice only,
    and a process whose share of the step is empty runs `stage.blank` with a zero loss to take part. (A model
    that is not DistributedDataParallel is trained alone, even under torchrun: the probe's head on features every
    process holds.)"""
    parallel = isinstance(model, DistributedDataParallel)
    processes = runtime.world_size if parallel else 1
    model.train()
    totals = _Totals()
    for batch in stage.batches:
        if batch is None:
            if not parallel or stage.blank is None:
                continue
            batch = (stage.blank, torch.empty(0, dtype=torch.long))
        inputs, labels = _to_device(batch[0], runtime), batch[1].to(runtime.device, non_blocking=True)
        total = _step_total(loss_fn, labels, runtime, parallel)
        if parallel and total == 0:
            continue  # nothing on any process could be read: skipped, as a single process would
        stage.set_lr(step)
        stage.optimizer.zero_grad(set_to_none=True)
        slices = list(zip(inputs.split(stage.micro_batch), labels.split(stage.micro_batch)))
        shares = [_slice_share(loss_fn, ys, total, processes) if len(ys) else 0.0 for _, ys in slices]
        step_loss = 0.0
        for i, ((xs, ys), share) in enumerate(zip(slices, shares)):
            with runtime.no_sync(model, last=i == len(slices) - 1):
                with runtime.autocast():
                    logits = model(xs).float()
                loss = loss_fn(logits, ys) if len(ys) else logits.sum() * 0.0
                (loss * share).backward()
            value = loss.item()
            totals.add(value, logits, ys)
            step_loss += value * float(share) / processes
        stage.optimizer.step()
        for cb in callbacks:
            cb.after_step(stage, step, step_loss)
        step += 1
        totals.seen += len(labels)
        for cb in callbacks:
            cb.after_batch(stage, *totals.mean)
    return *(totals.over_all_processes(runtime) if parallel else totals).mean, step


@torch.inference_mode()
def evaluate_loss(model: nn.Module, batches: Iterable[Batch], loss_fn: nn.Module, runtime: Runtime,
                  micro_batch: int) -> tuple[float, float, int]:
    """Mean loss, accuracy and the number of examples over the batches, in inference mode (under torchrun,
    over every process's batches: each validates its own share of the images)."""
    model.eval()
    totals = _Totals()
    for batch in tqdm(batches, desc="validating", unit="batch", leave=False, disable=None):
        if batch is None:
            continue
        inputs, labels = _to_device(batch[0], runtime), batch[1].to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = torch.cat([model(xs) for xs in inputs.split(micro_batch)]).float()
        totals.add(float(loss_fn(logits, labels)), logits, labels)
        totals.seen += len(labels)
    everyone = totals.over_all_processes(runtime)
    return *everyone.mean, everyone.seen


def fit(model: nn.Module, stage: Stage, loss_fn: nn.Module, runtime: Runtime, best: Best, state: LoopState,
        callbacks: Sequence[Callback] = (), best_of: nn.Module | None = None) -> list[EpochResult]:
    """Train for up to `stage.epochs`, offering each epoch's weights of `best_of` (default `model`) to `best`.
    `state` is updated before each `after_epoch` event; when it already names this stage (a resumed run),
    training continues after its epoch."""
    if state.stage != stage.name:
        state.stage, state.epoch, state.step, state.since_best = stage.name, 0, 0, 0
    state.stop = False
    for cb in callbacks:
        cb.before_fit(stage, state)
    history: list[EpochResult] = []
    step = state.step
    for epoch in range(state.epoch + 1, stage.epochs + 1):
        if state.stop:
            break
        start = time.perf_counter()
        for cb in callbacks:
            cb.before_epoch(stage, epoch)
        train_loss, train_acc, step = train_one_epoch(model, stage, loss_fn, runtime, step, callbacks)
        val_loss, val_acc = stage.validate()
        head_lr = stage.rates["head"] * lr_at(step - 1, stage.total_steps, stage.warmup_steps)
        result = EpochResult(stage.name, epoch, train_loss, train_acc, val_loss, val_acc, head_lr,
                             time.perf_counter() - start)
        improved = best.offer(best_of if best_of is not None else model, val_loss, f"{stage.name} epoch {epoch}")
        history.append(result)
        state.epoch, state.step = epoch, step
        state.since_best = 0 if improved else state.since_best + 1
        for cb in callbacks:
            cb.after_epoch(stage, result, improved, state)
    for cb in callbacks:
        cb.after_fit(stage, history)
    return history
