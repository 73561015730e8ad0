"""The loop's callbacks: what happens around training without being part of it.

Each one does one thing on the loop's events (see `loop.Callback`): stop early, put the best weights back, show
a progress bar, log each epoch, keep the best model on disk. Resume state is saved by
`resume.SaveResume`, also a callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from torch import nn
from tqdm import tqdm

from transferkit.io.bundle import save_checkpoint
from transferkit.model import TransferModel
from transferkit.training.loop import Best, Callback, EpochResult, LoopState, Stage

__all__ = ["Checkpoint", "EarlyStopping", "EpochLog", "ProgressBar", "RestoreBest", "format_epoch"]

log = logging.getLogger(__name__)


class EarlyStopping(Callback):
    """Stop once `patience` epochs in a row brought no better validation loss (also when a resumed stage had
    already run out of patience)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def before_fit(self, stage: Stage, state: LoopState) -> None:
        state.stop = state.since_best >= self.patience

    def after_epoch(self, stage: Stage, result: EpochResult, improved: bool, state: LoopState) -> None:
        state.stop = state.since_best >= self.patience


class RestoreBest(Callback):
    """At the end of a stage, `module` gets the best weights seen so far back (possibly from an earlier stage)."""

    def __init__(self, best: Best, module: nn.Module) -> None:
        self.best, self.module = best, module

    def after_fit(self, stage: Stage, history: list[EpochResult]) -> None:
        self.best.restore(self.module)


class ProgressBar(Callback):
    """A bar per training epoch on stderr with the running loss and accuracy; it disappears when the epoch
    ends, and is not drawn at all when stderr is not a terminal."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def before_epoch(self, stage: Stage, epoch: int) -> None:
        self.bar = tqdm(total=len(stage.batches), desc=f"{stage.name} {epoch}/{stage.epochs}", unit="batch",
                        leave=False, disable=None)

    def after_batch(self, stage: Stage, loss: float, accuracy: float) -> None:
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", refresh=False)

    def after_epoch(self, stage: Stage, result: EpochResult, improved: bool, state: LoopState) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_epoch(r: EpochResult, improved: bool) -> str:
    return (f"  {r.stage} epoch {r.epoch}: train loss {r.train_loss:.4f} acc {r.train_accuracy:.3f} | "
            f"val loss {r.val_loss:.4f} acc {r.val_accuracy:.3f} | {r.seconds:.0f}s{'  *best' if improved else ''}")


class EpochLog(Callback):
    """One log line per epoch, to `logger` (default: transferkit's, which the console shows; pass
    `io.logfile.details()` for the run's log file only)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def after_epoch(self, stage: Stage, result: EpochResult, improved: bool, state: LoopState) -> None:
        self.logger.info(format_epoch(result, improved))


class Checkpoint(Callback):
    """The best model so far as one self-contained file, rewritten atomically on every improvement, so an
    interrupted run always leaves a usable model. `meta()` is the bundle metadata to write with it."""

    def __init__(self, model: TransferModel, path: Path, meta: Callable[[], dict[str, object]]) -> None:
        self.model, self.path, self.meta = model, path, meta

    def after_epoch(self, stage: Stage, result: EpochResult, improved: bool, state: LoopState) -> None:
        if improved:
            save_checkpoint(self.model, self.path, self.meta())
