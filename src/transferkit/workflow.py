"""The jobs a user runs, as functions: load labelled images, train in two stages, evaluate, predict, classify.

The CLI is a thin layer over these; each one is also the Python API (see README.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import ImageNetInfo
from torch import nn

from transferkit import __version__
from transferkit.backbones import get_backbone
from transferkit.bundle import CHECKPOINT_FILE, save_bundle, save_checkpoint
from transferkit.config import TrainConfig
from transferkit.data import LEAK, LabelledFiles, Sample, check_trainable, load_labelled, scan_images, stratified_split
from transferkit.errors import UserError
from transferkit.features import extract_features
from transferkit.images import none_readable, skip_reason
from transferkit.inference import Prediction, default_workers, infer_files, top_k
from transferkit.learner import ImageData, Learner, class_weights
from transferkit.metrics import Metrics, compute_metrics
from transferkit.model import HeadConfig, TransferModel
from transferkit.probe import fit_head
from transferkit.resume import RESUME_FILE, fingerprint, restore, resume_point, save_resume
from transferkit.train import Best, EpochResult
from transferkit.weights import build_network

__all__ = ["EXAMPLE_DATA", "RunLog", "Scored", "TrainResult", "classify", "evaluate", "load_images", "predict", "score",
           "train"]

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


@dataclass(frozen=True)
class Scored:
    """One inference pass over labelled files, image by image: what `evaluate` summarises and a report shows
    (per-image probabilities for calibration and the most confident mistakes)."""

    paths: list[Path]  # the files that decoded, in the order of `labels` and `probs`
    labels: np.ndarray  # true classes as indices into the model's class names
    probs: np.ndarray  # (images, classes) softmax probabilities
    skipped: list[Path]  # files that could not be decoded and were left out


def score(model: TransferModel, files: LabelledFiles | Path, batch_size: int = 32,
          workers: int | None = None) -> Scored:
    """Class probabilities of `model` for every labelled file (their class names must be among the model's)."""
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
        raise none_readable(len(paths), f"images in {files.source}", paths[0], skip_reason(paths[0]))
    labels = to_model[np.array([files.samples[i].label for i in kept], dtype=np.int64)]
    return Scored([paths[i] for i in kept], labels, probs, _left_out(paths, kept))


def evaluate(model: TransferModel, files: LabelledFiles | Path, batch_size: int = 32,
             workers: int | None = None) -> tuple[Metrics, list[Path]]:
    """Metrics of `model` on labelled files (their class names must be among the model's). Also returns the
    files that could not be decoded and were left out."""
    scored = score(model, files, batch_size, workers)
    return compute_metrics(scored.labels, scored.probs, model.class_names), scored.skipped


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
        raise none_readable(len(paths), "image(s)", Path(paths[0]), skip_reason(Path(paths[0])))
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
    validation: LabelledFiles | None = None  # the validation split, for a report on it


def _log_epoch(log: RunLog, r: EpochResult, improved: bool, quiet: bool = False) -> None:
    log(f"  {r.stage} epoch {r.epoch}: train loss {r.train_loss:.4f} acc {r.train_accuracy:.3f} | "
        f"val loss {r.val_loss:.4f} acc {r.val_accuracy:.3f} | {r.seconds:.0f}s{'  *best' if improved else ''}",
        quiet=quiet)


def _log_data(log: RunLog, data: ImageData, out: Path) -> None:
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


def train(data_path: Path, out: Path, cfg: TrainConfig = TrainConfig(), test_path: Path | None = None,
          log: RunLog | None = None, resume: bool = False, features: Path | None = None) -> TrainResult:
    """The whole job: data → frozen-base head training → fine-tuning of the top blocks → bundle in `out`.
    With `cfg.strategy == "extract"` the head is trained on cached features instead (in `features`, default
    `out/features`); with "frozen" stage 2 is skipped.

    After every epoch the full training state is saved in `out/resume.safetensors`; `resume=True` continues
    from it (same options and data required) with the same result as an uninterrupted run. (The extract
    strategy needs no resuming: its features are cached and its head trains in seconds.)"""
    started = time.perf_counter()
    log = log or RunLog(out / "train.log")
    log(f"=== transferkit {__version__} train {data_path} --out {out}, {time.strftime('%Y-%m-%d %H:%M:%S')}",
        quiet=True)
    if cfg.strategy == "extract":
        return _train_on_features(Path(data_path), out, cfg, test_path, log, features or out / "features", started)
    spec = get_backbone(cfg.backbone)
    test_files = load_labelled(Path(test_path)) if test_path is not None else None
    log(f"indexing {data_path}")
    data = load_images(Path(data_path), cfg.val_split, cfg.seed, min_size=spec.preprocessing.resize_size)
    _log_data(log, data, out)

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
    if cfg.strategy == "finetune" and cfg.fine_tune_epochs > 0 and cfg.unfreeze_blocks != 0:
        model.unfreeze_top(cfg.unfreeze_blocks)
        log(f"stage 2: fine-tuning blocks {', '.join(model.trainable_blocks())} (up to {cfg.fine_tune_epochs} epochs)")
        learner.fit(cfg.fine_tune_epochs, 3 * cfg.fine_tune_lr, base_lr=cfg.fine_tune_lr, lr_spread=cfg.lr_spread,
                    patience=cfg.patience, warmup_epochs=cfg.warmup_epochs, name="fine-tune")
        val_metrics = stage_done("stage 2")

    _save(model, out, cfg, history, learner.best.where, data_path, data, val_metrics, test_metrics, started, log)
    return TrainResult(model, out, history, val_metrics, test_metrics, list(data.skipped), data.val)


def _save(model: TransferModel, out: Path, cfg: TrainConfig, history: list[EpochResult], best: str,
          data_path: Path, data: ImageData, val_metrics: Metrics, test_metrics: Metrics | None, started: float,
          log: RunLog, features: dict[str, Any] | None = None) -> None:
    extra = {
        "train_config": cfg.to_json(),
        "history": [h.to_json() for h in history],
        "best": best,
        "data": {"source": str(data_path), "classes": list(data.classes), "train": len(data.train.samples),
                 "validation": len(data.val.samples), "skipped": [[str(p), r] for p, r in data.skipped],
                 "class_counts": {"train": data.train.counts(), "validation": data.val.counts()}},
        "metrics": {"validation": val_metrics.to_json(), "test": test_metrics.to_json() if test_metrics else None},
        "seconds": round(time.perf_counter() - started, 1),
        **({"features": features} if features is not None else {}),
    }
    save_bundle(model, out, extra)
    (out / RESUME_FILE).unlink(missing_ok=True)  # the bundle is the result now; nothing is left to resume
    log(f"saved the model to {out} ({time.perf_counter() - started:.0f}s in all)")


def _train_on_features(data_path: Path, out: Path, cfg: TrainConfig, test_path: Path | None, log: RunLog,
                       folder: Path, started: float) -> TrainResult:
    """The extract strategy: the base runs once per image (features cached in `folder`, reused by later runs),
    then the head trains for `cfg.probe_epochs` epochs on the cached features in seconds; the epoch with the
    lowest validation loss is kept. The bundle is a whole model (base + head) that reads raw images."""
    test_files = load_labelled(Path(test_path)) if test_path is not None else None
    log(f"indexing {data_path}")
    files = load_labelled(data_path)
    check_trainable(files)
    torch.manual_seed(cfg.seed)
    model = TransferModel.from_pretrained(cfg.backbone, list(files.classes), HeadConfig(cfg.hidden, cfg.dropout),
                                          cfg.weights, cfg.layer)
    log(f"backbone {model.spec.name}, weights {model.weights_info.source}"
        + (f", features from block {model.layer} ({model.feature_dim})" if model.layer else ""))
    cache = extract_features(files, model, folder, cfg.views, cfg.augmentation, cfg.seed, log=log)
    log(f"features: {cache.stats['computed']} computed, {cache.stats['reused']} reused from {folder}")
    good = LabelledFiles(files.source, files.classes,
                         tuple(Sample(p, int(label)) for p, label in zip(cache.paths, cache.labels)))
    check_trainable(good)
    train_idx, val_idx = stratified_split(good.labels(), cfg.val_split, cfg.seed)
    data = ImageData(files.classes, good.subset(train_idx), good.subset(val_idx), cache.skipped)
    _log_data(log, data, out)

    features = torch.from_numpy(np.array(cache.features))  # a writable copy in memory: training reads it often
    labels = torch.from_numpy(np.array(cache.labels))
    x_train, y_train = features[train_idx], labels[train_idx]
    if cache.views is not None:  # every augmented view is one more training example of its image
        views = torch.from_numpy(np.array(cache.views[train_idx]))
        x_train = torch.cat([x_train, views.reshape(-1, views.shape[-1])])
        y_train = torch.cat([y_train, y_train.repeat_interleave(views.shape[1])])
    x_val, y_val = features[val_idx], labels[val_idx]
    weight = class_weights(y_train.tolist(), len(files.classes)) if cfg.class_weights else None
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    best, history = Best(), []
    epoch_started = time.perf_counter()

    def on_epoch(epoch: int, train_loss: float, train_acc: float) -> None:
        nonlocal epoch_started
        model.head.eval()
        with torch.no_grad():
            logits = model.head(x_val)
        val_loss = float(loss_fn(logits, y_val))
        val_acc = float((logits.argmax(1) == y_val).float().mean())
        improved = best.offer(model.head, val_loss, f"extract epoch {epoch}")
        result = EpochResult("extract", epoch, train_loss, train_acc, val_loss, val_acc, 3 * cfg.lr,
                             time.perf_counter() - epoch_started)
        history.append(result)
        _log_epoch(log, result, improved, quiet=True)
        epoch_started = time.perf_counter()

    log(f"training the head on cached features ({cfg.probe_epochs} epochs, {len(y_train)} examples)")
    fit_head(model.head, x_train, y_train, loss_fn, cfg.probe_epochs, 3 * cfg.lr, cfg.batch_size,
             cfg.weight_decay, cfg.seed, on_epoch)
    best.restore(model.head)
    model.eval()
    with torch.no_grad():
        val_probs = model.head(x_val).softmax(1).numpy()
    val_metrics = compute_metrics(y_val.numpy(), val_probs, model.class_names)
    line = f"best {best.where}: validation accuracy {val_metrics.accuracy:.3f}"
    test_metrics: Metrics | None = None
    if test_files is not None:
        test_metrics, _ = evaluate(model, test_files)
        line += f", test accuracy {test_metrics.accuracy:.3f}"
    log(line)
    stats = {k: v for k, v in cache.stats.items() if k not in ("hashes", "bad_hashes")}
    _save(model, out, cfg, history, best.where, data_path, data, val_metrics, test_metrics, started, log,
          {"folder": str(folder), "key": cache.key, "stats": stats})
    return TrainResult(model, out, history, val_metrics, test_metrics, list(data.skipped), data.val)
