"""Training on texts: labelled texts -> a strategy -> a text bundle, with every line in `RUN/train.log`.

What every text strategy shares is here: reading (bad rows and repeats set aside, each listed in the log), the
seeded stratified split, the test data, calibration and the bundle. A strategy is a function of a `TextRun` in
`TEXT_STRATEGIES`; `extract` embeds every text once (cached, reused by later runs) and trains the head on the
embeddings in seconds, with the same head, loop and calibration as the image `extract` strategy.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit._version import __version__
from transferkit.data.repeats import LEAK
from transferkit.data.split import stratified_split
from transferkit.errors import UserError
from transferkit.evaluation.metrics import Metrics, compute_metrics
from transferkit.io.logfile import details, log_to_file
from transferkit.model import HeadConfig
from transferkit.runtime import Runtime
from transferkit.text.bundle import save_text_bundle
from transferkit.text.cache import embed_cached
from transferkit.text.config import TextConfig
from transferkit.text.data import LabelledTexts, read_texts
from transferkit.text.evaluate import evaluate_texts
from transferkit.text.model import TextModel
from transferkit.text.repeats import repeated_texts
from transferkit.training.config import TrainConfig
from transferkit.training.head_fit import fit_head
from transferkit.training.loop import EpochResult
from transferkit.training.run import LOG_FILE
from transferkit.training.strategies import fitted_temperature

__all__ = ["TEXT_STRATEGIES", "TextRun", "TextTrainResult", "load_training_texts", "train_text"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextRun:
    """One text training job's inputs."""

    data: Path | LabelledTexts
    out: Path
    cfg: TrainConfig
    text: TextConfig
    runtime: Runtime
    test: Path | None = None
    features: Path | None = None  # the embedding cache (default out/features)
    started: float = 0.0

    @property
    def source(self) -> Path:
        return self.data.source if isinstance(self.data, LabelledTexts) else self.data


@dataclass
class TextTrainResult:
    model: TextModel
    run_dir: Path
    history: list[EpochResult]
    val_metrics: Metrics
    test_metrics: Metrics | None
    data: LabelledTexts  # the texts trained on (bad rows and repeats in `data.bad`)
    validation: LabelledTexts  # the validation split, for a report on it


def load_training_texts(run: TextRun) -> LabelledTexts:
    """The labelled texts with repeats set aside; each left-out row in the log, a summary on the console."""
    t = run.text
    data = run.data if isinstance(run.data, LabelledTexts) else read_texts(
        run.data, t.text_column, t.label_column, t.replace_invalid_utf8)
    data = data.without(repeated_texts(data))
    if data.bad:
        log.info(f"skipped {len(data.bad)} row(s) that could not be used; they are listed in {run.out / LOG_FILE}")
        leaks = sum(LEAK in row.reason for row in data.bad)
        if leaks:
            log.info(f"warning: {leaks} of them repeat a text of another class ({LEAK}); each was kept once, in "
                     f"the first class")
        for row in data.bad:
            details().info(f"  skipped {row}")
    small = [f"{name} ({n} text{'' if n == 1 else 's'})" for name, n in data.counts().items() if n < 2]
    if small:
        raise UserError(f"too few texts in {data.source} for class {', '.join(small)}: each class needs at least 2 "
                        f"— add more texts or remove the class")
    return data


def _log_truncated(truncated: int, total: int, max_tokens: int) -> None:
    if truncated:
        log.info(f"{truncated} of {total} texts were longer than {max_tokens} tokens and were truncated "
                 f"(--max-tokens sets the window)")


def _extract(run: TextRun) -> TextTrainResult:
    cfg, runtime = run.cfg, run.runtime
    log.info(f"reading {run.source}")
    data = load_training_texts(run)
    torch.manual_seed(cfg.seed)
    model = TextModel.from_pretrained(run.text.encoder, data.classes, HeadConfig(cfg.hidden, cfg.dropout),
                                      run.text.max_tokens)
    model.base.to(runtime.device)
    log.info(f"text encoder {model.encoder.spec.name}, weights {model.encoder.files.source}")
    folder = run.features or run.out / "features"
    feats = embed_cached(model.encoder, data, folder, batch_size=max(cfg.batch_size, 64))
    rate = f", {feats.texts_per_second:.1f} texts/s" if feats.computed else ""
    log.info(f"embeddings: {feats.computed} computed, {feats.reused} reused from {folder} ({feats.seconds:.1f}s{rate})")
    _log_truncated(int(feats.truncated.sum()), len(data), model.encoder.max_tokens)
    train_idx, val_idx = stratified_split(data.labels.tolist(), cfg.val_split, cfg.seed)
    log.info(f"{len(data.classes)} classes, {len(train_idx)} training and {len(val_idx)} validation texts")
    x = torch.from_numpy(np.array(feats.features))
    y = torch.from_numpy(data.labels.astype(np.int64))
    log.info(f"training the head on the embeddings ({cfg.probe_epochs} epochs, {len(train_idx)} examples)")
    fitted = fit_head(model.head, x[train_idx], y[train_idx], x[val_idx], y[val_idx], len(data.classes), cfg,
                      runtime)
    model.eval()
    val_metrics = compute_metrics(fitted.val_labels, fitted.val_probs, model.class_names)
    model.temperature = fitted_temperature(fitted.val_probs, fitted.val_labels, "texts")
    line = f"best {fitted.best}: validation accuracy {val_metrics.accuracy:.3f}"
    test_metrics = _test_metrics(model, run)
    if test_metrics is not None:
        line += f", test accuracy {test_metrics.accuracy:.3f}"
    log.info(line)
    validation = data.subset(val_idx)
    _save(run, model, fitted.history, fitted.best, data, data.subset(train_idx), validation, val_metrics,
          test_metrics, {"folder": str(folder), "computed": feats.computed, "reused": feats.reused,
                         "truncated": int(feats.truncated.sum()), "seconds": round(feats.seconds, 2)})
    return TextTrainResult(model, run.out, fitted.history, val_metrics, test_metrics, data, validation)


def _test_metrics(model: TextModel, run: TextRun) -> Metrics | None:
    if run.test is None:
        return None
    evaluation = evaluate_texts(model, run.test, run.text)
    if evaluation.bad:
        log.info(f"test data: skipped {len(evaluation.bad)} row(s); they are listed in {run.out / LOG_FILE}")
        for row in evaluation.bad:
            details().info(f"  skipped (test) {row}")
    return evaluation.metrics


def _save(run: TextRun, model: TextModel, history: list[EpochResult], best: str, data: LabelledTexts,
          train: LabelledTexts, val: LabelledTexts, val_metrics: Metrics, test_metrics: Metrics | None,
          features: dict[str, Any]) -> None:
    extra = {
        "train_config": run.cfg.to_json(),
        "text_config": run.text.to_json(),
        "history": [h.to_json() for h in history],
        "best": best,
        "data": {"source": str(run.source), "classes": list(data.classes), "train": len(train),
                 "validation": len(val), "skipped": [[row.where(), row.reason] for row in data.bad],
                 "class_counts": {"train": train.counts(), "validation": val.counts()}},
        "metrics": {"validation": val_metrics.to_json(), "test": test_metrics.to_json() if test_metrics else None},
        "seconds": round(time.perf_counter() - run.started, 1),
        "features": features,
    }
    save_text_bundle(model, run.out, extra)
    log.info(f"saved the model to {run.out} ({time.perf_counter() - run.started:.0f}s in all)")


TEXT_STRATEGIES: dict[str, Callable[[TextRun], TextTrainResult]] = {"extract": _extract}
DEFAULT_TEXT_STRATEGY = "extract"


def train_text(data: str | os.PathLike[str] | LabelledTexts, out: str | os.PathLike[str],
               cfg: TrainConfig = TrainConfig(strategy=DEFAULT_TEXT_STRATEGY), text: TextConfig = TextConfig(),
               test: str | os.PathLike[str] | None = None, features: str | os.PathLike[str] | None = None,
               runtime: Runtime | None = None) -> TextTrainResult:
    """Labelled texts in `data` (a CSV, JSON Lines file or class folders of .txt files, or `LabelledTexts`) →
    the strategy `cfg.strategy` → a text bundle in `out`, every log line (and each skipped row) in
    `out/train.log`."""
    if cfg.strategy not in TEXT_STRATEGIES:
        raise UserError(f"strategy {cfg.strategy!r} is not available for text yet: choose one of "
                        f"{', '.join(TEXT_STRATEGIES)}")
    source = data if isinstance(data, LabelledTexts) else Path(data)
    run = TextRun(source, Path(out), cfg, text, runtime or Runtime.detect(), Path(test) if test is not None else None,
                  Path(features) if features is not None else None, time.perf_counter())
    with log_to_file(run.out / LOG_FILE):
        details().info(f"=== transferkit {__version__} train {run.source} --out {run.out} (text), "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        return TEXT_STRATEGIES[cfg.strategy](run)
