"""What should auto's probe fit its calibration temperature on: the validation split alone, or every held-out
probability of the chosen recipe (the cross-validation's out-of-fold ones and the validation split's)?

Caches EfficientNet-Lite0 features of the bundled 400 training images, the bundled 200 test images and 2,000
official Fashion-MNIST test images (Debian's `dataset-fashion-mnist`) once, then for each of `--splits` seeded
train/validation splits fits the probe exactly as `auto` does (`logistic.fit_logistic_head`) and scores the kept
head's test probabilities at T = 1, at the temperature fitted on the validation split, and at the one fitted on
every held-out probability. Prints each split's temperatures and ECEs, the means, and the ratio of the mean ECE
with the held-out temperature to that with the validation one (below 1: better), then one JSON line.

    python benchmarks/temperature_source.py [--splits 10] [--test-per-class 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from defaults_vs_logreg import large_test_set

from transferkit.data.files import EXAMPLE_DATA
from transferkit.data.split import stratified_split
from transferkit.evaluation.calibration import fit_temperature, rescale
from transferkit.evaluation.report import calibration
from transferkit.features.extract import extract_features
from transferkit.model import Backbone, HeadConfig, build_head
from transferkit.runtime import Runtime
from transferkit.training.config import TrainConfig
from transferkit.training.logistic import fit_logistic_head

SOURCES = ("T=1", "validation", "held-out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args()
    backbone = Backbone.from_pretrained("efficientnet_lite0")
    with tempfile.TemporaryDirectory() as tmp:
        def cached(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
            feats = extract_features(folder, backbone, Path(tmp) / name)
            return np.array(feats.features), np.array(feats.labels)

        x, y = cached(EXAMPLE_DATA / "train", "train")
        tests = {"bundled test": cached(EXAMPLE_DATA / "test", "bundled"),
                 "official test": cached(large_test_set(Path(tmp) / "fm", args.test_per_class), "official")}
    classes = int(y.max()) + 1
    ece: dict[str, dict[str, list[float]]] = {t: {s: [] for s in SOURCES} for t in tests}
    header = "  ".join(f"{t} ECE ({', '.join(SOURCES)})" for t in tests)
    print(f"{'split':>5} {'T val':>6} {'T held-out':>10}  {header}")
    for seed in range(args.splits):
        train_idx, val_idx = (np.array(i) for i in stratified_split(y.tolist(), 0.2, seed))
        head = build_head(x.shape[1], classes, HeadConfig(0, 0.0))
        fitted = fit_logistic_head(head, *(torch.from_numpy(a) for a in (x[train_idx], y[train_idx], x[val_idx],
                                                                          y[val_idx])), classes,
                                   TrainConfig(seed=seed), Runtime.detect())
        held_out = fitted.calibration_set()
        temperatures = {"T=1": 1.0, "validation": fit_temperature(fitted.val_probs, fitted.val_labels),
                        "held-out": fit_temperature(held_out.probs, held_out.labels)}
        line = f"{seed:5d} {temperatures['validation']:6.3f} {temperatures['held-out']:10.3f} "
        for name, (xt, yt) in tests.items():
            with torch.no_grad():
                probs = head(torch.from_numpy(xt)).softmax(1).numpy()
            for source, t in temperatures.items():
                ece[name][source].append(calibration(yt, rescale(probs, t)).ece)
            line += "  " + " ".join(f"{ece[name][s][-1]:.4f}" for s in SOURCES)
        print(line, flush=True)
    figures = {name: {s: float(np.mean(v)) for s, v in by.items()}
               | {"worst held-out": float(np.max(by["held-out"])), "worst validation": float(np.max(by["validation"]))}
               for name, by in ece.items()}
    for name, f in figures.items():
        print(f"{name}: mean ECE " + ", ".join(f"{s} {f[s]:.4f}" for s in SOURCES)
              + f"; held-out / validation {f['held-out'] / f['validation']:.2f}x; worst split "
              f"{f['worst held-out']:.4f} against {f['worst validation']:.4f}")
    print(json.dumps({"benchmark": "temperature_source", "splits": args.splits, **figures}))


if __name__ == "__main__":
    main()
