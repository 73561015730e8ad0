"""Training on texts: labelled texts -> a strategy -> a text bundle, with every line in `RUN/train.log`.

A strategy is a function of a `TextRun` in `TEXT_STRATEGIES`; what they share (reading, the split, the head on
embeddings, calibration, the bundle) is in `text/run.py`.
- `extract` embeds every text once (cached, reused by later runs) and trains the head on the embeddings in
  seconds, with the same head, loop and calibration as the image `extract` strategy. `frozen` (the head on the
  frozen encoder) is the same thing for texts, so it runs `extract`, saying so.
- `contrastive` tunes the whole encoder SetFit-style on pairs of training texts (`text/contrastive.py`), then the
  head on the tuned encoder's embeddings; the bundle holds the tuned encoder.
- `finetune` (`text/finetune.py`) warm-starts the head on the frozen embeddings, then unfreezes the top
  transformer layers with lower, per-layer rates.
- `auto` picks by the size of the smallest class in the training split: `contrastive` up to
  `FEW_SHOT_PER_CLASS` texts, `extract` above (measured on SpamAssassin: benchmarks/RESULTS.md, "Text").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from transferkit._version import __version__
from transferkit.errors import UserError
from transferkit.io.logfile import details, log_to_file
from transferkit.runtime import Runtime
from transferkit.text.cache import embed_cached
from transferkit.text.config import DEFAULT_TEXT_STRATEGY, TextConfig
from transferkit.text.contrastive import ContrastiveConfig, contrastive_fine_tune
from transferkit.text.data import LabelledTexts
from transferkit.text.finetune import finetune_text
from transferkit.text.run import (
    Split,
    TextRun,
    TextTrainResult,
    finish,
    fit_head_on_embeddings,
    load_training_texts,
    log_truncated,
    pretrained_model,
    split_texts,
)
from transferkit.training.config import TrainConfig
from transferkit.training.run import LOG_FILE

__all__ = ["DEFAULT_TEXT_STRATEGY", "FEW_SHOT_PER_CLASS", "TEXT_STRATEGIES", "TextRun", "TextTrainResult",
           "load_training_texts", "text_strategy_for", "train_text"]

log = logging.getLogger(__name__)

FEW_SHOT_PER_CLASS = 64  # `auto`: contrastive while the smallest class has at most this many training texts


def _extract(run: TextRun) -> TextTrainResult:
    log.info(f"reading {run.source}")
    data = load_training_texts(run)
    return _extract_split(run, split_texts(run, data))


def _extract_split(run: TextRun, split: Split, record: dict[str, Any] | None = None) -> TextTrainResult:
    model = pretrained_model(run, split.data)
    folder = run.features or run.out / "features"
    feats = embed_cached(model.encoder, split.data, folder, batch_size=max(run.cfg.batch_size, 64))
    rate = f", {feats.texts_per_second:.1f} texts/s" if feats.computed else ""
    log.info(f"embeddings: {feats.computed} computed, {feats.reused} reused from {folder} ({feats.seconds:.1f}s{rate})")
    log_truncated(int(feats.truncated.sum()), len(split.data), model.encoder.max_tokens)
    fitted = fit_head_on_embeddings(run, model, split, np.array(feats.features))
    return finish(run, model, split, fitted.history, fitted.best, fitted.val_probs, fitted.val_labels,
                  {"features": {"folder": str(folder), "computed": feats.computed, "reused": feats.reused,
                                "truncated": int(feats.truncated.sum()), "seconds": round(feats.seconds, 2)},
                   **(record or {})})


def _frozen(run: TextRun) -> TextTrainResult:
    log.info("strategy frozen on texts is the head on the frozen encoder's embeddings: running extract (the same "
             "model, with the embeddings cached)")
    return _extract(run)


def _contrastive(run: TextRun) -> TextTrainResult:
    log.info(f"reading {run.source}")
    return _contrastive_split(run, split_texts(run, load_training_texts(run)))


def _contrastive_split(run: TextRun, split: Split, record: dict[str, Any] | None = None) -> TextTrainResult:
    cfg = run.cfg
    model = pretrained_model(run, split.data)
    train = split.train
    tune = ContrastiveConfig(epochs=cfg.pair_epochs, batch_size=cfg.batch_size, seed=cfg.seed)
    log.info(f"contrastive tune of the encoder on {len(train)} training texts ({tune.epochs} epochs of "
             f"{2 * len(train)} pairs, batch {tune.batch_size}, lr {tune.lr:g})")
    tuned = contrastive_fine_tune(model.encoder, train.texts, train.labels.tolist(), tune)
    model.base_trained = True
    started = time.perf_counter()
    ids, cut = model.encoder.encode_ids(split.data.texts)
    embeddings = model.encoder.embed_ids(ids, max(cfg.batch_size, 64))
    log.info(f"embedded {len(ids)} texts with the tuned encoder ({time.perf_counter() - started:.1f}s)")
    log_truncated(sum(cut), len(ids), model.encoder.max_tokens)
    fitted = fit_head_on_embeddings(run, model, split, embeddings)
    return finish(run, model, split, fitted.history, fitted.best, fitted.val_probs, fitted.val_labels,
                  {"contrastive": {"epochs": tune.epochs, "batch_size": tune.batch_size, "lr": tune.lr,
                                   "max_tokens": tune.max_tokens, "epoch_losses": tuned.epoch_losses,
                                   "steps": tuned.steps, "seconds": round(tuned.seconds, 1)},
                   **(record or {})})


def text_strategy_for(split: Split) -> str:
    """`auto`'s choice: contrastive when the smallest class has at most `FEW_SHOT_PER_CLASS` training texts."""
    smallest = min(split.train.counts().values())
    return "contrastive" if smallest <= FEW_SHOT_PER_CLASS else "extract"


def _auto(run: TextRun) -> TextTrainResult:
    log.info(f"reading {run.source}")
    split = split_texts(run, load_training_texts(run))
    chosen = text_strategy_for(split)
    smallest = min(split.train.counts().values())
    log.info(f"strategy auto: {chosen} (the smallest class has {smallest} training texts; contrastive up to "
             f"{FEW_SHOT_PER_CLASS})")
    record = {"auto": {"chosen": chosen, "smallest_class": smallest, "contrastive_up_to": FEW_SHOT_PER_CLASS}}
    return (_contrastive_split if chosen == "contrastive" else _extract_split)(run, split, record)


def _finetune(run: TextRun) -> TextTrainResult:
    log.info(f"reading {run.source}")
    return finetune_text(run, split_texts(run, load_training_texts(run)))


TEXT_STRATEGIES: dict[str, Callable[[TextRun], TextTrainResult]] = {
    "extract": _extract, "frozen": _frozen, "finetune": _finetune, "contrastive": _contrastive, "auto": _auto}


def train_text(data: str | os.PathLike[str] | LabelledTexts, out: str | os.PathLike[str],
               cfg: TrainConfig = TrainConfig(strategy=DEFAULT_TEXT_STRATEGY), text: TextConfig = TextConfig(),
               test: str | os.PathLike[str] | None = None, features: str | os.PathLike[str] | None = None,
               runtime: Runtime | None = None) -> TextTrainResult:
    """Labelled texts in `data` (a CSV, JSON Lines file or class folders of .txt files, or `LabelledTexts`) →
    the strategy `cfg.strategy` → a text bundle in `out`, every log line (and each skipped row) in
    `out/train.log`."""
    if cfg.strategy not in TEXT_STRATEGIES:
        raise UserError(f"strategy {cfg.strategy!r} is not available for text: choose one of "
                        f"{', '.join(TEXT_STRATEGIES)}")
    source = data if isinstance(data, LabelledTexts) else Path(data)
    run = TextRun(source, Path(out), cfg, text, runtime or Runtime.detect(), Path(test) if test is not None else None,
                  Path(features) if features is not None else None, time.perf_counter())
    with log_to_file(run.out / LOG_FILE):
        details().info(f"=== transferkit {__version__} train {run.source} --out {run.out} (text), "
                       f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        return TEXT_STRATEGIES[cfg.strategy](run)
