"""How much faster is training a head on cached features than running the frozen base every epoch?

Same data (Fashion-MNIST JPEGs, 256 px, see jpeg_data.py), same head (Lite0's pooled features → linear), same
optimizer (AdamW, warmup + cosine), same batch size and epochs, no augmentation in either:
  cached:   the training loop (`transferkit.training.loop.fit`) on features read from a feature cache made
            beforehand;
  baseline: every epoch decodes the images and runs the frozen base (PyTorch, decoding in worker processes),
            then the same head step on the batch.
Both heads are scored on the same test images. Prints `speedup` = baseline / cached training time (the cache
already made; the one-time extraction is printed beside it) and `accuracy_diff` in points, and one JSON line.

    python benchmarks/head.py [--train 500] [--test 1000] [--epochs 10] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import CLASSES  # noqa: E402
from jpeg_data import write_jpegs  # noqa: E402

from transferkit.cli.allocator import keep_freed_memory  # noqa: E402
from transferkit.data.files import LabelledFiles, Sample  # noqa: E402
from transferkit.data.loaders import make_train_loader  # noqa: E402
from transferkit.data.transforms import eval_transform  # noqa: E402
from transferkit.features.extract import extract_features  # noqa: E402
from transferkit.model import HeadConfig, TransferModel  # noqa: E402
from transferkit.runtime import Runtime, default_workers  # noqa: E402
from transferkit.training.features import FeatureBatches, head_optimizer  # noqa: E402
from transferkit.training.loop import Best, LoopState, Stage, fit  # noqa: E402
from transferkit.training.schedule import lr_at  # noqa: E402


def labelled(paths: list[Path], root: Path) -> LabelledFiles:
    return LabelledFiles(root, CLASSES, tuple(Sample(p, CLASSES.index(p.parent.name)) for p in paths))


def fresh_head(model: TransferModel, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(model.feature_dim, len(CLASSES)))


def base_every_epoch(model: TransferModel, head: nn.Module, files: LabelledFiles, epochs: int, lr: float,
                     batch_size: int, seed: int) -> None:
    """The head trained while the frozen base recomputes every image's features every epoch."""
    p = model.preprocessing
    loader, _ = make_train_loader(files.samples, eval_transform(p), p.resize_size, batch_size, default_workers(), seed)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    steps_per_epoch = len(loader)
    base = model.base.eval().to(memory_format=torch.channels_last)
    micro = Runtime(torch.device("cpu")).micro_batch_size(batch_size)
    step = 0
    for _ in range(epochs):
        for images, labels in loader:
            with torch.inference_mode():
                images = images.contiguous(memory_format=torch.channels_last)
                features = torch.cat([base(images[i:i + micro]) for i in range(0, len(images), micro)])
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_at(step, epochs * steps_per_epoch, steps_per_epoch)
            loss = loss_fn(head(features.clone()), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1


def accuracy(head: nn.Module, features: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        predicted = head.eval()(torch.from_numpy(np.array(features))).argmax(1).numpy()
    return float((predicted == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "transferkit-bench" / "head")
    args = parser.parse_args()
    keep_freed_memory()
    train_files = labelled(write_jpegs(args.work / "train", args.train), args.work / "train")
    test_files = labelled(write_jpegs(args.work / "test", args.test, split="test"), args.work / "test")
    model = TransferModel.from_pretrained("efficientnet_lite0", list(CLASSES), HeadConfig(dropout=0.0))

    started = time.perf_counter()
    train_cache = extract_features(train_files, model.backbone, args.work / "features-train")
    extraction = time.perf_counter() - started
    test_cache = extract_features(test_files, model.backbone, args.work / "features-test")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    cached_head = fresh_head(model, args.seed)
    started = time.perf_counter()
    features = torch.from_numpy(np.array(train_cache.features))  # reading the cache is part of the cached time
    labels = torch.from_numpy(np.array(train_cache.labels))
    batches = FeatureBatches(features, labels, args.batch_size, args.seed)
    stage = Stage("head", args.epochs, batches, lambda: (0.0, 0.0), head_optimizer(cached_head, args.lr, 0.01),
                  {"head": args.lr}, micro_batch=args.batch_size)
    fit(cached_head, stage, loss_fn, Runtime.detect(), Best(), LoopState())
    cached = time.perf_counter() - started
    print(f"cached features: {args.epochs} epochs in {cached:.3f}s (one-time extraction of {args.train} images: "
          f"{extraction:.1f}s, {train_cache.stats.engine})", flush=True)

    baseline_head = fresh_head(model, args.seed)
    started = time.perf_counter()
    base_every_epoch(model, baseline_head, train_files, args.epochs, args.lr, args.batch_size, args.seed)
    baseline = time.perf_counter() - started
    print(f"frozen base run every epoch: {args.epochs} epochs in {baseline:.1f}s", flush=True)

    acc_cached = accuracy(cached_head, test_cache.features, test_cache.labels)
    acc_baseline = accuracy(baseline_head, test_cache.features, test_cache.labels)
    speedup, diff = baseline / cached, 100 * (acc_cached - acc_baseline)
    print(f"test accuracy ({args.test} images): cached {acc_cached:.3f}, base every epoch {acc_baseline:.3f}")
    print(f"speedup = {speedup:.0f}x (target >= 50), accuracy_diff = {diff:+.1f} points (target <= 1 in size); "
          f"with the one-time extraction counted: {baseline / (cached + extraction):.1f}x")
    print(json.dumps({"benchmark": "head", "train_images": args.train, "test_images": args.test,
                      "epochs": args.epochs, "cached_seconds": round(cached, 3), "baseline_seconds": round(baseline, 1),
                      "extraction_seconds": round(extraction, 1), "speedup": round(speedup, 1),
                      "speedup_with_extraction": round(baseline / (cached + extraction), 2),
                      "accuracy_cached": acc_cached, "accuracy_baseline": acc_baseline,
                      "accuracy_diff": round(diff, 2)}))


if __name__ == "__main__":
    main()
