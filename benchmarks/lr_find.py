"""Is `transferkit lr-find`'s suggestion stable across seeds, and does training with it do as well as a grid?

1. Runs the range test (the head stage, as `transferkit lr-find DATA` does) with seeds 0..4 on the bundled
   Fashion-MNIST sample and reports each suggestion against their median (target: every one within 2x).
2. Trains stage 1 (`--strategy frozen`: the probe's warm start, then the head with augmentation; `--lr` is this
   stage's rate) at each rate of a 5-point grid and at seed 0's suggestion, and scores each on 2,000 official
   Fashion-MNIST test images (Debian `dataset-fashion-mnist`; the bundled 200 would give +-3 points of noise).
   Target: the suggestion reaches >= 99% of the best grid point's accuracy.
Ends with one JSON line of figures.

    python benchmarks/lr_find.py [--seeds 5] [--grid 1e-4 3e-4 1e-3 3e-3 1e-2] [--iterations 100] [--curves JSON]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from defaults_vs_logreg import large_test_set

from transferkit.cli.allocator import keep_freed_memory
from transferkit.data.files import EXAMPLE_DATA
from transferkit.evaluation.predict import evaluate
from transferkit.training.config import TrainConfig
from transferkit.training.lr_find import find_lr
from transferkit.training.strategies import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--grid", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--curves", type=Path, help="write each seed's rates, losses and smoothed losses here (JSON)")
    args = parser.parse_args()
    keep_freed_memory()  # as `transferkit train` does on a CPU (cli/allocator.py): every cell alike
    data = EXAMPLE_DATA / "train"

    suggestions, curves = [], []
    for seed in range(args.seeds):
        start = time.perf_counter()
        found = find_lr(data, TrainConfig(seed=seed), "head", args.iterations)
        suggestions.append(found.suggestion)
        curves.append(found.to_json())
        print(f"seed {seed}: suggestion {found.suggestion:.2e} ({len(found.lrs)} steps, "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
    if args.curves:
        args.curves.write_text(json.dumps(curves))
    median = statistics.median(suggestions)
    spread = max(max(s / median, median / s) for s in suggestions)
    print(f"median {median:.2e}; largest ratio to the median {spread:.2f} (target <= 2)", flush=True)

    accuracy: dict[float, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        test = large_test_set(Path(tmp) / "fm", args.test_per_class)
        for lr in [*args.grid, suggestions[0]]:
            if lr in accuracy:
                continue
            start = time.perf_counter()
            result = train(data, Path(tmp) / f"run-{lr:g}", TrainConfig(strategy="frozen", lr=lr, seed=0))
            accuracy[lr] = evaluate(result.model, test).metrics.accuracy
            print(f"lr {lr:.2e}: test accuracy {accuracy[lr]:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    best_lr = max(args.grid, key=lambda lr: accuracy[lr])
    ratio = accuracy[suggestions[0]] / accuracy[best_lr]
    print(f"suggestion {suggestions[0]:.2e}: {accuracy[suggestions[0]]:.3f} = {ratio:.3f} of the best grid point "
          f"({best_lr:.0e}: {accuracy[best_lr]:.3f}; target >= 0.99)")
    print(json.dumps({"benchmark": "lr_find", "suggestions": suggestions, "median": median, "spread": spread,
                      "accuracy": {f"{lr:g}": a for lr, a in accuracy.items()}, "best_grid_lr": best_lr,
                      "suggestion_over_best": ratio}))


if __name__ == "__main__":
    main()
