"""Is `evaluate` as fast as `extract` now? (issue 12: evaluate ran at about half of extract's speed.)

On the same JPEG files (Fashion-MNIST upscaled to 256 px, see jpeg_data.py), in one process, alternating:
  (a) `extract_features` into an empty cache folder: the frozen base on ONNX Runtime, decoding in a worker;
  (b) `evaluate` of a model (the same base + a 10-class head) on the same files: the whole model's ONNX graph
      (exported once beforehand, as a bundle that was evaluated or exported before has it), decoding in a
      worker, then the metrics.
Prints ratio = b/a (target >= 0.85) with both figures (medians of the rounds), and (c) `evaluate` on PyTorch,
the path every command took before, on `--torch-images` files for comparison. One JSON line at the end.

    python benchmarks/predict.py [--n 2000] [--rounds 3] [--torch-images 512] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import CLASSES  # noqa: E402
from jpeg_data import write_jpegs  # noqa: E402

from transferkit.data.files import LabelledFiles, Sample  # noqa: E402
from transferkit.evaluation.predict import evaluate  # noqa: E402
from transferkit.features.extract import extract_features  # noqa: E402
from transferkit.model import TransferModel  # noqa: E402
from transferkit.runtime import Runtime  # noqa: E402


def labelled(paths: list[Path], root: Path) -> LabelledFiles:
    return LabelledFiles(root, CLASSES, tuple(Sample(p, CLASSES.index(p.parent.name)) for p in paths))


def extract_rate(model: TransferModel, files: LabelledFiles, folder: Path) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    cache = extract_features(files, model.backbone, folder)
    assert cache.stats.computed == len(files.samples), cache.stats
    return len(files.samples) / (time.perf_counter() - started)


def evaluate_rate(model: TransferModel, files: LabelledFiles, runner: str) -> float:
    started = time.perf_counter()
    evaluate(model, files, Runtime.detect(), runner=runner)
    return len(files.samples) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="JPEG files")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a) and (b); medians count")
    parser.add_argument("--torch-images", type=int, default=512, help="(c) is slow: time it on this many")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "transferkit-bench" / "extract")
    args = parser.parse_args()
    print(f"writing {args.n} JPEG files (256 px) to {args.work / 'jpeg'} (once)", flush=True)
    paths = write_jpegs(args.work / "jpeg", args.n)
    files = labelled(paths, args.work / "jpeg")
    model = TransferModel.from_pretrained("efficientnet_lite0", list(CLASSES)).eval()
    cpu = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(cpu, flush=True)

    started = time.perf_counter()  # both graphs exported (and cached) once, outside the timings
    extract_rate(model, labelled(paths[:64], args.work / "jpeg"), args.work / "predict-warmup")
    evaluate_rate(model, labelled(paths[:64], args.work / "jpeg"), "onnx")
    print(f"warm-up (exports both graphs the first time): {time.perf_counter() - started:.1f}s", flush=True)
    rounds_a, rounds_b = [], []
    for _ in range(args.rounds):
        rounds_a.append(extract_rate(model, files, args.work / "predict-features"))
        rounds_b.append(evaluate_rate(model, files, "auto"))
        print(f"    round: extract {rounds_a[-1]:.1f}, evaluate {rounds_b[-1]:.1f} images/s", flush=True)
    a, b = statistics.median(rounds_a), statistics.median(rounds_b)
    c = evaluate_rate(model, labelled(paths[:args.torch_images], args.work / "jpeg"), "torch")
    print(f"(a) extract, end to end:              {a:7.1f} images/s ({len(paths)} files)")
    print(f"(b) evaluate, ONNX Runtime:           {b:7.1f} images/s ({len(paths)} files)")
    print(f"(c) evaluate, PyTorch (before):       {c:7.1f} images/s ({args.torch_images} files)")
    print(f"ratio = b/a = {b / a:.2f} (target >= 0.85); before: c/a = {c / a:.2f}")
    print(json.dumps({"benchmark": "predict", "cpu": cpu, "images": len(paths), "extract_images_per_s": round(a, 1),
                      "evaluate_images_per_s": round(b, 1), "evaluate_torch_images_per_s": round(c, 1),
                      "rounds": {"extract": [round(x, 1) for x in rounds_a],
                                 "evaluate": [round(x, 1) for x in rounds_b]},
                      "ratio": round(b / a, 3), "ratio_torch": round(c / a, 3)}))


if __name__ == "__main__":
    main()
