"""The jobs a user runs, as functions: load labelled images, train in two stages, evaluate, predict, classify.

The CLI is a thin layer over these; each one is also the Python API (see README.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from timm.data import ImageNetInfo

from transferkit import __version__
from transferkit.backbones import get_backbone
from transferkit.bundle import CHECKPOINT_FILE, save_bundle, save_checkpoint
from transferkit.config import TrainConfig
from transferkit.data import LEAK, LabelledFiles, check_trainable, load_labelled, scan_images, stratified_split
from transferkit.errors import UserError
from transferkit.images import skip_reason
from transferkit.inference import Prediction, default_workers, infer_files, top_k
from transferkit.learner import ImageData, Learner
from transferkit.metrics import Metrics, compute_metrics
from transferkit.model import HeadConfig, TransferModel
from transferkit.resume import RESUME_FILE, fingerprint, restore, resume_point, save_resume
from transferkit.train import EpochResult
from transferkit.weights import build_network

__all__ = ["EXAMPLE_DATA", "RunLog", "TrainResult", "classify", "evaluate", "load_images", "predict", "train"]

EXAMPLE_DATA = Path(__file__).resolve().parent / "example_data" / "fashion-mnist"


class RunLog:
    """Prints each message and appends it to the run's log file; `quiet` lines go to the file only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str, quiet: bool = False) -> None:
        if not quiet:
            print(message, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(message + "\n")


def load_images(path: Path, val_split: float = 0.2, seed: int = 0, workers: int | None = None,
                min_size: int | None = None) -> ImageData:
    """Index a class-per-folder directory or CSV manifest, decode every file once (bad ones are set aside),
    and make a seeded stratified train/validation split."""
    files = load_labelled(Path(path))
    check_trainable(files)
    good, bad = scan_images(files, default_workers() if workers is None else workers, min_size)
    check_trainable(good)
    train_idx, val_idx = stratified_split(good.labels(), val_split, seed)
    return ImageData(good.classes, good.subset(train_idx), good.subset(val_idx), tuple(bad))


def evaluate(model: TransferModel, files: LabelledFiles | Path, batch_size: int = 32,
             workers: int | None = None) -> tuple[Metrics, list[Path]]:
    """Metrics of `model` on labelled files (their class names must be among the model's). Also returns the
    files that could not be decoded and were left out."""
    if isinstance(files, Path):
        files = load_labelled(files)
    unknown = [c for c in files.classes if c not in model.class_names]
    if unknown:
        raise UserError(f"{files.source} has classes the model was not trained on: {', '.join(unknown)}; "
                        f"the model knows {', '.join(model.class_names)}")
    to_model = np.array([model.class_names.index(c) for c in files.classes], dtype=np.int64)
    paths = [s.path for s in files.samples]
    probs, kept = infer_files(model, model.preprocessing, paths, batch_size, workers)
    if not kept:
        raise UserError(f"none of the {len(paths)} images in {files.source} could be read ({paths[0]}: "
                        f"{skip_reason(paths[0])}{', ...' if len(paths) > 1 else ''}): "
                        f"pass image files (JPEG, PNG, ...)")
    labels = to_model[np.array([files.samples[i].label for i in kept], dtype=np.int64)]
    return compute_metrics(labels, probs, model.class_names), _left_out(paths, kept)


def predict(model: TransferModel, paths: Sequence[Path], top: int = 3,
            workers: int | None = None) -> tuple[list[Prediction], list[Path]]:
    """Top-`top` classes for each image; also returns the files that could not be decoded."""
    probs, kept = infer_files(model, model.preprocessing, paths, workers=workers)
    return _to_predictions(probs, kept, paths, model.class_names, top)


def classify(paths: Sequence[Path], backbone: str, top: int = 5, weights: str | None = None,
             workers: int | None = None) -> tuple[list[Prediction], list[Path]]:
    """ImageNet classes from the backbone's own pretrained head (no training)."""
    spec = get_backbone(backbone)
    net, info = build_network(spec, weights)
    if not info.has_imagenet_head:
        raise UserError(f"the weights of {spec.name} ({info.source}) have no ImageNet classifier, so `classify` "
                        f"cannot name ImageNet classes with them")
    imagenet = ImageNetInfo()
    names = [imagenet.index_to_description(i) for i in range(1000)]
    probs, kept = infer_files(net, spec.preprocessing, paths, workers=workers)
    return _to_predictions(probs, kept, paths, names, top)


def _to_predictions(probs: np.ndarray, kept: list[int], paths: Sequence[Path], names: Sequence[str],
                    top: int) -> tuple[list[Prediction], list[Path]]:
    if paths and not kept:
        raise UserError(f"none of the {len(paths)} image(s) could be read ({paths[0]}: {skip_reason(Path(paths[0]))}"
                        f"{', ...' if len(paths) > 1 else ''}): pass image files (JPEG, PNG, ...)")
    rows = top_k(probs, names, top)
    return [Prediction(str(paths[i]), row) for i, row in zip(kept, rows)], _left_out(paths, kept)


def _left_out(paths: Sequence[Path], kept: list[int]) -> list[Path]:
    """The paths that `infer_files` could not decode."""
    kept_set = set(kept)
    return [Path(p) for i, p in enumerate(paths) if i not in kept_set]


@dataclass
class TrainResult:
    model: TransferModel
    run_dir: Path
    history: list[EpochResult]
    val_metrics: Metrics
    test_metrics: Metrics | None
    skipped: list[tuple[Path, str]]


def _log_epoch(log: RunLog, r: EpochResult, improved: bool) -> None:
    log(f"  {r.stage} epoch {r.epoch}: train loss {r.train_loss:.4f} acc {r.train_accuracy:.3f} | "
        f"val loss {r.val_loss:.4f} acc {r.val_accuracy:.3f} | {r.seconds:.0f}s{'  *best' if improved else ''}")


def train(data_path: Path, out: Path, cfg: TrainConfig = TrainConfig(), test_path: Path | None = None,
          log: RunLog | None = None, resume: bool = False) -> TrainResult:
    """The whole job: data → frozen-base head training → fine-tuning of the top blocks → bundle in `out`.

    After every epoch the full training state is saved in `out/resume.safetensors`; `resume=True` continues
    from it (same options and data required) with the same result as an uninterrupted run."""
    started = time.perf_counter()
    log = log or RunLog(out / "train.log")
    log(f"=== transferkit {__version__} train {data_path} --out {out}, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        quiet=True)
    spec = get_backbone(cfg.backbone)
    test_files = load_labelled(Path(test_path)) if test_path is not None else None
    log(f"indexing {data_path}")
    data = load_images(Path(data_path), cfg.val_split, cfg.seed, min_size=spec.preprocessing.resize_size)
    if data.train.empty_classes:
        log(f"ignored empty class folder(s): {', '.join(data.train.empty_classes)}")
    if data.skipped:
        log(f"skipped {len(data.skipped)} unreadable file(s); they are listed in {out / 'train.log'}")
        leaks = sum(LEAK in reason for _, reason in data.skipped)
        if leaks:
            log(f"warning: {leaks} of them had the same content as a file in another class ({LEAK}); "
                f"each was kept once, in the first class")
        for path, reason in data.skipped:
            log(f"  skipped {path}: {reason}", quiet=True)
    log(f"{len(data.classes)} classes, {len(data.train.samples)} training and {len(data.val.samples)} "
        f"validation images")

    torch.manual_seed(cfg.seed)
    model = TransferModel.from_pretrained(cfg.backbone, list(data.classes), HeadConfig(cfg.hidden, cfg.dropout),
                                          cfg.weights, cfg.layer)
    model.train_bn = cfg.train_bn
    depth = f", features from block {model.layer} ({model.feature_dim})" if model.layer else ""
    log(f"backbone {spec.name}, weights {model.weights_info.source}{depth}")
    checkpoint = out / CHECKPOINT_FILE
    history: list[EpochResult] = []
    run_fingerprint = fingerprint(cfg, data)
    state = resume_point(out, run_fingerprint, log) if resume else None

    def on_epoch(result: EpochResult, improved: bool) -> None:
        history.append(result)
        _log_epoch(log, result, improved)
        if improved:
            save_checkpoint(model, checkpoint, {"train_config": cfg.to_json(),
                                                "history": [h.to_json() for h in history]})
        save_resume(out / RESUME_FILE, learner, result.stage, history, run_fingerprint)

    learner = Learner(model, data, cfg.batch_size, cfg.augmentation, cfg.weight_decay, cfg.label_smoothing,
                      cfg.class_weights, cfg.seed, on_epoch=on_epoch)
    if state is not None:
        history[:] = restore(state, learner)
    test_metrics: Metrics | None = None

    def stage_done(name: str) -> Metrics:
        nonlocal test_metrics
        val_metrics, _ = evaluate(model, data.val)
        line = f"after {name}: validation accuracy {val_metrics.accuracy:.3f}"
        if test_files is not None:
            test_metrics, _ = evaluate(model, test_files)
            line += f", test accuracy {test_metrics.accuracy:.3f}"
        log(line + f" (best weights: {learner.best.where})")
        return val_metrics

    resumed_stage = state.stage if state is not None else None
    if resumed_stage != "fine-tune":
        log(f"stage 1: training the head on the frozen base (up to {cfg.epochs} epochs)")
        if cfg.probe_epochs > 0 and resumed_stage is None:
            learner.probe(cfg.probe_epochs, 3 * cfg.lr)
        learner.fit(cfg.epochs, cfg.lr, patience=cfg.patience, warmup_epochs=cfg.warmup_epochs, name="head")
        val_metrics = stage_done("stage 1")
    if cfg.fine_tune_epochs > 0 and cfg.unfreeze_blocks != 0:
        model.unfreeze_top(cfg.unfreeze_blocks)
        log(f"stage 2: fine-tuning blocks {', '.join(model.trainable_blocks())} (up to {cfg.fine_tune_epochs} epochs)")
        learner.fit(cfg.fine_tune_epochs, 3 * cfg.fine_tune_lr, base_lr=cfg.fine_tune_lr, lr_spread=cfg.lr_spread,
                    patience=cfg.patience, warmup_epochs=cfg.warmup_epochs, name="fine-tune")
        val_metrics = stage_done("stage 2")

    extra = {
        "train_config": cfg.to_json(),
        "history": [h.to_json() for h in history],
        "best": learner.best.where,
        "data": {"source": str(data_path), "classes": list(data.classes), "train": len(data.train.samples),
                 "validation": len(data.val.samples), "skipped": [[str(p), r] for p, r in data.skipped]},
        "metrics": {"validation": val_metrics.to_json(), "test": test_metrics.to_json() if test_metrics else None},
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_bundle(model, out, extra)
    (out / RESUME_FILE).unlink(missing_ok=True)  # the bundle is the result now; nothing is left to resume
    log(f"saved the model to {out} ({time.perf_counter() - started:.0f}s in all)")
    return TrainResult(model, out, history, val_metrics, test_metrics, list(data.skipped))
