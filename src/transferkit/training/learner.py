"""`Learner`: a model, its data, one optimizer and the loop's callbacks, so transfer learning composes in lines.

    learner = Learner(model, data)
    learner.fine_tune()                              # the recipe below, in one call
    # or, step by step:
    learner.probe()                                  # warm start: the head fitted on frozen features
    learner.fit(epochs=4, lr=1e-3)                   # stage 1: base frozen, head trained with augmentation
    model.unfreeze_top(2)
    learner.fit(epochs=5, lr=3e-4, base_lr=1e-4)     # stage 2: lower, per-block rates

The optimizer's parameter groups are made once, at construction; freezing only flips `requires_grad`. The best
validation loss is tracked across stages, so a stage that only makes things worse leaves the earlier weights.
`state_dict()` / `load_state_dict()` is everything a resumed run needs besides the random states.

Under torchrun each process loads its share of every global batch (`batch_size` per process) and validates its
share of the images; each stage wraps the model in DistributedDataParallel anew, since DDP syncs only the
parameters that were trainable when it was made. The probe's features are computed in shares and gathered, and
every process fits the same head on all of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import transferkit.distributed as distributed
from transferkit.data.loaders import make_loader, make_train_loader
from transferkit.data.preprocess import Augmentation
from transferkit.data.split import ImageData
from transferkit.data.transforms import eval_transform, train_transform
from transferkit.evaluation.predict import infer_files
from transferkit.io.logfile import details
from transferkit.model import TransferModel
from transferkit.runtime import Runtime
from transferkit.training.callbacks import EarlyStopping, RestoreBest
from transferkit.training.config import FINE_TUNE_EPOCHS, FINE_TUNE_LR, HEAD_LR_RATIO, LR_SPREAD, UNFREEZE_BLOCKS
from transferkit.training.features import FeatureBatches, head_optimizer
from transferkit.training.loop import Best, Callback, EpochResult, LoopState, Stage, evaluate_loss, fit
from transferkit.training.schedule import class_weights, group_lrs, make_optimizer

__all__ = ["Learner"]

log = logging.getLogger(__name__)


class _History(Callback):
    def __init__(self, history: list[EpochResult]) -> None:
        self.history = history

    def after_epoch(self, stage: Stage, result: EpochResult, improved: bool, state: LoopState) -> None:
        self.history.append(result)


class Learner:
    def __init__(self, model: TransferModel, data: ImageData, batch_size: int = 16,
                 augmentation: Augmentation = Augmentation(), weight_decay: float = 0.01,
                 label_smoothing: float = 0.1, balance_classes: bool = False, seed: int = 0,
                 runtime: Runtime | None = None, callbacks: Sequence[Callback] = ()) -> None:
        if list(data.classes) != model.class_names:
            raise ValueError(f"model classes {model.class_names} differ from data classes {list(data.classes)}")
        self.model = model
        self.data = data
        self.batch_size = batch_size
        self.runtime = runtime or Runtime.detect()
        self.runtime.place(self.model)
        device = self.runtime.device
        weight = class_weights(data.train.labels(), len(data.classes)).to(device) if balance_classes else None
        self.loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        self.optimizer = make_optimizer(model, weight_decay)
        self.best = Best()
        self.state = LoopState()  # where the current stage stands
        self.history: list[EpochResult] = []
        self.callbacks: list[Callback] = [_History(self.history), *callbacks]
        self._resumed: LoopState | None = None  # set by load_state_dict, taken by the first fit of its stage
        p, rt = model.preprocessing, self.runtime
        self.train_loader, self.sampler = make_train_loader(
            data.train.samples, train_transform(p, augmentation), p.resize_size, batch_size, rt.workers, seed,
            rt.pin_memory, rt.rank, rt.world_size)
        self.val_loader = make_loader(distributed.shard(data.val.samples, rt), eval_transform(p), p.resize_size,
                                      batch_size, rt.workers, rt.pin_memory)
        self._weight_decay, self._seed = weight_decay, seed

    def _micro_batch(self) -> int:
        # Slicing a batch is exact only while no BatchNorm layer updates its statistics from the batch.
        return self.batch_size if self.model.train_bn else self.runtime.micro_batch_size(self.batch_size)

    def _validate(self) -> tuple[float, float]:
        if self.model.train_bn:  # each process updated its own BatchNorm statistics: validate with their mean
            distributed.average_buffers(self.model)
        loss, accuracy, count = evaluate_loss(self.model, self.val_loader, self.loss_fn, self.runtime,
                                              self._micro_batch())
        if self.runtime.world_size > 1:
            details().info(f"validated {count} images on {self.runtime.world_size} processes")
        return loss, accuracy

    def _state_for(self, name: str) -> LoopState:
        """A fresh state for a new stage; the restored one for the stage a resumed run was in (once)."""
        resumed, self._resumed = self._resumed, None
        self.state = resumed if resumed is not None and resumed.stage == name else LoopState()
        return self.state

    def probe(self, epochs: int = 30, lr: float | None = None) -> EpochResult:
        """Linear-probe warm start: one pass of the frozen base over the training images (no augmentation),
        then `epochs` quick passes of the head over those features (at `lr`, default `HEAD_LR_RATIO` x 1e-3);
        scored on validation like any epoch, and offered to the best weights as one epoch named "probe"."""
        if self.model.trainable_blocks():
            raise ValueError("probe() needs the base frozen: call model.freeze_base() first")
        lr = HEAD_LR_RATIO * 1e-3 if lr is None else lr
        start = time.perf_counter()
        samples, rt = self.data.train.samples, self.runtime
        share = distributed.shard(range(len(samples)), rt)
        pooled, kept = infer_files(self.model.base, self.model.preprocessing, [samples[i].path for i in share],
                                   rt, self.batch_size, softmax=False)
        parts = distributed.gather((pooled, [share[i] for i in kept]))  # every share, in the samples' order
        rows = np.concatenate([part_rows for _, part_rows in parts]).astype(int)
        order = np.argsort(rows, kind="stable")
        pooled, kept = np.concatenate([part for part, _ in parts])[order], rows[order].tolist()
        labels = torch.tensor([samples[i].label for i in kept], device=rt.device)
        batches = FeatureBatches(torch.from_numpy(pooled).to(rt.device), labels, self.batch_size * rt.world_size,
                                 self._seed, epochs)
        stage = Stage("probe", 1, batches, self._validate, head_optimizer(self.model.head, lr, self._weight_decay),
                      {"head": lr}, micro_batch=self.batch_size, warmup_epochs=1 / epochs)
        details().info(f"probe: features of {len(kept)} training images in {time.perf_counter() - start:.1f}s")
        (result,) = fit(self.model.head, stage, self.loss_fn, self.runtime, self.best, self._state_for("probe"),
                        self.callbacks, best_of=self.model)
        return result

    def fit(self, epochs: int, lr: float, base_lr: float | None = None, lr_spread: float = LR_SPREAD,
            patience: int = 3, warmup_epochs: float = 1.0, name: str | None = None) -> list[EpochResult]:
        """Train what is unfrozen: the head at `lr`, the top unfrozen block at `base_lr` (default lr/10), lower
        blocks less (down to `base_lr / lr_spread` at the stem). Stops after `patience` epochs without a better
        validation loss and leaves the model with the best weights seen so far (possibly from an earlier stage)."""
        name = name or f"stage {len({r.stage for r in self.history}) + 1}"
        base_lr = lr / 10 if base_lr is None else base_lr
        rates = group_lrs([g["name"] for g in self.optimizer.param_groups], lr, base_lr, lr_spread)
        size = self.model.preprocessing.input_size
        stage = Stage(name, epochs, self.train_loader, self._validate, self.optimizer, rates, self._micro_batch(),
                      warmup_epochs, blank=torch.zeros(0, 3, size, size))
        callbacks = [EarlyStopping(patience), RestoreBest(self.best, self.model), *self.callbacks]
        return fit(distributed.wrap(self.model, self.runtime), stage, self.loss_fn, self.runtime, self.best,
                   self._state_for(name), callbacks, best_of=self.model)

    def fine_tune(self, epochs: int = 4, lr: float = 1e-3, fine_tune_epochs: int = FINE_TUNE_EPOCHS,
                  fine_tune_lr: float = FINE_TUNE_LR, unfreeze_blocks: int | None = UNFREEZE_BLOCKS,
                  probe_epochs: int = 30, lr_spread: float = LR_SPREAD, patience: int = 3,
                  warmup_epochs: float = 1.0, head_fitted: bool = False) -> list[EpochResult]:
        """The two-stage recipe: freeze the base, warm-start the head on frozen features, train it with
        augmentation, then unfreeze the top `unfreeze_blocks` blocks (None: all) and train again with lower,
        spread rates. A resumed learner skips what its run had finished. Returns the whole history.

        `head_fitted`: the model's head was fitted on the frozen features already (auto's logistic probe), so
        stage 1 is skipped (when stage 2 runs at all) and fine-tuning starts from it: linear probing, then
        fine-tuning (LP-FT; Kumar et al., 2022). Stage 1's head epochs on augmented images cost a pass of the
        base each, and at 100 Fashion-MNIST images per class they left the best weights at the warm start
        (benchmarks/RESULTS.md)."""
        resumed = self._resumed.stage if self._resumed is not None else None
        tunes = fine_tune_epochs > 0 and unfreeze_blocks != 0
        if head_fitted and tunes and resumed != "fine-tune":
            log.info("stage 1 skipped: the head starts from the linear probe fitted on the training split")
        elif resumed != "fine-tune":
            self.model.freeze_base()
            log.info(f"stage 1: training the head on the frozen base (up to {epochs} epochs)")
            if probe_epochs > 0 and resumed is None:
                self.probe(probe_epochs, HEAD_LR_RATIO * lr)
            self.fit(epochs, lr, patience=patience, warmup_epochs=warmup_epochs, name="head")
        if tunes:
            self.model.unfreeze_top(unfreeze_blocks)
            log.info(f"stage 2: fine-tuning blocks {', '.join(self.model.trainable_blocks())} "
                     f"(up to {fine_tune_epochs} epochs)")
            self.fit(fine_tune_epochs, HEAD_LR_RATIO * fine_tune_lr, base_lr=fine_tune_lr, lr_spread=lr_spread,
                     patience=patience, warmup_epochs=warmup_epochs, name="fine-tune")
        return self.history

    def state_dict(self) -> dict[str, Any]:
        """The model, optimizer, best weights, loop position, batch order and history: with the random states,
        everything a run needs to continue bit for bit (see `transferkit.training.resume`)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best": {"val_loss": self.best.val_loss, "where": self.best.where, "state": self.best.state},
            "loop": self.state.to_json(),
            "sampler_epoch": self.sampler.epoch,
            "history": [h.to_json() for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.runtime.device
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        best = state["best"]
        self.best.val_loss, self.best.where = float(best["val_loss"]), str(best["where"])
        self.best.state = {k: v.to(device) for k, v in best["state"].items()} if best["state"] else None
        self._resumed = LoopState(**state["loop"])
        self.state = LoopState(**state["loop"])
        self.sampler.epoch = int(state["sampler_epoch"])
        self.history[:] = [EpochResult(**h) for h in state["history"]]
