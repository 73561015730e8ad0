"""How fast is `transferkit extract` on this machine, against its own engine and against the naive way?

On the same JPEG files (Fashion-MNIST upscaled to 256 px, see jpeg_data.py), in one process:
  (a) transferkit end to end: `extract_features` into an empty cache folder (hashing, decoding in worker
      processes, the engine, writing the memory-mapped cache);
  (b) the engine alone on tensors decoded beforehand (the speed limit of (a));
  (c) the naive way: PIL decode + torchvision transforms in the main process, eager PyTorch, batch 32, NCHW.
Prints ratio_vs_engine = a/b (target >= 0.85) and ratio_vs_naive = a/c (target >= 4), then peak memory of a
fresh `extract` process at 2k and 20k images (target <= 1.5 GB and flat), and one JSON line of all figures.

    python benchmarks/extract.py [--images 2000] [--large 20000] [--naive-images 512] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_mnist import CLASSES  # noqa: E402
from jpeg_data import write_jpegs  # noqa: E402

from transferkit.data.files import LabelledFiles, Sample  # noqa: E402
from transferkit.data.images import load_image  # noqa: E402
from transferkit.data.transforms import eval_transform  # noqa: E402
from transferkit.features.engine import make_engine  # noqa: E402
from transferkit.features.extract import extract_features  # noqa: E402
from transferkit.model import TransferModel  # noqa: E402
from transferkit.runtime import Runtime  # noqa: E402


def labelled(paths: list[Path], root: Path) -> LabelledFiles:
    return LabelledFiles(root, CLASSES, tuple(Sample(p, CLASSES.index(p.parent.name)) for p in paths))


def naive(model: TransferModel, paths: list[Path]) -> float:
    """What a user writes first: decode and transform in the main process, eager model, batch 32, NCHW."""
    p = model.preprocessing
    transform = v2.Compose([v2.Resize(p.resize_size, interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(
        p.input_size), v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(p.mean), list(p.std))])
    base = model.base.eval()
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(paths), 32):
            batch = torch.stack([transform(Image.open(path).convert("RGB")) for path in paths[start:start + 32]])
            base(batch)
    return len(paths) / (time.perf_counter() - started)


def engine_alone(model: TransferModel, paths: list[Path]) -> tuple[float, str, float]:
    """Images/s of the engine on tensors decoded beforehand; also its note and the one-time set-up seconds."""
    started = time.perf_counter()
    engine = make_engine(model.base, model.preprocessing, Runtime.detect())
    setup = time.perf_counter() - started
    transform = eval_transform(model.preprocessing, normalise=False)  # what the decoding workers hand over
    images = torch.stack([transform(load_image(path)) for path in paths])
    engine(images[:engine.batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), engine.batch_size):
        engine(images[start:start + engine.batch_size])
    return len(images) / (time.perf_counter() - started), engine.note, setup


def end_to_end(model: TransferModel, files: LabelledFiles, folder: Path) -> float:
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    cache = extract_features(files, model.backbone, folder)
    seconds = time.perf_counter() - started
    assert cache.stats.computed == len(files.samples), cache.stats
    return len(files.samples) / seconds


def _tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and all its descendants (shared pages counted once, in shares)."""
    total = 0.0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def peak_memory(count: int, work: Path) -> dict[str, float]:
    """A fresh process extracts `count` images; its tree's peak PSS and the main process's peak RSS."""
    child = subprocess.Popen([sys.executable, __file__, "--child", str(count), "--work", str(work)])
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, _tree_pss_mb(child.pid))
        time.sleep(0.2)
    if child.returncode != 0:
        raise SystemExit(f"the {count}-image extraction failed")
    return {"images": count, "peak_pss_mb_all_processes": round(peak), **json.loads(
        (work / f"child-{count}.json").read_text())}


def child(count: int, work: Path) -> None:
    import resource

    model = TransferModel.from_pretrained("efficientnet_lite0", list(CLASSES))
    files = labelled(write_jpegs(work / "jpeg", count), work / "jpeg")
    rate = end_to_end(model, files, work / f"features-{count}")
    main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (work / f"child-{count}.json").write_text(json.dumps({"peak_rss_mb_main": round(main_mb),
                                                          "images_per_second": round(rate, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--large", type=int, default=20000, help="images of the second memory measurement")
    parser.add_argument("--naive-images", type=int, default=512, help="(c) is slow: time it on this many")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of (b) and (a); medians count")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "transferkit-bench" / "extract")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work)
        return
    print(f"writing {max(args.images, args.large)} JPEG files (256 px) to {args.work / 'jpeg'} (once)", flush=True)
    paths = write_jpegs(args.work / "jpeg", max(args.images, args.large))[:args.images]
    files = labelled(paths, args.work / "jpeg")
    model = TransferModel.from_pretrained("efficientnet_lite0", list(CLASSES))
    cpu = f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(cpu, flush=True)

    c = naive(model, paths[:args.naive_images])
    print(f"(c) naive PIL + eager PyTorch, batch 32:      {c:7.1f} images/s", flush=True)
    # (a) and (b) alternate, and each is the median of its rounds: the machine's speed drifts by +-10%
    rounds_a, rounds_b = [], []
    for _ in range(args.rounds):
        b, note, setup = engine_alone(model, paths[:1024])
        rounds_b.append(b)
        rounds_a.append(end_to_end(model, files, args.work / "features"))
        print(f"    round: engine {b:.1f}, end to end {rounds_a[-1]:.1f} images/s", flush=True)
    a, b = statistics.median(rounds_a), statistics.median(rounds_b)
    print(f"(b) engine alone, decoded tensors:           {b:7.1f} images/s ({note}; set-up {setup:.1f}s)", flush=True)
    print(f"(a) transferkit extract, end to end:         {a:7.1f} images/s ({len(paths)} files)", flush=True)
    print(f"ratio_vs_engine = {a / b:.2f} (target >= 0.85), ratio_vs_naive = {a / c:.2f} (target >= 4)", flush=True)

    memory = [peak_memory(n, args.work) for n in (args.images, args.large) if n]
    for m in memory:
        print(f"memory at {m['images']:>6} images: peak PSS of all processes {m['peak_pss_mb_all_processes']} MB, "
              f"main process peak RSS {m['peak_rss_mb_main']} MB ({m['images_per_second']} images/s)")
    print(json.dumps({"benchmark": "extract", "cpu": cpu, "images": len(paths), "naive_images_per_s": round(c, 1),
                      "engine_images_per_s": round(b, 1), "transferkit_images_per_s": round(a, 1),
                      "rounds": {"engine": [round(x, 1) for x in rounds_b],
                                 "end_to_end": [round(x, 1) for x in rounds_a]},
                      "ratio_vs_engine": round(a / b, 3), "ratio_vs_naive": round(a / c, 3), "engine": note,
                      "memory": memory}))


if __name__ == "__main__":
    main()
