"""`--strategy auto` (the default for images): measure, then keep what did best on validation, never worse than
the linear probe.

0. Small source images (a median shorter side of at most half the backbone's input size) get an input-size
   test first (`size_test.py`): the smallest of the full, three-quarter and half size whose cross-validated
   probe accuracy is within noise of the best is used for everything after it, and saved in the bundle.
1. The linear probe (the `extract` strategy: the head on cached features of the frozen base) always runs first:
   seconds of work, and the floor every other choice must beat. With a linear head on plain features (the
   default) it is a logistic regression whose penalty is chosen by k-fold cross-validation on the training
   split, scored on the validation split, then refitted on every image (`logistic.py`); otherwise the head
   trains for `probe_epochs` epochs.
2. With fewer than `MIN_PER_CLASS` training images in the smallest class, the probe is kept: the classic size x
   similarity table's choice for small data, and on such data fine-tuning rarely beats it (issue 15's figures).
3. Otherwise each augmentation is tested before it is used (`augment_test.py`): a cross-validated probe on the
   cached features, trained with and without a view of each training image under that augmentation added. One
   that costs the probe accuracy (a flip for digits, text, anything with handedness; rotation where orientation
   is the class; zoom where size is) is left out of the augmentation.
4. Fine-tuning (`finetune`, with that augmentation) runs, starting from the logistic probe's head as fitted on
   the training split (linear probing, then fine-tuning: no stage 1 of the head on the frozen base, whose
   epochs cost a pass of the base each), and replaces the probe only if it is better on the same
   validation images: on a split of `SMALL_VALIDATION` images or more, at least the same accuracy (with that much
   data the size x similarity table's prior is fine-tuning, and the prior breaks a tie);
   on a smaller one, a win beyond the split's noise, by a one-sided exact McNemar test at p < 0.05 on the images
   exactly one of the two gets right (`evaluation.paired`): one image more is never enough. Both are judged on
   their held-out validation probabilities, so the probe's refit on every image does not flatter it.

Each candidate's bundle stays in `RUN/auto/<strategy>`; the chosen one is copied to `RUN`, with what was measured
and why in its `model.json` under `auto`.

Not chosen by measurement yet: the `frozen` strategy (the head trained on the frozen base with augmentation
is never a candidate), the strength of each augmentation (kept at the configured one or left out), the layer and
backbone (unless `--backbone auto`), and the fine-tuning's own settings (epochs, rates, blocks unfrozen: as
configured).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.files import check_trainable
from transferkit.evaluation.paired import PairedTest, paired_test
from transferkit.io.atomic import atomic_write_bytes, atomic_write_text
from transferkit.io.names import META_FILE, WEIGHTS_FILE
from transferkit.training.augment_test import augmentation_test
from transferkit.training.run import Run, TrainResult
from transferkit.training.size_test import size_test

__all__ = ["AUTO_DIR", "MIN_PER_CLASS", "SMALL_VALIDATION", "compare_on_validation", "train_auto"]

log = logging.getLogger(__name__)

AUTO_DIR = "auto"  # RUN/auto/<strategy>: each candidate's bundle
MIN_PER_CLASS = 10  # fewer training images in the smallest class: the probe, without trying fine-tuning
SMALL_VALIDATION = 200  # fewer validation images: decide by cross-validation and a paired test, not one split


def _adopt(chosen: Path, out: Path, record: dict[str, Any]) -> None:
    """Copy the chosen candidate's bundle to `out`, its metadata saying how it was chosen (each file atomic)."""
    meta = json.loads((chosen / META_FILE).read_text(encoding="utf-8"))
    atomic_write_bytes(out / WEIGHTS_FILE, (chosen / WEIGHTS_FILE).read_bytes())
    atomic_write_text(out / META_FILE, json.dumps({**meta, "auto": record}, indent=2) + "\n")


def _right(result: TrainResult) -> dict[Path, bool]:
    """Whether the result's model got each of its validation images right, as held out."""
    scored = result.val_scored
    assert scored is not None  # every image strategy returns its validation probabilities
    return {path: bool(guess == label)
            for path, guess, label in zip(scored.paths, scored.probs.argmax(1), scored.labels)}


def compare_on_validation(probe: TrainResult, tuned: TrainResult) -> PairedTest:
    """The paired test of `tuned` (the challenger) against `probe` on the validation images both held out."""
    probe_right, tuned_right = _right(probe), _right(tuned)
    shared = [path for path in probe_right if path in tuned_right]
    return paired_test(np.array([probe_right[p] for p in shared], dtype=bool),
                       np.array([tuned_right[p] for p in shared], dtype=bool))


def _decide(probe: TrainResult, tuned: TrainResult, small: bool, record: dict[str, Any]) -> tuple[bool, str]:
    """Does fine-tuning replace the probe, and why (in words); a small split's paired test goes in `record`."""
    p, t = probe.val_metrics.accuracy, tuned.val_metrics.accuracy
    if not small:
        if t > p:
            return True, f"fine-tuning reached validation accuracy {t:.3f} against the probe's {p:.3f}"
        if t == p:
            return True, (f"fine-tuning tied the probe on validation ({t:.3f}); with {SMALL_VALIDATION} or more "
                          f"validation images the size x similarity table's prior, fine-tuning, breaks the tie")
        return False, f"fine-tuning reached validation accuracy {t:.3f}, below the probe's {p:.3f}: the probe is kept"
    test = compare_on_validation(probe, tuned)
    record["paired_test"] = test.to_json()
    counts = (f"on {test.images} validation images fine-tuning got {test.only_challenger} right that the probe "
              f"missed and missed {test.only_incumbent} that the probe got right (one-sided exact McNemar test, "
              f"p = {test.p_value:.3f}")
    if test.challenger_wins:
        return True, f"{counts} < {test.alpha}; validation accuracy {t:.3f} against the probe's {p:.3f})"
    return False, (f"{counts}, not below {test.alpha}; validation accuracy {t:.3f} against the probe's {p:.3f}): "
                   f"under {SMALL_VALIDATION} validation images that is within the split's noise, so the probe is "
                   f"kept")


def train_auto(run: Run, extract: Callable[[Run], TrainResult], images: Callable[[Run], TrainResult]) -> TrainResult:
    """The probe, then (given enough images) fine-tuning with a tested augmentation; the better on validation."""
    cfg = run.cfg
    files = run.files()
    check_trainable(files)
    folder = run.features or run.out / "features"
    per_class = int(np.bincount(files.labels()).min() * (1 - cfg.val_split))
    record: dict[str, Any] = {}
    sizes = size_test(files, cfg, run.out / AUTO_DIR / "sizes", run.runtime)
    if sizes is not None:
        record["size_test"] = sizes.to_json()
        log.info(f"input size test (source images {sizes.source} px; cross-validated probe on {sizes.images} "
                 f"images): " + ", ".join(f"{size} px {score:.3f}" for size, score in sizes.accuracy.items())
                 + f"; {sizes.chosen} px from here on")
        if sizes.chosen != next(iter(sizes.accuracy)):  # the backbone's own size is the default anyway
            cfg = replace(cfg, input_size=sizes.chosen)
            run = replace(run, cfg=cfg)
    log.info(f"strategy auto: the linear probe first ({per_class} training images in the smallest class)")
    probe_run = replace(run, out=run.out / AUTO_DIR / "extract", cfg=replace(cfg, strategy="extract"),
                        features=folder)
    probe = extract(probe_run)
    small = probe.val_metrics.count < SMALL_VALIDATION
    scores = {"extract": probe.val_metrics.accuracy}
    record["validation_accuracy"] = scores
    chosen = probe
    if per_class < MIN_PER_CLASS:
        why = (f"{per_class} training images in the smallest class (under {MIN_PER_CLASS}): the linear probe, as "
               f"the size x similarity table says for so little data; fine-tuning was not tried")
    else:
        augmentation = cfg.augmentation
        tested = augmentation_test(run, probe.model.backbone, folder)
        if tested is not None:
            record["augmentation_test"] = tested.to_json()
            augmentation = tested.apply(augmentation)
            log.info(f"augmentation test (cross-validated probe, {tested.images} images): {tested.describe()}")
        tuned = images(replace(run, out=run.out / AUTO_DIR / "finetune",
                               cfg=replace(cfg, strategy="finetune", augmentation=augmentation),
                               head=probe.warm_start))
        scores["finetune"] = tuned.val_metrics.accuracy
        keep_tuned, why = _decide(probe, tuned, small, record)
        chosen = tuned if keep_tuned else probe
    name = "extract" if chosen is probe else "finetune"
    record |= {"chosen": name, "why": why}
    log.info(f"strategy auto chose {name}: {why}")
    if run.runtime.is_main:
        _adopt(chosen.run_dir, run.out, record)
    return replace(chosen, run_dir=run.out)
