"""What every text strategy shares: one job's inputs (`TextRun`), its result, reading the texts (bad rows and
repeats set aside, each listed in the log), the pretrained model, the head trained on fixed embeddings with its
calibration, test metrics, and the bundle with its record of the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferkit.data.repeats import LEAK
from transferkit.data.split import stratified_split
from transferkit.errors import UserError
from transferkit.evaluation.metrics import Metrics, compute_metrics
from transferkit.io.logfile import details
from transferkit.model import HeadConfig
from transferkit.runtime import Runtime
from transferkit.text.bundle import save_text_bundle
from transferkit.text.config import TextConfig
from transferkit.text.data import LabelledTexts, read_texts
from transferkit.text.evaluate import evaluate_texts
from transferkit.text.model import TextModel
from transferkit.text.repeats import repeated_texts
from transferkit.training.config import TrainConfig
from transferkit.training.head_fit import HeadFit, fit_head
from transferkit.training.loop import EpochResult
from transferkit.training.run import LOG_FILE
from transferkit.training.strategies import fitted_temperature

__all__ = ["Split", "TextRun", "TextTrainResult", "finish", "fit_head_on_embeddings", "load_training_texts",
           "log_truncated", "pretrained_model", "split_texts"]

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


@dataclass(frozen=True)
class Split:
    """The texts and the seeded, stratified training and validation rows of them."""

    data: LabelledTexts
    train_idx: list[int]
    val_idx: list[int]

    @property
    def train(self) -> LabelledTexts:
        return self.data.subset(self.train_idx)

    @property
    def validation(self) -> LabelledTexts:
        return self.data.subset(self.val_idx)


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


def split_texts(run: TextRun, data: LabelledTexts) -> Split:
    train_idx, val_idx = stratified_split(data.labels.tolist(), run.cfg.val_split, run.cfg.seed)
    log.info(f"{len(data.classes)} classes, {len(train_idx)} training and {len(val_idx)} validation texts")
    return Split(data, list(train_idx), list(val_idx))


def pretrained_model(run: TextRun, data: LabelledTexts) -> TextModel:
    """The pretrained encoder (frozen) and a fresh head seeded by the run, on the runtime's device."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed)
    model = TextModel.from_pretrained(run.text.encoder, data.classes, HeadConfig(cfg.hidden, cfg.dropout),
                                      run.text.max_tokens)
    model.base.to(run.runtime.device)
    log.info(f"text encoder {model.encoder.spec.name}, weights {model.encoder.files.source}")
    return model


def log_truncated(truncated: int, total: int, max_tokens: int) -> None:
    if truncated:
        log.info(f"{truncated} of {total} texts were longer than {max_tokens} tokens and were truncated "
                 f"(--max-tokens sets the window)")


def fit_head_on_embeddings(run: TextRun, model: TextModel, split: Split, embeddings: np.ndarray) -> HeadFit:
    """The head for `cfg.probe_epochs` epochs on the training rows' embeddings, the best epoch on validation
    loss kept (the same `fit_head` as the image `extract`)."""
    cfg = run.cfg
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float32)) * model.embedding_scale
    y = torch.from_numpy(split.data.labels.astype(np.int64))
    t, v = split.train_idx, split.val_idx
    log.info(f"training the head on the embeddings ({cfg.probe_epochs} epochs, {len(t)} examples)")
    return fit_head(model.head, x[t], y[t], x[v], y[v], len(split.data.classes), cfg, run.runtime)


def _test_metrics(model: TextModel, run: TextRun) -> Metrics | None:
    if run.test is None:
        return None
    evaluation = evaluate_texts(model, run.test, run.text)
    if evaluation.bad:
        log.info(f"test data: skipped {len(evaluation.bad)} row(s); they are listed in {run.out / LOG_FILE}")
        for row in evaluation.bad:
            details().info(f"  skipped (test) {row}")
    return evaluation.metrics


def finish(run: TextRun, model: TextModel, split: Split, history: list[EpochResult], best: str,
           val_probs: np.ndarray, val_labels: np.ndarray, record: dict[str, Any]) -> TextTrainResult:
    """Validation metrics and the calibration temperature from the best model's validation probabilities (at
    temperature 1), test metrics, and the bundle (with `record` under its own keys in the JSON)."""
    model.eval()
    val_metrics = compute_metrics(val_labels, val_probs, model.class_names)
    model.temperature = fitted_temperature(val_probs, val_labels, f"{len(val_labels)} validation texts")
    line = f"best {best}: validation accuracy {val_metrics.accuracy:.3f}"
    test_metrics = _test_metrics(model, run)
    if test_metrics is not None:
        line += f", test accuracy {test_metrics.accuracy:.3f}"
    log.info(line)
    data, train, val = split.data, split.train, split.validation
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
        **record,
    }
    save_text_bundle(model, run.out, extra)
    log.info(f"saved the model to {run.out} ({time.perf_counter() - run.started:.0f}s in all)")
    return TextTrainResult(model, run.out, history, val_metrics, test_metrics, data, val)
