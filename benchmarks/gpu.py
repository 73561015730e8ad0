"""Does the input pipeline keep a GPU busy? Training and extraction end to end, against the model alone.

On JPEG files written here (smooth random colour fields, `--size` px, quality 90; no data set needed), in one
process on one device:
  (a) training end to end: a `Learner` epoch of the fine-tune stage (top `--unfreeze` blocks and the head
      trainable), from files: decoding and augmenting in worker processes, pinned copies, bf16 autocast,
      channels_last; timed from the end of its first batch to the end of its last (steady state, no validation);
  (b) the bound: the same model, trainable set, batch, micro-batches and autocast, forward + backward + AdamW
      step on one batch already on the device;
  (c) extraction end to end: `extract_features` into an empty cache (its images per second: decode, engine,
      the memory-mapped write);
  (d) its bound: the extraction engine alone on uint8 batches already decoded.
Prints images/s of each and the ratios a/b and c/d (1.0: the model is the only cost), then one JSON line.
Extraction is per device: under torchrun each GPU computes its share at about this rate.

NOT RUN ON A GPU YET: the machines this was written on have none; `--cpu` runs the same measurements on the
CPU with tiny sizes, to show that the script works (its figures say nothing about a GPU).

    python benchmarks/gpu.py [--images 2048] [--batch-size 64] [--backbone efficientnet_lite0] [--unfreeze 2]
    python benchmarks/gpu.py --cpu --images 48 --batch-size 8 --steps 3
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transferkit.data.split import load_images
from transferkit.features.engine import make_engine
from transferkit.features.extract import extract_features
from transferkit.model import Backbone, TransferModel
from transferkit.runtime import Runtime
from transferkit.training.learner import Learner
from transferkit.training.loop import Callback, Stage

CLASSES = ("a", "b", "c", "d")


def write_images(root: Path, count: int, size: int) -> None:
    """`count` JPEGs in `len(CLASSES)` class folders: bicubic-upscaled 8x8 random colours, tinted by class
    (smooth like photos, so decoding costs about what a photo of that size costs)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % len(CLASSES)
        small = rng.integers(0, 256, (8, 8, 3)).astype(np.int16)
        small[..., label % 3] = np.clip(small[..., label % 3] + 60, 0, 255)
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(small.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        image.save(folder / f"{i:05d}.jpg", quality=90)


class _BatchClock(Callback):
    """The time at the end of every training batch."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def after_batch(self, stage: Stage, loss: float, accuracy: float) -> None:
        self.times.append(time.perf_counter())


def _sync(runtime: Runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)


def _model(backbone: str, unfreeze: int | None, runtime: Runtime) -> TransferModel:
    torch.manual_seed(0)
    model = TransferModel.from_pretrained(backbone, list(CLASSES))
    model.unfreeze_top(unfreeze)
    runtime.place(model)
    return model


def train_end_to_end(root: Path, args: argparse.Namespace, runtime: Runtime) -> float:
    """(a): images per second of a fine-tune epoch from files, between the ends of its first and last batch."""
    data = load_images(root, val_split=0.05, seed=0, workers=runtime.workers)
    clock = _BatchClock()
    learner = Learner(_model(args.backbone, args.unfreeze, runtime), data, args.batch_size, runtime=runtime,
                      callbacks=[clock])
    learner.fit(epochs=1, lr=1e-3, name="fine-tune")
    batches = len(clock.times) - 1
    if batches < 1:
        raise SystemExit(f"need at least 2 training batches: raise --images (got {args.images})")
    return batches * args.batch_size / (clock.times[-1] - clock.times[0])


def train_bound(args: argparse.Namespace, runtime: Runtime) -> float:
    """(b): images per second of forward + backward + step alone, on one batch resident on the device."""
    model = _model(args.backbone, args.unfreeze, runtime)
    model.train()
    size = model.preprocessing.input_size
    images = runtime.images(torch.randn(args.batch_size, 3, size, size))
    labels = torch.randint(0, len(CLASSES), (args.batch_size,), device=runtime.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    micro = runtime.micro_batch_size(args.batch_size)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        for xs, ys in zip(images.split(micro), labels.split(micro)):
            with runtime.autocast():
                loss = loss_fn(model(xs).float(), ys) * (len(ys) / args.batch_size)
            loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up: cuDNN's kernel choice, the allocator
        step()
    _sync(runtime)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(runtime)
    return args.steps * args.batch_size / (time.perf_counter() - start)


def extract_rates(root: Path, work: Path, args: argparse.Namespace, runtime: Runtime) -> tuple[float, float, str]:
    """(c) and (d): images per second of `extract_features` from files, and of its engine alone."""
    backbone = Backbone.from_pretrained(args.backbone)
    cache = extract_features(root, backbone, work / "features", runtime=runtime, engine=args.engine)
    engine = make_engine(backbone.module, backbone.preprocessing, runtime, args.engine)
    size = backbone.preprocessing.input_size
    batch = torch.randint(0, 256, (engine.batch_size, 3, size, size), dtype=torch.uint8)
    if runtime.pin_memory:
        batch = batch.pin_memory()
    engine(batch)  # warm-up
    calls = max(1, args.images // engine.batch_size)
    start = time.perf_counter()
    for _ in range(calls):
        engine(batch)  # returns a numpy array: synchronised
    rate = calls * engine.batch_size / (time.perf_counter() - start)
    return cache.stats.images_per_second, rate, engine.note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (a smoke run: tiny sizes)")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--size", type=int, default=256, help="side of the JPEG files")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of the model-only bound")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--unfreeze", type=int, default=2, help="top blocks trained (the recipe's default: 2)")
    parser.add_argument("--engine", choices=("auto", "torch"), default="auto")
    parser.add_argument("--work", type=Path, default=None, help="folder for the images (default: a temporary one)")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("no GPU here: pass --cpu for a smoke run")
    logging.basicConfig(level=logging.WARNING)
    runtime = Runtime.detect(device="cpu" if args.cpu else "cuda:0")
    if runtime.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the CLI sets it (cli/commands.py `_runtime`)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        root = work / "images"
        write_images(root, args.images, args.size)
        train = train_end_to_end(root, args, runtime)
        bound = train_bound(args, runtime)
        extract, engine, note = extract_rates(root, work, args, runtime)
    device = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else "CPU (smoke run)"
    print(f"{device}, {args.backbone}, batch {args.batch_size}, {args.images} images of {args.size} px, "
          f"{runtime.workers} decoding workers, autocast {runtime.autocast_dtype}")
    print(f"training: end to end {train:.1f} images/s, model alone {bound:.1f} images/s, "
          f"ratio {train / bound:.2f}")
    print(f"extraction per device: end to end {extract:.1f} features/s, engine alone {engine:.1f} images/s, "
          f"ratio {extract / engine:.2f} ({note})")
    print(json.dumps({"device": device, "backbone": args.backbone, "batch_size": args.batch_size,
                      "images": args.images, "workers": runtime.workers,
                      "train_images_per_s": round(train, 1), "train_bound_images_per_s": round(bound, 1),
                      "train_ratio": round(train / bound, 3), "extract_features_per_s": round(extract, 1),
                      "extract_engine_images_per_s": round(engine, 1), "extract_ratio": round(extract / engine, 3)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
