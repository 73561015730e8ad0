"""Does transfer learning beat training from scratch, and are `transferkit train` defaults as good as the best
strategy? Accuracy on Fashion-MNIST across training-set sizes.

Data: Debian's `dataset-fashion-mnist` package (the official 60k/10k split), written once as PNG class folders
under --work (so the real input pipeline runs: decode, resize, augment) and reused by later runs. For each size
(training images per class, seeded and nested: the 10-per-class sample is part of the 100-per-class one) the
training sample is a CSV manifest, and every strategy sees exactly it (each makes the same seeded 80/20
train/validation split where it needs one). All are scored on the same test images (the official test split,
or a seeded stratified sample of it):

  scratch   (a) the same architecture from random weights, every layer trained, BatchNorm in training mode, for
                the same wall-clock training time as the defaults took at that size, at the input size that is
                best for it (short pilots at each of SCRATCH_SIZES, chosen on validation accuracy)
  probe     (b) logistic regression on pooled features of the frozen pretrained base, computed once
  frozen    (c) frozen base + head trained with augmentation (linear-probe warm start, no fine-tuning)
  finetune  (d) two-stage: probe warm start + head, then deeper and longer fine-tuning of the top blocks
  defaults  (e) `transferkit train` with `TrainConfig()` defaults (strategy auto)

Prints one line per cell (accuracy, macro-F1, training and evaluation wall time), a table, the targets, and
ends with one JSON line of all figures.

    python benchmarks/quality.py --quick              # 10 and 100 per class, 2,000 test images (CPU, < 30 min)
    python benchmarks/quality.py --cpu-full           # 10, 100 and 1000 per class, the whole 10k test set (hours)
    python benchmarks/quality.py                      # 10, 100, 1000 per class and the full set, 10k test (GPU)
    python benchmarks/quality.py --sizes 2 --test-sample 60 --strategies probe,defaults   # a smoke test

Each finished cell is appended to `--cells` (default WORK/cells.jsonl) with a hash of the code it ran (transferkit's
sources and this script); a later run with the same code, test set, seed and backbone reuses the recorded cells
instead of training them again (`--fresh` ignores them), so `--cpu-full` can be run a few cells at a time, across
days (`--cpu-full --strategies probe,frozen`, then the rest), and the table assembled from them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from fashion_mnist import CLASSES, load_split, sample_per_class, write_pngs
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from transferkit.cli.allocator import keep_freed_memory
from transferkit.data.files import LabelledFiles, load_labelled
from transferkit.data.split import ImageData, load_images
from transferkit.evaluation.metrics import Metrics, compute_metrics
from transferkit.evaluation.predict import evaluate, infer_files
from transferkit.io.atomic import atomic_write_text
from transferkit.model import TransferModel
from transferkit.runtime import Runtime
from transferkit.training.callbacks import EpochLog
from transferkit.training.config import TrainConfig
from transferkit.training.learner import Learner
from transferkit.training.loop import Callback, EpochResult, LoopState, Stage
from transferkit.training.strategies import train

STRATEGIES = ("scratch", "probe", "frozen", "finetune", "defaults")
TRANSFER = ("probe", "frozen", "finetune", "defaults")
FIXED = ("probe", "frozen", "finetune")  # the fixed strategies the defaults are held against
DEFAULT_WORK = Path.home() / ".cache" / "transferkit-bench" / "fashion-mnist"

# (c) frozen base: the defaults' stage 1 alone. (d) the strongest two-stage recipe we can afford on a CPU: the
# top 4 blocks for up to 8 epochs from 2e-4 (twice the blocks, epochs and rate of the first defaults; the
# defaults' own stage 2 since auto's fine-tune candidate became it), at the backbone's full input size.
FROZEN = TrainConfig(strategy="frozen")
FINETUNE = TrainConfig(strategy="finetune", fine_tune_epochs=8, unfreeze_blocks=4, fine_tune_lr=2e-4)
# (a) from scratch: every block at one rate (no spread), BatchNorm statistics learnt from the data, no early stop.
SCRATCH_LR = 2e-3
SCRATCH_IMAGES_SEEN = 8_000  # without a time budget: epochs = this / training images, clamped to [10, 40]
SCRATCH_SIZES = (32, 64, 128)  # input sizes tried for scratch (Fashion-MNIST images are 28 px)
PILOT_SHARE = 1 / 6  # of the time budget, spent on a pilot at each input size


@dataclass(frozen=True)
class Cell:
    size: str
    strategy: str
    train_images: int
    accuracy: float
    macro_f1: float
    train_seconds: float
    eval_seconds: float
    note: str = ""


@dataclass
class TestSet:
    """The test images, their labels in sorted class order, and (computed once, on demand) their pooled
    features from the frozen pretrained base, shared by every strategy whose base stays frozen."""

    files: LabelledFiles
    backbone: str
    features: np.ndarray | None = None
    feature_seconds: float = 0.0

    @property
    def labels(self) -> np.ndarray:
        return np.array(self.files.labels(), dtype=np.int64)

    def pooled(self) -> np.ndarray:
        if self.features is None:
            start = time.perf_counter()
            model = TransferModel.from_pretrained(self.backbone, list(self.files.classes))
            self.features, kept = pooled_features(model, self.files)
            if len(kept) != len(self.files.samples):
                raise RuntimeError(f"{len(self.files.samples) - len(kept)} test images could not be decoded")
            self.feature_seconds = time.perf_counter() - start
        return self.features


def pooled_features(model: TransferModel, files: LabelledFiles) -> tuple[np.ndarray, list[int]]:
    return infer_files(model.base, model.preprocessing, [s.path for s in files.samples], softmax=False)


def write_manifest(work: Path, name: str, paths: list[Path], labels: np.ndarray) -> Path:
    """A CSV manifest (path,label) beside the image folders: the real manifest input of `transferkit train`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows((p.relative_to(work).as_posix(), CLASSES[int(label)]) for p, label in zip(paths, labels))
    out = work / f"{name}.csv"
    atomic_write_text(out, buffer.getvalue())
    return out


def prepare(work: Path, split: str, per_class: int | None, seed: int) -> Path:
    """Write (once) the PNGs of a seeded per-class sample of `split` and return its manifest."""
    images, labels = load_split(split)
    chosen = sample_per_class(labels, per_class, seed)
    paths = write_pngs(images, labels, chosen, work / split)
    name = f"{split}-{'all' if per_class is None else f'{per_class}pc'}-seed{seed}"
    return write_manifest(work, name, paths, labels[chosen])


# ---- the strategies: each takes a training manifest and returns (metrics, train seconds, eval seconds, note)

Outcome = tuple[Metrics, float, float, str]


def linear_probe(train_csv: Path, test: TestSet, seed: int, backbone: str) -> Outcome:
    """(b) Standardised pooled features + logistic regression, C picked on the validation split, then refitted
    on all the training images. Test features come from `test.pooled()` (computed once, timed apart)."""
    test_x = test.pooled()
    start = time.perf_counter()
    data = load_images(train_csv, 0.2, seed)
    model = TransferModel.from_pretrained(backbone, list(data.classes))
    x_train, kept_train = pooled_features(model, data.train)
    x_val, kept_val = pooled_features(model, data.val)
    y_train = np.array([data.train.samples[i].label for i in kept_train])
    y_val = np.array([data.val.samples[i].label for i in kept_val])
    scaler = StandardScaler().fit(x_train)
    scores = {c: LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x_train), y_train)
              .score(scaler.transform(x_val), y_val) for c in (0.01, 0.03, 0.1, 0.3, 1.0)}
    best_c = max(scores, key=lambda c: scores[c])
    x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    scaler = StandardScaler().fit(x_all)
    clf = LogisticRegression(C=best_c, max_iter=3000).fit(scaler.transform(x_all), y_all)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    probs = clf.predict_proba(scaler.transform(test_x))
    metrics = compute_metrics(test.labels, probs, list(data.classes))
    return metrics, seconds, time.perf_counter() - start, f"C={best_c}"


def scratch_epochs(train_images: int) -> int:
    return int(np.clip(SCRATCH_IMAGES_SEEN // max(1, train_images), 10, 40))


class TimeBudget(Callback):
    """Stops training once another epoch would end past `seconds` of training (timed from the first epoch)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, 0.0

    def before_fit(self, stage: Stage, state: LoopState) -> None:
        self.start = time.perf_counter()

    def after_epoch(self, stage: Stage, result: EpochResult, improved: bool, state: LoopState) -> None:
        spent = time.perf_counter() - self.start
        if spent + spent / result.epoch > self.seconds:
            state.stop = True


def scratch_run(data: ImageData, seed: int, backbone: str, size: int, epochs: int,
                budget: float | None) -> tuple[TransferModel, list[EpochResult], Learner]:
    """Random weights at input size `size`, all blocks trainable at one rate, BatchNorm in training mode, the
    defaults' augmentation, warmup + cosine over `epochs`; the best validation-loss weights are kept."""
    torch.manual_seed(seed)
    model = TransferModel.from_pretrained(backbone, list(data.classes), weights="random")
    model.backbone.preprocessing = replace(model.preprocessing, input_size=size)
    model.train_bn = True
    model.unfreeze_top(None)
    callbacks: list[Callback] = [EpochLog()] + ([TimeBudget(budget)] if budget is not None else [])
    learner = Learner(model, data, batch_size=16, seed=seed, callbacks=callbacks)
    history = learner.fit(epochs, SCRATCH_LR, base_lr=SCRATCH_LR, lr_spread=1.0, patience=epochs, name="scratch")
    return model, history, learner


def from_scratch(train_csv: Path, test: TestSet, seed: int, backbone: str, epochs: int | None,
                 budget: float | None) -> Outcome:
    """(a) Training from random weights. With a time `budget` (the defaults' training seconds at this size), a
    pilot of `PILOT_SHARE` of it at each of `SCRATCH_SIZES` picks the input size with the best validation accuracy
    and measures its seconds per epoch; the chosen size then trains from scratch again for as many epochs as fit
    in the budget (the pilots' time is reported apart). Without one, at the backbone's own size for
    `epochs` (default: `scratch_epochs`)."""
    data = load_images(train_csv, 0.2, seed)
    pilot_seconds, pilots = 0.0, {}  # input size -> (best validation accuracy, seconds per epoch)
    size = TransferModel.from_pretrained(backbone, list(data.classes), weights="random").preprocessing.input_size
    if budget is not None:
        start = time.perf_counter()
        for candidate in SCRATCH_SIZES:
            _, history, _ = scratch_run(data, seed, backbone, candidate, 1000, budget * PILOT_SHARE)
            pilots[candidate] = (max(r.val_accuracy for r in history), sum(r.seconds for r in history) / len(history))
        size = max(pilots, key=lambda c: pilots[c][0])
        epochs = max(1, int(budget // pilots[size][1]))
        pilot_seconds = time.perf_counter() - start
    epochs = epochs or scratch_epochs(len(data.train.samples))
    start = time.perf_counter()
    model, history, learner = scratch_run(data, seed, backbone, size, epochs, budget)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate(model, test.files).metrics
    tried = ", ".join(f"{c} px: val {a:.2f}" for c, (a, _) in pilots.items())
    note = (f"{size} px, {len(history)}/{epochs} epochs, lr {SCRATCH_LR:g}, best at {learner.best.where}"
            + (f"; budget {budget:.0f}s; pilots ({tried}) took {pilot_seconds:.0f}s" if budget is not None else ""))
    return metrics, seconds, time.perf_counter() - start, note


def with_config(cfg: TrainConfig, frozen_base: bool) -> Callable[[Path, TestSet, int, Path, bool], Outcome]:
    """(c), (d), (e): `transferkit.train` with `cfg`. A model whose base stayed frozen is scored on the cached
    test features (the same numbers as `evaluate`, without a second pass of the base) unless `exact_eval`."""

    def run(train_csv: Path, test: TestSet, seed: int, out: Path, exact_eval: bool) -> Outcome:
        start = time.perf_counter()
        result = train(train_csv, out, replace(cfg, seed=seed))
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        best = min(result.history, key=lambda r: r.val_loss)
        note = f"best at {best.stage} epoch {best.epoch}, val acc {result.val_metrics.accuracy:.3f}"
        if frozen_base and not exact_eval:
            features = test.pooled()
            start = time.perf_counter()
            model = result.model.eval()
            with torch.inference_mode():
                logits = model.head(torch.from_numpy(features).to(next(model.parameters()).device))
            probs = logits.float().softmax(dim=1).cpu().numpy()
            metrics = compute_metrics(test.labels, probs, model.class_names)
        else:
            metrics = evaluate(result.model, test.files).metrics
        return metrics, seconds, time.perf_counter() - start, note

    return run


# ---- the run


def size_label(per_class: int | None) -> str:
    return "full" if per_class is None else f"{per_class}/class"


def run_cell(strategy: str, train_csv: Path, test: TestSet, args: argparse.Namespace, tmp: Path,
             budget: float | None) -> Outcome:
    out = tmp / f"{strategy}-{train_csv.stem}"
    try:
        if strategy == "probe":
            return linear_probe(train_csv, test, args.seed, args.backbone)
        if strategy == "scratch":
            return from_scratch(train_csv, test, args.seed, args.backbone, args.scratch_epochs, budget)
        cfg = {"frozen": FROZEN, "finetune": FINETUNE, "defaults": TrainConfig()}[strategy]
        cfg = replace(cfg, backbone=args.backbone)
        return with_config(cfg, strategy == "frozen")(train_csv, test, args.seed, out, args.exact_eval)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def targets(cells: list[Cell]) -> list[str]:
    """The issue's targets, each line saying met or missed and by how much."""
    acc = {(c.size, c.strategy): 100 * c.accuracy for c in cells}
    lines = []
    sizes = list(dict.fromkeys(c.size for c in cells))
    if ("100/class", "scratch") in acc and ("100/class", "defaults") in acc:
        gain = acc[("100/class", "defaults")] - acc[("100/class", "scratch")]
        lines.append(f"100/class: the defaults beat scratch (same training time) by {gain:+.1f} points "
                     f"(target >= 10): {'met' if gain >= 10 else 'MISSED'}")
    for size in sizes:
        fixed = [(acc[(size, s)], s) for s in FIXED if (size, s) in acc]
        if (size, "defaults") in acc and fixed:
            best = max(fixed)
            gap = best[0] - acc[(size, "defaults")]
            lines.append(f"{size}: defaults are {gap:+.1f} points behind the best fixed strategy ({best[1]}) "
                         f"(target <= 0.5): {'met' if gap <= 0.5 else 'MISSED'}")
    if ("1000/class", "finetune") in acc and ("1000/class", "probe") in acc:
        gain = acc[("1000/class", "finetune")] - acc[("1000/class", "probe")]
        lines.append(f"1000/class: fine-tuning adds {gain:+.1f} points over the linear probe")
    if ("full", "finetune") in acc:
        full = acc[("full", "finetune")]
        lines.append(f"full: fine-tune {full:.2f}% (target >= 94.5%): {'met' if full >= 94.5 else 'MISSED'}")
    return lines


def print_table(cells: list[Cell]) -> None:
    sizes = list(dict.fromkeys(c.size for c in cells))
    by = {(c.size, c.strategy): c for c in cells}
    header = f"{'strategy':<10}" + "".join(f" | {s + ' acc / F1 / s':>26}" for s in sizes)
    print("\n" + header + "\n" + "-" * len(header))
    for strategy in STRATEGIES:
        row = [by.get((s, strategy)) for s in sizes]
        if not any(row):
            continue
        print(f"{strategy:<10}" + "".join(
            f" | {c.accuracy:.3f} / {c.macro_f1:.3f} / {c.train_seconds + c.eval_seconds:6.0f}" if c else
            f" | {'':>26}" for c in row))


def code_version() -> str:
    """A sha256 of the code a cell's figures depend on: transferkit's sources and this benchmark's."""
    here = Path(__file__).resolve().parent
    files = sorted((here.parent / "src" / "transferkit").rglob("*.py")) + [here / "quality.py",
                                                                          here / "fashion_mnist.py"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(here.parent).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def recorded_cells(path: Path, setting: dict[str, object]) -> dict[tuple[str, str], Cell]:
    """Cells recorded in `path` (JSON Lines) under exactly `setting` (the later of two records wins)."""
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.pop("setting") == setting:
            cell = Cell(**record)
            found[(cell.size, cell.strategy)] = cell
    return found


def record_cell(path: Path, setting: dict[str, object], cell: Cell) -> None:
    with path.open("a", encoding="utf-8") as out:  # one line per cell: a crash loses at most the cell running
        out.write(json.dumps({"setting": setting, **asdict(cell)}) + "\n")


def parse_sizes(text: str) -> list[int | None]:
    return [None if part.strip() == "full" else int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 and 100 per class, 2,000 test images (CPU)")
    parser.add_argument("--cpu-full", action="store_true", help="10, 100 and 1000 per class, the whole 10k test set")
    parser.add_argument("--sizes", default=None, help="training images per class, comma-separated, 'full' for all "
                        "(default 10,100,1000,full; --quick: 10,100)")
    parser.add_argument("--test-sample", type=int, default=None,
                        help="test images (a seeded stratified sample); 0 = the whole 10k (default; --quick: 2000)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default=TrainConfig().backbone)
    parser.add_argument("--scratch-epochs", type=int, default=None, help="default: 8,000 images seen, 10-40 epochs")
    parser.add_argument("--exact-eval", action="store_true",
                        help="score frozen-base models with a full pass of `evaluate` (default on a GPU)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"PNG cache (default {DEFAULT_WORK})")
    parser.add_argument("--cells", type=Path, default=None,
                        help="finished cells, JSON Lines (default WORK/cells.jsonl)")
    parser.add_argument("--fresh", action="store_true", help="train every cell again, recorded or not")
    args = parser.parse_args()
    keep_freed_memory()  # as `transferkit train` does on a CPU (cli/allocator.py): every cell alike
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # training's log lines on the console
    sizes = parse_sizes(args.sizes or ("10,100" if args.quick else "10,100,1000" if args.cpu_full
                                       else "10,100,1000,full"))
    test_sample = args.test_sample if args.test_sample is not None else (2000 if args.quick else 0)
    strategies = [s.strip() for s in args.strategies.split(",")]
    if "scratch" in strategies:  # last: it gets the defaults' training time at the same size as its budget
        strategies = [s for s in strategies if s != "scratch"] + ["scratch"]
    unknown = sorted(set(strategies) - set(STRATEGIES))
    if unknown:
        parser.error(f"unknown strategies {', '.join(unknown)}: choose from {', '.join(STRATEGIES)}")
    args.exact_eval = args.exact_eval or Runtime.detect().device.type == "cuda"
    if test_sample % len(CLASSES):
        parser.error(f"--test-sample must be a multiple of {len(CLASSES)}, got {test_sample}")

    started = time.perf_counter()
    test_csv = prepare(args.work, "test", test_sample // len(CLASSES) or None, args.seed)
    test = TestSet(load_labelled(test_csv), args.backbone)
    print(f"test set: {len(test.files.samples)} images ({test_csv})", flush=True)
    cells_file = args.cells or args.work / "cells.jsonl"
    setting: dict[str, object] = {"code": code_version(), "seed": args.seed, "backbone": args.backbone,
                                  "test_images": len(test.files.samples), "exact_eval": args.exact_eval,
                                  "scratch_epochs": args.scratch_epochs}
    recorded = {} if args.fresh else recorded_cells(cells_file, setting)
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in sizes:
            train_csv = prepare(args.work, "train", per_class, args.seed)
            count = len(load_labelled(train_csv).samples)
            budget: float | None = None
            for strategy in strategies:
                print(f"=== {size_label(per_class)} ({count} images): {strategy}", flush=True)
                cell = recorded.get((size_label(per_class), strategy))
                if cell is not None:
                    print(f"(recorded in {cells_file} with this code: not trained again)")
                else:
                    metrics, train_s, eval_s, note = run_cell(strategy, train_csv, test, args, Path(tmp), budget)
                    cell = Cell(size_label(per_class), strategy, count, metrics.accuracy, metrics.macro_f1,
                                train_s, eval_s, note)
                    record_cell(cells_file, setting, cell)
                if strategy == "defaults":
                    budget = cell.train_seconds
                cells.append(cell)
                print(f"RESULT {cell.size} {strategy}: accuracy {cell.accuracy:.4f} macro-F1 {cell.macro_f1:.4f} "
                      f"train {cell.train_seconds:.0f}s eval {cell.eval_seconds:.0f}s ({cell.note})", flush=True)
    print_table(cells)
    print(f"(seconds = training + evaluation wall time; test features of the frozen base, shared by probe and "
          f"frozen: {test.feature_seconds:.0f}s once)")
    checks = targets(cells)
    print("\n".join(checks))
    print(json.dumps({"benchmark": "quality", "date": time.strftime("%Y-%m-%d"), "machine": platform.processor()
                      or platform.machine(), "device": str(Runtime.detect().device),
                      "torch_threads": torch.get_num_threads(),
                      "seed": args.seed, "backbone": args.backbone, "test_images": len(test.files.samples),
                      "test_feature_seconds": round(test.feature_seconds, 1),
                      "total_seconds": round(time.perf_counter() - started, 1), "targets": checks,
                      "cells": [asdict(c) for c in cells]}))


if __name__ == "__main__":
    main()
