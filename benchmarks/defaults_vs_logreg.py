"""Do `transferkit train` defaults beat the classic strong baseline, a logistic regression on frozen features?

Both see the same data: the bundled Fashion-MNIST sample's `train/` folder (400 images) with the same seeded
80/20 split (the logistic regression picks its C on the validation part). Both are scored on the same test
folder: by default 2,000 images of the official Fashion-MNIST test split written from Debian's
`dataset-fashion-mnist` package (200 images give a +-3-point standard error; 2,000 give +-1), else the bundled
200-image `test/`. Prints a table and ends with one JSON line of figures.

    python benchmarks/defaults_vs_logreg.py [--data DIR] [--test DIR] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from transferkit.data.files import EXAMPLE_DATA, LabelledFiles, load_labelled
from transferkit.data.split import load_images
from transferkit.evaluation.predict import evaluate, infer_files
from transferkit.model import TransferModel
from transferkit.training.config import TrainConfig
from transferkit.training.strategies import train


def pooled_features(model: TransferModel, files: LabelledFiles) -> tuple[np.ndarray, np.ndarray]:
    feats, kept = infer_files(model.base, model.preprocessing, [s.path for s in files.samples], softmax=False)
    return feats, np.array([files.samples[i].label for i in kept])


def logreg_baseline(data_dir: Path, test_dir: Path, seed: int, backbone: str) -> dict[str, float]:
    start = time.perf_counter()
    data = load_images(data_dir, 0.2, seed)
    model = TransferModel.from_pretrained(backbone, list(data.classes))
    x_train, y_train = pooled_features(model, data.train)
    x_val, y_val = pooled_features(model, data.val)
    test = load_labelled(test_dir)
    x_test, y_test = pooled_features(model, test)
    scaler = StandardScaler().fit(x_train)
    best_c, best_val = 1.0, -1.0
    for c in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(x_train), y_train)
        val = clf.score(scaler.transform(x_val), y_val)
        if val > best_val:
            best_c, best_val = c, val
    clf = LogisticRegression(C=best_c, max_iter=3000).fit(scaler.transform(x_train), y_train)
    return {"test_accuracy": float(clf.score(scaler.transform(x_test), y_test)), "val_accuracy": float(best_val),
            "C": best_c, "seconds": time.perf_counter() - start}


def large_test_set(folder: Path, per_class: int) -> Path:
    """Fashion-MNIST test images from the Debian package, as PNG class folders (the real input pipeline)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "make_example_data.py"
    subprocess.run([sys.executable, str(script), "--out", str(folder), "--train-per-class", "0",
                    "--test-per-class", str(per_class), "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
    return folder / "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=EXAMPLE_DATA / "train")
    parser.add_argument("--test", type=Path, default=None)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # training's log lines on the console
    torch.manual_seed(args.seed)
    cfg = TrainConfig(seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        if args.test is None:
            has_debian = Path("/usr/share/datasets/fashion-mnist").is_dir()
            args.test = large_test_set(Path(tmp) / "fm", args.test_per_class) if has_debian else EXAMPLE_DATA / "test"
        baseline = logreg_baseline(args.data, args.test, args.seed, cfg.backbone)
        start = time.perf_counter()
        result = train(args.data, Path(tmp) / "run", cfg)
        seconds = time.perf_counter() - start
        test_metrics = evaluate(result.model, args.test).metrics
    ours = {"test_accuracy": test_metrics.accuracy, "val_accuracy": result.val_metrics.accuracy,
            "seconds": seconds}
    print(f"\n{'method':<40} {'test acc':>8} {'val acc':>8} {'seconds':>8}")
    print(f"{'logistic regression on frozen features':<40} {baseline['test_accuracy']:8.3f} "
          f"{baseline['val_accuracy']:8.3f} {baseline['seconds']:8.0f}")
    print(f"{'transferkit train (defaults)':<40} {ours['test_accuracy']:8.3f} {ours['val_accuracy']:8.3f} "
          f"{ours['seconds']:8.0f}")
    print(json.dumps({"benchmark": "defaults_vs_logreg", "data": str(args.data), "seed": args.seed,
                      "test_images": test_metrics.count,
                      "logreg": baseline, "defaults": ours,
                      "accuracy_diff_points": round(100 * (ours["test_accuracy"] - baseline["test_accuracy"]), 2)}))


if __name__ == "__main__":
    main()
