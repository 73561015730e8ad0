"""The training strategies, by name: how much of the pretrained network is trained, and on what.

- `auto` (the default): the probe first, then fine-tuning with a tested augmentation, kept only if it beats the
  probe on validation (`auto.py`);
- `finetune`: the two-stage recipe (`Learner.fine_tune`): the head on the frozen base, then the top blocks
  unfrozen at lower, spread rates;
- `frozen`: stage 1 only;
- `extract`: only the head, on features the frozen base computed once (cached), in seconds.

`train` runs one of them from a folder to a bundle. Each strategy is a function of a `Run` in `STRATEGIES`, so
a new one is one more row.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import transferkit.distributed as distributed
from transferkit._version import __version__
from transferkit.backbones.registry import get_backbone
from transferkit.data.files import LabelledFiles, Sample, check_trainable
from transferkit.data.split import ImageData, load_images, stratified_split
from transferkit.errors import UserError
from transferkit.evaluation.calibration import fit_temperature, rescale
from transferkit.evaluation.metrics import Metrics, compute_metrics
from transferkit.evaluation.predict import Scored, evaluate, score
from transferkit.evaluation.report import calibration
from transferkit.features.extract import extract_features
from transferkit.io.bundle import CHECKPOINT_FILE
from transferkit.io.logfile import details, log_to_file
from transferkit.model import HeadConfig, TransferModel
from transferkit.runtime import Runtime
from transferkit.training.auto import train_auto
from transferkit.training.callbacks import Checkpoint, EpochLog, ProgressBar
from transferkit.training.config import AUTO_BACKBONE, STRATEGY_NAMES, TrainConfig
from transferkit.training.head_fit import CalibrationSet, HeadFitter, fit_head
from transferkit.training.learner import Learner
from transferkit.training.logistic import fit_logistic_head
from transferkit.training.loop import Callback, EpochResult, Stage
from transferkit.training.resume import RESUME_FILE, SaveResume, fingerprint, restore, resume_point
from transferkit.training.run import LOG_FILE, Run, TrainResult, log_backbone, log_data, save_run

__all__ = ["STRATEGIES", "TrainResult", "calibrate", "fitted_temperature", "train"]

log = logging.getLogger(__name__)


class StageSummary(Callback):
    """After each stage of the recipe: validation (and test) metrics of the model with its best weights."""

    TITLES = {"head": "stage 1", "fine-tune": "stage 2"}

    def __init__(self, learner: Learner, test: LabelledFiles | None) -> None:
        self.learner, self.test = learner, test
        self.val_metrics: Metrics | None = None
        self.val_scored: Scored | None = None  # the last stage's validation probabilities, for calibration
        self.test_metrics: Metrics | None = None

    def after_fit(self, stage: Stage, history: list[EpochResult]) -> None:
        if stage.name not in self.TITLES:
            return
        learner = self.learner
        self.val_scored = score(learner.model, learner.data.val, learner.runtime)
        self.val_metrics = compute_metrics(self.val_scored.labels, self.val_scored.probs, learner.model.class_names)
        line = f"after {self.TITLES[stage.name]}: validation accuracy {self.val_metrics.accuracy:.3f}"
        if self.test is not None:
            self.test_metrics = evaluate(learner.model, self.test, learner.runtime).metrics
            line += f", test accuracy {self.test_metrics.accuracy:.3f}"
        log.info(line + f" (best weights: {learner.best.where})")


def calibrate(model: TransferModel, held_out: CalibrationSet) -> None:
    """Fit the model's temperature on held-out probabilities made at temperature 1 (see `calibration`)."""
    model.temperature = fitted_temperature(held_out.probs, held_out.labels, held_out.what)


def fitted_temperature(probs: np.ndarray, labels: np.ndarray, what: str) -> float:
    """The calibration temperature for held-out probabilities made at temperature 1, logged with its effect
    (`what` says what they are: "80 validation images")."""
    temperature = fit_temperature(probs, labels)
    before, after = calibration(labels, probs), calibration(labels, rescale(probs, temperature))
    log.info(f"calibration: temperature {temperature:.3f} fitted on {what} (expected calibration error there "
             f"{before.ece:.3f} -> {after.ece:.3f}; a perfectly calibrated model would show about "
             f"{after.noise_floor:.3f} on so few)")
    return temperature


def _train_images(run: Run) -> TrainResult:
    """`finetune` and `frozen`: the recipe on the images, with augmentation, resumable after every epoch."""
    cfg = run.cfg
    spec = get_backbone(cfg.backbone)  # an unknown name fails before the data is read
    test_files = run.test_files()
    log.info(f"indexing {run.source}")
    data = load_images(run.files(), cfg.val_split, cfg.seed, run.runtime.workers,
                       min_size=spec.preprocessing.resize_size)
    log_data(data, run.out)

    torch.manual_seed(cfg.seed)
    model = TransferModel.from_pretrained(cfg.backbone, list(data.classes), HeadConfig(cfg.hidden, cfg.dropout),
                                          cfg.weights, cfg.layer, cfg.input_size)
    model.train_bn = cfg.train_bn
    log_backbone(model)
    if run.head is not None:
        model.head.load_state_dict(run.head)
    run_fingerprint = fingerprint(cfg, data, run.runtime.world_size)
    main = run.runtime.is_main
    state = resume_point(run.out, run_fingerprint, tidy=main) if run.resume else None
    learner = Learner(model, data, cfg.batch_size, cfg.augmentation, cfg.weight_decay, cfg.label_smoothing,
                      cfg.class_weights, cfg.seed, run.runtime)
    summary = StageSummary(learner, test_files)
    checkpoint = Checkpoint(model, run.out / CHECKPOINT_FILE, lambda: {
        "train_config": cfg.to_json(), "history": [h.to_json() for h in learner.history]})
    save_state = SaveResume(run.out / RESUME_FILE, learner, run_fingerprint)  # every rank: it gathers their states
    learner.callbacks += [ProgressBar(), EpochLog(), checkpoint, save_state, summary] if main else [save_state]
    if state is not None:
        restore(state, learner)
    fine_tune_epochs = cfg.fine_tune_epochs if cfg.strategy == "finetune" else 0
    learner.fine_tune(epochs=cfg.epochs, lr=cfg.lr, fine_tune_epochs=fine_tune_epochs, fine_tune_lr=cfg.fine_tune_lr,
                      unfreeze_blocks=cfg.unfreeze_blocks, probe_epochs=cfg.probe_epochs, lr_spread=cfg.lr_spread,
                      patience=cfg.patience, warmup_epochs=cfg.warmup_epochs, head_fitted=run.head is not None)
    weights = distributed.parameters_agree(model) if run.runtime.world_size > 1 else None
    val_metrics, test_metrics, val_scored = distributed.gather(
        (summary.val_metrics, summary.test_metrics, summary.val_scored))[0]  # rank 0's
    assert val_metrics is not None  # stage 1 or 2 ran (a finished run cannot be resumed)
    if main:
        assert val_scored is not None
        calibrate(model, CalibrationSet.validation(val_scored.probs, val_scored.labels))
        save_run(run, model, learner.history, learner.best.where, data, val_metrics, test_metrics,
                 processes=_processes(run, weights))
    distributed.barrier()  # the other processes end once the bundle is written
    return TrainResult(model, run.out, learner.history, val_metrics, test_metrics, list(data.skipped), data.val,
                       val_scored)


def _processes(run: Run, weights: str | None) -> dict[str, Any] | None:
    """How a torchrun job trained, for the bundle (None in a single process)."""
    if weights is None:
        return None
    rt = run.runtime
    return {"world_size": rt.world_size, "batch_per_process": run.cfg.batch_size,
            "global_batch": run.cfg.batch_size * rt.world_size, "weights_sha256_on_every_rank": weights}


def _train_on_features(run: Run, fitter: HeadFitter = fit_head) -> TrainResult:
    """`extract`: the base runs once per image (features cached, reused by later runs), then the head is fitted
    on the cached features in seconds: by default trained for `probe_epochs` epochs, the epoch with the lowest
    validation loss kept (auto's probe: `logistic.fit_logistic_head`). The bundle is a whole model (base + head)
    that reads raw images."""
    cfg, runtime = run.cfg, run.runtime
    folder = run.features or run.out / "features"
    test_files = run.test_files()
    log.info(f"indexing {run.source}")
    files = run.files()
    check_trainable(files)
    torch.manual_seed(cfg.seed)
    model = TransferModel.from_pretrained(cfg.backbone, list(files.classes), HeadConfig(cfg.hidden, cfg.dropout),
                                          cfg.weights, cfg.layer, cfg.input_size)
    log_backbone(model)
    cache = extract_features(files, model.backbone, folder, cfg.views, cfg.augmentation, cfg.seed, runtime)
    log.info(f"features: {cache.stats.computed} computed, {cache.stats.reused} reused from {folder}")
    good = LabelledFiles(files.source, files.classes,
                         tuple(Sample(p, int(label)) for p, label in zip(cache.paths, cache.labels)))
    check_trainable(good)
    train_idx, val_idx = stratified_split(good.labels(), cfg.val_split, cfg.seed)
    data = ImageData(files.classes, good.subset(train_idx), good.subset(val_idx), cache.skipped)
    log_data(data, run.out)

    features = torch.from_numpy(np.array(cache.features))  # a writable copy in memory: training reads it often
    labels = torch.from_numpy(np.array(cache.labels))
    x_train, y_train = features[train_idx], labels[train_idx]
    if cache.views is not None:  # every augmented view is one more training example of its image
        views = torch.from_numpy(np.array(cache.views[train_idx]))
        x_train = torch.cat([x_train, views.reshape(-1, views.shape[-1])])
        y_train = torch.cat([y_train, y_train.repeat_interleave(views.shape[1])])
    fitted = fitter(model.head, x_train, y_train, features[val_idx], labels[val_idx], len(files.classes), cfg,
                    runtime)
    model.eval()
    val_metrics = compute_metrics(fitted.val_labels, fitted.val_probs, model.class_names)
    calibrate(model, fitted.calibration_set())
    line = f"best {fitted.best}: validation accuracy {val_metrics.accuracy:.3f}"
    test_metrics: Metrics | None = None
    if test_files is not None and runtime.is_main:
        test_metrics = evaluate(model, test_files, runtime).metrics
        line += f", test accuracy {test_metrics.accuracy:.3f}"
    log.info(line)
    if runtime.is_main:  # under torchrun every process trained the same head on the same features
        save_run(run, model, fitted.history, fitted.best, data, val_metrics, test_metrics,
                 {"folder": str(folder), "key": cache.key, "stats": cache.stats.to_json()}, probe=fitted.details)
    distributed.barrier()
    val_scored = Scored([s.path for s in data.val.samples], fitted.val_labels, fitted.val_probs, [])
    return TrainResult(model, run.out, fitted.history, val_metrics, test_metrics, list(data.skipped), data.val,
                       val_scored, fitted.warm_start)


def _train_auto(run: Run) -> TrainResult:
    """`auto`: the probe (a linear head on plain features: the cross-validated logistic regression), then
    fine-tuning with a tested augmentation; the better on validation (`auto`)."""
    linear = run.cfg.hidden == 0 and run.cfg.views == 0
    return train_auto(run, lambda r: _train_on_features(r, fit_logistic_head if linear else fit_head), _train_images)


STRATEGIES: dict[str, Callable[[Run], TrainResult]] = {
    "extract": _train_on_features,
    "frozen": _train_images,
    "finetune": _train_images,
    "auto": _train_auto,
}
assert (*STRATEGIES, "contrastive") == STRATEGY_NAMES, "every image strategy TrainConfig accepts has a function here"


def train(data: str | os.PathLike[str] | LabelledFiles, out: str | os.PathLike[str],
          cfg: TrainConfig = TrainConfig(), test: str | os.PathLike[str] | None = None, resume: bool = False,
          features: str | os.PathLike[str] | None = None, runtime: Runtime | None = None) -> TrainResult:
    """The whole job: labelled images in `data` (a folder, a CSV manifest, or a `LabelledFiles` such as
    `data.memory.labelled_images` makes from arrays) → the strategy `cfg.strategy` → a bundle in `out`, with
    every log line (and the details the console leaves out) in `out/train.log`.

    With the image strategies the full training state is saved in `out/resume.safetensors` after every epoch;
    `resume=True` continues from it (same options and data required) with the same result as an uninterrupted
    run. (The extract strategy needs no resuming: its features are cached and its head trains in seconds.)"""
    if cfg.strategy not in STRATEGIES:
        raise UserError(f"strategy {cfg.strategy!r} is for texts: for images choose one of {', '.join(STRATEGIES)}")
    source = data if isinstance(data, LabelledFiles) else Path(data)
    run = Run(source, Path(out), cfg, runtime or Runtime.detect(), Path(test) if test is not None else None,
              resume, Path(features) if features is not None else None, time.perf_counter())
    distributed.start(run.runtime)
    if not run.runtime.is_main:  # the other processes of a torchrun job compute; rank 0 writes and talks
        return STRATEGIES[cfg.strategy](_with_backbone(run))
    with log_to_file(run.out / LOG_FILE):
        details().info(f"=== transferkit {__version__} train {run.source} --out {run.out}, "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        return STRATEGIES[cfg.strategy](_with_backbone(run))


def _with_backbone(run: Run) -> Run:
    """`--backbone auto`: the (backbone, layer) that `transferkit rank` puts first for this data (LogME over every
    backbone whose weights are on this machine, at each depth); any other name as given."""
    if run.cfg.backbone != AUTO_BACKBONE:
        return run
    from transferkit.features.engine import cache_dir
    from transferkit.selection.rank import LAYERS, available_candidates, rank

    if run.cfg.weights is not None or run.cfg.layer is not None:
        raise UserError("--backbone auto chooses the backbone and its layer among the pretrained weights on this "
                        "machine: drop --weights and --layer, or name a backbone")
    candidates = available_candidates(None, LAYERS)
    log.info(f"backbone auto: ranking {len(candidates)} candidates (backbone x layer) by LogME on the frozen "
             f"features")
    ranked = rank(run.files(), candidates, cache_dir() / "rank", run.runtime)
    best = ranked[0].candidate
    log.info(f"backbone auto chose {best} (LogME {ranked[0].scores['logme']:.4f}; next: "
             + ", ".join(f"{r.candidate} {r.scores['logme']:.4f}" for r in ranked[1:4]) + ")")
    return replace(run, cfg=replace(run.cfg, backbone=best.backbone, layer=best.layer))
