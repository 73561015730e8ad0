"""Does temperature scaling calibrate the defaults' probabilities, on a test set large enough to tell?

Trains with the defaults on the bundled Fashion-MNIST sample (or takes `--run RUN`), then scores two test sets
once each: the bundled 200 images and 2,000 official Fashion-MNIST test images from Debian's
`dataset-fashion-mnist` package. For each it prints accuracy and the expected calibration error (ECE, 10 bins)
without and with the bundle's temperature, beside the ECE noise floor: the median ECE a perfectly calibrated
model with the same confidences shows on that many images (about 0.05 on 200 images, so a target of 0.05 there
is within sampling noise; 2,000 images bring the floor near 0.015), and the lowest ECE any temperature from 0.5 to
2 reaches on that test set, chosen in hindsight on the test set itself (what no fit on other images can beat).
Ends with one JSON line of figures.

    python benchmarks/calibration.py [--run RUN] [--seed 0] [--test-per-class 200]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
from defaults_vs_logreg import large_test_set

from transferkit.data.files import EXAMPLE_DATA
from transferkit.evaluation.calibration import rescale
from transferkit.evaluation.predict import score
from transferkit.evaluation.report import calibration
from transferkit.model import TransferModel
from transferkit.training.config import TrainConfig
from transferkit.training.strategies import train

HINDSIGHT = np.round(np.arange(0.5, 2.0001, 0.01), 2)  # temperatures tried on the test set itself (an oracle)


def measure(model: TransferModel, test: Path) -> dict[str, float]:
    """Accuracy and ECE of `model` on `test`, at temperature 1 and at the bundle's temperature."""
    temperature, model.temperature = model.temperature, 1.0
    scored = score(model, test)
    model.temperature = temperature
    raw = calibration(scored.labels, scored.probs)
    scaled = calibration(scored.labels, rescale(scored.probs, temperature))
    hindsight = {float(t): calibration(scored.labels, rescale(scored.probs, float(t))).ece for t in HINDSIGHT}
    best = min(hindsight, key=lambda t: hindsight[t])
    return {"images": len(scored.labels), "accuracy": float((scored.probs.argmax(1) == scored.labels).mean()),
            "ece_t1": raw.ece, "ece": scaled.ece, "noise_floor": scaled.noise_floor,
            "best_t_in_hindsight": best, "ece_at_best_t": hindsight[best]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a trained bundle (default: train the defaults)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        model = (TransferModel.load(args.run) if args.run is not None
                 else train(EXAMPLE_DATA / "train", Path(tmp) / "run", TrainConfig(seed=args.seed)).model)
        sets = {"bundled test": EXAMPLE_DATA / "test",
                "official test": large_test_set(Path(tmp) / "fm", args.test_per_class)}
        figures = {name: measure(model, folder) for name, folder in sets.items()}
    print(f"\ntemperature {model.temperature:.3f}")
    print(f"{'test set':<15} {'images':>6} {'accuracy':>8} {'ECE T=1':>8} {'ECE':>6} {'noise floor':>11} "
          f"{'best T on the test set (its ECE)':>32}")
    for name, f in figures.items():
        print(f"{name:<15} {f['images']:6d} {f['accuracy']:8.3f} {f['ece_t1']:8.3f} {f['ece']:6.3f} "
              f"{f['noise_floor']:11.3f} {f['best_t_in_hindsight']:25.2f} ({f['ece_at_best_t']:.3f})")
    print(json.dumps({"benchmark": "calibration", "seed": args.seed, "temperature": model.temperature,
                      "run": str(args.run) if args.run else None, **figures}))


if __name__ == "__main__":
    main()
